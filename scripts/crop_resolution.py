"""Logo metrics with the crop stage cut from the decoded photo instead of the 384-px canvas (no training).

    python scripts/crop_resolution.py --set calib
    python scripts/crop_resolution.py --set calib2

Plan and rule: ``notebooks/results/experiments/crop-resolution-plan.md``. The proposals (top regions
by similarity), their square geometry (margin 0.15, black beyond the image) and the score formula are
the scan's; only the pixels change: ``base`` (the canvas, as the scan), ``orig`` (the photo as
decoded), ``cap576`` (the photo downscaled to 576 px long side first). One JSON line per variant.
"""

from __future__ import annotations

import time

import numpy as np
from compare_models import KEYS, logo_queries, one_model_args, score_line  # scripts/ is on sys.path
from PIL import Image

from ccu_vision.embedder import CROP_MARGIN, REFINE_CROPS, Embedder, best_per_reference, square_view
from ccu_vision.evaluate import eval_references
from ccu_vision.preprocess import interpolation

CAPS = {"orig": None, "cap576": 576}


def photo_crops(emb: Embedder, im: Image.Image, canvas_boxes: np.ndarray, lb, cap: int | None) -> np.ndarray:
    """The canvas boxes mapped back (unclipped) onto the photo, optionally downscaled to ``cap`` px
    long side, and cut exactly as ``Embedder.crop_views`` cuts them from the canvas."""
    assert canvas_boxes.ndim == 2 and canvas_boxes.shape[1] == 4, canvas_boxes.shape
    s = 1.0
    if cap is not None and max(im.size) > cap:
        s = cap / max(im.size)
        im = im.resize((max(1, round(im.width * s)), max(1, round(im.height * s))), interpolation(emb.interp))
    views = []
    for x0, y0, x1, y1 in canvas_boxes.astype(np.float64):
        bx = (np.array([x0, x1]) - lb.ox) / lb.scale * s
        by = (np.array([y0, y1]) - lb.oy) / lb.scale * s
        side = max(bx[1] - bx[0], by[1] - by[0]) * (1 + 2 * CROP_MARGIN)
        views.append(square_view(im, bx.mean(), by.mean(), side, emb.ref_size, emb.interp))
    return np.stack(views)


def main() -> None:
    ap = one_model_args(__doc__)
    args = ap.parse_args()
    root, truth, rows, emb = logo_queries(args)
    t0 = time.time()
    slugs, refs, owner = eval_references(emb, root)
    n = len(slugs)
    scores: dict[str, list[np.ndarray]] = {name: [] for name in ["base", *CAPS]}
    cut_s = dict.fromkeys(scores, 0.0)
    for i in range(0, len(rows), 32):
        ims = [Image.open(root / t["query"]).convert("RGB") for t in rows[i : i + 32]]
        canvases, lbs = emb.photo_canvases(ims)
        for im, e, lb in zip(ims, emb.embed_canvases(canvases, lbs), lbs):
            sim = e.regions @ refs.T
            region, _ = best_per_reference(sim, owner, n)
            top = np.argsort(-sim.max(1), kind="stable")[:REFINE_CROPS]
            canvas_boxes = e.crop_views.__defaults__[2][top]  # the scan's own canvas boxes of these regions
            views = {}
            tc = time.time()
            views["base"] = e.crop_views(top)
            cut_s["base"] += time.time() - tc
            for name, cap in CAPS.items():
                tc = time.time()
                views[name] = photo_crops(emb, im, canvas_boxes, lb, cap)
                cut_s[name] += time.time() - tc
            vecs = emb.embed_views(np.concatenate(list(views.values())))
            for j, name in enumerate(views):
                crop, _ = best_per_reference(vecs[j * len(top) : (j + 1) * len(top)] @ refs.T, owner, n)
                scores[name].append(0.5 * (region + crop))
    print("set", root, "model", args.model, f"{len(rows)} queries scored in {time.time() - t0:.0f} s; "
          "cutting crops, ms per photo: " + ", ".join(f"{k} {1000 * v / len(rows):.1f}" for k, v in cut_s.items()), flush=True)
    for name, s in scores.items():
        print(f"{name:<8}", score_line(truth, slugs, np.stack(s), KEYS), flush=True)


if __name__ == "__main__":
    main()
