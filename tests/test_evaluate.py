"""Unit tests of ccu_vision.evaluate: metrics against hand-computed cases and brute force."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from ccu_vision.evaluate import (
    average_precision,
    calibrate,
    dup_metrics,
    logo_metrics,
    rank_with_embedder,
    recall_at_precision,
    tpr_at_fpr,
)

# ----------------------------------------------------------------------------- hand-computed cases


def test_calibrate_hand_cases() -> None:
    s, c = [0.9, 0.8, 0.7, 0.6], [True, True, False, True]
    # cumulative precision 1, 1, 2/3, 3/4
    assert calibrate(s, c, 0.95) == (0.8, pytest.approx(2 / 3))
    assert calibrate(s, c, 0.7) == (0.6, 1.0)
    # a cut may not split tied scores: 0.8 appears twice, so the only valid cut is at 0.9
    t, r = calibrate([0.9, 0.8, 0.8, 0.5], [True, True, False, True], 0.95)
    assert (t, r) == (0.9, pytest.approx(1 / 3))
    # order of the input does not matter
    assert calibrate([0.6, 0.9, 0.7, 0.8], [True, True, False, True], 0.95) == (0.8, pytest.approx(2 / 3))


def test_calibrate_unreachable_and_empty() -> None:
    t, r = calibrate([0.9, 0.5], [False, True], 0.95)
    assert t > 0.9 and r == 0.0  # nothing is flagged: threshold just above the top score
    assert calibrate([0.9, 0.5], [False, False], 0.95) == (math.inf, 0.0)
    assert calibrate([], [], 0.95) == (math.inf, 0.0)


def test_tpr_at_fpr_hand_cases() -> None:
    neg = np.arange(1, 11) / 10.0  # 0.1 .. 1.0
    pos = np.array([0.95, 0.9, 0.5])
    tpr, thr = tpr_at_fpr(pos, neg, 0.1)  # one negative of ten may pass: threshold = 2nd highest negative
    assert thr == 0.9 and tpr == pytest.approx(1 / 3)  # strictly above 0.9
    tpr, thr = tpr_at_fpr(pos, neg, 0.01)  # no negative may pass
    assert thr == 1.0 and tpr == 0.0
    tpr, thr = tpr_at_fpr(pos, neg, 1.0)  # every negative may pass
    assert thr == -math.inf and tpr == 1.0
    tpr, thr = tpr_at_fpr(pos, np.array([]), 0.01)
    assert tpr == 1.0 and thr == -math.inf
    assert tpr_at_fpr(np.array([]), neg, 0.1)[0] == 0.0


def test_average_precision_hand_case() -> None:
    s = np.array([0.9, 0.8, 0.7, 0.6])
    c = np.array([True, False, True, False])
    # hits at ranks 1 and 3: (1/1 + 2/3) / 3 positives in total (one never retrieved)
    assert average_precision(s, c, 3) == pytest.approx((1 + 2 / 3) / 3)
    assert average_precision(s, c, 2) == pytest.approx((1 + 2 / 3) / 2)
    assert average_precision(s, c, 0) == 0.0
    assert average_precision(s[::-1], c[::-1], 2) == pytest.approx((1 + 2 / 3) / 2)


def test_recall_at_precision_hand_case() -> None:
    s = np.array([0.9, 0.8, 0.7, 0.6])
    c = np.array([True, False, True, False])
    # precision along the ranking: 1, 1/2, 2/3, 1/2
    assert recall_at_precision(s, c, 3, 0.6) == pytest.approx(2 / 3)
    assert recall_at_precision(s, c, 3, 0.9) == pytest.approx(1 / 3)
    assert recall_at_precision(s, c, 3, 1.01) == 0.0
    assert recall_at_precision(s, c, 0, 0.5) == 0.0
    assert recall_at_precision(np.array([]), np.array([], bool), 3, 0.5) == 0.0


def _logo_case() -> tuple[list[dict], list]:
    truth = [
        {"task": "logo", "query": "q0", "kind": "registered", "brand": "a", "size_frac": 0.1, "style": "print"},
        {"task": "dup", "query": "d0", "kind": "copy", "product": "p0", "edits": []},  # other task: ignored
        {"task": "logo", "query": "q1", "kind": "registered", "brand": "b", "size_frac": 0.25, "style": "tone"},
        {"task": "logo", "query": "q2", "kind": "unregistered", "brand": None, "mark": "z"},
        {"task": "logo", "query": "q3", "kind": "clean", "brand": None},
    ]
    ranked = [
        [("a", 0.9), ("b", 0.5)],  # q0: right at rank 1
        [("a", 0.7), ("b", 0.6)],  # q1: right at rank 2
        [("b", 0.8)],  # q2: a false alarm at 0.8
        [],  # q3: nothing at all
    ]
    return truth, ranked


def test_logo_metrics_hand_case() -> None:
    truth, ranked = _logo_case()
    m = logo_metrics(truth, ranked)
    assert (m["queries"], m["positives"], m["negatives"]) == (4, 2, 2)
    assert m["recall@1"] == 0.5 and m["recall@5"] == 1.0
    # positives' scores: 0.9 (right top-1) and -inf (wrong top-1); highest negative 0.8 -> threshold 0.8
    assert m["threshold@fpr"] == 0.8 and m["tpr@0.01fpr"] == 0.5
    # top-1 predictions ranked 0.9 (right), 0.8, 0.7, -inf: one hit at rank 1 of 2 positives
    assert m["ap"] == pytest.approx(0.5)
    assert m["threshold@p95"] == 0.9 and m["recall@p95"] == 1.0
    assert m["by_size"] == {"<12%": {"n": 1, "recall@1": 1.0, "tpr@fpr": 1.0},
                            "20-30%": {"n": 1, "recall@1": 0.0, "tpr@fpr": 0.0}}
    assert m["by_style"]["print"]["recall@1"] == 1.0 and m["by_style"]["tone"]["recall@1"] == 0.0


def test_logo_metrics_checks_lengths() -> None:
    truth, ranked = _logo_case()
    with pytest.raises(AssertionError):
        logo_metrics(truth, ranked[:-1])


def test_dup_metrics_hand_case() -> None:
    truth = [
        {"task": "dup", "query": "d0", "kind": "copy", "product": "p0", "edits": ["crop", "jpeg"]},
        {"task": "logo", "query": "q0", "kind": "clean", "brand": None},
        {"task": "dup", "query": "d1", "kind": "copy", "product": "p1", "edits": ["flip"]},
        {"task": "dup", "query": "d2", "kind": "lookalike", "product": None},
    ]
    ranked = [[("p0", 0.9), ("p1", 0.3)], [("p0", 0.6), ("p1", 0.5)], [("p1", 0.7)]]
    m = dup_metrics(truth, ranked)
    assert (m["queries"], m["positives"]) == (3, 2)
    # all predictions ranked: 0.9 T, 0.7 F, 0.6 F, 0.5 T, 0.3 F -> AP = (1/1 + 2/4) / 2
    assert m["muap"] == pytest.approx(0.75)
    assert m["recall@p90"] == 0.5 and m["recall@p99"] == 0.5
    # top-1: 0.9 right, 0.7 wrong (look-alike), 0.6 wrong -> P95 threshold 0.9
    assert m["threshold@p95"] == 0.9 and m["recall@p95"] == 1.0
    assert m["per_edit_recall@p95"] == {"crop": 1.0, "flip": 0.0, "jpeg": 1.0}


def _random_logo_set(rng: np.random.Generator, n_pos: int, n_neg: int) -> tuple[list[dict], list]:
    truth, ranked = [], []
    for i in range(n_pos):
        truth.append({"task": "logo", "query": f"p{i}", "kind": "registered", "brand": f"b{i % 7}"})
        right = rng.random() < 0.6
        s = float(rng.normal(0.7 if right else 0.5, 0.1))
        ranked.append([(f"b{i % 7}" if right else "x", s), ("y", s - 0.1)])
    for i in range(n_neg):
        truth.append({"task": "logo", "query": f"n{i}", "kind": "clean", "brand": None})
        ranked.append([("x", float(rng.normal(0.5, 0.1)))])
    return truth, ranked


def test_bootstrap_intervals_hold_the_estimate_and_narrow_with_more_queries() -> None:
    rng = np.random.default_rng(0)
    truth, ranked = _random_logo_set(rng, 200, 200)
    m = logo_metrics(truth, ranked)
    ci = m["ci95"]
    assert ci["resamples"] == 500
    for key in ("recall@1", "ap", "tpr@0.01fpr"):
        lo, hi = ci[key]
        assert lo <= m[key] <= hi and lo < hi, (key, lo, m[key], hi)
    assert logo_metrics(truth, ranked)["ci95"] == ci, "seeded: the same intervals every run"
    assert "ci95" not in logo_metrics(truth, ranked, n_boot=0)
    big_t, big_r = _random_logo_set(np.random.default_rng(1), 2000, 2000)
    big = logo_metrics(big_t, big_r)["ci95"]["recall@1"]
    assert big[1] - big[0] < 0.5 * (ci["recall@1"][1] - ci["recall@1"][0])
    # the recall@1 interval is close to the binomial one, +-1.96 sqrt(p(1-p)/n)
    half = 1.96 * math.sqrt(m["recall@1"] * (1 - m["recall@1"]) / 200)
    assert (ci["recall@1"][1] - ci["recall@1"][0]) / 2 == pytest.approx(half, rel=0.2)


def test_dup_bootstrap_interval_resamples_whole_queries() -> None:
    rng = np.random.default_rng(3)
    truth, ranked = [], []
    for i in range(150):
        copy = i < 100
        truth.append({"task": "dup", "query": f"d{i}", "kind": "copy" if copy else "lookalike",
                      "product": f"p{i}" if copy else None, "edits": []})
        hit = copy and rng.random() < 0.8
        ranked.append([(f"p{i}" if hit else "q", float(rng.normal(0.8 if hit else 0.5, 0.1))), ("r", 0.2)])
    m = dup_metrics(truth, ranked)
    lo, hi = m["ci95"]["muap"]
    assert lo <= m["muap"] <= hi and 0.0 < hi - lo < 0.3
    assert "ci95" not in dup_metrics(truth, ranked, n_boot=0)


# ----------------------------------------------------------------------------- fast paths vs brute force


def _random_case(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    scores = np.round(rng.random(n), 1)  # one decimal: many ties
    correct = rng.random(n) < 0.5
    return scores, correct


def _brute_order(scores: np.ndarray) -> list[int]:
    return sorted(range(len(scores)), key=lambda i: (-scores[i], i))  # stable, highest first


def test_average_precision_matches_brute_force() -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        s, c = _random_case(rng, int(rng.integers(1, 30)))
        n_pos = int(c.sum()) + int(rng.integers(0, 3))
        tp, total = 0, 0.0
        for rank, i in enumerate(_brute_order(s), start=1):
            if c[i]:
                tp += 1
                total += tp / rank
        want = total / n_pos if n_pos else 0.0
        assert average_precision(s, c, n_pos) == pytest.approx(want)


def test_recall_at_precision_matches_brute_force() -> None:
    rng = np.random.default_rng(1)
    for _ in range(50):
        s, c = _random_case(rng, int(rng.integers(1, 30)))
        n_pos = max(1, int(c.sum()))
        p = float(rng.choice([0.5, 0.8, 0.9, 0.99]))
        best, tp = 0.0, 0
        for rank, i in enumerate(_brute_order(s), start=1):
            tp += bool(c[i])
            if tp / rank >= p:
                best = max(best, tp / n_pos)
        assert recall_at_precision(s, c, n_pos, p) == pytest.approx(best)


def test_calibrate_matches_brute_force() -> None:
    rng = np.random.default_rng(2)
    for _ in range(50):
        s, c = _random_case(rng, int(rng.integers(1, 30)))
        if not c.any():
            continue
        p = float(rng.choice([0.5, 0.8, 0.95]))
        valid = []
        for t in np.unique(s):
            flagged = s >= t
            if c[flagged].mean() >= p:
                valid.append((t, c[flagged].sum() / c.sum()))
        t, r = calibrate(s, c, p)
        if valid:
            t_want, r_want = min(valid)
            assert t == t_want and r == pytest.approx(r_want)
        else:
            assert t > s.max() and r == 0.0


def test_tpr_at_fpr_matches_brute_force() -> None:
    rng = np.random.default_rng(3)
    for _ in range(50):
        neg = np.round(rng.random(int(rng.integers(1, 40))), 1)
        pos = np.round(rng.random(int(rng.integers(1, 20))), 1)
        fpr = float(rng.choice([0.0, 0.01, 0.1, 0.25, 0.5]))
        # the lowest threshold (strict ">") whose false-positive rate is within budget
        cands = sorted({-math.inf, *neg.tolist()})
        t_want = min(t for t in cands if (neg > t).mean() <= fpr)
        tpr, thr = tpr_at_fpr(pos, neg, fpr)
        assert thr == t_want
        assert tpr == pytest.approx((pos > t_want).mean())
        assert (neg > thr).mean() <= fpr


# ----------------------------------------------------------------------------- rank_with_embedder vs brute force


@pytest.fixture(scope="module")
def tiny_eval(tiny_eval_set: Path) -> Path:
    return tiny_eval_set


def test_rank_with_embedder_matches_brute_force(tiny_eval: Path, tiny_model_path: Path) -> None:
    from ccu_vision.embedder import Embedder
    from ccu_vision.evalset import read_truth

    emb = Embedder(tiny_model_path)
    logo_r, dup_r, boxes = rank_with_embedder(emb, tiny_eval, k=5, batch=7)
    truth = read_truth(tiny_eval)
    lq = [t for t in truth if t["task"] == "logo"]
    dq = [t for t in truth if t["task"] == "dup"]
    assert len(logo_r) == len(lq) == len(boxes) and len(dup_r) == len(dq)
    slugs = sorted(p.stem for p in (tiny_eval / "logos").glob("*.png"))
    views = {s: emb.embed_logo_views([Image.open(tiny_eval / "logos" / f"{s}.png")])[0] for s in slugs}
    allv = np.concatenate(list(views.values()))
    for t, got in list(zip(lq, logo_r))[:5]:
        photo = emb.embed_photos([Image.open(tiny_eval / t["query"]).convert("RGB")])[0]
        # brute force of the product's two-stage score: best region, and best re-embedded crop of the
        # 6 regions most similar to any reference view, averaged
        region_best = [max(float(r @ v) for v in allv) for r in photo.regions]
        top = sorted(range(len(region_best)), key=lambda i: -region_best[i])[:6]
        crops = photo.crops(np.asarray(top))
        best = {}
        for s, vs in views.items():  # each stage takes the brand's best view
            best[s] = 0.5 * (max(float(r @ v) for r in photo.regions for v in vs)
                             + max(float(c @ v) for c in crops for v in vs))
        want = sorted(best.items(), key=lambda kv: -kv[1])[:5]
        assert [k for k, _ in got] == [k for k, _ in want]
        assert np.allclose([s for _, s in got], [s for _, s in want], atol=1e-5)
    prods = sorted(p.stem for p in (tiny_eval / "products").glob("*.jpg"))
    pv = {}
    for p in prods:  # the photo and its mirror image, as the catalog indexes products
        im = Image.open(tiny_eval / "products" / f"{p}.jpg").convert("RGB")
        pv[p] = [emb.embed_photos([x])[0].global_vec for x in (im, ImageOps.mirror(im))]
    for t, got in list(zip(dq, dup_r))[:5]:
        g = emb.embed_photos([Image.open(tiny_eval / t["query"]).convert("RGB")])[0].global_vec
        want = sorted(((p, max(float(v @ g) for v in vs)) for p, vs in pv.items()), key=lambda kv: -kv[1])[:5]
        assert [k for k, _ in got] == [k for k, _ in want]
