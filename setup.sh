#!/usr/bin/env bash
# Create .venv/ in the repo root and install silentvae with its pipeline and test tools (extras
# "pipeline" and "test"; the library alone needs only torch and numpy).
# torch/torchvision are pinned first to releases that resolve from a local wheel cache where one
# exists (no multi-GB download); elsewhere pip fetches them. Idempotent: reruns only fill gaps.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
if ! .venv/bin/python -c "import torch, torchvision" 2>/dev/null; then
  .venv/bin/python -m pip install -q "torch==${TORCH_VERSION:-2.14.1}" "torchvision==${TORCHVISION_VERSION:-0.29.1}"
fi
.venv/bin/python -m pip install -q -e ".[pipeline,test]"
# A Jupyter kernel named "python3" inside the venv, so papermill/nbval run notebooks with it.
.venv/bin/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (silentvae)" >/dev/null
echo "silentvae environment ready: $(.venv/bin/python -c 'import torch; print("torch", torch.__version__, "cuda" if torch.cuda.is_available() else "cpu")')"
