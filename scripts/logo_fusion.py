"""Logo score fusion and box jitter, measured from one scoring pass per draw
(plan: notebooks/results/experiments/logo-fusion-plan.md).

    python scripts/logo_fusion.py dump --set calib --set calib2 --set lettered-calib --set clutter-calib
    python scripts/logo_fusion.py eval --fit calib --set calib2 --set lettered-calib --set clutter-calib

``dump`` scores every logo query of each draw once with the model's own scorer and stores, per query,
the region stage's best similarity per brand, each re-embedded crop's best similarity per brand
(the scan's 6 windows + the head's boxes, then the head's boxes again at margins 0.0 and 0.4), and the
head's logits (out/fusion/<set>.npz). ``eval`` prints base / J / F / F+J side by side.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
from compare_models import DEFAULT_MODEL, KEYS, SETS
from PIL import Image

from ccu_vision.embedder import REFINE_CROPS, Embedder, dense_logo_scores
from ccu_vision.evalset import build_eval_set, read_truth
from ccu_vision.evaluate import eval_references, logo_metrics
from ccu_vision.scoring import candidate_features
from ccu_vision.train.logo_scoring import fit_logistic

log = logging.getLogger(__name__)
HEAD_BOXES = 3
EXTRA_MARGINS = (0.0, 0.4)
CANDIDATES = 5
OUT = Path("out/fusion")


def per_brand(sim: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """[M, V] similarities -> [M, B] best over each brand's views (views of a brand are contiguous)."""
    return np.maximum.reduceat(sim, starts, axis=1)


def dump(name: str, model: str, photos: str, batch: int = 32) -> Path:
    """Score one draw's logo queries once and store the per-stage similarities."""
    root = build_eval_set(f"out/eval-{name}", SETS[name], photos)
    rows = [t for t in read_truth(root) if t["task"] == "logo"]
    emb = Embedder(model)
    slugs, logos, owner = eval_references(emb, root)
    assert np.all(np.diff(owner) >= 0), "views of one brand must be contiguous"
    starts = np.flatnonzero(np.r_[True, np.diff(owner) > 0])
    q, b = len(rows), len(slugs)
    n_crop = REFINE_CROPS + HEAD_BOXES
    region = np.zeros((q, b), np.float32)
    crop = np.full((q, n_crop, b), -np.inf, np.float32)
    extra = np.full((q, HEAD_BOXES * len(EXTRA_MARGINS), b), -np.inf, np.float32)
    logits = np.full((q, HEAD_BOXES), -np.inf, np.float32)
    t0 = time.time()
    for i in range(0, q, batch):
        ims = [Image.open(root / t["query"]).convert("RGB") for t in rows[i : i + batch]]
        for j, e in enumerate(emb.embed_photos(ims)):
            k = i + j
            sim = e.regions @ logos.T
            region[k] = per_brand(sim, starts).max(0)
            top = np.argsort(-sim.max(1), kind="stable")[:REFINE_CROPS]
            cand = e.crop_candidates(top)
            cs = per_brand(e.crops(cand) @ logos.T, starts)
            crop[k, : len(cand)] = cs
            n_prop = len(cand) - len(top)
            if n_prop:
                props = cand[len(top) :]
                logits[k, :n_prop] = e.proposal_scores[:n_prop]
                for m, margin in enumerate(EXTRA_MARGINS):
                    extra[k, m * HEAD_BOXES : m * HEAD_BOXES + n_prop] = per_brand(e.crops(props, margin) @ logos.T, starts)
            if k < 3:  # the dump reproduces the scan's own scoring
                ref, _ = dense_logo_scores(e, logos, owner)
                got = 0.5 * (region[k] + crop[k].max(0))
                assert np.allclose(ref, got, atol=1e-5), (name, k, np.abs(ref - got).max())
        log.info("%s %d/%d %.0f s", name, min(i + batch, q), q, time.time() - t0)
    OUT.mkdir(parents=True, exist_ok=True)
    out = OUT / f"{name}.npz"
    truth_brand = np.array([t.get("brand") or "" for t in rows])
    kind = np.array([t["kind"] for t in rows])
    np.savez_compressed(out, region=region, crop=crop, extra=extra, logits=logits, slugs=np.array(slugs),
                        brand=truth_brand, kind=kind, model=np.array(model))
    log.info("%s: %d queries, %d brands -> %s (%.0f s)", name, q, b, out, time.time() - t0)
    return out


# ------------------------------------------------------------------------------------------- evaluation


def load(name: str) -> dict:
    d = np.load(OUT / f"{name}.npz")
    return {k: d[k] for k in d.files}


def crop_set(d: dict, jitter: bool) -> np.ndarray:
    """[Q, C, B] crop similarities: the scan's 9, plus the 6 jittered head crops when ``jitter``."""
    return np.concatenate([d["crop"], d["extra"]], axis=1) if jitter else d["crop"]


def base_scores(d: dict, jitter: bool) -> np.ndarray:
    """[Q, B] the shipped formula: mean of the best region and the best crop similarity."""
    return 0.5 * (d["region"] + crop_set(d, jitter).max(1))


