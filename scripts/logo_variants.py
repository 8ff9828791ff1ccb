"""Logo metrics for variants of the scan's logo scoring, from one scoring pass (no training).

    python scripts/logo_variants.py --set calib
    python scripts/logo_variants.py --set lettered-calib

Variants (plan: ``notebooks/results/experiments/logo-inference-variants-plan.md``):

* ``base`` - the scan exactly (``dense_logo_scores``): 6 proposals re-embedded as crops at margin
  0.15, references in their own colours and as a dark monochrome view;
* ``crops12`` - 12 proposals instead of 6;
* ``margin+0.4`` / ``margin+0`` - each of the 6 proposals also cropped at margin 0.4 (or 0), best kept;
* ``lowres-view`` - every reference view also indexed after a round trip through ``--lowres`` px;
* ``crops12+lowres`` - both;
* ``oracle-box`` (diagnostic, not a candidate) - the crop stage replaced, for registered marks, by
  the crop at the mark's true box (margin 0.15): the ceiling for better localisation.

Sets as in ``compare_models.py``. Prints one JSON line per variant and the measured crop cost.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from compare_models import (  # scripts/ is on sys.path when run as a script
    KEYS,
    logo_queries,
    one_model_args,
    score_line,
    true_box_crop,
)
from PIL import Image

from ccu_vision.embedder import (
    CROP_MARGIN,
    REFINE_CROPS,
    Embedder,
    best_per_reference,
    monochrome,
)
from ccu_vision.evaluate import eval_references
from ccu_vision.preprocess import interpolation

# name -> (low-res views too, proposals, margins)
VARIANTS = {
    "base": (False, REFINE_CROPS, (CROP_MARGIN,)),
    "crops12": (False, 12, (CROP_MARGIN,)),
    "margin+0.4": (False, REFINE_CROPS, (CROP_MARGIN, 0.4)),
    "margin+0": (False, REFINE_CROPS, (0.0, CROP_MARGIN)),
    "lowres-view": (True, REFINE_CROPS, (CROP_MARGIN,)),
    "crops12+lowres": (True, 12, (CROP_MARGIN,)),
}


def lowres_views(emb: Embedder, root: Path, slugs: list[str], base_owner: np.ndarray, px: int) -> tuple[np.ndarray, np.ndarray]:
    """Each reference view (own colours; monochrome where the scan keeps it) after a trip through ``px`` px."""
    canvases, owner = [], []
    n_views = np.bincount(base_owner, minlength=len(slugs))
    for i, s in enumerate(slugs):
        im = Image.open(root / "logos" / f"{s}.png")
        for view in [im, monochrome(im)][: n_views[i]]:
            c = Image.fromarray(emb.logo_canvas(view))
            small = c.resize((px, px), interpolation(emb.interp))
            canvases.append(np.asarray(small.resize((emb.ref_size, emb.ref_size), interpolation(emb.interp))))
            owner.append(i)
    return emb.embed_views(np.stack(canvases)), np.asarray(owner, np.int64)


def main() -> None:
    ap = one_model_args(__doc__)
    ap.add_argument("--lowres", type=int, default=32, help="side of the low-resolution reference round trip")
    args = ap.parse_args()
    root, truth, rows, emb = logo_queries(args)
    slugs, base, base_owner = eval_references(emb, root)
    low, low_owner = lowres_views(emb, root, slugs, base_owner, args.lowres)
    both, both_owner = np.concatenate([base, low]), np.concatenate([base_owner, low_owner])
    n = len(slugs)
    scores = {name: [] for name in [*VARIANTS, "oracle-box"]}
    t0, crop_s, n_crops = time.time(), 0.0, 0
    for i in range(0, len(rows), 32):
        batch = rows[i : i + 32]
        ims = [Image.open(root / t["query"]).convert("RGB") for t in batch]
        for t, im, e in zip(batch, ims, emb.embed_photos(ims)):
            sim_base, sim_low = e.regions @ base.T, e.regions @ low.T
            order = {False: np.argsort(-sim_base.max(1), kind="stable"),
                     True: np.argsort(-np.maximum(sim_base.max(1), sim_low.max(1)), kind="stable")}
            need: dict[float, set[int]] = {}
            for lowres, k, margins in VARIANTS.values():
                for m in margins:
                    need.setdefault(m, set()).update(order[lowres][:k].tolist())
            tc = time.time()
            crops = {}
            for m, idx in need.items():
                idx = sorted(idx)
                for j, v in zip(idx, e.crops(np.asarray(idx), m)):
                    crops[(j, m)] = v
                n_crops += len(idx)
            crop_s += time.time() - tc
            region = {False: best_per_reference(sim_base, base_owner, n)[0],
                      True: best_per_reference(np.concatenate([sim_base, sim_low], 1), both_owner, n)[0]}
            for name, (lowres, k, margins) in VARIANTS.items():
                refs, owner = (both, both_owner) if lowres else (base, base_owner)
                cv = np.stack([crops[(j, m)] for j in order[lowres][:k] for m in margins])
                scores[name].append(0.5 * (region[lowres] + best_per_reference(cv @ refs.T, owner, n)[0]))
            if t["kind"] == "registered":
                ov = emb.embed_views(true_box_crop(emb, im, t["box"])[None])
                scores["oracle-box"].append(0.5 * (region[False] + best_per_reference(ov @ base.T, base_owner, n)[0]))
            else:
                scores["oracle-box"].append(scores["base"][-1])
    print("set", root, "model", args.model, "scored in", round(time.time() - t0), "s;",
          f"{n_crops} crops embedded, {1000 * crop_s / max(n_crops, 1):.1f} ms per crop (all margins, batched per photo)",
          f"; reference vectors per logo: {len(base) / n:.2f} (base), {len(both) / n:.2f} (with low-res)", flush=True)
    for name, s in scores.items():
        keys = ("recall@1",) if name == "oracle-box" else KEYS
        print(f"{name:<15}", score_line(truth, slugs, np.stack(s), keys), flush=True)


if __name__ == "__main__":
    main()
