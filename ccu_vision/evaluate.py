"""Accuracy metrics on an evaluation set (see :mod:`ccu_vision.evalset`) and threshold calibration.

Every method is reduced to the same thing: for each query, a ranked list of ``(key, score)`` with
higher = more similar (key = brand slug for logos, product id for near-duplicates). The metrics
below are then identical for ccu-vision, the un-fine-tuned backbone, hashes and keypoints.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from .embedder import dense_logo_scores
from .evalset import read_truth
from .references import embed_images
from .verify import canvas_gray, dense_dup_scores, ref_keypoints

log = logging.getLogger(__name__)

Ranked = list[tuple[str, float]]
SIZE_BINS = ((0.0, 0.12, "<12%"), (0.12, 0.2, "12-20%"), (0.2, 0.3, "20-30%"), (0.3, 1.01, ">=30%"))
BOOTSTRAP = 500  # resamples for the 95 % intervals (queries resampled with replacement, seeded)


def _interval(values: Sequence[float]) -> list[float]:
    lo, hi = np.percentile(np.asarray(values, np.float64), [2.5, 97.5])
    return [round(float(lo), 4), round(float(hi), 4)]


def _strata(groups: Sequence[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
    """One bootstrap resample of each index group (positives and negatives resampled separately)."""
    return [g[rng.integers(0, len(g), len(g))] if len(g) else g for g in groups]


def calibrate(scores: Sequence[float], correct: Sequence[bool], precision: float = 0.95) -> tuple[float, float]:
    """Lowest threshold whose predictions (score >= t) reach ``precision``; returns (threshold, recall there).

    ``correct`` marks which predictions are right. Recall is over the correct predictions. If the
    precision is never reached, the threshold is just above the highest score (nothing flagged).
    """
    s = np.asarray(scores, np.float64)
    c = np.asarray(correct, bool)
    assert s.shape == c.shape
    if len(s) == 0 or not c.any():
        return float("inf"), 0.0
    order = np.argsort(-s, kind="stable")
    s, c = s[order], c[order]
    tp = np.cumsum(c)
    prec = tp / np.arange(1, len(s) + 1)
    # only cut between distinct scores
    last_of_tie = np.r_[s[1:] != s[:-1], True]
    ok = np.nonzero((prec >= precision) & last_of_tie)[0]
    if len(ok) == 0:
        return float(s[0]) + 1e-6, 0.0
    i = ok[-1]
    return float(s[i]), float(tp[i] / c.sum())


def tpr_at_fpr(pos_scores: np.ndarray, neg_scores: np.ndarray, fpr: float = 0.01) -> tuple[float, float]:
    """TPR at a false-positive rate: threshold = the score exceeded by ``fpr`` of the negatives."""
    neg = np.sort(np.asarray(neg_scores, np.float64))[::-1]
    pos = np.asarray(pos_scores, np.float64)
    if len(neg) == 0:
        return float(np.mean(pos > -np.inf)), float("-inf")
    k = int(np.floor(fpr * len(neg)))
    thr = neg[k] if k < len(neg) else -np.inf  # strictly above the (k+1)-th highest negative
    return float(np.mean(pos > thr)) if len(pos) else 0.0, float(thr)


def average_precision(scores: np.ndarray, correct: np.ndarray, n_positives: int) -> float:
    """Micro AP of a ranked prediction list, normalized by the number of true positives that exist."""
    if n_positives == 0:
        return 0.0
    order = np.argsort(-np.asarray(scores), kind="stable")
    c = np.asarray(correct, bool)[order]
    tp = np.cumsum(c)
    prec = tp / np.arange(1, len(c) + 1)
    return float((prec * c).sum() / n_positives)


def recall_at_precision(scores: np.ndarray, correct: np.ndarray, n_positives: int, precision: float) -> float:
    """Highest recall reached at any cut whose precision is at least ``precision``."""
    if n_positives == 0 or len(scores) == 0:
        return 0.0
    order = np.argsort(-np.asarray(scores), kind="stable")
    c = np.asarray(correct, bool)[order]
    tp = np.cumsum(c)
    prec = tp / np.arange(1, len(c) + 1)
    ok = prec >= precision
    return float(tp[ok].max() / n_positives) if ok.any() else 0.0


def logo_metrics(truth: list[dict], ranked: list[Ranked], fpr: float = 0.01, precision: float = 0.95,
                 n_boot: int = BOOTSTRAP, seed: int = 0) -> dict:
    """recall@1/@5, AP, TPR@FPR, calibrated threshold, and breakdowns by mark size and print style.

    ``ci95``: 95 % bootstrap intervals of recall@1, AP and TPR@FPR (``n_boot`` resamples of the
    positives and of the negatives, seeded; ``n_boot=0`` skips them).
    """
    rows = [t for t in truth if t["task"] == "logo"]
    assert len(rows) == len(ranked), (len(rows), len(ranked))
    pos = [i for i, t in enumerate(rows) if t["kind"] == "registered"]
    neg = [i for i, t in enumerate(rows) if t["kind"] != "registered"]
    top1 = [r[0] if r else ("", -np.inf) for r in ranked]
    hit1 = np.array([top1[i][0] == rows[i]["brand"] for i in pos])
    hit5 = np.array([rows[i]["brand"] in [k for k, _ in ranked[i][:5]] for i in pos])
    pos_scores = np.array([top1[i][1] if top1[i][0] == rows[i]["brand"] else -np.inf for i in pos])
    neg_scores = np.array([top1[i][1] for i in neg])
    tpr, thr = tpr_at_fpr(pos_scores, neg_scores, fpr)
    scores = np.array([s for _, s in top1])
    correct = np.array([rows[i]["kind"] == "registered" and top1[i][0] == rows[i]["brand"] for i in range(len(rows))])
    cal_t, cal_r = calibrate(scores, correct, precision)
    out = {
        "queries": len(rows), "positives": len(pos), "negatives": len(neg),
        "recall@1": float(hit1.mean()) if len(pos) else 0.0,
        "recall@5": float(hit5.mean()) if len(pos) else 0.0,
        "ap": average_precision(scores, correct, len(pos)),
        f"tpr@{fpr:g}fpr": tpr, "threshold@fpr": thr,
        "threshold@p95": cal_t, "recall@p95": cal_r,
    }
    if n_boot and len(pos):
        rng = np.random.default_rng(seed)
        pos_a, neg_a = np.asarray(pos, np.int64), np.asarray(neg, np.int64)
        r1, ap, tp = [], [], []
        for _ in range(n_boot):
            bp, bn = _strata([np.arange(len(pos)), np.arange(len(neg))], rng)
            r1.append(hit1[bp].mean())
            idx = np.concatenate([pos_a[bp], neg_a[bn]])
            ap.append(average_precision(scores[idx], correct[idx], len(pos)))
            tp.append(tpr_at_fpr(pos_scores[bp], neg_scores[bn], fpr)[0])
        out["ci95"] = {"recall@1": _interval(r1), "ap": _interval(ap), f"tpr@{fpr:g}fpr": _interval(tp),
                       "resamples": n_boot}
    by_size, by_style = {}, {}
    for lo, hi, name in SIZE_BINS:
        idx = [j for j, i in enumerate(pos) if lo <= rows[i].get("size_frac", 0) < hi]
        if idx:
            by_size[name] = {"n": len(idx), "recall@1": float(hit1[idx].mean()),
                             "tpr@fpr": float(np.mean(pos_scores[idx] > thr))}
    for style in sorted({rows[i].get("style", "") for i in pos}):
        idx = [j for j, i in enumerate(pos) if rows[i].get("style", "") == style]
        by_style[style] = {"n": len(idx), "recall@1": float(hit1[idx].mean()), "tpr@fpr": float(np.mean(pos_scores[idx] > thr))}
    out["by_size"], out["by_style"] = by_size, by_style
    return out


def dup_metrics(truth: list[dict], ranked: list[Ranked], precision: float = 0.95,
                n_boot: int = BOOTSTRAP, seed: int = 0) -> dict:
    """DISC21-style micro AP over all (query, reference) predictions, recall at precision 0.90/0.99, per-edit recall.

    ``ci95``: a 95 % bootstrap interval of muAP (copies and look-alikes resampled separately, whole queries).
    """
    rows = [t for t in truth if t["task"] == "dup"]
    assert len(rows) == len(ranked), (len(rows), len(ranked))
    n_pos = sum(1 for t in rows if t["product"])
    scores, correct, qidx = [], [], []
    for i, (t, r) in enumerate(zip(rows, ranked)):
        for key, s in r:
            scores.append(s)
            correct.append(key == t["product"])
            qidx.append(i)
    scores_a, correct_a = np.array(scores), np.array(correct, bool)
    top1 = [r[0] if r else ("", -np.inf) for r in ranked]
    t1_scores = np.array([s for _, s in top1])
    t1_correct = np.array([top1[i][0] == rows[i]["product"] for i in range(len(rows))])
    cal_t, cal_r = calibrate(t1_scores, t1_correct, precision)
    out = {
        "queries": len(rows), "positives": n_pos,
        "muap": average_precision(scores_a, correct_a, n_pos),
        "recall@p90": recall_at_precision(scores_a, correct_a, n_pos, 0.90),
        "recall@p99": recall_at_precision(scores_a, correct_a, n_pos, 0.99),
        "threshold@p95": cal_t, "recall@p95": cal_r,
    }
    if n_boot and n_pos:
        rng = np.random.default_rng(seed)
        qidx_a = np.asarray(qidx, np.int64)
        by_query = [np.nonzero(qidx_a == i)[0] for i in range(len(rows))]
        groups = [np.array([i for i, t in enumerate(rows) if t["product"]], np.int64),
                  np.array([i for i, t in enumerate(rows) if not t["product"]], np.int64)]
        mu = []
        for _ in range(n_boot):
            qs = np.concatenate(_strata(groups, rng))
            pred = np.concatenate([by_query[q] for q in qs]) if len(qs) else np.zeros(0, np.int64)
            n_p = int(sum(1 for q in qs if rows[q]["product"]))
            mu.append(average_precision(scores_a[pred], correct_a[pred], n_p))
        out["ci95"] = {"muap": _interval(mu), "resamples": n_boot}
    per_edit: dict[str, list[bool]] = {}
    for i, t in enumerate(rows):
        if t["product"]:
            found = bool(t1_correct[i] and t1_scores[i] >= cal_t)
            for e in t.get("edits", []):
                per_edit.setdefault(e, []).append(found)
    out["per_edit_recall@p95"] = {e: round(float(np.mean(v)), 4) for e, v in sorted(per_edit.items())}
    return out


# --------------------------------------------------------------------------- ccu-vision / any Embedder


def eval_references(embedder, root: str | Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """An evaluation set's registered logos as the scan indexes them: (slugs, reference vectors [V, D]
    over every logo's views, owner [V] = index into slugs)."""
    root = Path(root)
    slugs = sorted(p.stem for p in (root / "logos").glob("*.png"))
    views = embedder.embed_logo_views([Image.open(root / "logos" / f"{s}.png") for s in slugs])
    owner = np.concatenate([np.full(len(v), i) for i, v in enumerate(views)])
    return slugs, np.concatenate(views), owner