def features(d: dict, jitter: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per query its CANDIDATES best brands by the base score: (features [Q, K, 7], candidate brand
    indices [Q, K], base scores [Q, B])."""
    s = base_scores(d, jitter)
    crops = crop_set(d, jitter)
    q = len(s)
    cand = np.argsort(-s, axis=1, kind="stable")[:, :CANDIDATES]
    rows = np.arange(q)[:, None]
    srt = np.sort(s, axis=1)[:, ::-1]
    best_other = np.where(cand == cand[:, :1], srt[:, 1:2], srt[:, :1])  # the best score of any other brand
    finite = np.isfinite(crops).all(axis=2)  # [Q, C] crops that exist (a photo may have fewer head peaks)
    crop_arg = np.where(finite, np.argmax(np.where(np.isfinite(crops), crops, -9), axis=2), -1)  # [Q, C]
    votes = (crop_arg[:, None, :] == cand[:, :, None]).sum(2) / np.maximum(finite.sum(1, keepdims=True), 1)
    cc = np.take_along_axis(crops, np.repeat(cand[:, None, :], crops.shape[1], axis=1), axis=2)  # [Q, C, K]
    mean_crop = np.where(finite[:, :, None], cc, 0).sum(1) / np.maximum(finite.sum(1), 1)[:, None]
    lg = d["logits"]
    head = np.where(np.isfinite(lg), lg, -20).max(1)
    f = np.stack([
        s[rows, cand], d["region"][rows, cand], crops.max(1)[rows, cand], s[rows, cand] - best_other,
        votes, mean_crop, np.repeat(head[:, None], CANDIDATES, axis=1),
    ], axis=2).astype(np.float64)
    return f, cand, s


def labels(d: dict, cand: np.ndarray) -> np.ndarray:
    slugs = d["slugs"]
    pos = (d["kind"] == "registered")[:, None]
    return (pos & (slugs[cand] == d["brand"][:, None])).astype(np.float64)


def check_product_features(d: dict, jitter: bool, n: int = 200) -> None:
    """The product's per-photo features (:func:`ccu_vision.scoring.candidate_features`) equal these."""
    f, cand, s = features(d, jitter)
    crops = crop_set(d, jitter)
    for q in range(min(n, len(s))):
        lg = d["logits"][q]
        hl = float(lg[np.isfinite(lg)].max()) if np.isfinite(lg).any() else -20.0
        c2, f2 = candidate_features(s[q], d["region"][q], crops[q], hl, np.arange(s.shape[1]), CANDIDATES)
        assert np.array_equal(c2, cand[q]) and np.allclose(f2, f[q], atol=1e-6), (q, f2, f[q])


def fused_scores(d: dict, jitter: bool, model: dict) -> np.ndarray:
    """[Q, B]: the fusion logit for each query's candidates, base score - 100 for the rest."""
    f, cand, s = features(d, jitter)
    z = (f - np.asarray(model["mean"])) / np.asarray(model["std"])
    logit = z @ np.asarray(model["w"]) + model["b"]
    out = s - 100.0
    np.put_along_axis(out, cand, logit, axis=1)
    return out


def metrics(d: dict, scores: np.ndarray) -> dict:
    slugs = d["slugs"]
    truth = [{"task": "logo", "kind": str(k), "brand": str(b)} for k, b in zip(d["kind"], d["brand"])]
    top = np.argsort(-scores, axis=1, kind="stable")[:, :10]
    lm = logo_metrics(truth, [[(str(slugs[j]), float(r[j])) for j in o] for r, o in zip(scores, top)])
    return {k: round(lm[k], 4) for k in KEYS} | {"ci95": lm["ci95"]}


def evaluate(fit_set: str, sets: list[str]) -> None:
    fit = load(fit_set)
    models = {}
    for jitter in (False, True):
        check_product_features(fit, jitter)
        f, cand, _ = features(fit, jitter)
        y = labels(fit, cand)
        models[jitter] = fit_logistic(f.reshape(-1, f.shape[-1]), y.reshape(-1))
        print(f"fusion fitted on {fit_set} (jitter={jitter}), {int(y.sum())} positive candidates of {y.size}:",
              json.dumps({"w": [round(float(v), 4) for v in models[jitter]["w"]], "b": round(models[jitter]["b"], 4)}))
    for name in [fit_set] + [s for s in sets if s != fit_set]:
        d = load(name)
        print(f"== {name}{' (fitting set)' if name == fit_set else ''}: {len(d['kind'])} queries, {len(d['slugs'])} brands")
        variants = {
            "base": base_scores(d, False), "J": base_scores(d, True),
            "F": fused_scores(d, False, models[False]), "F+J": fused_scores(d, True, models[True]),
        }
        for v, sc in variants.items():
            m = metrics(d, sc)
            ci = m.pop("ci95")
            print(f"{v:5s}", json.dumps(m), "ci", json.dumps({k: v2 for k, v2 in ci.items() if k != "resamples"}), flush=True)
    plain = {k: {n: np.asarray(v).tolist() for n, v in m.items()} for k, m in (("F", models[False]), ("F+J", models[True]))}
    (OUT / "fusion-models.json").write_text(json.dumps({"fit": fit_set, **plain}, indent=1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["dump", "eval"])
    ap.add_argument("--set", action="append", required=True, choices=sorted(SETS))
    ap.add_argument("--fit", default="calib", choices=sorted(SETS))
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--photos", default="../shared/datasets/clothing-dataset-small")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.what == "dump":
        for name in args.set:
            dump(name, args.model, args.photos)
    else:
        evaluate(args.fit, args.set)


if __name__ == "__main__":
    main()
