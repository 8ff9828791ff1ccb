"""How a model turns its two logo stages into one score per reference: ``ccu.logo_scoring``.

Without it (older files) a listing's logo score for a reference is the mean of its best region and
its best re-embedded crop similarity (:func:`ccu_vision.embedder.combine_logo_scores`). A file may
say more (:class:`LogoScoring`):

- ``head_margins``: the proposal head's boxes are cut again at these margins (beside the standard
  one) in the crop stage — a small box search around each proposal;
- ``fusion``: a logistic model over the evidence both stages already computed, for each of the
  listing's ``candidates`` best references: the base score, best region and best crop similarity,
  the margin over the best reference of *another brand*, the share of crops whose best reference is
  of this brand, the mean crop similarity, and the head's best mark logit (:data:`DEFAULT_FEATURES`,
  what v15cdpf was fitted on); newer files may also use the second-best crop similarity and the
  margins of the region and crop stages alone (:data:`FEATURES` lists all, a file names the ones its
  weights are for). The score becomes the model's probability that the listing shows this
  reference's registered mark; references outside the candidates are not listed. Thresholds
  calibrated for a file are thresholds of its own scoring.

Fitting and attaching: :mod:`ccu_vision.train.logo_scoring`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

import numpy as np

from .errors import ModelError
from .metadata import versioned_json

log = logging.getLogger(__name__)

FORMAT = "ccu-logo-scoring/1"
DEFAULT_FEATURES = ("score", "region", "crop", "margin", "votes", "mean_crop", "head_logit")
# every feature this version computes (candidate_features' columns, in this order); a file's fusion
# names the subset its weights are for
FEATURES = DEFAULT_FEATURES + ("crop2", "region_margin", "crop_margin")
NO_HEAD_LOGIT = -20.0  # the head-logit feature of a photo without proposals


@dataclass(frozen=True)
class LogoScoring:
    """A file's logo scoring (see the module docstring); ``weights`` None: the base formula."""

    head_margins: tuple[float, ...] = ()
    candidates: int = 5
    mean: np.ndarray | None = None
    std: np.ndarray | None = None
    weights: np.ndarray | None = None
    bias: float = 0.0
    features: tuple[str, ...] = DEFAULT_FEATURES  # what mean/std/weights are over (a subset of FEATURES)

    def __post_init__(self) -> None:
        assert set(self.features) <= set(FEATURES) and len(set(self.features)) == len(self.features), self.features
        if self.weights is not None:
            n = len(self.features)
            assert np.shape(self.mean) == np.shape(self.std) == np.shape(self.weights) == (n,), (n, np.shape(self.weights))

    @property
    def fused(self) -> bool:
        return self.weights is not None

    def to_json(self) -> str:
        d: dict = {"format": FORMAT, "head_margins": list(self.head_margins), "candidates": self.candidates}
        if self.fused:
            d["fusion"] = {"features": list(self.features), "mean": np.asarray(self.mean).tolist(),
                           "std": np.asarray(self.std).tolist(), "w": np.asarray(self.weights).tolist(),
                           "b": float(self.bias)}
        return json.dumps(d)


