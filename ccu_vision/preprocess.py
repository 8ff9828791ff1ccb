"""Image preprocessing shared by training (torch) and inference (ONNX Runtime).

Everything here is numpy/PIL only, so the scanner never needs torch. The exact parameters
(sizes, mean/std, interpolation, logo fill) live in the model file's metadata; see
:class:`ccu_vision.embedder.ModelInfo`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

_INTERP = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "nearest": Image.Resampling.NEAREST,
    "lanczos": Image.Resampling.LANCZOS,
}


def interpolation(name: str) -> Image.Resampling:
    """PIL resampling filter for an interpolation name stored in model metadata."""
    try:
        return _INTERP[name]
    except KeyError:
        raise ValueError(f"unknown interpolation {name!r}") from None


@dataclass(frozen=True)
class Letterbox:
    """How an image was placed on the square model canvas: canvas = orig * scale + (ox, oy)."""

    scale: float
    ox: int
    oy: int
    width: int  # original width
    height: int  # original height
    size: int  # canvas side

    def to_original(self, boxes: np.ndarray) -> np.ndarray:
        """Map [n, 4] canvas-pixel boxes (x0, y0, x1, y1) to clipped original-image pixels."""
        assert boxes.ndim == 2 and boxes.shape[1] == 4, boxes.shape
        out = boxes.astype(np.float64).copy()
        out[:, [0, 2]] = (out[:, [0, 2]] - self.ox) / self.scale
        out[:, [1, 3]] = (out[:, [1, 3]] - self.oy) / self.scale
        out[:, [0, 2]] = out[:, [0, 2]].clip(0, self.width)
        out[:, [1, 3]] = out[:, [1, 3]].clip(0, self.height)
        return out

    def to_canvas(self, boxes: np.ndarray) -> np.ndarray:
        """Map [n, 4] original-image boxes (x0, y0, x1, y1) to canvas pixels (the inverse of :meth:`to_original`)."""
        boxes = np.asarray(boxes, np.float64)
        assert boxes.ndim == 2 and boxes.shape[1] == 4, boxes.shape
        return boxes * self.scale + np.array([self.ox, self.oy, self.ox, self.oy], np.float64)

    def content_box(self) -> tuple[float, float, float, float]:
        """The canvas-pixel box covered by the image (not padding)."""
        return (
            self.ox,
            self.oy,
            self.ox + self.width * self.scale,
            self.oy + self.height * self.scale,
        )


def letterbox(img: Image.Image, size: int, interp: str = "bilinear", fill: int = 128) -> tuple[np.ndarray, Letterbox]:
    """Resize keeping aspect so the long side is ``size``; pad to a centred square.

    Returns a uint8 HxWx3 array and the :class:`Letterbox` geometry.
    """
    img = img.convert("RGB")
    w, h = img.size
    scale = size / max(w, h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    if (nw, nh) != (w, h):
        # reduce() first for big downscales: faster and alias-free, then an exact resize
        factor = int(min(w / nw, h / nh) // 2)
        if factor >= 2:
            img = img.reduce(factor)
        img = img.resize((nw, nh), interpolation(interp))
    canvas = np.full((size, size, 3), fill, dtype=np.uint8)
    ox, oy = (size - nw) // 2, (size - nh) // 2
    canvas[oy : oy + nh, ox : ox + nw] = np.asarray(img)
    return canvas, Letterbox(scale=scale, ox=ox, oy=oy, width=w, height=h, size=size)


def trim_to_content(img: Image.Image, tol: int = 12) -> Image.Image:
    """Crop uniform borders (by alpha when present, else by the corner colour)."""
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        alpha = np.asarray(rgba)[:, :, 3]
        ys, xs = np.nonzero(alpha > 8)
        if len(xs) == 0:
            return rgba
        return rgba.crop((xs.min(), ys.min(), xs.max() + 1, ys.max() + 1))
    rgb = np.asarray(img.convert("RGB")).astype(np.int16)
    corner = np.median(
        np.stack([rgb[0, 0], rgb[0, -1], rgb[-1, 0], rgb[-1, -1]]), axis=0
    )
    diff = np.abs(rgb - corner).max(axis=2) > tol
    ys, xs = np.nonzero(diff)
    if len(xs) == 0:
        return img.convert("RGB")
    return img.convert("RGB").crop((xs.min(), ys.min(), xs.max() + 1, ys.max() + 1))


LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # Rec. 601 luminance weights


def is_transparent(img: Image.Image) -> bool:
    """Whether an image carries transparency (an alpha band, or a palette transparency entry)."""
    return img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info)


BLANK_TOL = 6  # grey levels: an image whose colours all lie within this of each other is one flat colour


def blank_reason(img: Image.Image, tol: int = BLANK_TOL) -> str | None:
    """Why an image has nothing to match (fully transparent, or one flat colour), or None.

    Such a reference would embed like a plain background and match the plain parts of every listing
    photo, so the catalog refuses it. A mark on a transparent background is never blank, whatever
    its colours; an opaque image (or one whose alpha covers it all) is blank when every pixel's
    colour and alpha lie within ``tol`` grey levels of each other.
    """
    if is_transparent(img):
        arr = np.asarray(img.convert("RGBA"))
        seen = arr[:, :, 3] >= 16
        if not seen.any():
            return "blank image: fully transparent, nothing to match"
        if not seen.all():
            return None  # a shape against transparency
        px = arr.reshape(-1, 4)
    else:
        px = np.asarray(img.convert("RGB")).reshape(-1, 3)
    if px.size == 0 or int((px.max(0).astype(np.int16) - px.min(0)).max()) <= tol:
        w, h = img.size
        return f"blank image: one flat colour ({w}x{h}), nothing to match"
    return None


def _alpha_background(rgba: np.ndarray) -> float:
    """Background (0..1 grey) that :func:`flatten_alpha` puts under a float RGBA image: dark for light marks."""
    mark = rgba[:, :, 3] > 0.5
    if mark.any():
        lum = (rgba[:, :, :3][mark] @ LUMA).mean()
    else:
        lum = 0.0
    return 0.12 if lum > 0.8 else 1.0


def flatten_alpha(img: Image.Image) -> Image.Image:
    """Composite a transparent image onto white, or onto near-black when the mark itself is light.

    A white logo on a transparent background would vanish on white; such marks are put on
    dark grey instead, so the mark's shape survives.
    """
    if not is_transparent(img):
        return img.convert("RGB")
    rgba = np.asarray(img.convert("RGBA")).astype(np.float32) / 255.0
    a = rgba[:, :, 3:4]
    rgb = rgba[:, :, :3]
    bg = _alpha_background(rgba)
    out = rgb * a + bg * (1.0 - a)
    return Image.fromarray((out * 255.0 + 0.5).clip(0, 255).astype(np.uint8), "RGB")


def prepare_logo(img: Image.Image, size: int, fill: float, interp: str = "bilinear") -> np.ndarray:
    """Canonical reference view of a logo: trimmed, alpha flattened, fit into ``fill`` of a square.

    The background of the square is the flattened background colour (white unless the mark is light).
    Returns uint8 ``size x size x 3``.
    """
    trimmed = trim_to_content(img)
    flat = flatten_alpha(trimmed)
    if trimmed.mode == "RGBA":
        # transparent logo: the background flatten_alpha used (a mark filling its own bounding box, e.g. a
        # solid badge, must not be padded with its own colour, which would erase its outline)
        v = int(_alpha_background(np.asarray(trimmed).astype(np.float32) / 255.0) * 255.0 + 0.5)
        bg = (v, v, v)
    else:
        # opaque image: median of its untrimmed border pixels (its own background colour)
        arr = np.asarray(img.convert("RGB"))
        border = np.concatenate([arr[0], arr[-1], arr[:, 0], arr[:, -1]])
        bg = tuple(int(v) for v in np.median(border, axis=0)) if border.size else (255, 255, 255)
    w, h = flat.size
    target = max(1, int(round(size * fill)))
    scale = target / max(w, h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    flat = flat.resize((nw, nh), interpolation(interp))
    canvas = Image.new("RGB", (size, size), bg)
    canvas.paste(flat, ((size - nw) // 2, (size - nh) // 2))
    return np.asarray(canvas)


def normalize(batch_u8: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """uint8 [n, H, W, 3] -> float32 [n, 3, H, W] normalized with ImageNet-style mean/std (0..1 scale)."""
    assert batch_u8.ndim == 4 and batch_u8.shape[-1] == 3, batch_u8.shape
    x = batch_u8.astype(np.float32) * (1.0 / 255.0)
    x -= np.asarray(mean, dtype=np.float32)
    x /= np.asarray(std, dtype=np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def feature_grid(size: int, stride: int) -> int:
    """Side of the feature map for a ``size`` input (TF-'same' padding: ceil)."""
    return math.ceil(size / stride)
