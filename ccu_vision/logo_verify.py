"""Keypoint verification of logo candidates: SIFT matches between a listing photo and a candidate
brand's reference logo, kept when one similarity transform (rotation, uniform scale, shift) explains them.

A mark printed, embroidered or stamped on a product keeps its shape: its corners and curves map onto
the clean reference by one similarity transform, which chance matches between unrelated images
rarely agree on. That is evidence the CNN scores do not use (they compare descriptors of whole
regions), so it is added to a logo candidate's probability in logit units::

    p' = sigmoid(logit(p) + weight * clip((inliers - floor) / (cap - floor), 0, 1))

The reference is matched in several grey views, because a mark in a photo can be any colour on any
background: its luminance flattened on white, its alpha mask, and each inverted (SIFT descriptors
are gradient orientations, so a light-on-dark print needs the inverted view), optionally the mask's
outline. The photo is resized (up or down) so its long side is ``canvas`` pixels, so every photo
costs about the same and small marks in small photos still have keypoints.

The settings are part of how a model's ``logo_text`` threshold was calibrated, so they travel in the
model file (``ccu.logo_verify``) and are applied with text evidence (:mod:`ccu_vision.text`), after
it; a model without them scores logos without keypoints. Only candidates whose score could reach the
threshold with the largest bonus are verified (:func:`should_verify`): the flags are the same as
verifying all, at a fraction of the cost.
"""

from __future__ import annotations

import json
import logging
import math
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .errors import ModelError
from .verify import KeypointCache, ramp_bonus, settings_key

log = logging.getLogger(__name__)

METHOD = "sift-similarity/1"
MIN_SIDE = 16  # pixels: smaller images get no keypoints


@dataclass(frozen=True)
class LogoVerifyConfig:
    """How logo candidates are verified (stored in the model as ``ccu.logo_verify``)."""

    method: str = METHOD
    candidates: int = 5  # best logo references verified per photo
    canvas: int = 1024  # the photo's long side when its keypoints are taken (resized up or down)
    ref_side: int = 256  # the reference's long side (cut to its ink) before a border is added
    border: int = 16  # pixels of replicated edge around each reference view (keypoints near the edge)
    outline: bool = False  # also match the outline of the reference's alpha mask (and its inverse)
    ratio: float = 0.8  # Lowe ratio test
    min_matches: int = 3  # ratio-test matches needed before a transform is fitted
    ransac_px: float = 6.0  # RANSAC reprojection error, canvas pixels
    min_scale: float = 0.05  # the transform's scale (reference px -> canvas px) must lie in this range
    max_scale: float = 8.0
    floor: int = 4  # inliers unrelated images reach by chance
    cap: int = 12  # inliers at which the bonus saturates
    weight: float = 4.0  # largest bonus, in logit units

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> LogoVerifyConfig:
        """Parse stored settings; unknown methods and keys are refused rather than half-applied."""
        d = dict(d)
        if d.get("method") != METHOD:
            raise ValueError(f"unknown logo verification method {d.get('method')!r}")
        extra = set(d) - set(cls.__dataclass_fields__)
        if extra:
            raise ValueError(f"unknown logo verification settings {sorted(extra)}")
        try:
            cfg = cls(**d)
            ok = (cfg.candidates >= 0 and 32 <= cfg.canvas <= 4096 and 32 <= cfg.ref_side <= 2048
                  and 0 <= cfg.border <= 256 and 0 < cfg.ratio <= 1 and cfg.min_matches >= 2
                  and cfg.ransac_px > 0 and 0 < cfg.min_scale < cfg.max_scale and 0 <= cfg.floor < cfg.cap
                  and math.isfinite(cfg.weight) and cfg.weight >= 0 and isinstance(cfg.outline, bool))
        except TypeError:
            ok = False
        if not ok:
            raise ValueError(f"bad logo verification settings {d}")
        return cfg

    def key(self) -> str:
        """Short hash of the settings (what a calibrated threshold was made for)."""
        return settings_key(self.to_dict())

    def bonus(self, inliers: np.ndarray | int) -> np.ndarray:
        """What verified inliers add to a candidate's logit."""
        return ramp_bonus(inliers, self.floor, self.cap, self.weight)

    def apply(self, p: float, inliers: int) -> float:
        """A candidate's probability ``p`` after verification found ``inliers``."""
        return float(_sigmoid(_logit(p) + float(self.bonus(inliers))))


def _logit(p: float) -> float:
    p = min(max(float(p), 1e-9), 1.0 - 1e-9)
    return math.log(p / (1.0 - p))


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))


def parse_config(raw: str, path: str = "") -> LogoVerifyConfig | None:
    """The ``ccu.logo_verify`` metadata of a model file (None when it has none); refuses what it cannot read."""
    if not raw:
        return None
    try:
        return LogoVerifyConfig.from_dict(json.loads(raw))
    except (ValueError, TypeError, AttributeError) as e:
        raise ModelError(f"{path}: bad ccu.logo_verify metadata: {e}") from None


