"""Logo metrics with each registered logo also indexed as it looks printed on a product (no training).

    python scripts/printed_views.py --set calib
    python scripts/printed_views.py --set calib2

Plan and rule: ``notebooks/results/experiments/printed-reference-views-plan.md``. Every logo gets K
"printed" views: its ink mask placed by ``synth.place_mark`` (30 % of the short side, centred) on the
same K procedural surfaces for every brand, styles print -> tone -> outline, rng seeded by the view
index only; cut at the placed box as the scan cuts a proposal and embedded with ``embed_views``.
Variants: ``base`` (the scan), ``printed3`` (3 views, both stages), ``printed3-crops`` (3 views, crop
stage only), ``printed6`` (6 views, both stages). One JSON line per variant.
"""

from __future__ import annotations

import time

import numpy as np
from compare_models import KEYS, logo_queries, one_model_args, score_line  # scripts/ is on sys.path
from PIL import Image

from ccu_vision import synth
from ccu_vision.embedder import (
    CROP_MARGIN,
    REFINE_CROPS,
    Embedder,
    best_per_reference,
    monochrome,
    square_view,
)
from ccu_vision.evaluate import eval_references
from ccu_vision.photos import procedural_photos

PRINT_STYLES = ("print", "tone", "outline")
SURFACE_SIDE = 384
SIZE_FRAC = 0.3


def ink_mask(img: Image.Image, side: int = 256) -> np.ndarray:
    """The logo's ink as an alpha mask in [0, 1], trimmed to its extent, long side ``side`` px."""
    a = np.asarray(monochrome(img).convert("RGBA"))[:, :, 3]
    ys, xs = np.nonzero(a > 16)
    if len(ys) == 0:
        return np.ones((side, side), np.float32)
    a = a[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    h, w = a.shape
    s = side / max(h, w)
    m = Image.fromarray(a).resize((max(1, round(w * s)), max(1, round(h * s))), Image.Resampling.BILINEAR)
    return np.asarray(m, np.float32) / 255.0


def printed_views(emb: Embedder, images: list[Image.Image], k: int) -> tuple[np.ndarray, np.ndarray]:
    """K printed views of each logo: ([n*k, D] vectors, [n*k] owner)."""
    surfaces = procedural_photos(k, SURFACE_SIDE, seed=0)
    canv, owner = [], []
    for i, im in enumerate(images):
        m = ink_mask(im)
        for v in range(k):
            rng = np.random.default_rng(10_000 + v)
            surf = surfaces[v]
            H, W = surf.shape[:2]
            size = int(min(H, W) * SIZE_FRAC)
            out, pl = synth.place_mark(surf, m, size, rng, (0, 0, 0), style=PRINT_STYLES[v % 3],
                                       xy=(W // 2 - size // 2, H // 2 - size // 2), occlude=0.0)
            x0, y0, x1, y1 = pl.box
            side = max(x1 - x0, y1 - y0) * (1 + 2 * CROP_MARGIN)
            canv.append(square_view(Image.fromarray(out), (x0 + x1) / 2, (y0 + y1) / 2, side, emb.ref_size, emb.interp))
            owner.append(i)
    vecs = np.concatenate([emb.embed_views(np.stack(canv[j : j + 64])) for j in range(0, len(canv), 64)])
    return vecs, np.asarray(owner, np.int64)


def main() -> None:
    ap = one_model_args(__doc__)
    ap.add_argument("--dump", help="write a few printed views as PNG to this folder (for a look)")
    args = ap.parse_args()
    root, truth, rows, emb = logo_queries(args)
    t0 = time.time()
    slugs, base, base_owner = eval_references(emb, root)
    logos = [Image.open(root / "logos" / f"{s}.png") for s in slugs]
    t1 = time.time()
    p6, p6_owner = printed_views(emb, logos, 6)
    t_print = time.time() - t1
    keep3 = np.isin(np.arange(len(p6)) % 6, [0, 1, 2])
    p3, p3_owner = p6[keep3], p6_owner[keep3]
    if args.dump:
        from pathlib import Path
        Path(args.dump).mkdir(parents=True, exist_ok=True)
        surfaces = procedural_photos(3, SURFACE_SIDE, seed=0)
        for s, im in list(zip(slugs, logos))[:4]:
            for v in range(3):
                rng = np.random.default_rng(10_000 + v)
                size = int(min(surfaces[v].shape[:2]) * SIZE_FRAC)
                H, W = surfaces[v].shape[:2]
                out, _ = synth.place_mark(surfaces[v], ink_mask(im), size, rng, style=PRINT_STYLES[v],
                                          xy=(W // 2 - size // 2, H // 2 - size // 2), occlude=0.0)
                Image.fromarray(out).save(f"{args.dump}/{s}-{v}.png")
    n = len(slugs)
    refsets = {
        "base": (base, base_owner, base, base_owner),
        "printed3": ((r := np.concatenate([base, p3])), (o := np.concatenate([base_owner, p3_owner])), r, o),
        "printed3-crops": (base, base_owner, r, o),
        "printed6": ((r6 := np.concatenate([base, p6])), (o6 := np.concatenate([base_owner, p6_owner])), r6, o6),
    }
    scores = {name: [] for name in refsets}
    for i in range(0, len(rows), 32):
        ims = [Image.open(root / t["query"]).convert("RGB") for t in rows[i : i + 32]]
        for e in emb.embed_photos(ims):
            cache: dict[tuple, np.ndarray] = {}
            for name, (rr, ro, cr, co) in refsets.items():
                sim = e.regions @ rr.T
                region, _ = best_per_reference(sim, ro, n)
                top = tuple(np.argsort(-sim.max(1), kind="stable")[:REFINE_CROPS].tolist())
                if top not in cache:
                    cache[top] = e.crops(np.asarray(top))
                crop, _ = best_per_reference(cache[top] @ cr.T, co, n)
                scores[name].append(0.5 * (region + crop))
    print("set", root, "model", args.model, f"{n} logos; printed views: {len(p6)} in {t_print:.0f} s "
          f"({1000 * t_print / max(len(p6), 1):.1f} ms per view incl. rendering); scored in {time.time() - t0:.0f} s", flush=True)
    for name, s in scores.items():
        print(f"{name:<15}", score_line(truth, slugs, np.stack(s), KEYS), flush=True)


if __name__ == "__main__":
    main()
