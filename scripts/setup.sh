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
# The OCR engine (rapidocr-onnxruntime) asks for the GUI build of OpenCV beside our headless one; both
# install the same cv2 package, so put the headless build's files back last: no libGL/Qt needed.
if .venv/bin/python -m pip show -q opencv-python >/dev/null 2>&1; then
  v=$(.venv/bin/python -c "import importlib.metadata as m; print(m.version('opencv-python-headless'))")
  .venv/bin/python -m pip install -q --force-reinstall --no-deps "opencv-python-headless==$v"
fi
