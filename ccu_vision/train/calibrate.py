"""``python -m ccu_vision.train.calibrate``: calibrate a model's flag thresholds and store them in the file.

    python -m ccu_vision.train.calibrate --model runs/v1/model.onnx --evalset out/eval-calib

Thresholds are the lowest scores at which the model's top-1 predictions on a held-out calibration
set (held-out brands, the photo folder's ``validation`` split) reach the target precision (0.95)
*and* flag at most 1 % of its negatives (``--max-fpr``; precision alone depends on the set's mix of
positives and negatives, which a real dump does not share) - with 95 % confidence
(``--fpr-confidence``): a one-sided Clopper-Pearson bound, so a 500-negative set may flag 1 of them,
not the 5 an empirical 1 % quantile allows (whose true rate can be far above 1 %).
Several ``--evalset`` draws (other brands, photos or mark kinds, all from held-out brands and the
``validation`` photos) are pooled: one threshold over all their queries, so it reflects more than one
draw of brands and photos (a threshold fitted to one draw can flag well above 1 % on another).
They are written into the ONNX metadata (``ccu.thresholds``) together with the calibration
numbers, so every catalog built with the model starts from them. Near-duplicate scores are
calibrated with keypoint verification (:mod:`ccu_vision.verify`), whose settings are written into the
file as ``ccu.dup_verify`` first (``--no-verify``: the global descriptor alone).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..embedder import Embedder
from ..evalset import EvalConfig, build_eval_set, read_truth
from ..evaluate import dup_metrics, logo_metrics, rank_with_embedder
from ..thresholds import negative_quantile
from ..verify import VerifyConfig
from .export import append_command, set_thresholds

log = logging.getLogger(__name__)

CALIB_CONFIG = EvalConfig(split="validation", seed=777, n_brands=300, n_products=120, n_lookalikes=150)


def _recall_at(truth: list[dict], ranked: list, task: str, threshold: float) -> float:
    """Share of the task's positives whose top-1 is right and scores at or above ``threshold``."""
    rows = [t for t in truth if t["task"] == task]
    key = "brand" if task == "logo" else "product"
    pos = [(t, r) for t, r in zip(rows, ranked, strict=True) if t[key]]
    hit = [bool(r) and r[0][0] == t[key] and r[0][1] >= threshold for t, r in pos]
    return float(np.mean(hit)) if hit else 0.0


