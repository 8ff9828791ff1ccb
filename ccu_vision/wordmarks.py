"""Wordmarks and lockups: a brand's name set in a font, alone or beside its symbol.

Most real brand logos carry lettering (a wordmark, or a symbol-and-name "lockup"); simple-icons
draws mostly symbols. These marks widen the training drawings (and give an evaluation set of
drawings no icon pack holds) from fonts installed on the machine.

Fonts are split like brands: a font is *held out* (evaluation only) when its file name names a
serif face (``serif`` without ``sans``); every other text font, and Pillow's built-in face, may be
used for training; math and symbol faces are not text faces and are skipped. So an evaluation
lockup is an unseen brand name in an unseen typeface family.
Set ``CCU_FONTS`` (a folder, ``os.pathsep``-separated for several) to use other fonts.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .logos import Brand
from .logos import trim_mask as trim

log = logging.getLogger(__name__)

FONT_DIRS = ("/usr/share/fonts", "/usr/local/share/fonts", "~/.fonts", "~/.local/share/fonts",
             "/Library/Fonts", "/System/Library/Fonts", "C:/Windows/Fonts")
KINDS = ("wordmark", "lockup_right", "lockup_below")
TEXT_PX = 48  # lettering height the masks are drawn at (cap height is ~0.7 of it)


def find_fonts(dirs: str | None = None) -> list[str]:
    """Sorted TrueType/OpenType font files under ``dirs`` (default: ``$CCU_FONTS`` or the system dirs)."""
    spec = dirs if dirs is not None else os.environ.get("CCU_FONTS")
    roots = spec.split(os.pathsep) if spec else list(FONT_DIRS)
    out: set[str] = set()
    for r in roots:
        root = Path(r).expanduser()
        if root.is_dir():
            out.update(str(p) for p in root.rglob("*") if p.suffix.lower() in (".ttf", ".otf"))
    return sorted(out)


def is_heldout_font(path: str | None) -> bool:
    """True for serif faces (evaluation only); Pillow's built-in face (``None``) is a training font."""
    if path is None:
        return False
    name = Path(path).stem.lower()
    return "serif" in name and "sans" not in name


def is_text_font(path: str) -> bool:
    """False for math and symbol faces (their letters are not a brand's lettering)."""
    name = Path(path).stem.lower()
    return not any(k in name for k in ("math", "symbol", "emoji", "dingbat"))


def font_split(fonts: list[str], split: str) -> list[str | None]:
    """Text fonts of a split ("train" or "heldout"); ``None`` stands for Pillow's built-in face (train)."""
    fonts = [f for f in fonts if is_text_font(f)]
    if split == "train":
        return [None, *(f for f in fonts if not is_heldout_font(f))]
    if split == "heldout":
        return [f for f in fonts if is_heldout_font(f)]
    raise ValueError(f"unknown font split {split!r}")


