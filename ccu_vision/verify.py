"""Near-duplicate scoring: windowed global search, then geometric verification of the best candidates.

A listing that reuses an official photo is usually an *edited* copy: cropped, put in a collage,
framed by a screenshot, banner or border. One global descriptor per image misses many of these, so
near-duplicate scoring has two parts:

1. **windows**: besides its global descriptor, a query photo gets descriptors of 18 sub-windows
   (half and 70 % of its sides, 3 x 3 positions; ``window_shapes`` adds windows of other aspect,
   e.g. the half strips of a side-by-side layout); a product's CNN score is the best of
   ``global . product`` and ``window . product - window_penalty`` (a window match must beat a
   whole-image match by a small margin);
2. **verification**: the ``candidates`` best products get an ORB keypoint match (ratio test +
   RANSAC affine transform, against the product and its mirror image) on the same letterboxed
   canvases; the fused score is ``cnn + weight * clip((inliers - floor) / (cap - floor), 0, 1)``
   (unrelated photos reach a few inliers by chance: measured 4-9 on look-alike photos).

The parameters are part of how a model's near-duplicate threshold was calibrated, so they travel
in the model file (``ccu.dup_verify``); a model without them scores near-duplicates by the global
descriptor alone. Inliers are only counted where they could change a flag: a candidate whose CNN
score plus the largest bonus stays below the threshold is not verified (``gate``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

VERIFY_METHOD = "orb-affine/1"
MIN_SIDE = 48  # pixels: below this an image has no room for ORB's 31 px patches


@dataclass(frozen=True)
class VerifyConfig:
    """How near-duplicate scores are computed (stored in the model as ``ccu.dup_verify``)."""

    method: str = VERIFY_METHOD
    candidates: int = 2  # products verified per query
    features: int = 500  # ORB keypoints per image
    ratio: float = 0.8  # Lowe ratio test
    ransac_px: float = 5.0  # RANSAC reprojection error (affine model), canvas pixels
    floor: int = 8  # inliers any two photos reach by chance (an affine fit to 3 random matches and a few more)
    cap: int = 32  # inliers at which the bonus saturates
    weight: float = 0.5  # largest bonus added to the CNN score
    window_penalty: float = 0.02  # a sub-window match counts this much less than a whole-image match
    window_fracs: tuple[float, ...] = (0.5, 0.7)
    # (height, width) fractions of the content window, each at 3 x 3 positions (repeats dropped)
    window_shapes: tuple[tuple[float, float], ...] = ()

    def to_dict(self) -> dict:
        d = asdict(self)
        d["window_fracs"] = list(self.window_fracs)
        if self.window_shapes:
            d["window_shapes"] = [list(sh) for sh in self.window_shapes]
        else:  # settings without them read, and hash (key), as they did before shapes existed
            del d["window_shapes"]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> VerifyConfig:
        """Parse stored settings; unknown methods and keys are refused rather than half-applied."""
        d = dict(d)
        if d.get("method") != VERIFY_METHOD:
            raise ValueError(f"unknown near-duplicate verification method {d.get('method')!r}")
        known = set(cls.__dataclass_fields__)
        extra = set(d) - known
        if extra:
            raise ValueError(f"unknown near-duplicate verification settings {sorted(extra)}")
        try:
            if "window_fracs" in d:
                d["window_fracs"] = tuple(float(f) for f in d["window_fracs"])
            if "window_shapes" in d:
                d["window_shapes"] = tuple((float(h), float(w)) for h, w in d["window_shapes"])
        except (TypeError, ValueError):
            raise ValueError(f"bad near-duplicate window settings {d}") from None
        cfg = cls(**d)
        fracs = list(cfg.window_fracs) + [f for sh in cfg.window_shapes for f in sh]
        if (cfg.candidates < 0 or cfg.features < 8 or not 0 <= cfg.floor < cfg.cap or not 0 < cfg.ratio <= 1
                or not all(0 < f <= 1 for f in fracs)):
            raise ValueError(f"bad near-duplicate verification settings {d}")
        return cfg

    def key(self) -> str:
        """Short hash of the settings: calibrated thresholds record the scoring they were made for."""
        return settings_key(self.to_dict())

    def bonus(self, inliers: np.ndarray | int) -> np.ndarray:
        """What verified inliers add to a CNN score."""
        return ramp_bonus(inliers, self.floor, self.cap, self.weight)


def settings_key(settings: dict) -> str:
    """Short hash of a settings dict (keys sorted): what a calibrated threshold was made for."""
    blob = json.dumps(settings, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def ramp_bonus(inliers: np.ndarray | int, floor: float, cap: float, weight: float) -> np.ndarray:
    """``weight * clip((inliers - floor) / (cap - floor), 0, 1)``: the keypoint bonus of both verifiers."""
    x = (np.asarray(inliers, np.float64) - floor) / (cap - floor)
    return weight * np.clip(x, 0.0, 1.0)


def sub_windows(content: np.ndarray, fracs: tuple[float, ...],
                shapes: tuple[tuple[float, float], ...] = ()) -> np.ndarray:
    """Feature-grid windows [W, 4] (r0, c0, r1, c1): the content window first, then windows of ``f``
    times its height and width at 3 x 3 positions (9 per fraction), then windows of each (height,
    width) fraction in ``shapes`` at 3 x 3 positions, dropping any that repeat an earlier one (a
    full-height strip has one row position)."""
    assert content.shape == (4,), content.shape
    r0, c0, r1, c1 = (int(v) for v in content)
    out = [[r0, c0, r1, c1]]

    def at_positions(fh: float, fw: float, unique: bool) -> None:
        h, w = max(1, round((r1 - r0) * fh)), max(1, round((c1 - c0) * fw))
        for a in (0.0, 0.5, 1.0):
            for b in (0.0, 0.5, 1.0):
                rr, cc = r0 + round((r1 - r0 - h) * a), c0 + round((c1 - c0 - w) * b)
                if not unique or [rr, cc, rr + h, cc + w] not in out:
                    out.append([rr, cc, rr + h, cc + w])

    for f in fracs:  # as before shapes existed: always 9 each
        at_positions(f, f, unique=False)
    for fh, fw in shapes:
        at_positions(fh, fw, unique=True)
    return np.asarray(out, np.int64)


# ----------------------------------------------------------------------------- keypoints


@dataclass
class Keypoints:
    """ORB keypoints of one image: positions [n, 2] (canvas pixels) and binary descriptors [n, 32]."""

    pts: np.ndarray
    desc: np.ndarray

    def __post_init__(self) -> None:
        assert self.pts.ndim == 2 and self.pts.shape[1] == 2, self.pts.shape
        assert self.desc.ndim == 2 and self.desc.shape[0] == self.pts.shape[0], (self.desc.shape, self.pts.shape)

    def __len__(self) -> int:
        return len(self.pts)


_local = threading.local()


def _orb(n: int):
    import cv2

    cache = getattr(_local, "orb", None)
    if cache is None:
        cache = _local.orb = {}
    if n not in cache:
        cache[n] = cv2.ORB_create(nfeatures=n)
    return cache[n]


def content_gray(canvas: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
    """The grey image content of a letterboxed canvas (padding cut off, so its edges make no corners)."""
    assert canvas.ndim == 3 and canvas.shape[2] == 3, canvas.shape
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    x0, y0 = max(0, x0), max(0, y0)
    x1, y1 = min(canvas.shape[1], max(x1, x0 + 1)), min(canvas.shape[0], max(y1, y0 + 1))
    rgb = canvas[y0:y1, x0:x1].astype(np.float32)
    return np.ascontiguousarray((rgb @ np.float32([0.299, 0.587, 0.114])).clip(0, 255).astype(np.uint8))


def keypoints(gray: np.ndarray, n: int) -> Keypoints:
    """ORB keypoints of a grey image (none for an image too small or too flat to have any)."""
    assert gray.ndim == 2 and gray.dtype == np.uint8, (gray.shape, gray.dtype)
    if min(gray.shape) < MIN_SIDE:  # ORB's pyramid fails on slivers (a 6000 x 300 banner on the canvas)
        return Keypoints(np.zeros((0, 2), np.float32), np.zeros((0, 32), np.uint8))
    kp, desc = _orb(n).detectAndCompute(gray, None)
    if desc is None or not kp:
        return Keypoints(np.zeros((0, 2), np.float32), np.zeros((0, 32), np.uint8))
    return Keypoints(np.array([k.pt for k in kp], np.float32).reshape(-1, 2), desc)


def mirrored(gray: np.ndarray) -> np.ndarray:
    """The image flipped left-right (ORB descriptors are not mirror invariant)."""
    return np.ascontiguousarray(gray[:, ::-1])


def count_inliers(query: Keypoints, ref: Keypoints, cfg: VerifyConfig) -> int:
    """RANSAC affine-transform inliers among ratio-test matches of ``query`` to ``ref``."""
    import cv2

    if len(query) < 2 or len(ref) < 2:
        return 0
    matches = cv2.BFMatcher(cv2.NORM_HAMMING).knnMatch(query.desc, ref.desc, k=2)
    pairs = [(m[0].queryIdx, m[0].trainIdx) for m in matches
             if len(m) == 2 and m[0].distance < cfg.ratio * m[1].distance]
    if len(pairs) < 4:
        return 0
    a = np.asarray(pairs)
    # an affine model fits every copy edit (crop, resize, aspect change, rotation, collage, screenshot);
    # it is stricter than a homography against viewpoint changes, though a re-shoot of a flat, printed
    # product can still verify locally (measured: fewer inliers, but above the bonus cap)
    _m, mask = cv2.estimateAffine2D(ref.pts[a[:, 1]], query.pts[a[:, 0]], method=cv2.RANSAC,
                                    ransacReprojThreshold=cfg.ransac_px)
    return 0 if mask is None else int(mask.sum())


def best_inliers(query: Keypoints, ref: tuple[Keypoints, Keypoints], cfg: VerifyConfig) -> int:
    """Inliers against a product and against its mirror image, whichever is more."""
    return max(count_inliers(query, ref[0], cfg), count_inliers(query, ref[1], cfg))


def ref_keypoints(gray: np.ndarray, cfg: VerifyConfig) -> tuple[Keypoints, Keypoints]:
    """A product's keypoints as given and mirrored."""
    return keypoints(gray, cfg.features), keypoints(mirrored(gray), cfg.features)


