"""Flag thresholds from negatives: how many of n known negatives a threshold may flag.

Light (numpy only): used by model calibration (:mod:`ccu_vision.train.calibrate`) and by
``ccu-vision calibrate``, which tightens a catalog's thresholds on a user's own negatives.
"""

from __future__ import annotations

import logging
import math

import numpy as np

log = logging.getLogger(__name__)


def binom_cdf(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p), summed exactly in log space."""
    if k < 0:
        return 0.0
    if p <= 0.0 or k >= n:
        return 1.0
    if p >= 1.0:
        return 0.0
    lp, lq = math.log(p), math.log1p(-p)
    terms = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * lp + (n - i) * lq
             for i in range(k + 1)]
    m = max(terms)
    return min(1.0, math.exp(m) * sum(math.exp(t - m) for t in terms))


def allowed_negatives(n: int, max_fpr: float, confidence: float | None = None) -> int:
    """How many of ``n`` calibration negatives a threshold may flag.

    Without ``confidence``: ``floor(max_fpr * n)`` (the empirical quantile). With it: the most flagged
    negatives ``k`` for which a flag rate of ``max_fpr`` would still leave at least ``k`` flags more likely
    than ``1 - confidence`` - i.e. the one-sided Clopper-Pearson upper bound of the flag rate at the
    threshold is at most ``max_fpr``. Too few negatives to certify even ``k = 0`` give 0 (and a warning).
    """
    if confidence is None:
        return int(math.floor(max_fpr * n))
    k, alpha = -1, 1.0 - confidence
    if 0.0 < max_fpr < 1.0:
        # walk the CDF term by term (O(k)): log pmf(i+1) = log pmf(i) + log((n-i)/(i+1)) + log(p/(1-p))
        log_pmf = n * math.log1p(-max_fpr)
        odds = math.log(max_fpr) - math.log1p(-max_fpr)
        cdf = math.exp(log_pmf)
        while k + 1 < n and cdf <= alpha:
            k += 1
            log_pmf += math.log((n - k) / (k + 1)) + odds
            cdf += math.exp(log_pmf)
    if k < 0:
        log.warning("%d negatives cannot certify a flag rate <= %.3g at confidence %.2f; "
                    "using the highest negative score", n, max_fpr, confidence)
        return 0
    return k


def negative_quantile(scores: list[float], max_fpr: float, confidence: float | None = None) -> float:
    """The lowest threshold that flags at most the allowed share of the negatives' top-1 ``scores``.

    ``confidence`` (e.g. 0.95) asks for a threshold whose flag rate is at most ``max_fpr`` with that
    confidence, not merely on this sample (see :func:`allowed_negatives`).
    """
    if len(scores) == 0:
        return -np.inf
    return _above_top(scores, allowed_negatives(len(scores), max_fpr, confidence))


def _above_top(scores: list[float] | np.ndarray, k: int) -> float:
    """The lowest threshold that ``k`` of ``scores`` reach: just above the (k+1)-th highest."""
    s = np.sort(np.asarray(scores, np.float64))[::-1]
    return float(np.nextafter(s[k], np.inf)) if k < len(s) else -np.inf


# threshold name -> match kind in a result row ("logo_text": logo scores with text evidence, ccu_vision.text)
KINDS = {"logo": "logo", "logo_text": "logo", "near_duplicate": "product"}


def top_scores(rows: list[dict], kind: str) -> list[float]:
    """Each ``status: ok`` row's best match score of ``kind`` (``logo``/``product``); -inf when none."""
    out = []
    for row in rows:
        if row.get("status") != "ok":
            continue
        s = [float(m["score"]) for m in row.get("matches", []) if m.get("kind") == kind]
        out.append(max(s) if s else -np.inf)
    return out


def tighten(rows: list[dict], current: dict, max_fpr: float = 0.01, confidence: float | None = 0.95,
            names: tuple[str, ...] = ("logo", "near_duplicate"), allow_lower: bool = False) -> dict[str, dict]:
    """Thresholds that flag at most ``max_fpr`` of known negatives (scan rows), per threshold name.

    A threshold is only raised (a stricter flag) unless ``allow_lower``: lowering it below the model's
    calibrated value would give up the precision it was calibrated for on wrong-brand matches (a
    missing threshold is always set). Returns,
    per name, the counts at the current and the proposed threshold and whether it changes.
    """
    assert 0.0 < max_fpr < 1.0, max_fpr
    report: dict[str, dict] = {}
    for name in names:
        scores = np.asarray(top_scores(rows, KINDS[name]), np.float64)
        cur = float(current.get(name, np.inf))
        k = allowed_negatives(len(scores), max_fpr, confidence) if len(scores) else 0
        proposed = _above_top(scores, k)
        new = cur
        if len(scores) and np.isfinite(proposed) and (proposed > cur or allow_lower or not np.isfinite(cur)):
            new = math.ceil(float(proposed) * 1e5) / 1e5  # 5 decimals, rounded up: never one more flag
            if new < proposed:
                new = float(proposed)
        report[name] = {
            "negatives": int(len(scores)),
            "allowed": int(k),
            "current": cur if np.isfinite(cur) else None,  # None: no threshold yet (nothing flagged)
            "flagged_at_current": int((scores >= cur).sum()),
            "threshold": new,
            "flagged": int((scores >= new).sum()),
            "changed": bool(new != cur),
        }
    return report
