"""Experiment: open-set normalisation of logo scores (cohort / background normalisation).

    python scripts/logo_score_norm.py --model ccu_vision/models/ccu-lite0-v2.onnx \
        --evalset out/eval-calib --evalset out/eval-test --photos ../shared/datasets/clothing-dataset-small

Negatives (listings with an unregistered mark or none) reach logo scores as high as many correct
matches, which caps TPR at 1 % FPR. Two classic remedies from verification are measured here on the
scan's exact two-stage scores (:func:`ccu_vision.embedder.dense_logo_scores` arithmetic):

* **query-side cohort**: compare the listing's regions and crops with a cohort of *other* known marks
  (the simple-icons training brands, never registered or unregistered in the eval sets) and
  subtract the cohort similarity (per photo ``Q``, per reference's best region/crop ``P``, or only
  where the cohort beats the reference ``Pmarg``/``Qmarg``);
* **reference-side background**: how strongly each reference fires on plain photos (regions of
  training-split photos without marks): subtract ``beta`` times its top-1 / 99.9th percentile /
  top-10 mean background similarity, or scale by it (``mult``, foldable into the stored vector).

Prints recall@1, recall@5, AP and TPR@1%FPR per variant and evaluation set. Decide on the
calibration set; read the test set only to confirm.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

from ccu_vision.embedder import REFINE_CROPS, Embedder, best_per_reference
from ccu_vision.evalset import read_truth
from ccu_vision.evaluate import eval_references, logo_metrics
from ccu_vision.logos import brands, logo_rgba, reference_color, render_mask
from ccu_vision.photos import list_photos


def dump(emb: Embedder, root: Path, cohort: np.ndarray) -> dict:
    """Per logo query: registered-reference region/crop scores and the cohort similarities."""
    slugs, refs, owner = eval_references(emb, root)
    n = len(slugs)
    views = [refs[owner == i] for i in range(n)]
    rows = [t for t in read_truth(root) if t["task"] == "logo"]
    rb, ra, cb, cohr_best, cohc_best = [], [], [], [], []
    for i in range(0, len(rows), 32):
        ims = [Image.open(root / t["query"]).convert("RGB") for t in rows[i : i + 32]]
        for e in emb.embed_photos(ims):
            sim = e.regions @ refs.T
            b, a = best_per_reference(sim, owner, n)
            top = np.argsort(-sim.max(1), kind="stable")[:REFINE_CROPS]
            crops = e.crops(top)
            c, ca = best_per_reference(crops @ refs.T, owner, n)
            coh_region = (e.regions @ cohort.T).max(1)  # [R] best cohort similarity per region
            coh_crop = (crops @ cohort.T).max(1)  # [crops]
            rb.append(b)
            ra.append(a)
            cb.append(c)
            cohr_best.append((coh_region[a], coh_region[top].max()))
            cohc_best.append((coh_crop[ca], coh_crop.max()))
    return {"slugs": slugs, "rows": rows, "views": views, "region": np.array(rb), "crop": np.array(cb),
            "coh_ref": 0.5 * (np.array([x[0] for x in cohr_best]) + np.array([x[0] for x in cohc_best])),
            "coh_q": 0.5 * (np.array([x[1] for x in cohr_best]) + np.array([x[1] for x in cohc_best]))}


def metrics(d: dict, score: np.ndarray) -> str:
    ranked = []
    for q in range(len(score)):
        o = np.argsort(-score[q])[:10]
        ranked.append([(d["slugs"][j], float(score[q, j])) for j in o])
    m = logo_metrics(d["rows"], ranked)
    return " ".join(f"{k}={m[k]:.3f}" for k in ("recall@1", "recall@5", "ap", "tpr@0.01fpr"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--evalset", action="append", required=True)
    ap.add_argument("--photos", required=True, help="photo folder; its train split gives the background bank")
    ap.add_argument("--bank-photos", type=int, default=160)
    args = ap.parse_args()
    emb = Embedder(args.model)
    tb = brands("train")
    cohort = np.concatenate([np.concatenate(emb.embed_logo_views(
        [logo_rgba(render_mask(b, 256), reference_color(b)) for b in tb[i : i + 64]])) for i in range(0, len(tb), 64)])
    photos = list_photos(Path(args.photos) / "train")
    pick = np.random.default_rng(0).choice(len(photos), args.bank_photos, replace=False)
    bank = np.concatenate([e.regions for i in range(0, len(pick), 16) for e in
                           emb.embed_photos([Image.open(photos[j]).convert("RGB") for j in pick[i : i + 16]])])
    print(f"cohort {cohort.shape} (training brands), background bank {bank.shape} ({args.bank_photos} photos)")
    for root in map(Path, args.evalset):
        d = dump(emb, root, cohort)
        s = 0.5 * (d["region"] + d["crop"])
        bsim = [v @ bank.T for v in d["views"]]  # [views, bank] per reference
        stat = {"top1": np.array([x.max(1).max() for x in bsim]),
                "q999": np.array([np.quantile(x, 0.999, axis=1).max() for x in bsim]),
                "top10": np.array([np.sort(x, 1)[:, -10:].mean(1).max() for x in bsim])}
        print(f"== {root} ({json.loads((root / 'set.json').read_text())['config']['split']} split)")
        print(f"{'base':<22}{metrics(d, s)}")
        for a in (0.25, 0.5, 1.0):
            print(f"{'cohort Q ' + str(a):<22}{metrics(d, s - a * d['coh_q'][:, None])}")
            print(f"{'cohort P ' + str(a):<22}{metrics(d, s - a * d['coh_ref'])}")
            print(f"{'cohort Pmarg ' + str(a):<22}{metrics(d, s - a * np.maximum(0, d['coh_ref'] - s))}")
            print(f"{'cohort Qmarg ' + str(a):<22}{metrics(d, s - a * np.maximum(0, d['coh_q'][:, None] - s))}")
        for k, v in stat.items():
            for b in (0.25, 0.5, 1.0):
                print(f"{'bg ' + k + ' ' + str(b):<22}{metrics(d, s - b * v[None])}")
        for g in (0.5, 1.0):
            print(f"{'bg mult ' + str(g):<22}{metrics(d, s * (np.median(stat['top1']) / stat['top1'][None]) ** g)}")


if __name__ == "__main__":
    main()
