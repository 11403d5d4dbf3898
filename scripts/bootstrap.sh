#!/usr/bin/env bash
# Create ./.venv and install the project from this repository's own files, at the exact
# versions of the lock files (requirements.lock; requirements-test.lock for `test`).
#   bash scripts/bootstrap.sh         # runtime only
#   bash scripts/bootstrap.sh test    # + test and lint tools
# VIDABLATE_UNLOCKED=1 installs the newest versions within pyproject.toml's bounds instead
# (then scripts/lock.sh rewrites the locks). TORCH_SPEC overrides the torch/torchvision pair
# (default: the locked CUDA 13 build that also runs on CPU; on aarch64 use
# TORCH_SPEC="torch==2.9.1 torchvision==0.24.1").
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -qq --upgrade pip
extras=""
lock=requirements.lock
if [ "${1:-}" = "test" ]; then
  extras="[test,lint]"
  lock=requirements-test.lock
fi
if [ -n "${VIDABLATE_UNLOCKED:-}" ]; then
  # shellcheck disable=SC2086
  .venv/bin/python -m pip install -qq ${TORCH_SPEC:-torch==2.14.1 torchvision==0.29.1}
  .venv/bin/python -m pip install -qq -e ".$extras"
else
  pins=$(mktemp)
  if [ -n "${TORCH_SPEC:-}" ]; then
    grep -v -E '^(torch|torchvision|triton|nvidia-[a-z0-9-]+)==' "$lock" > "$pins"
    # shellcheck disable=SC2086
    .venv/bin/python -m pip install -qq $TORCH_SPEC
  else
    cp "$lock" "$pins"
  fi
  .venv/bin/python -m pip install -qq -r "$pins"
  rm -f "$pins"
  .venv/bin/python -m pip install -qq --no-deps -e ".$extras"
fi
.venv/bin/python -c "import torch, open_clip, ray, mlflow, vidablate; print('ready: torch', torch.__version__, 'ray', ray.__version__, 'mlflow', mlflow.__version__)"
