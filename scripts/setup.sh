#!/usr/bin/env bash
# Set up a virtual environment in .venv with headroom-memory and everything its tests and demo need.
# CPU-only torch 2.13.0 is installed first: a plain `torch` would pull a multi-GB CUDA build. Set
# TORCH_SPEC to install another build, e.g. where 2.13.0 is not available as a CPU wheel.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "${TORCH_SPEC:-torch==2.13.0}"
.venv/bin/python -m pip install -q -e '.[all,test]'
# Export the local embedding model to ONNX now, not on an application's first call.
HF_HUB_OFFLINE=1 .venv/bin/headroom-memory warmup
echo "set-up done: .venv"
