"""Text evidence: a brand's name (or the lettering of its own logo) read in a listing photo.

Most real brand marks carry lettering, and counterfeit listings print it: "HUGO BOSS" on a shirt,
"PUMA" on a box. The embedding compares shapes; this module reads words. An OCR engine
(RapidOCR's PP-OCRv4 detector and recogniser, ONNX models shipped on PyPI in
``rapidocr-onnxruntime``, Apache-2.0, run on onnxruntime like the backbone) turns a photo into lines
of text; a brand's *keys* are its registered name and the lettering OCR reads in its reference
logos; a listing matches a key when the key appears in one of its lines with at most a few
character edits (:func:`match_quality`).

Matching is deliberately conservative, since a false text match is a false flag:

* text is compared after :func:`normalize` (accents removed, lower case, letters and digits only),
  so ``"Hugo Boss"``, ``"hugo-boss"`` and ``"HUGO BOSS"`` are one key;
* keys shorter than :data:`MIN_KEY` characters are dropped; keys of up to :data:`SHORT_KEY`
  characters must equal a whole word or line of the listing (``"bmw"`` does not match inside
  ``"submwater"``); longer keys may sit inside a line with :func:`allowed_edits` edits;
* OCR lines below ``min_conf`` confidence are ignored.

The engine is optional at import time: :class:`TextReader` imports it on first use and raises
:class:`~ccu_vision.errors.CcuError` naming the missing package when it is not installed.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from .errors import CcuError, ModelError
from .metadata import versioned_json

log = logging.getLogger(__name__)

MIN_KEY = 3  # normalized characters; shorter names ("hp", "gm") are too common as text to be evidence
SHORT_KEY = 4  # keys up to this length must match a whole word or line
MIN_CONF = 0.6  # OCR lines below this recogniser confidence are ignored
_NON_ALNUM = re.compile(r"[^a-z0-9]+")


@dataclass(frozen=True)
class TextLine:
    """One line of text read in an image, the recogniser's confidence (0..1) and, for photos, its box
    (x0, y0, x1, y1 in the original image's pixels)."""

    text: str
    conf: float
    box: tuple[int, int, int, int] | None = None

    def to_list(self) -> list:
        return [self.text, round(float(self.conf), 4)]


def _fold(s: str) -> str:
    return unicodedata.normalize("NFKD", s).encode("ascii", "ignore").decode("ascii").lower()


def normalize(s: str) -> str:
    """Lower-case ASCII letters and digits only (accents folded): the form keys are compared in."""
    return _NON_ALNUM.sub("", _fold(s))


def words(s: str) -> list[str]:
    """The normalized words of a line (split on anything that is not a letter or digit)."""
    return [w for w in _NON_ALNUM.split(_fold(s)) if w]


def allowed_edits(n: int) -> int:
    """Character edits a key of ``n`` normalized characters may differ by: 0 up to 5, 1 up to 9, else 2."""
    return 0 if n <= 5 else 1 if n <= 9 else 2


def substring_distance(key: str, text: str) -> int:
    """Fewest edits turning ``key`` into some substring of ``text`` (Sellers' approximate match)."""
    if not key:
        return 0
    prev = [0] * (len(text) + 1)  # a match may start anywhere in text: row 0 is all zeros
    for i, kc in enumerate(key, 1):
        cur = [i] + [0] * len(text)
        for j, tc in enumerate(text, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (kc != tc))
        prev = cur
    return min(prev)


def brand_keys(name: str, logo_lines: Iterable[TextLine] = (), min_conf: float = MIN_CONF) -> list[str]:
    """A brand's text keys: its normalized name and each confident line OCR read in its logos."""
    keys = {normalize(name)}
    keys.update(normalize(line.text) for line in logo_lines if line.conf >= min_conf)
    return sorted(k for k in keys if len(k) >= MIN_KEY)


_Candidate = tuple[str, float, list[str], TextLine]  # (normalized text, confidence, words, line)


def _candidates(lines: Sequence[TextLine], min_conf: float) -> list[_Candidate]:
    """A listing's confident lines in matching form, plus all of them joined in reading order (so a
    name split over two detected lines, "HUGO" / "BOSS", still matches; that line's box spans them)."""
    good = [ln for ln in lines if ln.conf >= min_conf]
    cands = [(normalize(ln.text), ln.conf, words(ln.text), ln) for ln in good]
    if len(good) > 1:
        boxes = [ln.box for ln in good if ln.box is not None]
        span = (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes),
                max(b[3] for b in boxes)) if len(boxes) == len(good) else None
        joined = TextLine(" ".join(ln.text for ln in good), min(ln.conf for ln in good), span)
        cands.append(("".join(c[0] for c in cands), joined.conf, [], joined))
    return cands