def load_font(path: str | None, size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """``path`` at ``size`` px (``None``: Pillow's built-in face); a font that cannot be read is a
    ValueError naming the file."""
    if path is None:
        return ImageFont.load_default(size=size)
    try:
        return ImageFont.truetype(path, size=size)
    except OSError as e:  # Pillow's message ("cannot open resource") does not name the file
        raise ValueError(f"{path}: cannot load font ({e}); remove it or point CCU_FONTS elsewhere") from e


def text_mask(text: str, font: str | None, size: int = TEXT_PX) -> np.ndarray:
    """``text`` drawn in ``font`` as a float32 alpha mask in 0..1, trimmed to its ink."""
    f = load_font(font, size)
    x0, y0, x1, y1 = ImageDraw.Draw(Image.new("L", (1, 1))).textbbox((0, 0), text, font=f)
    im = Image.new("L", (max(1, x1 - x0) + 8, max(1, y1 - y0) + 8), 0)
    ImageDraw.Draw(im).text((4 - x0, 4 - y0), text, fill=255, font=f)
    return trim(np.asarray(im, np.float32) / 255.0)


def _resize(mask: np.ndarray, h: int | None = None, w: int | None = None) -> np.ndarray:
    mh, mw = mask.shape
    if h is not None:
        w = max(1, round(mw * h / mh))
    else:
        assert w is not None
        h = max(1, round(mh * w / mw))
    im = Image.fromarray((mask * 255).astype(np.uint8)).resize((w, h), Image.Resampling.LANCZOS)
    return np.asarray(im, np.float32) / 255.0


def compose(icon: np.ndarray | None, text: np.ndarray, kind: str, icon_scale: float = 1.3,
            gap: float = 0.3) -> np.ndarray:
    """A wordmark (``icon`` unused) or a lockup: the symbol left of or above the lettering."""
    if kind not in KINDS:
        raise ValueError(f"unknown mark kind {kind!r} (expected one of {', '.join(KINDS)})")
    if kind == "wordmark" or icon is None:
        return text
    th, tw = text.shape
    g = max(2, round(gap * th))
    if kind == "lockup_right":
        ic = _resize(icon, h=max(4, round(icon_scale * th)))
        ih, iw = ic.shape
        h = max(ih, th)
        out = np.zeros((h, iw + g + tw), np.float32)
        out[(h - ih) // 2 : (h - ih) // 2 + ih, :iw] = ic
        out[(h - th) // 2 : (h - th) // 2 + th, iw + g :] = text
    else:  # lockup_below: a symbol about as wide as half the name (at most 3x the lettering tall)
        ic = _resize(icon, w=max(4, round(0.5 * tw)))
        if ic.shape[0] > 3 * th:
            ic = _resize(icon, h=3 * th)
        ih, iw = ic.shape
        w = max(iw, tw)
        out = np.zeros((ih + g + th, w), np.float32)
        out[:ih, (w - iw) // 2 : (w - iw) // 2 + iw] = ic
        out[ih + g :, (w - tw) // 2 : (w - tw) // 2 + tw] = text
    return out


@dataclass(frozen=True)
class MarkSpec:
    """How one lettered mark is drawn: which brand's name (and symbol), typeface, case and layout."""

    slug: str
    kind: str
    font: str | None
    upper: bool
    icon_scale: float

    @property
    def name(self) -> str:
        font = Path(self.font).stem if self.font else "pillow"
        return f"{self.slug}~{self.kind}~{font}{'~upper' if self.upper else ''}"


def mark_spec(brand: Brand, fonts: list[str | None], seed: int, index: int = 0) -> MarkSpec:
    """A deterministic lettered drawing of ``brand`` (variant ``index``) from ``fonts``."""
    if not fonts:
        raise ValueError("no fonts to draw wordmarks with")
    h = int(hashlib.sha1(f"{seed}:{brand.slug}:{index}".encode()).hexdigest(), 16)
    rng = np.random.default_rng(h % (2**63))
    r = rng.random()
    kind = "wordmark" if r < 0.4 else "lockup_right" if r < 0.75 else "lockup_below"
    return MarkSpec(brand.slug, kind, fonts[int(rng.integers(len(fonts)))], bool(rng.random() < 0.4),
                    float(rng.uniform(1.0, 1.8)))


def draw_mark(spec: MarkSpec, title: str, icon: np.ndarray | None) -> np.ndarray:
    """The alpha mask (float32, trimmed) of a lettered mark."""
    text = text_mask(title.upper() if spec.upper else title, spec.font)
    return trim(compose(icon, text, spec.kind, spec.icon_scale))


def lettered_marks(brand_list: list[Brand], icons: list[np.ndarray], fonts: list[str | None], n: int,
                   seed: int) -> tuple[list[Brand], list[np.ndarray]]:
    """``n`` lettered marks drawn from ``brand_list`` (cycled; its ``icons`` are the symbol masks).

    Each is a class of its own (brand names repeat in other typefaces or layouts as other classes).
    Returns pseudo-brands (slug ``<brand>~<kind>~<font>``, the brand's colour) and their masks.
    """
    assert len(brand_list) == len(icons), (len(brand_list), len(icons))
    order = np.random.default_rng(seed).permutation(len(brand_list)) if brand_list else np.zeros(0, int)
    out_b: list[Brand] = []
    out_m: list[np.ndarray] = []
    seen: set[str] = set()
    k = 0
    while len(out_b) < n and brand_list and k < 4 * n + len(brand_list):
        i = int(order[k % len(order)])
        spec = mark_spec(brand_list[i], fonts, seed, index=k // len(order))
        k += 1
        if spec.name in seen:
            continue
        seen.add(spec.name)
        b = brand_list[i]
        out_b.append(Brand(spec.name, b.title, b.hex, ""))
        out_m.append(draw_mark(spec, b.title, icons[i]))
    return out_b, out_m
