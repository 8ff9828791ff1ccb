"""Logo metrics for three ways of indexing a logo's dark view, from one embedding pass over the queries.

    python scripts/mono_view_compare.py --set badge-calib

Indexes: ``silhouette`` (own colours + the alpha silhouette in black: the scan before 2026-12-01),
``ink`` (own colours + ``embedder.monochrome``: white parts of multi-colour artwork stay knocked out)
and ``colour-only``. Plan: ``notebooks/results/experiments/multicolour-mono-view-plan.md``.
Sets as in ``compare_models.py``.
"""

from __future__ import annotations

import json
import time

import numpy as np
from compare_models import SETS, one_model_args, score_line  # scripts/ is on sys.path when run as a script
from PIL import Image

from ccu_vision.embedder import Embedder, dense_logo_scores, monochrome, silhouette
from ccu_vision.evalset import build_eval_set, read_truth


def views(emb: Embedder, ims: list[Image.Image], dark) -> tuple[np.ndarray, np.ndarray]:
    """Reference vectors [V, D] and owners: each logo in its colours plus ``dark(logo)`` unless identical
    (the rule of ``Embedder.embed_logo_views``); ``dark=None``: colours only."""
    a = emb.embed_logos(ims)
    if dark is None:
        return a, np.arange(len(ims))
    b = emb.embed_logos([dark(im) for im in ims])
    vecs, owner = [], []
    for i in range(len(ims)):
        vecs.append(a[i])
        owner.append(i)
        if float(a[i] @ b[i]) <= 0.9999:
            vecs.append(b[i])
            owner.append(i)
    return np.stack(vecs), np.asarray(owner)


def main() -> None:
    ap = one_model_args(__doc__)
    args = ap.parse_args()
    root = build_eval_set(f"out/eval-{args.set}", SETS[args.set], args.photos)
    truth = read_truth(root)
    emb = Embedder(args.model)
    slugs = sorted(p.stem for p in (root / "logos").glob("*.png"))
    logos = [Image.open(root / "logos" / f"{s}.png") for s in slugs]
    indexes = {"silhouette": views(emb, logos, silhouette), "ink": views(emb, logos, monochrome),
               "colour-only": views(emb, logos, None)}
    assert np.allclose(indexes["ink"][0], np.concatenate(emb.embed_logo_views(logos))), "ink is what the scan indexes"
    rows = [t for t in truth if t["task"] == "logo"]
    scores = {k: [] for k in indexes}
    t0 = time.time()
    for i in range(0, len(rows), 32):
        for e in emb.embed_photos([Image.open(root / t["query"]).convert("RGB") for t in rows[i : i + 32]]):
            for k, (refs, owner) in indexes.items():
                scores[k].append(dense_logo_scores(e, refs, owner)[0])
    print("set", root, "model", args.model, "scored in", round(time.time() - t0), "s;",
          json.dumps({k: round(len(r) / len(slugs), 2) for k, (r, _) in indexes.items()}), "vectors per logo", flush=True)
    for k, s in scores.items():
        print(f"{k:<12}", score_line(truth, slugs, np.stack(s)), flush=True)


if __name__ == "__main__":
    main()