def _best(key: str, cands: Sequence[_Candidate]) -> tuple[float, TextLine | None]:
    n = len(key)
    best, best_line = 0.0, None
    if n < MIN_KEY:
        return best, best_line
    for text, conf, ws, line in cands:
        q = 0.0
        if n <= SHORT_KEY:
            if key == text or key in ws:
                q = conf
        elif len(text) >= n - allowed_edits(n):
            d = substring_distance(key, text)
            if d <= allowed_edits(n):
                q = conf * (1.0 - d / n)
        if q > best:
            best, best_line = q, line
    return float(best), best_line


def best_match(key: str, lines: Sequence[TextLine], min_conf: float = MIN_CONF) -> tuple[float, TextLine | None]:
    """How well a listing's text shows ``key``, and the line that shows it: the best line's
    confidence x (1 - edits / len(key)); (0, None) if no line does. The lines are also tried joined
    in reading order (:func:`_candidates`)."""
    return _best(key, _candidates(lines, min_conf))


def match_quality(key: str, lines: Sequence[TextLine], min_conf: float = MIN_CONF) -> float:
    """The quality part of :func:`best_match` (0 when no line shows ``key``)."""
    return best_match(key, lines, min_conf)[0]


LOGO_SIDE = 560  # a reference logo is read at this long side, on white, with a margin
PHOTO_SIDE = 1024  # listing photos are read at most at this long side (callers downscale)


