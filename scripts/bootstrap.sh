#!/usr/bin/env bash
# Create ./.venv and install the project from this repository's own files.
#   bash scripts/bootstrap.sh         # runtime only
#   bash scripts/bootstrap.sh test    # + test and lint tools
# TORCH_SPEC overrides the torch/torchvision pair (default: the CUDA 13 build that also runs on
# CPU; on aarch64 use TORCH_SPEC="torch==2.9.1 torchvision==0.24.1").
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -qq --upgrade pip
# shellcheck disable=SC2086
.venv/bin/python -m pip install -qq ${TORCH_SPEC:-torch==2.14.1 torchvision==0.29.1}
if [ "${1:-}" = "test" ]; then
  .venv/bin/python -m pip install -qq -e '.[test,lint]'
else
  .venv/bin/python -m pip install -qq -e .
fi
.venv/bin/python -c "import torch, open_clip, ray, mlflow, vidablate; print('ready: torch', torch.__version__, 'ray', ray.__version__, 'mlflow', mlflow.__version__)"
