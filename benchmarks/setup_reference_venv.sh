#!/usr/bin/env bash
# Build benchmarks/.venv-ref: the ORIGINAL face-rhythm 0.3.3, isolated from our product.
#
# It is only ever imported by benchmarks/run_reference.py running under
# benchmarks/.venv-ref/bin/python, in its own process. Never a dependency of facerhythm.
#
# Why the install is split:
# - torch==2.13.0 first, so pip takes the CPU wheel on disk instead of a multi-GB CUDA build.
# - torchcodec 0.13.0 with --no-deps: its metadata would otherwise pull a different torch.
# - face-rhythm itself with --no-deps: it asks for the GUI opencv_contrib_python, which
#   needs libGL and opens a cv2 window at import when a display exists; we use the
#   headless contrib build instead (<5, as face-rhythm pins) and skip the notebook stack
#   (jupyter, notebook, ipykernel, ipympl) that the pipeline never imports.
# FFmpeg shared libraries must be on the system for torchcodec (Debian: apt-get install ffmpeg).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${HERE}/.venv-ref"
PY="${PYTHON:-python3.11}"

if [[ -x "${VENV}/bin/python" ]] && "${VENV}/bin/python" -c "import face_rhythm, sys; sys.exit(face_rhythm.__version__ != '0.3.3')" 2>/dev/null; then
    echo "reference venv already set up: ${VENV}"
    exit 0
fi

"${PY}" -m venv "${VENV}"
PIP=("${VENV}/bin/python" -m pip install --quiet)

"${PIP[@]}" "torch==2.13.0"
"${PIP[@]}" --no-deps "torchcodec==0.13.0"
"${PIP[@]}" --no-deps "face-rhythm==0.3.3" "vqt==0.1.3"
"${PIP[@]}" \
    "numpy>=2,<3" "tensorly==0.10.0" "opencv-contrib-python-headless>=4.10.0.84,<5" \
    "matplotlib>=3.8" "scikit-image>=0.24" pyyaml tqdm "h5py>=3.11" "Pillow>=10.3" \
    decord2 natsort "pandas>=2.2.2" "tables>=3.10.1" "einops>=0.8" psutil requests \
    ffmpeg-python py-cpuinfo GPUtil nvidia-ml-py3 "plotly>=6" "ipywidgets>=8" \
    scipy hypothesis

"${VENV}/bin/python" - <<'EOF'
import face_rhythm, torch, torchcodec, cv2, vqt, tensorly
print("face_rhythm", face_rhythm.__version__, "| torch", torch.__version__,
      "| torchcodec", torchcodec.__version__, "| cv2", cv2.__version__,
      "| tensorly", tensorly.__version__)
EOF