def rank_with_embedder(embedder, root: str | Path, k: int = 10, batch: int = 32, logo: bool = True,
                       text: bool = False) -> tuple[list[Ranked], list[Ranked], list]:
    """Run an :class:`~ccu_vision.embedder.Embedder` over an evaluation set (``logo=False``: the
    near-duplicate task only; the logo rankings and boxes come back empty).

    ``text``: add text evidence as the scan does (the model's ``ccu.text_scoring``; each brand's keys
    are its slug, the name the evaluation catalog registers, and the lettering OCR reads in its logo);
    logo scores are then those the ``logo_text`` threshold is for. A model with ``ccu.logo_verify``
    then also has its best logo candidates verified with keypoints, as the scan does
    (:mod:`ccu_vision.logo_verify`; every candidate, without the scan's threshold gate).

    Near-duplicates are scored with the embedder's verification settings (``embedder.verify``; None:
    the global descriptor alone), without the scan's threshold gate (every candidate is verified).

    Returns (logo rankings, near-duplicate rankings, best boxes of the logo top-1s).
    """
    root = Path(root)
    truth = read_truth(root)
    slugs, logos, owner = eval_references(embedder, root) if logo else ([], None, None)
    prods = sorted(p.stem for p in (root / "products").glob("*.jpg"))
    cfg = getattr(embedder, "verify", None)  # also what makes its photos carry sub-window descriptors
    pvec, powner, pkp = [], [], []
    for i in range(0, len(prods), batch):  # the catalog's own product vectors (photo + mirror view)
        ims = [Image.open(root / "products" / f"{p}.jpg").convert("RGB") for p in prods[i : i + batch]]
        for j, v in enumerate(embed_images(embedder, "product", ims)):
            pvec.append(v)
            powner += [i + j] * len(v)
        if cfg is not None:  # keypoints from the same canvas a scan takes them from
            pkp += [ref_keypoints(canvas_gray(im, embedder.query_size, embedder.interp), cfg) for im in ims]
    pvec = np.concatenate(pvec) if pvec else np.zeros((0, embedder.dim), np.float32)
    powner = np.asarray(powner, np.int64)
    logo_rows = [t for t in truth if t["task"] == "logo"] if logo else []
    dup_rows = [t for t in truth if t["task"] == "dup"]
    logo_ranked, boxes = [], []
    with_text = _TextRanker(embedder, root, slugs) if text and logo_rows else None
    for i in range(0, len(logo_rows), batch):
        ims = [Image.open(root / t["query"]).convert("RGB") for t in logo_rows[i : i + batch]]
        for im, e in zip(ims, embedder.embed_photos(ims), strict=True):
            best, best_r = dense_logo_scores(e, logos, owner)  # the scan's scoring, exactly
            order = np.argsort(-best)[:k]
            order = order[np.isfinite(best[order])]  # a fused scoring scores only its candidates
            ranked = [(slugs[j], float(best[j])) for j in order]
            logo_ranked.append(with_text(ranked, im, k) if with_text is not None else ranked)
            boxes.append(e.boxes[best_r[order[0]]].tolist() if len(order) else None)
    dup_ranked = []
    for i in range(0, len(dup_rows), batch):
        ims = [Image.open(root / t["query"]).convert("RGB") for t in dup_rows[i : i + batch]]
        for e in embedder.embed_photos(ims):
            sim, _inl = dense_dup_scores(e, pvec, powner, len(prods), cfg, pkp.__getitem__)  # the scan's scoring
            order = np.argsort(-sim)[:k]
            dup_ranked.append([(prods[j], float(sim[j])) for j in order])
    return logo_ranked, dup_ranked, boxes


