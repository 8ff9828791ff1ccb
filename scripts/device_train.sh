#!/usr/bin/env bash
# Train on a lent accelerator machine over the folder scripts/device_pack.py wrote (.device/, carried).
#
#   bash scripts/device_train.sh --init out/ccu-lite0-v7d.onnx \
#        --config ccu_vision/train/gpu-lettered.json
#
# It installs the packed wheels into /tmp/site (that machine's image has torch, timm, onnx, pillow and
# numpy; nothing can be downloaded there), runs `ccu-vision train --device cuda` on the packed photos and
# fonts, and leaves in $OUT (default out/device) the run's config.json, train.log and a weights-only
# last.pt (model + step: what `ccu-vision export --run` reads; the optimizer state stays behind, which
# keeps the file under the tool's 16 MiB a file). DEVICE=cpu runs the same steps here, for a dry run.
set -euo pipefail
OUT=${OUT:-out/device}
DEVICE=${DEVICE:-cuda}
RUN=${RUN:-/tmp/ccu-device-run}
mkdir -p "$OUT"
test -d .device/photos || { echo ".device/: run scripts/device_pack.py first" >&2; exit 2; }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .device/whl/*.whl
export PYTHONPATH=/tmp/site CCU_FONTS="$PWD/.device/fonts" PYTHONUNBUFFERED=1
if [ "$DEVICE" = cuda ]; then nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; fi
python3 -c "import torch, timm, onnx, PIL, numpy; print('torch', torch.__version__, 'timm', timm.__version__, 'onnx', onnx.__version__, 'pillow', PIL.__version__, 'numpy', numpy.__version__)"
nproc
status=0
python3 -m ccu_vision train --photos .device/photos --out "$RUN" --device "$DEVICE" "$@" || status=$?
if [ ! -f "$RUN/last.pt" ]; then echo "$RUN: training left no checkpoint (exit $status)" >&2; exit $(( status ? status : 1 )); fi
python3 - "$RUN" "$OUT" <<'PY'
import shutil, sys
from pathlib import Path

import torch

run, out = Path(sys.argv[1]), Path(sys.argv[2])
state = torch.load(run / "last.pt", map_location="cpu", weights_only=True)
torch.save({"model": state["model"], "step": state["step"], "elapsed": state["elapsed"]}, out / "last.pt")
for name in ("config.json", "train.log"):
    shutil.copy(run / name, out / name)
print("weights-only checkpoint at step", int(state["step"]), "->", out / "last.pt",
      round((out / "last.pt").stat().st_size / 2**20, 1), "MiB")
PY
exit $status
