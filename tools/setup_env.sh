#!/usr/bin/env bash
# One set-up path for `make demo` and `make test`: FFmpeg shared libraries (for
# torchcodec), a virtual environment in .venv, torch (CPU build by default) and the
# package with its test extras. Safe to re-run; it only does what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
VENV="${VENV:-.venv}"

have_ffmpeg_libs() { ldconfig -p 2>/dev/null | grep -q 'libavcodec\.so'; }
if ! have_ffmpeg_libs; then
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    echo "[setup] installing FFmpeg shared libraries (apt-get install ffmpeg)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null && apt-get install -y -q ffmpeg >/dev/null
  else
    echo "[setup] FFmpeg shared libraries not found. torchcodec needs them:" >&2
    echo "        Debian/Ubuntu: sudo apt-get install ffmpeg;  conda: conda install -c conda-forge ffmpeg" >&2
    exit 1
  fi
fi

# sshd for the SFTP remote-video test (tests/test_remote_videos.py starts its own on
# 127.0.0.1); policy-rc.d keeps apt from starting the system's sshd
if [[ ! -x /usr/sbin/sshd && $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
  echo "[setup] installing OpenSSH's sshd for the SFTP test (apt-get install openssh-server)"
  export DEBIAN_FRONTEND=noninteractive
  policy_rc=/usr/sbin/policy-rc.d
  [[ -e $policy_rc ]] || { printf '#!/bin/sh\nexit 101\n' > "$policy_rc"; chmod +x "$policy_rc"; trap 'rm -f /usr/sbin/policy-rc.d' EXIT; }
  { apt-get install -y -q openssh-server >/dev/null 2>&1 ||
    { apt-get update -q >/dev/null && apt-get install -y -q openssh-server >/dev/null; }; } ||
    echo "[setup] could not install openssh-server: the SFTP test will be skipped" >&2
fi

if [[ ! -x "$VENV/bin/python" ]]; then
  echo "[setup] creating $VENV"
  "$PY" -m venv "$VENV"
fi
stamp="$VENV/.facerhythm-installed"
if [[ ! -f "$stamp" || pyproject.toml -nt "$stamp" ]]; then
  echo "[setup] installing torch ${TORCH_VERSION:=2.13.0}, torchcodec ${TORCHCODEC_VERSION:=0.13.0} and facerhythm"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q "torch==$TORCH_VERSION" "torchcodec==$TORCHCODEC_VERSION"
  "$VENV/bin/python" -m pip install -q -e ".[test,slurm,storage,lint]"
  touch "$stamp"
fi
"$VENV/bin/python" -c "import torchcodec.decoders, cv2, tensorly, h5py; print('[setup] environment OK')"