class KeypointCache:
    """Reference keypoints by ref id, computed on first use: ``compute(load(ref_id))`` (by default
    ``load`` gives a product's grey canvas content and ``compute`` is :func:`ref_keypoints`).

    Bounded (least recently used out) so a scan against a large catalog keeps a fixed memory budget;
    thread-safe. ``load`` returning None (e.g. a reference image that cannot be read) means the
    reference is not verified; that is logged once.
    """

    def __init__(self, load: Callable[[str], Any], cfg: VerifyConfig | None, max_items: int = 4096,
                 compute: Callable[[Any], Any] | None = None, what: str = "near-duplicate") -> None:
        self._load = load
        self.cfg = cfg
        self.max_items = max_items
        self._compute = compute if compute is not None else (lambda gray: ref_keypoints(gray, cfg))
        self._what = what
        self._items: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, ref_id: str) -> Any:
        with self._lock:
            if ref_id in self._items:
                self._items.move_to_end(ref_id)
                return self._items[ref_id]
        src = self._load(ref_id)
        kp = None if src is None else self._compute(src)
        if src is None:
            log.warning("reference %s: image unavailable, %s matches to it are not verified", ref_id, self._what)
        with self._lock:
            self._items[ref_id] = kp
            while len(self._items) > self.max_items:
                self._items.popitem(last=False)
        return kp