def parse_config(raw: str, path: str = "") -> LogoScoring | None:
    """The ``ccu.logo_scoring`` metadata of a model file (None when it has none); refuses what it cannot read."""
    cfg = versioned_json(raw, path, "ccu.logo_scoring", FORMAT, "logo scoring")
    if cfg is None:
        return None
    margins = cfg.get("head_margins", [])
    k = cfg.get("candidates", 5)
    if (not isinstance(margins, list) or not all(isinstance(m, (int, float)) and 0 <= m <= 1 for m in margins)
            or not isinstance(k, int) or isinstance(k, bool) or k < 1):
        raise ModelError(f"{path}: ccu.logo_scoring needs head_margins in [0, 1] and candidates >= 1, "
                         f"got {margins!r} and {k!r}")
    fusion = cfg.get("fusion")
    if fusion is None:
        return LogoScoring(tuple(float(m) for m in margins), k)
    try:
        names = tuple(fusion["features"])
        mean, std, w = (np.asarray(fusion[key], np.float64) for key in ("mean", "std", "w"))
        b = float(fusion["b"])
    except (KeyError, TypeError, ValueError) as e:
        raise ModelError(f"{path}: ccu.logo_scoring fusion is incomplete ({e})") from None
    if (not names or not set(names) <= set(FEATURES) or len(set(names)) != len(names)
            or not mean.shape == std.shape == w.shape == (len(names),) or np.any(std <= 0)):
        raise ModelError(f"{path}: ccu.logo_scoring fusion is over features {list(names)} "
                         f"(this version computes {list(FEATURES)}) or has bad shapes")
    return LogoScoring(tuple(float(m) for m in margins), k, mean, std, w, b, names)


def candidate_features(score: np.ndarray, region: np.ndarray, crop: np.ndarray, head_logit: float,
                       group: np.ndarray, k: int, cand: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best references by ``score`` (or the given ``cand``) and their features [k', len(FEATURES)].

    ``score``/``region`` [n] per reference; ``crop`` [C, n] each crop's best similarity per reference
    (rows that are all -inf: crops the photo does not have); ``group`` [n] the brand of each reference
    (margins and votes are over *other brands*, so several references of one brand do not compete).
    """
    score, region, group = np.asarray(score, np.float64), np.asarray(region, np.float64), np.asarray(group)
    crop = np.asarray(crop, np.float64).reshape(-1, len(score))
    assert score.shape == region.shape == group.shape and score.ndim == 1, (score.shape, region.shape, group.shape)
    cand = np.argsort(-score, kind="stable")[:k] if cand is None else np.asarray(cand, np.int64)[:k]
    cand = cand[np.isfinite(score[cand])]
    rows = crop[np.isfinite(crop).all(axis=1)]
    crop_best = rows.max(0) if len(rows) else region  # [n] per reference
    feats = np.zeros((len(cand), len(FEATURES)))
    top_group = group[np.argmax(rows, axis=1)] if len(rows) else np.zeros(0, group.dtype)

    def over_others(v: np.ndarray, c: int) -> float:  # v[c] minus the best of any other brand (0 when none)
        other = v[group != group[c]]
        return float(v[c] - (other.max() if len(other) else 0.0))

    for i, c in enumerate(cand):
        votes = float(np.mean(top_group == group[c])) if len(rows) else 0.0
        mean_crop = float(rows[:, c].mean()) if len(rows) else 0.0
        crop2 = float(np.sort(rows[:, c])[-2]) if len(rows) >= 2 else float(crop_best[c])
        feats[i] = (score[c], region[c], crop_best[c], over_others(score, c), votes, mean_crop, head_logit,
                    crop2, over_others(region, c), over_others(crop_best, c))
    return cand, feats


def fuse(cfg: LogoScoring, score: np.ndarray, region: np.ndarray, crop: np.ndarray, head_logit: float | None,
         group: np.ndarray | None = None, cand: np.ndarray | None = None) -> np.ndarray:
    """[n] fused scores: the fusion's probability for the candidates (the ``cfg.candidates`` best by
    ``score``, or ``cand``), -inf for every other reference."""
    assert cfg.fused
    score = np.asarray(score, np.float64)
    group = np.arange(len(score)) if group is None else np.asarray(group)
    hl = NO_HEAD_LOGIT if head_logit is None or not np.isfinite(head_logit) else float(head_logit)
    cand, f = candidate_features(score, region, crop, hl, group, cfg.candidates, cand)
    f = f[:, [FEATURES.index(n) for n in cfg.features]]
    out = np.full(len(score), -np.inf)
    z = (f - cfg.mean) / cfg.std @ cfg.weights + cfg.bias
    out[cand] = 1.0 / (1.0 + np.exp(-z))
    return out