class _TextRanker:
    """Adds text evidence to one query's logo ranking (see :func:`rank_with_embedder`); the keys are
    read once per draw, each query photo once (the image already opened for embedding)."""

    def __init__(self, embedder, root: Path, slugs: list[str]) -> None:
        from .text import brand_keys, default_reader

        self.cfg = embedder.text_scoring
        if self.cfg is None:
            raise ValueError(f"{embedder.info.path}: the model has no text scoring (ccu.text_scoring)")
        self.reader = default_reader()
        keys = {s: brand_keys(s, self.reader.read_logo(Image.open(root / "logos" / f"{s}.png"))) for s in slugs}
        self.keys = {s: ks for s, ks in keys.items() if ks}
        self.verify = getattr(embedder, "logo_verify", None)  # keypoint verification after the text
        self.root = root
        self._refs: dict = {}

    def _ref(self, slug: str):
        from . import imageio
        from .logo_verify import ref_features

        if slug not in self._refs:
            im = imageio.load_image(self.root / "logos" / f"{slug}.png", keep_alpha=True)
            self._refs[slug] = ref_features(im, self.verify)
        return self._refs[slug]

    def __call__(self, ranked: Ranked, im: Image.Image, k: int) -> Ranked:
        from .logo_verify import features, query_gray, verify_candidates
        from .text import brand_matches, rerank

        m = brand_matches(self.keys, self.reader.read(im, self.cfg.photo), self.cfg.min_conf)
        ranked = rerank(ranked, m, self.cfg, k) if m else ranked
        if self.verify is None:
            return ranked
        scores = dict(ranked)  # every candidate verified (no threshold gate: a ranking, not flags)
        verify_candidates(scores, lambda: features(query_gray(im, self.verify)), self._ref, self.verify)
        return sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[:k]


def evaluate_embedder(embedder, root: str | Path) -> dict:
    """Both tasks' metrics for an embedder on an evaluation set."""
    truth = read_truth(root)
    lr, dr, _ = rank_with_embedder(embedder, root)
    return {"model_id": embedder.info.model_id, "logo": logo_metrics(truth, lr), "dup": dup_metrics(truth, dr)}