def calibrate_model(model: Path, evalset: Path | Sequence[Path], precision: float = 0.95,
                    verify: VerifyConfig | None = VerifyConfig(),  # noqa: B008 - frozen dataclass
                    max_fpr: float = 0.01, fpr_confidence: float | None = 0.95,
                    command: list[str] | None = None) -> dict:
    """Compute thresholds on ``evalset`` (one set, or several pooled) and write them into ``model``.

    ``command`` (the calibrate arguments) is appended to the file's ``ccu.train_command``.
    Returns the thresholds with the calibration metrics (of the pooled queries).
    """
    sets = [Path(evalset)] if isinstance(evalset, (str, Path)) else [Path(e) for e in evalset]
    if not sets:
        raise ValueError("no calibration set given")
    # the scoring the thresholds are calibrated for travels with them ("" = global descriptor only)
    set_thresholds(model, Embedder(model).info.thresholds, {"dup_verify": json.dumps(verify.to_dict()) if verify else ""})
    emb = Embedder(model)
    truth, lr, dr = [], [], []
    for es in sets:  # each set is ranked against its own references; the top-1 scores are pooled
        t = read_truth(es)
        lr_i, dr_i, _ = rank_with_embedder(emb, es)
        assert len(lr_i) == sum(r["task"] == "logo" for r in t) and len(dr_i) == sum(r["task"] == "dup" for r in t)
        truth += t
        lr += lr_i
        dr += dr_i
        log.info("%s: %d logo and %d near-duplicate queries", es, len(lr_i), len(dr_i))
    configs = [json.loads((es / "set.json").read_text())["config"] for es in sets]
    lm, dm = logo_metrics(truth, lr, precision=precision), dup_metrics(truth, dr, precision=precision)
    # precision on a calibration set depends on its mix of positives and negatives, which a real dump
    # does not share; so a threshold must also keep the negatives' flag rate at or below max_fpr
    # (negatives: listings with an unregistered or no mark; look-alike photos of the same products)
    logo_neg = [r[0][1] for t, r in zip((t for t in truth if t["task"] == "logo"), lr, strict=True)
                if t["kind"] != "registered" and r]
    dup_neg = [r[0][1] for t, r in zip((t for t in truth if t["task"] == "dup"), dr, strict=True)
               if not t["product"] and r]
    th_logo, th_dup = (max(p, negative_quantile(neg, max_fpr, fpr_confidence))
                       for p, neg in ((lm["threshold@p95"], logo_neg), (dm["threshold@p95"], dup_neg)))
    th = {
        "logo": round(th_logo, 5),
        "near_duplicate": round(th_dup, 5),
        "precision": precision,
        "max_fpr": max_fpr,
        "fpr_confidence": fpr_confidence,
        "negatives": {"logo": len(logo_neg), "near_duplicate": len(dup_neg)},
        "calibrated_on": configs[0] if len(configs) == 1 else configs,
        "recall_at_threshold": {"logo": round(_recall_at(truth, lr, "logo", th_logo), 4),
                                "near_duplicate": round(_recall_at(truth, dr, "dup", th_dup), 4)},
    }
    if verify is not None:
        th["dup_scoring"] = verify.key()  # what the near-duplicate threshold is a threshold of
    extra = None
    if command is not None:
        extra = {"train_command": append_command(emb.info.extra.get("train_command", ""),
                                                 "python -m ccu_vision.train.calibrate", command)}
    set_thresholds(model, th, extra)
    return {"thresholds": th, "logo": lm, "dup": dm}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="ccu-vision calibrate", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, type=Path)
    ap.add_argument("--evalset", type=Path, action="append",
                    help="calibration set folder (default out/eval-calib; a single set is built if missing); "
                    "repeat to pool several draws, which must exist")
    ap.add_argument("--photos", help="photo folder for building the calibration set if missing")
    ap.add_argument("--precision", type=float, default=0.95)
    ap.add_argument("--max-fpr", type=float, default=0.01, help="largest share of negatives a threshold may flag")
    ap.add_argument("--fpr-confidence", type=float, default=0.95,
                    help="confidence that the flag rate on negatives is at most --max-fpr "
                    "(Clopper-Pearson bound; 0 = the calibration sample's empirical rate)")
    ap.add_argument("--no-verify", action="store_true",
                    help="score near-duplicates by the global descriptor alone (no windows, no keypoints)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    sets = args.evalset or [Path("out/eval-calib")]
    if len(sets) == 1:  # one set: built with the calibration recipe when missing
        build_eval_set(sets[0], CALIB_CONFIG, args.photos)
    for es in sets:
        if not (es / "set.json").is_file():
            ap.error(f"{es}: not an evaluation set (no set.json); build it first (ccu_vision.evalset)")
    res = calibrate_model(args.model, sets, args.precision, None if args.no_verify else VerifyConfig(),
                          args.max_fpr, args.fpr_confidence or None,
                          command=sys.argv[1:] if argv is None else list(argv))
    print(json.dumps(res["thresholds"], indent=2))
    lm, dm = res["logo"], res["dup"]
    print(f"calibration set: logo R@1 {lm['recall@1']:.3f} R@5 {lm['recall@5']:.3f} AP {lm['ap']:.3f} "
          f"TPR@1%FPR {lm['tpr@0.01fpr']:.3f} | near-dup muAP {dm['muap']:.3f} R@P90 {dm['recall@p90']:.3f}")
    if "ci95" in lm and "ci95" in dm:
        lc, dc = lm["ci95"], dm["ci95"]
        print("95 % bootstrap intervals: " + ", ".join(
            f"{name} {lo:.3f}-{hi:.3f}" for name, (lo, hi) in (("R@1", lc["recall@1"]), ("AP", lc["ap"]),
                                                               ("TPR@1%FPR", lc["tpr@0.01fpr"]), ("muAP", dc["muap"]))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
