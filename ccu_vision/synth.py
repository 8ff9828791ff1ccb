"""Synthetic-but-realistic training and evaluation material, from real marks and real photos.

Two generators, numpy/PIL only (used by training, evaluation, the demo and benchmarks):

* :func:`place_mark` puts a brand mark on a photo the way counterfeits carry it: printed (with the
  fabric's shading), tone-on-tone embroidered/embossed, on a badge/patch, as an outline, or filled
  with a texture; tilted, in perspective, partly occluded, in brand colour, mono or random colours.
* :func:`copy_edit` applies DISC21-style edits to an official product photo: crops, resizes,
  re-compression, price banners, watermarks, borders, screenshot chrome, collages, flips, small
  rotations and colour changes.

:func:`listing_chrome` adds what marketplaces add around photos (banners, price tags, padding).
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont, ImageOps

WORDS = ["SALE", "-50%", "NEW", "HOT", "ORIGINAL", "FREE SHIP", "$19.99", "€ 24,90", "BEST", "TOP", "100% AUTH", "LIMITED"]


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=max(8, size))
    except TypeError:  # very old Pillow
        return ImageFont.load_default()


def _rand_color(rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(0, 256, 3))


def _lum(c) -> float:
    return 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2]


def jpeg(img: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, "JPEG", quality=int(quality))
    buf.seek(0)
    return Image.open(buf).convert("RGB")


# --------------------------------------------------------------------------- marks on photos


def warp_mask(mask: np.ndarray, size: int, rng: np.random.Generator, max_rot: float = 25.0,
              persp: float = 0.15) -> np.ndarray:
    """Resize a mask so its long side is ``size`` px, then rotate and perspective-warp it."""
    h, w = mask.shape
    ar = math.exp(rng.uniform(-0.15, 0.15))
    s = size / max(h, w)
    nw, nh = max(2, round(w * s * ar)), max(2, round(h * s / ar))
    m = Image.fromarray((mask * 255).astype(np.uint8), "L").resize((nw, nh), Image.Resampling.BILINEAR)
    pad = max(nw, nh) // 2 + 2
    m = ImageOps.expand(m, pad, 0)
    W, H = m.size
    if persp > 0 and rng.random() < 0.6:
        d = persp * min(nw, nh)
        src = [(pad, pad), (pad + nw, pad), (pad + nw, pad + nh), (pad, pad + nh)]
        dst = [(x + rng.uniform(-d, d), y + rng.uniform(-d, d)) for x, y in src]
        coeffs = _perspective_coeffs(dst, src)
        m = m.transform((W, H), Image.Transform.PERSPECTIVE, coeffs, Image.Resampling.BILINEAR)
    if max_rot > 0:
        m = m.rotate(rng.uniform(-max_rot, max_rot), Image.Resampling.BILINEAR, expand=False)
    a = np.asarray(m, np.float32) / 255.0
    ys, xs = np.nonzero(a > 0.05)
    if len(xs) == 0:
        return mask
    return a[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]


def redraw_mask(mask: np.ndarray, rng: np.random.Generator, max_shear: float = 0.3) -> np.ndarray:
    """Another drawing of the same mark: bolder or lighter strokes and a slant (alpha mask in, alpha out).

    Stands in for the drawings a model never saw (another typeface weight, an italic cut, a
    re-traced logo): with probability 0.35 the strokes thicken (3 px max filter), 0.25 they
    thin (3 px min filter, skipped when it would remove more than half the ink), otherwise they
    stay; then a horizontal shear of up to ``max_shear``. The result is cropped to its ink.
    """
    m = Image.fromarray((np.clip(mask, 0, 1) * 255).astype(np.uint8), "L")
    m = ImageOps.expand(m, 4, 0)
    r = rng.random()
    if r < 0.35:
        m = m.filter(ImageFilter.MaxFilter(3))
    elif r < 0.6:
        thin = m.filter(ImageFilter.MinFilter(3))
        if np.asarray(thin, np.float32).sum() >= 0.5 * np.asarray(m, np.float32).sum():
            m = thin
    sh = float(rng.uniform(-max_shear, max_shear))
    w, h = m.size
    extra = int(math.ceil(abs(sh) * h))
    # output x = input x + sh * (y - h/2): PIL's affine maps output to input, so its data is the inverse
    m = m.transform((w + extra, h), Image.Transform.AFFINE, (1, sh, -extra / 2 - sh * h / 2, 0, 1, 0),
                    Image.Resampling.BILINEAR)
    a = np.asarray(m, np.float32) / 255.0
    ys, xs = np.nonzero(a > 0.05)
    if len(xs) == 0:
        return mask
    return a[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]


def _perspective_coeffs(pa, pb):
    A = []
    for (x, y), (u, v) in zip(pa, pb):
        A.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        A.append([0, 0, 0, x, y, 1, -v * x, -v * y])
    A = np.asarray(A, np.float64)
    B = np.asarray(pb, np.float64).reshape(8)
    return np.linalg.solve(A, B).tolist()


STYLES = ("print", "print", "print", "tone", "badge", "outline", "texture")  # the default mix (print 3/7)
STYLE_NAMES = frozenset(STYLES)


def check_styles(styles: tuple[str, ...] | list[str] | None, where: str) -> tuple[str, ...]:
    """A style mix as a tuple (``()`` for the default :data:`STYLES` mix); unknown names raise naming ``where``."""
    styles = tuple(styles or ())
    bad = sorted(set(styles) - STYLE_NAMES)
    if bad:
        raise ValueError(f"{where}: unknown mark style(s) {bad} (known: {sorted(STYLE_NAMES)})")
    return styles


def draw_style(styles: tuple[str, ...], rng: np.random.Generator) -> str | None:
    """One style drawn uniformly from a :func:`check_styles` mix; ``None`` (draws nothing) for the default mix,
    which :func:`place_mark` then draws itself."""
    return styles[int(rng.integers(len(styles)))] if styles else None


@dataclass
class Placement:
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in the output image
    style: str
    color: tuple[int, int, int]


def place_mark(photo: np.ndarray, mask: np.ndarray, size: int, rng: np.random.Generator,
               brand_rgb: tuple[int, int, int] = (0, 0, 0), style: str | None = None,
               xy: tuple[int, int] | None = None, texture: np.ndarray | None = None,
               occlude: float = 0.2) -> tuple[np.ndarray, Placement]:
    """Put a mark (alpha ``mask``) of long side ``size`` px onto ``photo`` (uint8 HxWx3).

    Returns the new photo and where/how the mark was placed.
    """
    H, W = photo.shape[:2]
    m = warp_mask(mask, size, rng)
    m = m[: H, : W]
    mh, mw = m.shape
    style = style or STYLES[int(rng.integers(len(STYLES)))]
    if xy is None:
        x0 = int(rng.integers(0, max(1, W - mw + 1)))
        y0 = int(rng.integers(0, max(1, H - mh + 1)))
    else:
        x0, y0 = min(max(0, xy[0]), max(0, W - mw)), min(max(0, xy[1]), max(0, H - mh))
    out = photo.astype(np.float32).copy()
    patch = out[y0 : y0 + mh, x0 : x0 + mw]
    a = m.copy()
    if occlude and rng.random() < occlude:  # partial occlusion by a fold/strap/hand
        oh, ow = int(mh * rng.uniform(0.2, 0.5)), int(mw * rng.uniform(0.2, 0.5))
        oy, ox = int(rng.integers(0, mh - oh + 1)), int(rng.integers(0, mw - ow + 1))
        a[oy : oy + oh, ox : ox + ow] = 0
    bg = patch.reshape(-1, 3).mean(0)
    r = rng.random()
    if r < 0.3:
        color = tuple(int(c) for c in brand_rgb)
    elif r < 0.55:
        color = (255, 255, 255) if _lum(bg) < 128 else (0, 0, 0)
    elif r < 0.8:
        color = _rand_color(rng)
    else:
        color = (20, 20, 20) if rng.random() < 0.5 else (240, 240, 240)
    if abs(_lum(color) - _lum(bg)) < 40 and style not in ("tone",):
        color = (255, 255, 255) if _lum(bg) < 128 else (0, 0, 0)
    lum = patch.mean(2, keepdims=True)
    shade = np.clip((lum + 1) / (lum.mean() + 1), 0.5, 1.5) ** 0.7
    if style == "tone":
        sign = 1 if _lum(bg) < 140 else -1
        delta = rng.uniform(30, 70) * sign
        fill = np.clip(patch + delta, 0, 255)
        # emboss: light from the top-left
        sh = np.zeros_like(a)
        sh[1:, 1:] = a[:-1, :-1]
        edge = np.clip(a - sh, -1, 1)[:, :, None]
        fill = np.clip(fill + 60 * edge, 0, 255)
        alpha = a[:, :, None] * rng.uniform(0.8, 1.0)
        patch[:] = patch * (1 - alpha) + fill * alpha
    elif style == "badge":
        pad = max(2, int(max(mh, mw) * rng.uniform(0.08, 0.25)))
        y1, x1 = max(0, y0 - pad), max(0, x0 - pad)
        y2, x2 = min(H, y0 + mh + pad), min(W, x0 + mw + pad)
        badge = _rand_color(rng) if rng.random() < 0.5 else tuple(int(c) for c in brand_rgb)
        bimg = Image.new("L", (x2 - x1, y2 - y1), 0)
        d = ImageDraw.Draw(bimg)
        if rng.random() < 0.5:
            d.rounded_rectangle((0, 0, x2 - x1 - 1, y2 - y1 - 1), radius=int(pad * 1.5), fill=255)
        else:
            d.ellipse((0, 0, x2 - x1 - 1, y2 - y1 - 1), fill=255)
        ba = (np.asarray(bimg, np.float32) / 255.0)[:, :, None]
        region = out[y1:y2, x1:x2]
        region[:] = region * (1 - ba) + np.asarray(badge, np.float32) * ba
        color = (255, 255, 255) if _lum(badge) < 128 else (0, 0, 0)
        patch = out[y0 : y0 + mh, x0 : x0 + mw]
        alpha = a[:, :, None]
        patch[:] = patch * (1 - alpha) + np.asarray(color, np.float32) * alpha
        x0, y0, mw2, mh2 = x1, y1, x2 - x1, y2 - y1
        return out.clip(0, 255).astype(np.uint8), Placement((x0, y0, x0 + mw2, y0 + mh2), style, color)
    elif style == "outline":
        mi = Image.fromarray((a * 255).astype(np.uint8))
        k = 3 if max(mh, mw) < 60 else 5
        dil = np.asarray(mi.filter(ImageFilter.MaxFilter(k)), np.float32) / 255.0
        ero = np.asarray(mi.filter(ImageFilter.MinFilter(k)), np.float32) / 255.0
        alpha = np.clip(dil - ero, 0, 1)[:, :, None]
        patch[:] = patch * (1 - alpha) + np.asarray(color, np.float32) * shade * alpha
    elif style == "texture" and texture is not None:
        th, tw = texture.shape[:2]
        t = Image.fromarray(texture).resize((mw, mh), Image.Resampling.BILINEAR)
        tex = np.asarray(t, np.float32)
        if abs(tex.mean() - _lum(bg)) < 50:
            tex = 255 - tex
        alpha = a[:, :, None] * rng.uniform(0.85, 1.0)
        patch[:] = patch * (1 - alpha) + tex * alpha
    else:  # print
        alpha = a[:, :, None] * rng.uniform(0.75, 1.0)
        patch[:] = patch * (1 - alpha) + np.asarray(color, np.float32) * shade * alpha
        style = "print"
    return out.clip(0, 255).astype(np.uint8), Placement((x0, y0, x0 + mw, y0 + mh), style, color)


def badge_artwork(mask: np.ndarray, rgb: tuple[int, int, int], pad: float = 0.15) -> Image.Image:
    """Two-colour logo artwork as a partner may upload it: an opaque rounded badge in ``rgb`` with the
    mark (alpha ``mask``) knocked out in white (in black on a light badge); transparent outside the badge."""
    mh, mw = mask.shape
    p = max(2, int(round(max(mh, mw) * pad)))
    h, w = mh + 2 * p, mw + 2 * p
    shape = Image.new("L", (w, h), 0)
    ImageDraw.Draw(shape).rounded_rectangle((0, 0, w - 1, h - 1), radius=int(p * 1.5), fill=255)
    ink = (255, 255, 255) if _lum(rgb) < 128 else (0, 0, 0)
    m = np.zeros((h, w, 1), np.float32)
    m[p : p + mh, p : p + mw, 0] = mask
    arr = np.zeros((h, w, 4), np.uint8)
    arr[:, :, :3] = (np.asarray(rgb, np.float32) * (1 - m) + np.asarray(ink, np.float32) * m).round().astype(np.uint8)
    arr[:, :, 3] = np.asarray(shape)
    return Image.fromarray(arr, "RGBA")


SYLLABLES = ("ka", "lo", "mi", "ne", "tra", "vo", "ser", "pu", "din", "ex", "ro", "zu", "fle", "ma", "qua", "tis",
             "bo", "ren", "sta", "gli", "or", "an", "vel", "cor")
UNITS = ("ml", "g", "kg", "oz", "L", "%", "mg", "pcs", "cm")


def _clutter_text(rng: np.random.Generator) -> str:
    """A random line of packaging print: made-up words, or a quantity with its unit (never a brand name)."""
    r = rng.random()
    if r < 0.25:
        return f"{int(rng.integers(1, 1000))} {UNITS[int(rng.integers(len(UNITS)))]}"
    words = []
    for _ in range(int(rng.integers(1, 4))):
        w = "".join(SYLLABLES[int(i)] for i in rng.integers(0, len(SYLLABLES), int(rng.integers(1, 4))))
        words.append(w)
    text = " ".join(words)
    c = rng.random()
    return text.upper() if c < 0.45 else text.capitalize() if c < 0.8 else text


def graphic_clutter(photo: np.ndarray, rng: np.random.Generator, fonts: list[str | None] | None = None) -> np.ndarray:
    """Packaging-like print laid over ``photo`` (uint8 HxWx3): flat colour panels, lines of made-up
    lettering and numbers in ``fonts`` (``None`` = Pillow's face), simple shapes; shaded by the photo
    like a print. The background a mark on packaged goods sits in; returns a new uint8 array.
    A font that cannot be read is a ValueError naming the file (as for lettered marks)."""
    from .wordmarks import load_font  # the one font loader (wordmarks imports the logo renderer)

    H, W = photo.shape[:2]
    short = min(H, W)
    fonts = list(fonts) if fonts else [None]
    layer = Image.new("RGBA", (W, H), (0, 0, 0, 0))
    d = ImageDraw.Draw(layer)
    for _ in range(int(rng.integers(0, 3))):  # panels and bands
        if rng.random() < 0.5:
            bh = int(H * rng.uniform(0.1, 0.35))
            y = int(rng.integers(0, max(1, H - bh)))
            box = (0, y, W, y + bh)
        else:
            pw, ph = int(W * rng.uniform(0.2, 0.6)), int(H * rng.uniform(0.2, 0.6))
            x, y = int(rng.integers(0, max(1, W - pw))), int(rng.integers(0, max(1, H - ph)))
            box = (x, y, x + pw, y + ph)
        d.rectangle(box, fill=_rand_color(rng) + (int(rng.integers(200, 256)),))
    for _ in range(int(rng.integers(0, 3))):  # discs, rings, stripes
        s = int(short * rng.uniform(0.08, 0.3))
        x, y = int(rng.integers(0, max(1, W - s))), int(rng.integers(0, max(1, H - s)))
        col = _rand_color(rng) + (int(rng.integers(180, 256)),)
        r = rng.random()
        if r < 0.4:
            d.ellipse((x, y, x + s, y + s), fill=col)
        elif r < 0.7:
            d.ellipse((x, y, x + s, y + s), outline=col, width=max(2, s // 10))
        else:
            for k in range(int(rng.integers(2, 5))):
                yy = y + k * max(3, s // 4)
                d.rectangle((x, yy, x + 2 * s, yy + max(2, s // 10)), fill=col)
    canvas = np.asarray(layer.convert("RGB"), np.float32)
    alpha = np.asarray(layer.getchannel("A"), np.float32)[:, :, None] / 255.0
    base = photo.astype(np.float32)
    out = base * (1 - alpha) + canvas * alpha
    for _ in range(int(rng.integers(2, 7))):  # lines of lettering, each on whatever is below it
        size = max(8, int(short * rng.uniform(0.03, 0.12)))
        f = load_font(fonts[int(rng.integers(len(fonts)))], size)
        text = _clutter_text(rng)
        x0, y0, x1, y1 = ImageDraw.Draw(Image.new("L", (1, 1))).textbbox((0, 0), text, font=f)
        tm = Image.new("L", (max(1, x1 - x0) + 4, max(1, y1 - y0) + 4), 0)
        ImageDraw.Draw(tm).text((2 - x0, 2 - y0), text, fill=255, font=f)
        if rng.random() < 0.15:
            tm = tm.rotate(90 if rng.random() < 0.5 else -90, expand=True)
        tw, th = tm.size
        if tw >= W or th >= H:
            continue
        x, y = int(rng.integers(0, W - tw)), int(rng.integers(0, H - th))
        a = np.asarray(tm, np.float32)[:, :, None] / 255.0
        patch = out[y : y + th, x : x + tw]
        bg = patch.reshape(-1, 3).mean(0)
        color = _rand_color(rng)
        if abs(_lum(color) - _lum(bg)) < 60:
            color = (255, 255, 255) if _lum(bg) < 128 else (0, 0, 0)
        patch[:] = patch * (1 - a) + np.asarray(color, np.float32) * a
    lum = base.mean(2, keepdims=True)  # the fabric's folds show through the print
    shade = np.clip((lum + 1) / (lum.mean() + 1), 0.6, 1.4) ** 0.5
    printed = np.where(np.abs(out - base).sum(2, keepdims=True) > 0, out * shade, out)
    return printed.clip(0, 255).astype(np.uint8)


def photo_effects(img: Image.Image, rng: np.random.Generator, strength: float = 1.0) -> Image.Image:
    """Camera/marketplace degradations: colour cast, blur, noise, JPEG re-compression."""
    if rng.random() < 0.5 * strength:
        img = ImageEnhance.Color(img).enhance(rng.uniform(0.5, 1.5))
        img = ImageEnhance.Brightness(img).enhance(rng.uniform(0.75, 1.25))
        img = ImageEnhance.Contrast(img).enhance(rng.uniform(0.75, 1.25))
    if rng.random() < 0.3 * strength:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2)))
    if rng.random() < 0.2 * strength:
        arr = np.asarray(img, np.float32)
        arr = arr + rng.normal(0, rng.uniform(2, 8), arr.shape)
        img = Image.fromarray(arr.clip(0, 255).astype(np.uint8))
    if rng.random() < 0.5 * strength:
        img = jpeg(img, int(rng.integers(35, 92)))
    return img


def listing_chrome(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Marketplace chrome: a price banner, a watermark, a tag or white padding (one or two of them)."""
    img = img.convert("RGB")
    W, H = img.size
    for _ in range(int(rng.integers(1, 3))):
        r = rng.random()
        d = ImageDraw.Draw(img, "RGBA")
        if r < 0.3:  # banner strip with text
            bh = int(H * rng.uniform(0.06, 0.14))
            y = 0 if rng.random() < 0.5 else H - bh
            col = _rand_color(rng)
            d.rectangle((0, y, W, y + bh), fill=col + (230,))
            d.text((int(W * 0.05), y + bh // 5), str(rng.choice(WORDS)), fill=(255, 255, 255) if _lum(col) < 128 else (0, 0, 0),
                   font=_font(int(bh * 0.6)))
        elif r < 0.55:  # watermark text
            size = int(min(W, H) * rng.uniform(0.06, 0.12))
            txt = str(rng.choice(["shop", "myshop.example", "BEST DEALS", "outlet", "© seller"]))
            d.text((int(rng.integers(0, max(1, W // 2))), int(rng.integers(0, max(1, H - size)))), txt,
                   fill=(255, 255, 255, int(rng.integers(70, 150))), font=_font(size))
        elif r < 0.75:  # price tag
            tw, th = int(W * rng.uniform(0.15, 0.3)), int(H * rng.uniform(0.07, 0.12))
            x, y = int(rng.integers(0, max(1, W - tw))), int(rng.integers(0, max(1, H - th)))
            d.rounded_rectangle((x, y, x + tw, y + th), radius=th // 4, fill=(220, 20, 30, 240))
            d.text((x + tw // 10, y + th // 6), str(rng.choice(WORDS)), fill=(255, 255, 255), font=_font(int(th * 0.6)))
        else:  # white padding to a square canvas
            side = max(W, H)
            pad = int(side * rng.uniform(0.0, 0.15))
            canvas = Image.new("RGB", (side + 2 * pad, side + 2 * pad), (255, 255, 255))
            canvas.paste(img, ((side - W) // 2 + pad, (side - H) // 2 + pad))
            img = canvas
            W, H = img.size
    return img


# --------------------------------------------------------------------------- near-duplicate edits

EDITS = ("crop", "resize", "jpeg", "banner", "watermark", "border", "screenshot", "collage", "flip",
         "rotate", "color", "grayscale", "blur", "emoji")


def copy_edit(img: Image.Image, rng: np.random.Generator, others: list[np.ndarray] | None = None,
              n_edits: int | None = None, edits: tuple[str, ...] | None = None) -> tuple[Image.Image, list[str]]:
    """A DISC21-style edited copy of ``img``. Returns the copy and the names of the edits applied."""
    img = img.convert("RGB")
    if edits is None:
        n = n_edits if n_edits is not None else int(rng.integers(1, 4))
        edits = tuple(rng.choice(EDITS, size=n, replace=False))
    for e in edits:
        img = _apply_edit(img, e, rng, others)
    return img, list(edits)


def _apply_edit(img: Image.Image, e: str, rng: np.random.Generator, others) -> Image.Image:
    W, H = img.size
    if e == "crop":
        f = math.sqrt(rng.uniform(0.45, 0.9))
        cw, ch = int(W * f * rng.uniform(0.9, 1.1)), int(H * f * rng.uniform(0.9, 1.1))
        cw, ch = min(W, cw), min(H, ch)
        x, y = int(rng.integers(0, W - cw + 1)), int(rng.integers(0, H - ch + 1))
        return img.crop((x, y, x + cw, y + ch))
    if e == "resize":
        s = rng.uniform(0.4, 1.3)
        ar = rng.uniform(0.85, 1.15)
        return img.resize((max(16, int(W * s * ar)), max(16, int(H * s / ar))), Image.Resampling.BILINEAR)
    if e == "jpeg":
        return jpeg(img, int(rng.integers(15, 60)))
    if e == "banner":
        return listing_chrome(img, rng)
    if e == "watermark":
        d = ImageDraw.Draw(img, "RGBA")
        size = int(min(W, H) * rng.uniform(0.08, 0.18))
        for _ in range(int(rng.integers(1, 4))):
            d.text((int(rng.integers(0, max(1, W - size * 3))), int(rng.integers(0, max(1, H - size)))),
                   str(rng.choice(["SAMPLE", "shop", "©", "outlet24"])), fill=(255, 255, 255, int(rng.integers(80, 170))),
                   font=_font(size))
        return img
    if e == "border":
        b = int(min(W, H) * rng.uniform(0.03, 0.15))
        return ImageOps.expand(img, b, fill=_rand_color(rng) if rng.random() < 0.5 else (255, 255, 255))
    if e == "screenshot":
        top, bot = int(H * rng.uniform(0.08, 0.2)), int(H * rng.uniform(0.08, 0.25))
        side = int(W * rng.uniform(0.0, 0.2))
        canvas = Image.new("RGB", (W + 2 * side, H + top + bot), (245, 245, 245) if rng.random() < 0.7 else (25, 25, 25))
        canvas.paste(img, (side, top))
        d = ImageDraw.Draw(canvas)
        fs = max(8, top // 3)
        d.text((side + 5, top // 4), "12:41  ▮▮▮ 87%", fill=(90, 90, 90), font=_font(fs))
        d.text((side + 5, H + top + bot // 4), f"{rng.choice(WORDS)}  Add to cart", fill=(60, 60, 60), font=_font(fs))
        return canvas
    if e == "collage":
        if not others:
            return img
        n = int(rng.integers(2, 5))
        cols = 2
        rows = (n + 1) // 2
        cell = max(W, H) // 2 + 1
        canvas = Image.new("RGB", (cols * cell, rows * cell), (255, 255, 255))
        slot = int(rng.integers(0, n))
        for i in range(n):
            if i == slot:
                tile = img.copy()
            else:
                tile = Image.fromarray(others[int(rng.integers(len(others)))])
            tile.thumbnail((cell, cell))
            canvas.paste(tile, ((i % cols) * cell, (i // cols) * cell))
        return canvas
    if e == "flip":
        return ImageOps.mirror(img)
    if e == "rotate":
        return img.rotate(rng.uniform(-12, 12), Image.Resampling.BILINEAR, expand=rng.random() < 0.5, fillcolor=(255, 255, 255))
    if e == "color":
        img = ImageEnhance.Color(img).enhance(rng.uniform(0.2, 2.0))
        arr = np.asarray(img, np.float32) * rng.uniform(0.75, 1.25, 3)
        return Image.fromarray(arr.clip(0, 255).astype(np.uint8))
    if e == "grayscale":
        return ImageOps.grayscale(img).convert("RGB")
    if e == "blur":
        return img.filter(ImageFilter.GaussianBlur(rng.uniform(0.8, 2.5)))
    if e == "emoji":
        d = ImageDraw.Draw(img)
        for _ in range(int(rng.integers(1, 4))):
            r = int(min(W, H) * rng.uniform(0.05, 0.15))
            x, y = int(rng.integers(0, max(1, W - 2 * r))), int(rng.integers(0, max(1, H - 2 * r)))
            d.ellipse((x, y, x + 2 * r, y + 2 * r), fill=(255, 204, 0))
            d.ellipse((x + r // 2, y + r // 2, x + r // 2 + r // 4, y + r // 2 + r // 4), fill=(0, 0, 0))
        return img
    raise ValueError(f"unknown edit {e!r}")
