"""What a user would otherwise use: perceptual hashes (pHash, dHash, PDQ) and ORB keypoint matching.

Every baseline produces, per query of an evaluation set, a ranked list ``[(key, score), ...]``
with higher = more similar, so :mod:`ccu_vision.evaluate`'s metrics apply unchanged:

* hashes: ``score = -hamming distance`` between the whole query image's hash and each reference's
  hash (for the logo task that is the whole listing photo against each clean logo: what a hash
  user would do; it is expected to be near chance). Ties are broken by reference key order.
* PDQ with dihedral variants: the 8 rotations/flips of the query are hashed and the minimum
  distance to each reference is used.
* ORB: one descriptor matrix over all references (with the reference each row came from),
  k=2 nearest-neighbour matching of the query's descriptors, Lowe's ratio test, then a RANSAC
  homography per candidate reference (the ``candidates`` references with most ratio-test matches);
  ``score = inliers + 0.001 * ratio-test matches`` (the second term only breaks ties).

Optional dependencies (imagehash, pdqhash, OpenCV) are imported lazily; :func:`unavailable` says
why a method cannot run so the bench can print a "not run" row instead of dropping it.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

log = logging.getLogger(__name__)

Ranked = list[tuple[str, float]]

HASH_METHODS = ("phash", "dhash", "pdq", "pdq-dihedral")
KEYPOINT_METHODS = ("orb",)
BASELINES = HASH_METHODS + KEYPOINT_METHODS

_NEEDS = {"phash": "imagehash", "dhash": "imagehash", "pdq": "pdqhash", "pdq-dihedral": "pdqhash", "orb": "cv2"}
_PIP = {"imagehash": "imagehash", "pdqhash": "pdqhash", "cv2": "opencv-python-headless"}
_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def unavailable(method: str) -> str | None:
    """Why ``method`` cannot run here (a missing optional dependency), or None when it can."""
    if method not in _NEEDS:
        return f"unknown baseline {method!r}"
    mod = _NEEDS[method]
    if importlib.util.find_spec(mod) is None:
        return f"{mod} is not installed (pip install {_PIP[mod]}, or 'ccu-vision[bench]')"
    return None


# ----------------------------------------------------------------------------- hashes


def _bits_to_bytes(bits: np.ndarray) -> np.ndarray:
    return np.packbits(np.asarray(bits, dtype=np.uint8).reshape(-1))


def hash_image(method: str, img: Image.Image) -> np.ndarray:
    """Packed hash bits of ``img``: ``[nbytes]`` uint8, or ``[8, nbytes]`` for ``pdq-dihedral``."""
    if method in ("phash", "dhash"):
        import imagehash

        fn = imagehash.phash if method == "phash" else imagehash.dhash
        return _bits_to_bytes(fn(img).hash)
    if method in ("pdq", "pdq-dihedral"):
        import pdqhash

        arr = np.ascontiguousarray(np.asarray(img.convert("RGB")))
        if method == "pdq":
            h, _quality = pdqhash.compute(arr)
            return _bits_to_bytes(h)
        hs, _qualities = pdqhash.compute_dihedral(arr)
        return np.stack([_bits_to_bytes(h) for h in hs])
    raise ValueError(f"not a hash method: {method!r}")


def hamming(queries: np.ndarray, refs: np.ndarray) -> np.ndarray:
    """Hamming distances ``[nq, nr]`` between packed hashes; queries may be ``[nq, V, nbytes]``
    (variants: the minimum over variants is returned)."""
    q = np.asarray(queries, np.uint8)
    r = np.asarray(refs, np.uint8)
    if q.ndim == 2:
        q = q[:, None, :]
    assert q.ndim == 3 and r.ndim == 2 and q.shape[2] == r.shape[1], (q.shape, r.shape)
    out = np.empty((q.shape[0], r.shape[0]), dtype=np.int32)
    for i in range(q.shape[0]):  # [V, nr, nbytes] per query keeps memory small
        d = _POPCOUNT[np.bitwise_xor(q[i][:, None, :], r[None, :, :])].sum(axis=2, dtype=np.int32)
        out[i] = d.min(axis=0)
    return out


def rank_scores(scores: np.ndarray, keys: Sequence[str], k: int) -> list[Ranked]:
    """Top-``k`` ``(key, score)`` per row of ``scores`` [nq, nr] (higher first; ties by key order)."""
    scores = np.asarray(scores, np.float64)
    out: list[Ranked] = []
    tie = np.arange(scores.shape[1])
    for row in scores:
        order = np.lexsort((tie, -row))[:k]
        out.append([(keys[j], float(row[j])) for j in order])
    return out


# ----------------------------------------------------------------------------- ORB


@dataclass
class OrbConfig:
    """ORB baseline settings (OpenCV defaults where it matters)."""

    ref_features: int = 500
    query_features: int = 1000
    ratio: float = 0.8
    candidates: int = 5
    min_matches: int = 4
    ransac_px: float = 5.0
    max_side: int = 1024  # images are downscaled to at most this long side before detection


def _gray(img: Image.Image, max_side: int) -> np.ndarray:
    g = img.convert("L")
    if max(g.size) > max_side:
        s = max_side / max(g.size)
        g = g.resize((max(1, round(g.width * s)), max(1, round(g.height * s))), Image.Resampling.BILINEAR)
    return np.asarray(g)


class OrbMatcher:
    """Keypoint baseline: ORB + ratio test + per-reference RANSAC homography."""

    def __init__(self, refs: Sequence[tuple[str, Image.Image]], cfg: OrbConfig | None = None) -> None:
        import cv2

        self.cfg = cfg or OrbConfig()
        self._cv2 = cv2
        self.keys = [k for k, _ in refs]
        self._orb_ref = cv2.ORB_create(nfeatures=self.cfg.ref_features)
        self._orb_q = cv2.ORB_create(nfeatures=self.cfg.query_features)
        descs, pts, labels = [], [], []
        for j, (_key, img) in enumerate(refs):
            kp, d = self._orb_ref.detectAndCompute(_gray(img, self.cfg.max_side), None)
            if d is None or not kp:
                continue
            descs.append(d)
            pts.append(np.array([p.pt for p in kp], np.float32))
            labels.append(np.full(len(kp), j, np.int32))
        self.n_ref_keypoints = int(sum(len(d) for d in descs))
        self._desc = np.concatenate(descs) if descs else np.zeros((0, 32), np.uint8)
        self._pts = np.concatenate(pts) if pts else np.zeros((0, 2), np.float32)
        self._labels = np.concatenate(labels) if labels else np.zeros(0, np.int32)
        self._bf = cv2.BFMatcher(cv2.NORM_HAMMING)

    def rank(self, img: Image.Image, k: int = 10) -> Ranked:
        """Ranked references for one query image (empty when nothing matches)."""
        cv2 = self._cv2
        if len(self._desc) < 2:
            return []
        kp, d = self._orb_q.detectAndCompute(_gray(img, self.cfg.max_side), None)
        if d is None or len(kp) == 0:
            return []
        qpts = np.array([p.pt for p in kp], np.float32)
        good_q, good_r = [], []
        for m in self._bf.knnMatch(d, self._desc, k=2):
            if len(m) == 2 and m[0].distance < self.cfg.ratio * m[1].distance:
                good_q.append(m[0].queryIdx)
                good_r.append(m[0].trainIdx)
        if not good_q:
            return []
        gq, gr = np.asarray(good_q), np.asarray(good_r)
        lab = self._labels[gr]
        counts = np.bincount(lab, minlength=len(self.keys))
        matched = np.nonzero(counts)[0]
        score = {int(j): 0.001 * float(counts[j]) for j in matched}
        cand = matched[np.lexsort((matched, -counts[matched]))][: self.cfg.candidates]
        for j in cand:
            if counts[j] < self.cfg.min_matches:
                continue
            sel = lab == j
            src = self._pts[gr[sel]].reshape(-1, 1, 2)
            dst = qpts[gq[sel]].reshape(-1, 1, 2)
            _h, mask = cv2.findHomography(src, dst, cv2.RANSAC, self.cfg.ransac_px)
            if mask is not None:
                score[int(j)] += float(mask.sum())
        order = sorted(score, key=lambda j: (-score[j], j))[:k]
        return [(self.keys[j], score[j]) for j in order]


# ----------------------------------------------------------------------------- one entry point


def rank_task(
    method: str,
    refs: Sequence[tuple[str, Image.Image]],
    queries: Sequence[Callable[[], Image.Image]],
    k: int = 10,
    orb: OrbConfig | None = None,
) -> list[Ranked]:
    """Rank ``refs`` (key, image) for every query (lazy loaders, so only one query is in memory)."""
    keys = [key for key, _ in refs]
    if method in HASH_METHODS:
        ref_method = "pdq" if method == "pdq-dihedral" else method
        rh = np.stack([hash_image(ref_method, im) for _, im in refs]) if refs else np.zeros((0, 8), np.uint8)
        qh = [hash_image(method, load()) for load in queries]
        if not qh:
            return []
        d = hamming(np.stack(qh), rh) if len(rh) else np.zeros((len(qh), 0))
        return rank_scores(-d.astype(np.float64), keys, k)
    if method == "orb":
        matcher = OrbMatcher(refs, orb)
        return [matcher.rank(load(), k) for load in queries]
    raise ValueError(f"unknown baseline {method!r} (expected one of {', '.join(BASELINES)})")
