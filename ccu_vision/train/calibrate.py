"""``python -m ccu_vision.train.calibrate``: calibrate a model's flag thresholds and store them in the file.

    python -m ccu_vision.train.calibrate --model runs/v1/model.onnx --evalset out/eval-calib

Thresholds are the lowest scores at which the model's top-1 predictions on a held-out calibration
set (held-out brands, the photo folder's ``validation`` split) reach the target precision (0.95).
They are written into the ONNX metadata (``ccu.thresholds``) together with the calibration
numbers, so every catalog built with the model starts from them. Near-duplicate scores are
calibrated with keypoint verification (:mod:`ccu_vision.verify`), whose settings are written into the
file as ``ccu.dup_verify`` first (``--no-verify``: the global descriptor alone).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from ..embedder import Embedder
from ..evalset import EvalConfig, build_eval_set, read_truth
from ..evaluate import dup_metrics, logo_metrics, rank_with_embedder
from ..verify import VerifyConfig
from .export import set_thresholds

log = logging.getLogger(__name__)

CALIB_CONFIG = EvalConfig(split="validation", seed=777, n_brands=300, n_products=120, n_lookalikes=150)


def calibrate_model(model: Path, evalset: Path, precision: float = 0.95,
                    verify: VerifyConfig | None = VerifyConfig()) -> dict:  # noqa: B008 - frozen dataclass
    """Compute thresholds on ``evalset`` and write them into ``model``; returns them with the calibration metrics."""
    # the scoring the thresholds are calibrated for travels with them ("" = global descriptor only)
    set_thresholds(model, Embedder(model).info.thresholds, {"dup_verify": json.dumps(verify.to_dict()) if verify else ""})
    emb = Embedder(model)
    truth = read_truth(evalset)
    lr, dr, _ = rank_with_embedder(emb, evalset)
    lm, dm = logo_metrics(truth, lr, precision=precision), dup_metrics(truth, dr, precision=precision)
    th = {
        "logo": round(lm["threshold@p95"], 5),
        "near_duplicate": round(dm["threshold@p95"], 5),
        "precision": precision,
        "calibrated_on": json.loads((evalset / "set.json").read_text())["config"],
        "recall_at_threshold": {"logo": round(lm["recall@p95"], 4), "near_duplicate": round(dm["recall@p95"], 4)},
    }
    if verify is not None:
        th["dup_scoring"] = verify.key()  # what the near-duplicate threshold is a threshold of
    set_thresholds(model, th)
    return {"thresholds": th, "logo": lm, "dup": dm}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="ccu-vision calibrate", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, type=Path)
    ap.add_argument("--evalset", type=Path, default=Path("out/eval-calib"))
    ap.add_argument("--photos", help="photo folder for building the calibration set if missing")
    ap.add_argument("--precision", type=float, default=0.95)
    ap.add_argument("--no-verify", action="store_true",
                    help="score near-duplicates by the global descriptor alone (no windows, no keypoints)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    build_eval_set(args.evalset, CALIB_CONFIG, args.photos)
    res = calibrate_model(args.model, args.evalset, args.precision, None if args.no_verify else VerifyConfig())
    print(json.dumps(res["thresholds"], indent=2))
    lm, dm = res["logo"], res["dup"]
    print(f"calibration set: logo R@1 {lm['recall@1']:.3f} R@5 {lm['recall@5']:.3f} AP {lm['ap']:.3f} "
          f"TPR@1%FPR {lm['tpr@0.01fpr']:.3f} | near-dup muAP {dm['muap']:.3f} R@P90 {dm['recall@p90']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