def logo_canvas(img: Image.Image) -> Image.Image:
    """A reference logo as OCR reads it: alpha flattened on white, long side :data:`LOGO_SIDE`, a
    40 px white margin and at least a third as tall as wide (a thin wordmark is not stretched by the
    detector's own resizing, which read almost nothing from 260x50 wordmarks)."""
    rgba = img.convert("RGBA")
    flat = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    w, h = flat.size
    s = LOGO_SIDE / max(w, h, 1)
    flat = flat.resize((max(1, round(w * s)), max(1, round(h * s))), Image.BICUBIC)
    w, h = flat.size
    cw, ch = w + 80, max(h + 80, (w + 80) // 3)
    canvas = Image.new("RGB", (cw, ch), (255, 255, 255))
    canvas.paste(flat, ((cw - w) // 2, (ch - h) // 2))
    return canvas


@dataclass(frozen=True)
class PhotoOCR:
    """How listing photos are read (part of a model's ``ccu.text_scoring``, since its threshold was
    calibrated on text read this way).

    ``exact=False`` (files before v15cdpft2): the photo is downscaled to at most ``side`` px and the
    detector uses RapidOCR's default size (short side raised to 736, so small photos are upscaled).
    ``exact=True``: the photo is resized (up or down) so its long side is exactly ``side`` and the
    detector reads it at that size, so every photo costs the same whatever its resolution.
    ``angle_cls``: RapidOCR's 180-degree text classifier.
    """

    side: int = PHOTO_SIDE
    exact: bool = False
    angle_cls: bool = True

    def to_dict(self) -> dict:
        return {"side": self.side, "exact": self.exact, "angle_cls": self.angle_cls}


LEGACY_PHOTO = PhotoOCR()


def photo_canvas(img: Image.Image, side: int = PHOTO_SIDE, exact: bool = False) -> Image.Image:
    """A listing photo as OCR reads it: RGB, downscaled (never up) so its long side is at most ``side``;
    with ``exact``, resized up or down so its long side is ``side``."""
    rgb = img.convert("RGB")
    w, h = rgb.size
    if max(w, h) == side or (max(w, h) < side and not exact):
        return rgb
    s = side / max(w, h)
    return rgb.resize((max(1, round(w * s)), max(1, round(h * s))),
                      Image.BILINEAR if s < 1 else Image.BICUBIC)


class TextReader:
    """Lazy OCR engines (RapidOCR on onnxruntime); one instance is safe to share between threads.

    Photos are read as a :class:`PhotoOCR` says (by default RapidOCR's detector size, short side 736);
    reference logos through :func:`logo_canvas` and a detector capped at 640 px (no upscaling).
    """

    def __init__(self, threads: int | None = None):
        self.threads = threads
        self._engines: dict[str, object] = {}
        self._lock = threading.Lock()

    def _get(self, which: str):
        if which not in self._engines:
            try:
                from rapidocr_onnxruntime import RapidOCR
            except ImportError as e:  # pragma: no cover - depends on the install
                raise CcuError("text evidence needs the 'rapidocr-onnxruntime' package "
                               f"(pip install rapidocr-onnxruntime): {e}") from None
            kw: dict = {"print_verbose": False}
            if which == "logo":
                kw.update(det_limit_side_len=640, det_limit_type="max")
            elif which.startswith("photo:"):  # "photo:<side>": the detector at exactly that long side
                kw.update(det_limit_side_len=int(which.split(":")[1]), det_limit_type="max")
            if self.threads:
                for part in ("det", "cls", "rec"):
                    kw[f"{part}_intra_op_num_threads"] = int(self.threads)
            self._engines[which] = RapidOCR(**kw)
        return self._engines[which]

    def _read(self, which: str, img: Image.Image, scale: float = 1.0, angle_cls: bool = True) -> list[TextLine]:
        arr = np.asarray(img)
        assert arr.ndim == 3 and arr.shape[2] == 3 and arr.dtype == np.uint8, (arr.shape, arr.dtype)
        bgr = np.ascontiguousarray(arr[:, :, ::-1])
        with self._lock:  # the engines keep per-call state
            res, _ = self._get(which)(bgr, use_cls=angle_cls)
        out = []
        for quad, t, c in res or []:
            q = np.asarray(quad, np.float64).reshape(-1, 2) / scale
            box = (int(q[:, 0].min()), int(q[:, 1].min()), int(np.ceil(q[:, 0].max())), int(np.ceil(q[:, 1].max())))
            out.append(TextLine(str(t), float(c), box))
        return out

    def read(self, img: Image.Image, how: PhotoOCR = LEGACY_PHOTO, source_width: int | None = None) -> list[TextLine]:
        """Lines of text in a listing photo (any mode; read as ``how`` says, see :func:`photo_canvas`),
        in reading order, with boxes in ``img``'s pixels (or, when ``img`` is already a canvas of a
        photo ``source_width`` px wide, in that photo's pixels)."""
        canvas = photo_canvas(img, how.side, how.exact)
        return self._read(f"photo:{how.side}" if how.exact else "photo", canvas,
                          canvas.size[0] / max(source_width or img.size[0], 1), how.angle_cls)

    def read_logo(self, img: Image.Image) -> list[TextLine]:
        """Lines of text in a reference logo (transparent or not; see :func:`logo_canvas`)."""
        return [TextLine(ln.text, ln.conf) for ln in self._read("logo", logo_canvas(img))]


def default_reader() -> TextReader:
    """A shared reader; ``CCU_OCR_THREADS`` sets its onnxruntime threads (default: onnxruntime's)."""
    global _DEFAULT
    if _DEFAULT is None:
        t = os.environ.get("CCU_OCR_THREADS")
        _DEFAULT = TextReader(int(t) if t else None)
    return _DEFAULT


_DEFAULT: TextReader | None = None


# ----------------------------------------------------------------------------- scoring with text

FORMAT = "ccu-text-scoring/1"
Z_CLIP = 30.0  # logits of probabilities 0 and 1


@dataclass(frozen=True)
class TextScoring:
    """How a model file adds text evidence to its logo scores (``ccu.text_scoring`` metadata).

    For a reference whose brand the listing's text matches with quality ``m``, the logo score ``p``
    becomes ``sigmoid(logit(p) + beta * m)``; a matched brand the image search did not list enters
    with ``sigmoid(gamma + beta * m)``. The logo threshold for such scores is ``logo_text`` in the
    model's (and catalog's) thresholds.
    """

    beta: float
    gamma: float
    min_conf: float = MIN_CONF
    photo: PhotoOCR = LEGACY_PHOTO  # how listing photos are read

    def to_json(self) -> str:
        import json

        d = {"format": FORMAT, "beta": self.beta, "gamma": self.gamma, "min_conf": self.min_conf}
        if self.photo != LEGACY_PHOTO:  # files written before the setting existed keep their bytes
            d["photo"] = self.photo.to_dict()
        return json.dumps(d)



def parse_config(raw: str, path: str = "") -> TextScoring | None:
    """The ``ccu.text_scoring`` metadata of a model file (None when it has none); refuses what it cannot read."""
    cfg = versioned_json(raw, path, "ccu.text_scoring", FORMAT, "text scoring")
    if cfg is None:
        return None
    vals = [cfg.get(k) for k in ("beta", "gamma", "min_conf")]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) for v in vals) \
            or not 0 <= vals[2] <= 1 or vals[0] < 0:
        raise ModelError(f"{path}: ccu.text_scoring needs finite beta >= 0, gamma and min_conf in [0, 1], got {cfg!r}")
    photo = cfg.get("photo", LEGACY_PHOTO.to_dict())
    side, exact, cls = (photo.get(k) for k in ("side", "exact", "angle_cls")) if isinstance(photo, dict) else (None,) * 3
    if not (isinstance(side, int) and not isinstance(side, bool) and 32 <= side <= 4096
            and isinstance(exact, bool) and isinstance(cls, bool)):
        raise ModelError(f"{path}: ccu.text_scoring 'photo' needs side (32..4096 px), exact and angle_cls "
                         f"(booleans), got {photo!r}")
    return TextScoring(float(vals[0]), float(vals[1]), float(vals[2]), PhotoOCR(side, exact, cls))


def brand_evidence(keys: dict[str, list[str]], lines: Sequence[TextLine], min_conf: float = MIN_CONF
                   ) -> dict[str, tuple[float, TextLine]]:
    """Each brand whose keys the listing's ``lines`` show: (best :func:`match_quality` > 0, that line)."""
    out: dict[str, tuple[float, TextLine]] = {}
    cands = _candidates(lines, min_conf)  # once per photo, not once per key
    if not cands:
        return out
    for brand, ks in keys.items():
        for k in ks:
            q, line = _best(k, cands)
            if line is not None and q > out.get(brand, (0.0, None))[0]:
                out[brand] = (q, line)
    return out


def brand_matches(keys: dict[str, list[str]], lines: Sequence[TextLine], min_conf: float = MIN_CONF) -> dict[str, float]:
    """Each brand whose keys the listing's ``lines`` show, with its best :func:`match_quality` (> 0)."""
    return {b: q for b, (q, _) in brand_evidence(keys, lines, min_conf).items()}


def _logit(p: float) -> float:
    if p <= 0:
        return -Z_CLIP
    if p >= 1:
        return Z_CLIP
    return float(np.clip(np.log(p / (1.0 - p)), -Z_CLIP, Z_CLIP))


def combine(scores: dict[str, float], brand_of, matches: dict[str, float], text_only: dict[str, str],
            cfg: TextScoring) -> dict[str, float]:
    """Logo scores (reference -> probability) with text evidence added (see :class:`TextScoring`).

    ``brand_of`` maps a reference to its brand; ``text_only`` names, per brand, the reference a
    matched brand absent from ``scores`` is listed under. Returns reference -> new probability.
    """
    z = {r: _logit(p) + cfg.beta * matches.get(brand_of(r), 0.0) for r, p in scores.items()}
    listed = {brand_of(r) for r in scores}
    for brand, m in matches.items():
        ref = text_only.get(brand)
        if brand not in listed and ref is not None and ref not in z:
            z[ref] = cfg.gamma + cfg.beta * m
    return {r: float(1.0 / (1.0 + np.exp(-v))) for r, v in z.items()}


def rerank(ranked: Sequence[tuple[str, float]], matches: dict[str, float], cfg: TextScoring, k: int = 10
           ) -> list[tuple[str, float]]:
    """An evaluation ranking (brand, probability), one reference per brand, with text evidence added
    by :func:`combine`: the ``k`` best, best first."""
    new = combine(dict(ranked), str, matches, {b: b for b in matches}, cfg)
    return sorted(new.items(), key=lambda kv: (-kv[1], kv[0]))[:k]