def should_verify(cnn_score: float, threshold: float, cfg: VerifyConfig) -> bool:
    """Whether inliers could lift this candidate to the threshold (all candidates when there is none)."""
    return not np.isfinite(threshold) or cnn_score + cfg.weight >= threshold


def verify_candidates(scores: dict, gray: Callable[[], np.ndarray | None],
                      ref_kp: Callable[[Any], tuple[Keypoints, Keypoints] | None], cfg: VerifyConfig,
                      threshold: float = float("inf")) -> dict:
    """Keypoint-verify the ``cfg.candidates`` best products of one query and fuse their scores in place.

    ``scores`` maps product keys to CNN scores (ties broken by key); candidates whose score plus the
    largest bonus stays below ``threshold`` are skipped (:func:`should_verify`); ``gray()`` gives the
    query's grey canvas content (None: cannot verify). Returns the inliers of each verified product.
    """
    cands = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[: cfg.candidates]
    todo = [k for k, s in cands if np.isfinite(s) and should_verify(s, threshold, cfg)]
    g = gray() if todo else None
    if g is None:
        return {}
    q = keypoints(g, cfg.features)
    out = {}
    for k in todo:
        kp = ref_kp(k)
        out[k] = 0 if kp is None else best_inliers(q, kp, cfg)
        scores[k] = float(scores[k] + cfg.bonus(out[k]))
    return out