# ----------------------------------------------------------------------------- keypoints


@dataclass
class Features:
    """SIFT keypoints of one image (or of all views of a reference): positions [n, 2] float32,
    descriptors [n, 128] uint8 (OpenCV's SIFT values are whole numbers in 0-255: kept exactly, at a
    quarter of the memory a catalog's cached references would take as float32)."""

    pts: np.ndarray
    desc: np.ndarray

    def __post_init__(self) -> None:
        assert self.pts.ndim == 2 and self.pts.shape[1] == 2, self.pts.shape
        assert self.desc.shape == (self.pts.shape[0], 128), (self.desc.shape, self.pts.shape)
        assert self.desc.dtype == np.uint8, self.desc.dtype

    def __len__(self) -> int:
        return len(self.pts)


EMPTY = Features(np.zeros((0, 2), np.float32), np.zeros((0, 128), np.uint8))
_local = threading.local()


def _sift():
    import cv2

    s = getattr(_local, "sift", None)
    if s is None:
        s = _local.sift = cv2.SIFT_create()
    return s


def features(gray: np.ndarray) -> Features:
    """SIFT keypoints of a grey image (none for an image too small or too flat to have any)."""
    assert gray.ndim == 2 and gray.dtype == np.uint8, (gray.shape, gray.dtype)
    if min(gray.shape) < MIN_SIDE:
        return EMPTY
    kp, desc = _sift().detectAndCompute(np.ascontiguousarray(gray), None)
    if desc is None or not kp:
        return EMPTY
    assert desc.min() >= 0 and desc.max() <= 255, "SIFT descriptors outside 0-255"
    return Features(np.array([k.pt for k in kp], np.float32).reshape(-1, 2), desc.astype(np.uint8))


def query_gray(img: Any, cfg: LogoVerifyConfig) -> np.ndarray:
    """A listing photo (PIL image, any mode) as it is verified: grey (ITU-R 601 luma), resized so its
    long side is ``cfg.canvas`` (bicubic up, pixel-area down)."""
    import cv2

    g = np.asarray(img.convert("L"))
    s = cfg.canvas / max(g.shape)
    if s == 1.0:
        return np.ascontiguousarray(g)
    size = (max(1, round(g.shape[1] * s)), max(1, round(g.shape[0] * s)))
    return cv2.resize(g, size, interpolation=cv2.INTER_CUBIC if s > 1 else cv2.INTER_AREA)


