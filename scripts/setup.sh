#!/usr/bin/env bash
# Create/refresh the project venv. Usage: scripts/setup.sh [light|full]
#   light: the scanner only (numpy, pillow, faiss-cpu, onnxruntime, click, tqdm, simple-icons-pack, resvg-py)
#   full:  + training (torch, torchvision, timm, onnx), benchmarks and tests
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:-light}"
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
case "$mode" in
  light) .venv/bin/python -m pip install -q -e . ;;
  full)  .venv/bin/python -m pip install -q -e '.[train,bench,test]' ;;
  *) echo "usage: $0 [light|full]" >&2; exit 2 ;;
esac