def dense_dup_scores(photo, refs: np.ndarray, owner: np.ndarray, n: int, cfg: VerifyConfig | None,
                     ref_kp: Callable[[int], tuple[Keypoints, Keypoints] | None] | None = None,
                     threshold: float = float("inf")) -> tuple[np.ndarray, np.ndarray]:
    """Near-duplicate scores [n] of one photo against ``n`` products whose vectors ``refs`` [m, D] belong
    to products ``owner`` [m], scored exactly as a scan scores them, plus the inliers [n] (-1: not verified).

    For evaluation sets, where every product is scored (the scan searches an index for the same top hits).
    """
    assert refs.ndim == 2 and owner.shape == (len(refs),), (refs.shape, owner.shape)
    sim = np.full(n, -np.inf)
    np.maximum.at(sim, owner, refs @ np.asarray(photo.global_vec, np.float32))
    inl = np.full(n, -1, np.int64)
    if cfg is None:
        return sim, inl
    w = photo.dup_windows
    if w is not None and len(w) and len(refs):
        np.maximum.at(sim, owner, (refs @ np.asarray(w, np.float32).T).max(1) - cfg.window_penalty)
    if ref_kp is not None:
        scores = {j: float(v) for j, v in enumerate(sim)}
        for j, k in verify_candidates(scores, photo.gray, ref_kp, cfg, threshold).items():
            inl[j], sim[j] = k, scores[j]
    return sim, inl


# ----------------------------------------------------------------------------- a catalog's verifier


@dataclass
class Verifier:
    """Verification settings plus the product keypoints of one catalog (see :func:`for_catalog`)."""

    cfg: VerifyConfig
    refs: KeypointCache


def canvas_gray(img, size: int, interp: str) -> np.ndarray:
    """An image's grey content on the model's query canvas (the geometry queries are verified in)."""
    from .preprocess import letterbox

    canvas, lb = letterbox(img, size, interp)
    return content_gray(canvas, lb.content_box())


def for_catalog(embedder, catalog, max_items: int = 4096) -> Verifier | None:
    """A verifier for ``catalog``'s products under ``embedder``'s settings; None when the model has none,
    when the catalog's thresholds were calibrated for another scoring (``dup_scoring``), or when the
    catalog keeps no reference images to take keypoints from."""
    cfg = getattr(embedder, "verify", None)
    pinned = (getattr(catalog, "thresholds", None) or {}).get("dup_scoring")
    if cfg is not None and pinned != cfg.key():
        # the catalog's near-duplicate threshold was calibrated for another scoring: keep to that one
        log.warning("the catalog's near-duplicate threshold was calibrated %s; near-duplicates are scored "
                    "by the global descriptor alone (`ccu-vision reindex` adopts the model's thresholds)",
                    "without keypoint verification" if pinned is None else f"for another scoring ({pinned})")
        return None
    if cfg is None or cfg.candidates <= 0 or not hasattr(catalog, "ref_image_path"):
        return None
    size, interp = int(embedder.query_size), str(embedder.interp)

    def load(ref_id: str) -> np.ndarray | None:
        from . import imageio
        from .errors import CatalogError, ImageError

        try:
            img = imageio.load_image(catalog.ref_image_path(ref_id), draft_size=size)
        except (CatalogError, ImageError, OSError) as e:
            log.debug("reference %s: %s", ref_id, e)
            return None
        return canvas_gray(img, size, interp)

    return Verifier(cfg, KeypointCache(load, cfg, max_items))
