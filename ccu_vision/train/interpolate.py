"""Weight-space interpolation of a fine-tune with the model it started from (WiSE-FT).

    python -m ccu_vision.train.interpolate --run runs/v9c --alpha 0.5 --out runs/v9w
    ccu-vision export --run runs/v9w --out model.onnx

A run trained with ``--init model.onnx`` starts from that file's weights (BatchNorm folded, see
:mod:`ccu_vision.train.warmstart`). Both ends are loaded into the same parameterisation, and the
output run folder holds ``(1 - alpha) * init + alpha * run`` for every floating-point tensor
(``alpha = 1`` is the fine-tune, ``alpha = 0`` the file it started from). The output folder is a
normal run folder (``config.json`` + ``last.pt``) that ``ccu-vision export --run`` reads; its
``config.json`` records the interpolation and appends the command to ``train_command``.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
from pathlib import Path

import torch

log = logging.getLogger(__name__)


def interpolate_state(init: dict[str, torch.Tensor], tuned: dict[str, torch.Tensor],
                      alpha: float) -> dict[str, torch.Tensor]:
    """``(1 - alpha) * init + alpha * tuned`` per floating tensor; other tensors (counters) from ``tuned``."""
    if set(init) != set(tuned):
        missing = sorted(set(init) ^ set(tuned))[:3]
        raise ValueError(f"state dicts do not match (e.g. {missing})")
    out = {}
    for k, t in tuned.items():
        a = init[k]
        if a.shape != t.shape:
            raise ValueError(f"{k}: shape {tuple(a.shape)} vs {tuple(t.shape)}")
        out[k] = torch.lerp(a.to(t.dtype), t, alpha) if t.is_floating_point() else t.clone()
    return out


def interpolate_run(run: Path, out: Path, alpha: float, init: str | None = None) -> Path:
    """Write a run folder at ``out`` holding ``run`` interpolated toward its ``--init`` model file."""
    from .train import build_model
    from .warmstart import load_onnx_weights

    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    cfg = json.loads((run / "config.json").read_text())
    init = init or cfg.get("init")
    if not init:
        raise ValueError(f"{run}: the run did not start from an ONNX model (no 'init' in config.json); give --init")
    if out.resolve() == run.resolve():
        raise ValueError(f"{out}: the output folder must differ from the run folder")
    state = torch.load(run / "last.pt", map_location="cpu", weights_only=True)
    base = build_model({**cfg, "weights": "none"}, run)
    load_onnx_weights(base, init)
    mixed = interpolate_state(base.state_dict(), state["model"], alpha)
    out.mkdir(parents=True, exist_ok=True)
    cmd = (f"python -m ccu_vision.train.interpolate --run {shlex.quote(str(run))} --alpha {alpha:g} "
           f"--out {shlex.quote(str(out))}")
    prev = cfg.get("train_command", "")
    cfg = {**cfg, "interpolated": {"run": str(run), "init": str(init), "alpha": alpha, "steps": int(state["step"])},
           "train_command": f"{prev} && {cmd}" if prev else cmd}
    tmp = out / "last.pt.tmp"
    torch.save({"model": mixed, "step": state["step"]}, tmp)
    tmp.replace(out / "last.pt")
    (out / "config.json").write_text(json.dumps(cfg, indent=2))
    log.info("wrote %s: %.2f x %s + %.2f x %s", out, alpha, run, 1 - alpha, init)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ccu_vision.train.interpolate", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help="training run folder (config.json + last.pt) started with --init")
    ap.add_argument("--alpha", type=float, required=True, help="weight of the fine-tune (1 = the run, 0 = its init)")
    ap.add_argument("--out", required=True, help="output run folder")
    ap.add_argument("--init", help="ONNX model the run started from (default: the run's config 'init')")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        interpolate_run(Path(args.run), Path(args.out), args.alpha, args.init)
    except (ValueError, FileNotFoundError) as e:
        ap.exit(2, f"error: {e}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
