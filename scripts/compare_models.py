"""Score several exported models on one named evaluation draw, side by side, in one run.

    python scripts/compare_models.py --set calib2 out/ccu-lite0-v7d.onnx out/ccu-lite0-v5d.onnx
    python scripts/compare_models.py --set lettered-calib out/ccu-lite0-v7d.onnx out/ccu-lite0-v5d.onnx

Sets (built under out/eval-<name> on first use from the photo folder; all on held-out brands):
  test            the test split (the benchmark's draw: test photos, seed 1234), read once after a decision
  calib           the calibration split (as ``python -m ccu_vision.train.calibrate`` builds it)
  calib2          icons, validation photos, seed 778: 1,200 positives, 2,000 negatives (larger calibration draw)
  calib3          as calib2 with seed 783 (a fresh decision draw, first used by fusion-quadratic-plan.md)
  calib4          as calib2 with seed 784 (a fresh decision draw, first used by light-view-plan.md)
  lettered-calib  lettered marks (brand names in held-out serif fonts, alone or with the symbol), validation photos
  lettered-calib2 as lettered-calib with seed 785 (a fresh decision draw, first used by text-evidence-plan.md)
  lettered-test   the same on test photos and another seed (read once, after a decision)
  badge-calib     references uploaded as two-colour badge artwork (mark knocked out of a brand-colour badge), badges in the listings
  badge-test      the same on test photos and another seed (read once, after a decision)
  clutter-calib   every listing first printed with packaging clutter (panels, made-up lettering in held-out fonts)
  clutter-test    the same on test photos and another seed (read once, after a decision)
  lowcontrast-calib  every mark (registered and unregistered) tone-on-tone (embossed) or filled with fabric texture
  lowcontrast-test   the same on test photos and another seed (read once, after a decision)
Prints one JSON line per model: logo recall@1/@5, AP, TPR@1%FPR with 95 % bootstrap intervals, near-dup muAP.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from ccu_vision.embedder import CROP_MARGIN, Embedder, square_view
from ccu_vision.evalset import EvalConfig, build_eval_set, read_truth
from ccu_vision.evaluate import dup_metrics, logo_metrics, rank_with_embedder

SETS = {
    "test": EvalConfig(),  # the test split (the benchmark's default draw), read once after a decision
    "calib": EvalConfig(split="validation", seed=777, n_products=120, n_lookalikes=150),  # out/eval-calib
    "calib2": EvalConfig(split="validation", seed=778, n_brands=300, pos_per_brand=4, n_unregistered=1200,
                         n_clean=800, n_products=120, n_lookalikes=150),
    "calib3": EvalConfig(split="validation", seed=783, n_brands=300, pos_per_brand=4, n_unregistered=1200,
                         n_clean=800, n_products=120, n_lookalikes=150),
    "calib4": EvalConfig(split="validation", seed=784, n_brands=300, pos_per_brand=4, n_unregistered=1200,
                         n_clean=800, n_products=120, n_lookalikes=150),
    "lettered-calib": EvalConfig(split="validation", seed=779, n_brands=300, pos_per_brand=2, n_unregistered=300,
                                 n_clean=200, n_products=30, n_lookalikes=30, marks="lettered"),
    "lettered-calib2": EvalConfig(split="validation", seed=785, n_brands=300, pos_per_brand=2, n_unregistered=300,
                                  n_clean=200, n_products=30, n_lookalikes=30, marks="lettered"),
    "lettered-test": EvalConfig(split="test", seed=1235, n_brands=300, pos_per_brand=2, n_unregistered=300,
                                n_clean=200, n_products=30, n_lookalikes=30, marks="lettered"),
    "badge-calib": EvalConfig(split="validation", seed=780, n_brands=300, pos_per_brand=2, n_unregistered=300,
                              n_clean=200, n_products=30, n_lookalikes=30, ref_style="badge"),
    "badge-test": EvalConfig(split="test", seed=1236, n_brands=300, pos_per_brand=2, n_unregistered=300,
                             n_clean=200, n_products=30, n_lookalikes=30, ref_style="badge"),
    "clutter-calib": EvalConfig(split="validation", seed=781, n_brands=300, pos_per_brand=2, n_unregistered=300,
                                n_clean=200, n_products=30, n_lookalikes=30, clutter=1.0),
    "clutter-test": EvalConfig(split="test", seed=1237, n_brands=300, pos_per_brand=2, n_unregistered=300,
                               n_clean=200, n_products=30, n_lookalikes=30, clutter=1.0),
    "lowcontrast-calib": EvalConfig(split="validation", seed=782, n_brands=300, pos_per_brand=2, n_unregistered=300,
                                    n_clean=200, n_products=30, n_lookalikes=30, styles=("tone", "texture")),
    "lowcontrast-test": EvalConfig(split="test", seed=1238, n_brands=300, pos_per_brand=2, n_unregistered=300,
                                   n_clean=200, n_products=30, n_lookalikes=30, styles=("tone", "texture")),
}


KEYS = ("recall@1", "recall@5", "ap", "tpr@0.01fpr")
DEFAULT_MODEL = "ccu_vision/models/ccu-lite0-v15cdpft3.onnx"


def one_model_args(doc: str, many_sets: bool = False) -> argparse.ArgumentParser:
    """The arguments every single-model measurement script takes: --set (repeatable with ``many_sets``),
    --photos, --model."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--set", required=True, choices=sorted(SETS), action="append" if many_sets else "store")
    ap.add_argument("--photos", default="../shared/datasets/clothing-dataset-small")
    ap.add_argument("--model", default=DEFAULT_MODEL)
    return ap


