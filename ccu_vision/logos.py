"""Brand marks from ``simple-icons-pack``: listing, a fixed brand split and rendering.

The split is a pure function of the brand slug (sha1), so it is identical on every machine and
never drifts when the icon pack grows. The demo's brands (the seed brands: BMW, Porsche, GM, Puma,
Under Armour, Hugo, ...) are always held out of training, so the demo measures unseen brands.
"""

from __future__ import annotations

import hashlib
import io
import logging
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image

log = logging.getLogger(__name__)

HELDOUT_PERCENT = 15

# Brands used by the demo (and the seed case: counterfeit car accessories and clothing).
DEMO_BRANDS = (
    "bmw", "porsche", "generalmotors", "puma", "underarmour", "hugo", "nike", "adidas", "reebok",
    "newbalance", "asics", "jordan", "lacoste", "levis", "gucci", "prada", "chanel", "louisvuitton",
    "dior", "hermes", "versace", "fendi", "burberry", "zara", "hm", "uniqlo", "thenorthface",
    "patagonia", "columbia", "vans", "converse", "skechers", "fila", "kappa", "umbro", "diadora",
    "mercedes", "audi", "volkswagen", "toyota", "honda", "ford", "ferrari", "lamborghini", "tesla",
    "chevrolet", "cadillac", "jeep", "mini", "volvo", "hyundai", "kia", "nissan", "mazda", "subaru",
    "apple", "samsung", "sony", "nintendo", "playstation", "xbox", "canon", "nikon", "lego",
    "cocacola", "pepsi", "redbull", "starbucks", "mcdonalds", "ikea", "rolex", "swatch", "oakley",
    "rayban", "michelin", "bosch", "philips", "lg", "intel", "nvidia", "amd", "dell", "hp", "lenovo",
)


@dataclass(frozen=True)
class Brand:
    slug: str
    title: str
    hex: str
    svg: str

    @property
    def rgb(self) -> tuple[int, int, int]:
        h = self.hex.lstrip("#")
        try:
            return (int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16))
        except (ValueError, IndexError):
            return (0, 0, 0)


def is_heldout(slug: str) -> bool:
    """True when a brand belongs to the fixed evaluation split (never trained on)."""
    if slug in DEMO_BRANDS:
        return True
    return int(hashlib.sha1(slug.encode()).hexdigest(), 16) % 100 < HELDOUT_PERCENT


@lru_cache(maxsize=1)
def all_brands() -> tuple[Brand, ...]:
    """Every brand mark in simple-icons-pack, sorted by slug."""
    import simple_icons_pack as sip

    icons = [getattr(sip, n) for n in dir(sip) if n.startswith("SI_")]
    brands = {i.slug: Brand(i.slug, i.title, i.hex, i.svg) for i in icons}
    return tuple(brands[k] for k in sorted(brands))


def brands(split: str = "all") -> list[Brand]:
    """Brands of a split: "train", "heldout" or "all"."""
    if split == "all":
        return list(all_brands())
    want = split == "heldout"
    if split not in ("train", "heldout"):
        raise ValueError(f"unknown split {split!r}")
    return [b for b in all_brands() if is_heldout(b.slug) == want]


def get_brand(slug: str) -> Brand | None:
    for b in all_brands():
        if b.slug == slug:
            return b
    return None


def render_svg(svg: str, size: int) -> Image.Image:
    """Render SVG text to an RGBA image whose long side is ``size`` (resvg; no external resources)."""
    import resvg_py

    png = resvg_py.svg_to_bytes(svg_string=svg, width=size, height=size)
    return Image.open(io.BytesIO(bytes(png))).convert("RGBA")


def render_mask(brand: Brand, size: int = 128) -> np.ndarray:
    """The mark's alpha mask (float32 [h, w] in 0..1), trimmed to its bounding box."""
    return trim_mask(np.asarray(render_svg(brand.svg, size))[:, :, 3].astype(np.float32) / 255.0)


def trim_mask(mask: np.ndarray) -> np.ndarray:
    """An alpha mask (float32, 0..1) cut to the bounding box of its ink (an 8x8 block when empty)."""
    ys, xs = np.nonzero(mask > 0.02)
    if len(xs) == 0:
        return np.ones((8, 8), np.float32)
    return mask[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1].astype(np.float32)


def logo_rgba(mask: np.ndarray, color: tuple[int, int, int]) -> Image.Image:
    """A solid-colour RGBA logo image from an alpha mask."""
    h, w = mask.shape
    arr = np.zeros((h, w, 4), np.uint8)
    arr[:, :, :3] = color
    arr[:, :, 3] = (mask * 255).clip(0, 255).astype(np.uint8)
    return Image.fromarray(arr, "RGBA")


def reference_color(brand: Brand) -> tuple[int, int, int]:
    """The colour a brand partner would register the mark in: its brand colour (black when near-white)."""
    r, g, b = brand.rgb
    if 0.299 * r + 0.587 * g + 0.114 * b > 235:
        return (0, 0, 0)
    return (r, g, b)


class MaskBank:
    """Pre-rendered alpha masks for a list of brands (rendered once, kept in memory)."""

    def __init__(self, brand_list: list[Brand], size: int = 128) -> None:
        self.brands = brand_list
        self.size = size
        self.masks: list[np.ndarray] = []
        for b in brand_list:
            try:
                self.masks.append(render_mask(b, size))
            except Exception as e:  # a broken icon must not stop training
                log.warning("cannot render %s: %s", b.slug, e)
                self.masks.append(np.ones((8, 8), np.float32))

    def __len__(self) -> int:
        return len(self.brands)

    def extend(self, brand_list: list[Brand], masks: list[np.ndarray]) -> None:
        """Add marks drawn elsewhere (e.g. lettered marks, :mod:`ccu_vision.wordmarks`) as more classes."""
        assert len(brand_list) == len(masks), (len(brand_list), len(masks))
        self.brands = [*self.brands, *brand_list]
        self.masks = [*self.masks, *masks]
