#!/usr/bin/env bash
# Snakemake runs this inside the new rule environment (facerhythm.yaml) once, right after
# creating it: install the facerhythm package of this very workflow version, so that the
# scripts' `import facerhythm_core` finds it there (no path tricks). The dependencies are
# in facerhythm.yaml, hence --no-deps.
# FACERHYTHM_PIP_SOURCE is set by workflow/rules/package.smk from where Snakemake loaded
# the workflow: a local clone's folder, git+file://REPO@REF, git+https://HOST/OWNER/REPO@TAG.
set -euo pipefail
if [[ -z "${FACERHYTHM_PIP_SOURCE:-}" ]]; then
  echo "facerhythm post-deploy: FACERHYTHM_PIP_SOURCE is not set: this workflow's source is" \
       "not one pip can install from (a plain URL?). Set it to a pip requirement for the" \
       "facerhythm package of this workflow's version, e.g." \
       "FACERHYTHM_PIP_SOURCE='git+https://github.com/OWNER/facerhythm@vX.Y.Z'" >&2
  exit 1
fi
echo "facerhythm post-deploy: pip install --no-deps $FACERHYTHM_PIP_SOURCE"
python -m pip install --no-input --no-deps --no-build-isolation "$FACERHYTHM_PIP_SOURCE"
# from a folder that holds no facerhythm_core, the installed copy must import, and so must
# the compiled dependencies (numba: without it the tracker falls back to a slower CLAHE)
cd /
python -c "import facerhythm_core.runtime as r, facerhythm_core as f; print('facerhythm post-deploy: facerhythm', f.__version__, 'at', r.__file__)"
python -c "import numba, cv2, torch, torchcodec.decoders, tensorly, h5py, av; print('facerhythm post-deploy: dependencies import')"