def decision_rule(new: dict[str, dict], base: dict[str, dict], decide: str, no_harm: list[str]) -> tuple[bool, bool, str]:
    """The rule the 2026-12-03 inference plans fixed, on per-draw logo metrics of a variant and its base:
    (1) on the decision draw TPR@1%FPR >= base + 0.02, AP >= base - 0.005, R@1 >= base - 0.005;
    (2) on the no-harm draws the mean TPR not below base's and no R@1 or AP more than 0.01 below.
    Returns both verdicts and a printable line."""
    n, b = new[decide], base[decide]
    rule1 = (n["tpr@0.01fpr"] >= b["tpr@0.01fpr"] + 0.02 and n["ap"] >= b["ap"] - 0.005
             and n["recall@1"] >= b["recall@1"] - 0.005)
    mean_new, mean_base = (float(np.mean([r[d]["tpr@0.01fpr"] for d in no_harm])) if no_harm else float("nan")
                           for r in (new, base))
    rule2 = bool(no_harm) and mean_new >= mean_base and all(
        new[d][k] >= base[d][k] - 0.01 for d in no_harm for k in ("recall@1", "ap"))
    line = (f"{decide}: TPR {n['tpr@0.01fpr']:.4f} (base {b['tpr@0.01fpr']:.4f}) AP {n['ap']:.4f} (base {b['ap']:.4f}) "
            f"R@1 {n['recall@1']:.4f} (base {b['recall@1']:.4f}) -> rule 1 {'pass' if rule1 else 'fail'}; "
            f"no-harm mean TPR {mean_new:.4f} (base {mean_base:.4f}) -> rule 2 {'pass' if rule2 else 'fail'}")
    return rule1, rule2, line


def logo_queries(args: argparse.Namespace) -> tuple[Path, list[dict], list[dict], Embedder]:
    """What every single-model logo script starts from: the named draw (built on first use), its truth,
    its logo queries (truth order) and the model (``--set``/``--photos``/``--model``)."""
    root = build_eval_set(f"out/eval-{args.set}", SETS[args.set], args.photos)
    truth = read_truth(root)
    return root, truth, [t for t in truth if t["task"] == "logo"], Embedder(args.model)


def true_box_crop(emb: Embedder, im, box: list[float]) -> np.ndarray:
    """A mark's true box (truth row ``box``) cut out as the scan cuts a proposal: square, margin 0.15,
    letterboxed to the reference size (uint8)."""
    x0, y0, x1, y1 = box
    side = max(x1 - x0, y1 - y0) * (1 + 2 * CROP_MARGIN)
    return square_view(im, (x0 + x1) / 2, (y0 + y1) / 2, side, emb.ref_size, emb.interp)


def score_line(truth: list[dict], slugs: list[str], scores: np.ndarray, keys: tuple[str, ...] = KEYS) -> str:
    """Logo metrics of a [queries, references] score matrix (rows in the truth's logo-query order) as
    one printable line: the chosen metrics, then the bootstrap intervals."""
    assert scores.ndim == 2 and scores.shape[1] == len(slugs), (scores.shape, len(slugs))
    top = np.argsort(-scores, axis=1, kind="stable")[:, :10]
    lm = logo_metrics(truth, [[(slugs[j], float(r[j])) for j in o] for r, o in zip(scores, top)])
    return json.dumps({k: round(lm[k], 4) for k in keys}) + " ci " + json.dumps(lm["ci95"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--set", required=True, choices=sorted(SETS))
    ap.add_argument("--photos", default="../shared/datasets/clothing-dataset-small")
    ap.add_argument("--query-size", type=int, action="append",
                    help="score at this query size instead of the file's (repeatable: one line per size)")
    ap.add_argument("--region-scales", action="append",
                    help="pool regions of these cell sizes instead of the file's, e.g. 1,2,3,4,5 (repeatable)")
    ap.add_argument("models", nargs="+")
    args = ap.parse_args()
    t = time.time()
    root = build_eval_set(f"out/eval-{args.set}", SETS[args.set], args.photos)
    print("set", root, round(time.time() - t), "s", flush=True)
    truth = read_truth(root)
    scales = [[int(k) for k in r.split(",")] for r in args.region_scales] if args.region_scales else [None]
    runs = [(m, q, r) for m in args.models for q in (args.query_size or [None]) for r in scales]
    for m, size, regions in runs:
        t = time.time()
        emb = Embedder(m)
        emb.set_layout(size, regions)
        lr, dr, _ = rank_with_embedder(emb, root)
        lm, dm = logo_metrics(truth, lr), dup_metrics(truth, dr)
        print(m, f"query {emb.query_size} regions {regions or 'file'}", json.dumps({k: round(lm[k], 4) for k in ("recall@1", "recall@5", "ap", "tpr@0.01fpr")}),
              "ci", json.dumps(lm["ci95"]), "muap", round(dm["muap"], 4), round(time.time() - t), "s", flush=True)


if __name__ == "__main__":
    main()
