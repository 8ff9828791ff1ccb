"""Logo score fusion and box jitter, measured from one scoring pass per draw
(plan: notebooks/results/experiments/logo-fusion-plan.md).

    python scripts/logo_fusion.py dump --set calib --set calib2 --set lettered-calib --set clutter-calib
    python scripts/logo_fusion.py eval --fit calib --set calib2 --set lettered-calib --set clutter-calib
    python scripts/logo_fusion.py eval2 --set calib2 --set lettered-calib --set clutter-calib --set lowcontrast-calib
    python scripts/logo_fusion.py eval3 --set calib3 --set lettered-calib --set clutter-calib --set lowcontrast-calib

``dump`` scores every logo query of each draw once with the model's own scorer and stores, per query,
the region stage's best similarity per brand, each re-embedded crop's best similarity per brand
(the scan's 6 windows + the head's boxes, then the head's boxes again at margins 0.0 and 0.4), and the
head's logits (out/fusion/<set>.npz). ``eval`` prints base / J / F / F+J side by side.
``eval2`` (plan: notebooks/results/experiments/fusion-v2-plan.md) prints, with the 15 crops, the shipped
fusion S (7 features, fitted on calib) beside P (7, pooled over calib and the three special
calibration draws, each draw scored by a fit that left it out), X (all 10 features, calib) and PX, and
the plan's rule for each. ``eval3`` (plan: fusion-quadratic-plan.md) prints S beside Q (the seven and
their pairwise products, fitted on calib) and that plan's rule, decided on calib3.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
from compare_models import DEFAULT_MODEL, KEYS, SETS, decision_rule
from PIL import Image

from ccu_vision.embedder import REFINE_CROPS, Embedder, dense_logo_scores
from ccu_vision.evalset import build_eval_set, read_truth
from ccu_vision.evaluate import eval_references, logo_metrics
from ccu_vision.scoring import DEFAULT_FEATURES, FEATURES, candidate_features
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


def over_others(v: np.ndarray, cand: np.ndarray) -> np.ndarray:
    """[Q, K]: v at each candidate minus the best v of any other brand (columns are brands)."""
    srt = np.sort(v, axis=1)[:, ::-1]
    top = np.argmax(v, axis=1)[:, None]
    return np.take_along_axis(v, cand, axis=1) - np.where(cand == top, srt[:, 1:2], srt[:, :1])


def features(d: dict, jitter: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per query its CANDIDATES best brands by the base score: (features [Q, K, len(FEATURES)] in
    ``ccu_vision.scoring.FEATURES`` order, candidate brand indices [Q, K], base scores [Q, B])."""
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
    crop_best = crops.max(1)  # [Q, B]
    n_rows = finite.sum(1)[:, None]
    crop2 = np.where(n_rows >= 2, np.sort(cc, axis=1)[:, -2, :], crop_best[rows, cand])  # missing crops sort first
    f = np.stack([
        s[rows, cand], d["region"][rows, cand], crop_best[rows, cand], s[rows, cand] - best_other,
        votes, mean_crop, np.repeat(head[:, None], CANDIDATES, axis=1),
        crop2, over_others(d["region"], cand), over_others(crop_best, cand),
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


def fused_scores(d: dict, jitter: bool, model: dict, cols: list[int] | None = None) -> np.ndarray:
    """[Q, B]: the fusion logit for each query's candidates, base score - 100 for the rest (``cols``:
    the feature columns the model is over; default the shipped seven)."""
    f, cand, s = features(d, jitter)
    f = f[..., cols if cols is not None else list(range(len(DEFAULT_FEATURES)))]
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
    seven = list(range(len(DEFAULT_FEATURES)))
    for jitter in (False, True):
        check_product_features(fit, jitter)
        f, cand, _ = features(fit, jitter)
        y = labels(fit, cand)
        models[jitter] = fit_logistic(f[..., seven].reshape(-1, len(seven)), y.reshape(-1))
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


POOL = ("calib", "lettered-calib", "clutter-calib", "lowcontrast-calib")  # the pooled variants' fitting draws
SPECIAL = POOL[1:]  # scored leave-one-draw-out


def fit_draws(names: list[str], cols: list[int]) -> dict:
    """The fusion (15 crops) fitted on the pooled candidates of ``names`` over feature columns ``cols``."""
    xs, ys = [], []
    for n in names:
        d = load(n)
        f, cand, _ = features(d, True)
        xs.append(f[..., cols].reshape(-1, len(cols)))
        ys.append(labels(d, cand).reshape(-1))
    return fit_logistic(np.concatenate(xs), np.concatenate(ys))


def evaluate2(sets: list[str]) -> None:
    """The fusion-v2 plan's variants and rule (every number on a draw its fit did not see, but calib's)."""
    seven, every = list(range(len(DEFAULT_FEATURES))), list(range(len(FEATURES)))
    check_product_features(load("calib"), True)
    variants = {"S": (False, seven), "P": (True, seven), "X": (False, every), "PX": (True, every)}
    fits: dict[tuple, dict] = {}
    res: dict[str, dict[str, dict]] = {}
    for name in ["calib"] + [s for s in sets if s != "calib"]:
        d = load(name)
        print(f"== {name}: {len(d['kind'])} queries, {len(d['slugs'])} brands", flush=True)
        for v, (pooled, cols) in variants.items():
            draws = tuple(n for n in POOL if n != name) if pooled else ("calib",)
            key = (draws, tuple(cols))
            if key not in fits:
                fits[key] = fit_draws(list(draws), cols)
            m = metrics(d, fused_scores(d, True, fits[key], cols))
            ci = m.pop("ci95")
            res.setdefault(v, {})[name] = m
            print(f"{v:3s} fit {'+'.join(draws):45s}", json.dumps(m), "ci",
                  json.dumps({k: v2 for k, v2 in ci.items() if k != "resamples"}), flush=True)
    for (draws, cols), m in fits.items():
        print(f"weights fit {'+'.join(draws)}:", json.dumps(
            {FEATURES[c]: round(float(w), 3) for c, w in zip(cols, m["w"], strict=True)} | {"b": round(m["b"], 3)}))
    if "calib2" not in res["S"] or not all(n in res["S"] for n in SPECIAL):
        return
    for v in ("P", "X", "PX"):
        _, _, line = decision_rule(res[v], res["S"], "calib2", list(SPECIAL))
        print(f"rule {v} on", line)


def pairwise(names: tuple[str, ...]) -> tuple[str, ...]:
    """``names`` and every product of two of them (squares included), in a fixed order ("crop*margin")."""
    return tuple(names) + tuple(f"{a}*{b}" for i, a in enumerate(names) for b in names[i:])


def term_values(f: np.ndarray, names: tuple[str, ...]) -> np.ndarray:
    """[..., len(FEATURES)] candidate features -> [..., len(names)] the named terms (a feature or a product)."""
    return np.stack([np.prod(f[..., [FEATURES.index(x) for x in n.split("*")]], axis=-1) for n in names], axis=-1)


def evaluate3(sets: list[str]) -> None:
    """The fusion-quadratic plan: S (the seven) and Q (the seven and their pairwise products), both
    fitted on calib with the 15 crops, and the plan's rule (decision draw: the first of ``sets``)."""
    fit = load("calib")
    f, cand, _ = features(fit, True)
    y = labels(fit, cand).reshape(-1)
    variants = {"S": DEFAULT_FEATURES, "Q": pairwise(DEFAULT_FEATURES)}
    models = {v: fit_logistic(term_values(f, t).reshape(-1, len(t)), y) for v, t in variants.items()}
    res: dict[str, dict[str, dict]] = {}
    for name in ["calib"] + [s for s in sets if s != "calib"]:
        d = load(name)
        fd, cd, sd = features(d, True)
        print(f"== {name}{' (fitting set)' if name == 'calib' else ''}: {len(d['kind'])} queries", flush=True)
        for v, terms in variants.items():
            m = models[v]
            out = sd - 100.0
            np.put_along_axis(out, cd, (term_values(fd, terms) - m["mean"]) / m["std"] @ m["w"] + m["b"], axis=1)
            r = metrics(d, out)
            ci = r.pop("ci95")
            res.setdefault(v, {})[name] = r
            print(f"{v}  terms {len(terms):2d}", json.dumps(r), "ci",
                  json.dumps({k: v2 for k, v2 in ci.items() if k != "resamples"}), flush=True)
    print("weights Q:", json.dumps({t: round(float(w), 3) for t, w in zip(variants["Q"], models["Q"]["w"], strict=True)}))
    _, _, line = decision_rule(res["Q"], res["S"], sets[0], [n for n in sets[1:] if n != "calib"])
    print("rule Q on", line)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["dump", "eval", "eval2", "eval3"])
    ap.add_argument("--set", action="append", required=True, choices=sorted(SETS))
    ap.add_argument("--fit", default="calib", choices=sorted(SETS))
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--photos", default="../shared/datasets/clothing-dataset-small")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.what == "dump":
        for name in args.set:
            dump(name, args.model, args.photos)
    elif args.what == "eval2":
        evaluate2(args.set)
    elif args.what == "eval3":
        evaluate3(args.set)
    else:
        evaluate(args.fit, args.set)


if __name__ == "__main__":
    main()
