"""Thresholds from negatives: empirical quantile and the confidence-bounded (Clopper-Pearson) count."""

from __future__ import annotations

from math import comb

import numpy as np
import pytest

from ccu_vision.thresholds import allowed_negatives, binom_cdf, negative_quantile


def test_negative_quantile_flags_at_most_the_allowed_share() -> None:
    scores = list(np.linspace(0.0, 0.99, 100))  # 100 negatives
    t = negative_quantile(scores, 0.01)
    assert sum(s >= t for s in scores) == 1 and t > 0.98  # 1 % may be flagged, not 2
    t0 = negative_quantile(scores, 0.0)
    assert sum(s >= t0 for s in scores) == 0
    assert negative_quantile(scores, 1.0) == -np.inf and negative_quantile([], 0.01) == -np.inf


def test_binomial_cdf_matches_a_direct_sum() -> None:
    for n, p, k in ((10, 0.3, 4), (500, 0.01, 2), (40, 0.5, 20), (7, 0.9, 0)):
        direct = sum(comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k + 1))
        assert binom_cdf(k, n, p) == pytest.approx(direct, rel=1e-9)
    assert binom_cdf(-1, 5, 0.2) == 0.0 and binom_cdf(5, 5, 0.2) == 1.0


def test_confidence_bounded_threshold_is_stricter_than_the_empirical_quantile() -> None:
    # 500 negatives, 1 %: the empirical quantile lets 5 score above the threshold; with 95 % confidence
    # only 1 may (P(X <= 1 | n=500, p=0.01) = 0.040 <= 0.05 < P(X <= 2) = 0.123)
    assert allowed_negatives(500, 0.01) == 5
    assert allowed_negatives(500, 0.01, 0.95) == 1
    assert binom_cdf(1, 500, 0.01) <= 0.05 < binom_cdf(2, 500, 0.01)
    # more negatives: more may be flagged, but always fewer than the rate times n
    k = allowed_negatives(5000, 0.01, 0.95)
    assert 30 < k < 50 and binom_cdf(k, 5000, 0.01) <= 0.05 < binom_cdf(k + 1, 5000, 0.01)
    # too few to certify even 0 flags (0.99 ** 100 > 0.05): the highest negative bounds the threshold
    assert allowed_negatives(100, 0.01, 0.95) == 0
    scores = list(np.random.default_rng(0).random(500))
    t_emp, t_conf = negative_quantile(scores, 0.01), negative_quantile(scores, 0.01, 0.95)
    assert sum(s >= t_emp for s in scores) == 5 and sum(s >= t_conf for s in scores) == 1


def _rows(logo: list[float], product: list[float]) -> list[dict]:
    rows = [{"status": "ok", "matches": [{"kind": "logo", "score": a}, {"kind": "logo", "score": a - 0.2},
                                         {"kind": "product", "score": b}]} for a, b in zip(logo, product, strict=True)]
    return rows + [{"status": "error", "matches": []}, {"status": "ok", "matches": []}]


def test_tighten_raises_only_unless_allowed_and_sets_a_missing_threshold() -> None:
    from ccu_vision.thresholds import tighten

    rng = np.random.default_rng(5)
    logo, prod = list(rng.random(400)), list(rng.random(400))
    rows = _rows(logo, prod)  # 401 readable negatives (one matched nothing), one error row left out
    rep = tighten(rows, {"logo": 0.5, "near_duplicate": 0.9999}, max_fpr=0.01, confidence=0.95)
    k = allowed_negatives(401, 0.01, 0.95)
    assert rep["logo"]["negatives"] == 401 and rep["logo"]["allowed"] == k
    assert rep["logo"]["changed"] and rep["logo"]["threshold"] > 0.5
    assert rep["logo"]["flagged"] == sum(s >= rep["logo"]["threshold"] for s in logo) <= k
    assert rep["logo"]["flagged_at_current"] == sum(s >= 0.5 for s in logo)
    assert not rep["near_duplicate"]["changed"] and rep["near_duplicate"]["threshold"] == 0.9999  # kept: already stricter
    low = tighten(rows, {"near_duplicate": 0.9999}, 0.01, 0.95, ("near_duplicate",), allow_lower=True)
    assert low["near_duplicate"]["changed"] and low["near_duplicate"]["threshold"] < 0.9999
    unset = tighten(rows, {}, 0.01, 0.95, ("logo",))
    assert unset["logo"]["current"] is None and unset["logo"]["changed"]
    assert unset["logo"]["threshold"] == rep["logo"]["threshold"]
    # 5 decimals, rounded up: never one flag more than allowed
    t = rep["logo"]["threshold"]
    assert round(t, 5) == t and sorted(logo, reverse=True)[rep["logo"]["flagged"]] < t


def test_allowed_negatives_walk_matches_the_exact_cdf() -> None:
    for n, p, conf in ((500, 0.01, 0.95), (5000, 0.01, 0.95), (1000, 0.05, 0.9), (300, 0.01, 0.95), (20000, 0.001, 0.99)):
        k = allowed_negatives(n, p, conf)
        assert binom_cdf(k, n, p) <= 1 - conf < binom_cdf(k + 1, n, p), (n, p, conf, k)
    assert allowed_negatives(10**6, 0.01, 0.95) < 10**4  # a million negatives: fast, and below 1 %
