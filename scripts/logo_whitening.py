"""Logo metrics with the logo descriptors whitened, the whitening fitted on training brands only.

    python scripts/logo_whitening.py --set calib
    python scripts/logo_whitening.py --set lettered-calib

Fits on ``out/eval-fit`` (the evaluation generator on training brands and training photos, built on
first use), then scores a named set (as in ``compare_models.py``) with the scan's two-stage formula
in each transformed space. Variants (plan: ``notebooks/results/experiments/logo-whitening-plan.md``):
``none`` (the scan), ``pca-0.5`` / ``pca-1`` (PCA whitening, eigenvalues to the power -0.25 / -0.5)
and ``lw`` (supervised: matching-pair differences whitened, then decorrelated). Transforms are saved
to ``out/logo-whitening-<model stem>.npz``.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from compare_models import (  # scripts/ is on sys.path when run as a script
    SETS,
    one_model_args,
    score_line,
    true_box_crop,
)
from PIL import Image

from ccu_vision.embedder import REFINE_CROPS, Embedder, best_per_reference
from ccu_vision.evalset import EvalConfig, build_eval_set, read_truth
from ccu_vision.evaluate import eval_references

FIT = EvalConfig(brand_split="train", split="train", seed=881, n_brands=1500, pos_per_brand=1, n_unregistered=0,
                 n_clean=0, n_products=0, n_lookalikes=0)

Transform = tuple[np.ndarray, np.ndarray]  # (mean [D], projection [D, D]): x -> normalize((x - mean) @ proj)


def apply(t: Transform | None, x: np.ndarray) -> np.ndarray:
    """Transform descriptors [N, D] and L2-normalise them again."""
    if t is None:
        return x
    mean, proj = t
    assert x.ndim == 2 and x.shape[1] == len(mean) == proj.shape[0], (x.shape, mean.shape, proj.shape)
    y = (x.astype(np.float64) - mean) @ proj
    return (y / (np.linalg.norm(y, axis=1, keepdims=True) + 1e-12)).astype(np.float32)


def fit_pca(x: np.ndarray, power: float) -> Transform:
    """PCA whitening: eigenvalues raised to ``-power`` (0.5: full whitening)."""
    mean = x.mean(0)
    lam, u = np.linalg.eigh(np.cov((x - mean).T))
    lam = np.maximum(lam, 1e-9 * lam.max())
    return mean, u * lam**-power


def fit_lw(x: np.ndarray, a: np.ndarray, b: np.ndarray) -> Transform:
    """Supervised (learned) whitening: whiten the differences of matching pairs (a[i], b[i]), then rotate
    so that all descriptors ``x`` are decorrelated (Radenović et al.)."""
    assert a.shape == b.shape and a.shape[1] == x.shape[1], (a.shape, b.shape, x.shape)
    d = (a - b).astype(np.float64)
    cs = d.T @ d / len(d)
    cs += 1e-3 * np.trace(cs) / len(cs) * np.eye(len(cs))
    lam, u = np.linalg.eigh(cs)
    p1 = u * lam**-0.5 @ u.T  # Cs^-1/2 (symmetric)
    mean = x.mean(0)
    _, v = np.linalg.eigh(np.cov(((x - mean) @ p1).T))
    return mean, p1 @ v[:, ::-1]


def fit_descriptors(emb: Embedder, root: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All reference views [V, D], and matching pairs: query side (true-box crops and best regions) and
    the brand's reference view each matches best."""
    slugs, refs, owner = eval_references(emb, root)
    rows = [t for t in read_truth(root) if t["task"] == "logo" and t["kind"] == "registered"]
    qa, qb = [], []
    for i in range(0, len(rows), 32):
        batch = rows[i : i + 32]
        ims = [Image.open(root / t["query"]).convert("RGB") for t in batch]
        crops = emb.embed_views(np.stack([true_box_crop(emb, im, t["box"]) for t, im in zip(batch, ims)]))
        for t, e, c in zip(batch, emb.embed_photos(ims), crops):
            mine = refs[owner == slugs.index(t["brand"])]
            sim = e.regions @ mine.T
            r, v = np.unravel_index(int(sim.argmax()), sim.shape)
            qa += [c, e.regions[r]]
            qb += [mine[int((mine @ c).argmax())], mine[v]]
    return refs, np.stack(qa), np.stack(qb)


def main() -> None:
    ap = one_model_args(__doc__)
    args = ap.parse_args()
    emb = Embedder(args.model)
    t0 = time.time()
    saved = Path("out") / f"logo-whitening-{Path(args.model).stem}.npz"
    if saved.exists():
        z = np.load(saved)
        variants: dict[str, Transform | None] = {"none": None, **{k: (z[f"{k}/mean"], z[f"{k}/proj"]) for k in ("pca-0.5", "pca-1", "lw")}}
    else:
        fit_root = build_eval_set("out/eval-fit", FIT, args.photos)
        refs, qa, qb = fit_descriptors(emb, fit_root)
        allx = np.concatenate([refs, qa])
        variants = {"none": None, "pca-0.5": fit_pca(allx, 0.25), "pca-1": fit_pca(allx, 0.5), "lw": fit_lw(allx, qa, qb)}
        np.savez(saved, **{f"{k}/{n}": a for k, t in variants.items() if t is not None for n, a in zip(("mean", "proj"), t)})
        print("fitted on", fit_root, f"{len(refs)} reference views, {len(qa)} matching pairs,", round(time.time() - t0), "s", flush=True)
    root = build_eval_set(f"out/eval-{args.set}", SETS[args.set], args.photos)
    truth = read_truth(root)
    rows = [t for t in truth if t["task"] == "logo"]
    slugs, refs, owner = eval_references(emb, root)
    n = len(slugs)
    trefs = {k: apply(t, refs) for k, t in variants.items()}
    scores: dict[str, list[np.ndarray]] = {k: [] for k in variants}
    t0 = time.time()
    for i in range(0, len(rows), 32):
        ims = [Image.open(root / t["query"]).convert("RGB") for t in rows[i : i + 32]]
        for e in emb.embed_photos(ims):
            cache: dict[int, np.ndarray] = {}
            tops = {}
            for k, t in variants.items():
                sim = apply(t, e.regions) @ trefs[k].T
                tops[k] = (sim, np.argsort(-sim.max(1), kind="stable")[:REFINE_CROPS])
            need = sorted({int(j) for _, top in tops.values() for j in top} - cache.keys())
            cache.update(zip(need, e.crops(np.asarray(need))))
            for k, t in variants.items():
                sim, top = tops[k]
                crops = apply(t, np.stack([cache[int(j)] for j in top]))
                scores[k].append(0.5 * (best_per_reference(sim, owner, n)[0] + best_per_reference(crops @ trefs[k].T, owner, n)[0]))
    print("set", root, "model", args.model, "scored in", round(time.time() - t0), "s", flush=True)
    for k, s in scores.items():
        print(f"{k:<8}", score_line(truth, slugs, np.stack(s)), flush=True)


if __name__ == "__main__":
    main()