def ref_views(img: Any, cfg: LogoVerifyConfig) -> list[np.ndarray]:
    """The grey views a reference logo (PIL image; transparency kept) is matched in: cut to its ink
    (transparent images), long side ``cfg.ref_side``, each with a ``cfg.border`` px replicated edge."""
    import cv2

    rgba = np.asarray(img.convert("RGBA"))
    alpha = rgba[:, :, 3]
    has_alpha = bool((alpha < 255).any())
    if has_alpha:
        ys, xs = np.nonzero(alpha > 5)
        if len(xs) == 0:
            return []
        rgba = rgba[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    s = cfg.ref_side / max(rgba.shape[:2])
    if s != 1.0:
        size = (max(1, round(rgba.shape[1] * s)), max(1, round(rgba.shape[0] * s)))
        rgba = cv2.resize(rgba, size, interpolation=cv2.INTER_CUBIC if s > 1 else cv2.INTER_AREA)
    a = rgba[:, :, 3].astype(np.float32) / 255.0
    lum = rgba[:, :, :3].astype(np.float32) @ np.float32([0.299, 0.587, 0.114])
    on_white = (lum * a + 255.0 * (1.0 - a)).astype(np.uint8)
    views = [on_white, 255 - on_white]
    if has_alpha:
        a8 = (a * 255.0).astype(np.uint8)
        views += [a8, 255 - a8]
        if cfg.outline:
            edge = cv2.morphologyEx(a8, cv2.MORPH_GRADIENT, np.ones((5, 5), np.uint8))
            views += [edge, 255 - edge]
    b = cfg.border
    return [cv2.copyMakeBorder(v, b, b, b, b, cv2.BORDER_REPLICATE) for v in views]


def ref_features(img: Any, cfg: LogoVerifyConfig) -> Features:
    """The keypoints of all of a reference's views together (their positions share one frame)."""
    feats = [f for f in (features(v) for v in ref_views(img, cfg)) if len(f)]
    if not feats:
        return EMPTY
    return Features(np.concatenate([f.pts for f in feats]), np.concatenate([f.desc for f in feats]))


_REFITS = 3  # fits tried per reference: a fit of implausible scale loses its inliers and is fitted again


def count_inliers(query: Features, ref: Features, cfg: LogoVerifyConfig) -> int:
    """Distinct photo keypoint positions among the RANSAC inliers of one similarity transform fitted
    to the ratio-test matches of ``ref``'s keypoints in ``query`` (0 when none fits with a plausible
    scale).

    Each photo keypoint keeps only its closest reference match (several views of the reference can
    match the same photo keypoint), and a transform of implausible scale, typically a collapse of
    many matches onto one spot, has its inliers removed and is fitted again (up to ``_REFITS`` times),
    so a degenerate fit does not hide the real one.
    """
    import cv2

    if len(query) < 2 or len(ref) < 2:
        return 0
    matches = cv2.BFMatcher(cv2.NORM_L2).knnMatch(ref.desc.astype(np.float32), query.desc.astype(np.float32), k=2)
    best: dict[int, tuple[float, int]] = {}  # photo keypoint -> (distance, reference keypoint)
    for m in matches:
        if len(m) == 2 and m[0].distance < cfg.ratio * m[1].distance:
            d, qi = float(m[0].distance), m[0].trainIdx
            if qi not in best or d < best[qi][0]:
                best[qi] = (d, m[0].queryIdx)
    a = np.asarray([(r, q) for q, (_, r) in sorted(best.items())], np.int64).reshape(-1, 2)
    for _ in range(_REFITS):
        if len(a) < cfg.min_matches:
            return 0
        m, mask = cv2.estimateAffinePartial2D(ref.pts[a[:, 0]], query.pts[a[:, 1]], method=cv2.RANSAC,
                                              ransacReprojThreshold=cfg.ransac_px, maxIters=2000,
                                              confidence=0.99, refineIters=10)
        if m is None or mask is None:
            return 0
        inl = mask.ravel().astype(bool)
        scale = math.sqrt(abs(float(np.linalg.det(m[:, :2]))))
        if cfg.min_scale < scale < cfg.max_scale:
            return len({(round(float(x)), round(float(y))) for x, y in query.pts[a[inl, 1]]})
        a = a[~inl]
    return 0


def should_verify(p: float, threshold: float, cfg: LogoVerifyConfig) -> bool:
    """Whether the largest bonus could lift probability ``p`` to the threshold (always, with none)."""
    if not np.isfinite(threshold):
        return True
    if threshold <= 0.0:
        return True
    if threshold >= 1.0:
        return False
    return _logit(p) + cfg.weight >= _logit(threshold)


def verify_candidates(scores: dict, query: Callable[[], Features | None], ref: Callable[[Any], Features | None],
                      cfg: LogoVerifyConfig, threshold: float = float("inf")) -> dict:
    """Verify the ``cfg.candidates`` best logo references of one photo and raise their scores in place.

    ``scores`` maps reference keys to probabilities (ties broken by key); candidates that could not
    reach ``threshold`` are skipped (:func:`should_verify`); ``query()`` gives the photo's keypoints
    (None: cannot verify), ``ref(key)`` a reference's (None: not verified). Returns the inliers of
    each verified reference.
    """
    cands = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[: cfg.candidates]
    todo = [k for k, s in cands if np.isfinite(s) and should_verify(s, threshold, cfg)]
    q = query() if todo else None
    if q is None:
        return {}
    out = {}
    for k in todo:
        r = ref(k)
        if r is None:
            continue
        out[k] = count_inliers(q, r, cfg)
        scores[k] = cfg.apply(scores[k], out[k])
    return out


# ----------------------------------------------------------------------------- a catalog's verifier


@dataclass
class LogoVerifier:
    """Verification settings plus the reference keypoints of one catalog (see :func:`for_catalog`)."""

    cfg: LogoVerifyConfig
    refs: Any  # verify.KeypointCache of Features by ref id


def for_catalog(embedder: Any, catalog: Any, max_items: int = 2048) -> LogoVerifier | None:
    """A logo verifier for ``catalog``'s references under ``embedder``'s settings; None when the model
    has none or the catalog keeps no reference images. At most ``max_items`` references' keypoints
    are kept (about 70 kB each: ~140 MB at the default), least recently used out."""
    cfg = getattr(embedder, "logo_verify", None)
    if cfg is None or cfg.candidates <= 0 or not hasattr(catalog, "ref_image_path"):
        return None

    def load(ref_id: str) -> Any:
        from . import imageio
        from .errors import CatalogError, ImageError

        try:
            return imageio.load_image(catalog.ref_image_path(ref_id), keep_alpha=True)
        except (CatalogError, ImageError, OSError) as e:
            log.debug("reference %s: %s", ref_id, e)
            return None

    return LogoVerifier(cfg, KeypointCache(load, None, max_items, lambda img: ref_features(img, cfg), what="logo"))
