"""Shared pytest fixtures. Owners may ADD fixtures here; never remove or change existing ones.

Image fixtures are generated programmatically (seeded) so no binary test data is committed:

* ``image_case(name)`` writes one named case (see :data:`IMAGE_CASES`) into ``tmp_path`` and returns its path;
* ``image_cases`` writes every case into one messy folder (nested folders, non-ASCII names) and returns
  ``(folder, expected)`` where ``expected`` maps each file's path relative to the folder to ``None``
  (must decode) or to a substring the error reason must contain. A scan of that folder must produce exactly
  one row per entry. The unreadable-file case is only included when not running as root.
* ``tiny_model_path``: a tiny deterministic ONNX embedder (session-scoped).
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

# ------------------------------------------------------------------------------------ image builders

RED, BLUE, GREEN = (255, 0, 0), (0, 0, 255), (0, 255, 0)


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _photo(w: int, h: int, seed: int = 0) -> Image.Image:
    """A smooth, JPEG-friendly synthetic photo (gradients plus a little seeded noise)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    r = 255 * x / max(1, w - 1)
    g = 255 * y / max(1, h - 1)
    b = 128 + 60 * np.sin(x / 17.0) * np.cos(y / 23.0)
    arr = np.stack([r, g, b], axis=2) + _rng(seed).normal(0, 4, (h, w, 3))
    return Image.fromarray(arr.clip(0, 255).astype(np.uint8), "RGB")


def _save(img: Image.Image, path: Path, fmt: str, **kw: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, fmt, **kw)
    return path


def make_cmyk_jpeg(path: Path) -> Path:
    """Left half red, right half blue, stored as CMYK."""
    img = Image.new("CMYK", (64, 32), (0, 255, 255, 0))
    img.paste((255, 255, 0, 0), (32, 0, 64, 32))
    return _save(img, path, "JPEG", quality=95)


def make_gray16_png(path: Path) -> Path:
    """16-bit greyscale horizontal ramp covering 0..65535."""
    ramp = np.linspace(0, 65535, 256).round().astype(np.uint16)
    return _save(Image.fromarray(np.tile(ramp, (8, 1))), path, "PNG")


def make_palette_transparent_png(path: Path) -> Path:
    """Palette PNG: left half transparent (index 0), right half opaque red (index 1)."""
    img = Image.new("P", (40, 20), 0)
    img.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    img.paste(1, (20, 0, 40, 20))
    return _save(img, path, "PNG", transparency=0)


def make_la_png(path: Path) -> Path:
    """LA: dark grey, top half fully transparent."""
    alpha = Image.new("L", (30, 30), 255)
    alpha.paste(0, (0, 0, 30, 15))
    return _save(Image.merge("LA", (Image.new("L", (30, 30), 40), alpha)), path, "PNG")


def _frames() -> list[Image.Image]:
    """Three frames, each one colour with a small white square (not blank: a reference must show something)."""
    frames = [Image.new("RGB", (40, 20), c) for c in (RED, BLUE, GREEN)]
    for f in frames:
        ImageDraw.Draw(f).rectangle((2, 2, 7, 7), fill=(255, 255, 255))
    return frames


def make_animated_gif(path: Path) -> Path:
    f = _frames()
    return _save(f[0], path, "GIF", save_all=True, append_images=f[1:], duration=80, loop=0)


def make_animated_webp(path: Path) -> Path:
    f = _frames()
    return _save(f[0], path, "WEBP", save_all=True, append_images=f[1:], duration=80, lossless=True)


def make_webp(path: Path) -> Path:
    return _save(_photo(120, 80, seed=3), path, "WEBP", quality=85)


def make_exif_rotated_jpeg(path: Path) -> Path:
    """Stored 60x20 with the left 10 columns blue, EXIF orientation 6 (display rotated 90 deg clockwise).

    Displayed correctly it is 20 wide and 60 high with the blue band at the top.
    """
    img = Image.new("RGB", (60, 20), RED)
    img.paste(BLUE, (0, 0, 10, 20))
    exif = Image.Exif()
    exif[0x0112] = 6
    return _save(img, path, "JPEG", quality=95, exif=exif.tobytes())


def make_transparent_png(path: Path) -> Path:
    return _save(Image.new("RGBA", (16, 16), (10, 20, 30, 0)), path, "PNG")


def make_1x1_png(path: Path) -> Path:
    return _save(Image.new("RGB", (1, 1), (12, 34, 56)), path, "PNG")


def make_wide_jpeg(path: Path) -> Path:
    return _save(_photo(6000, 300, seed=5), path, "JPEG", quality=80)


def make_jpeg(path: Path, size: tuple[int, int] = (96, 64), seed: int = 1) -> Path:
    return _save(_photo(*size, seed=seed), path, "JPEG", quality=90)


def make_png(path: Path, size: tuple[int, int] = (48, 32), seed: int = 2) -> Path:
    return _save(_photo(*size, seed=seed), path, "PNG")


LOGO_SVG = (
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 12">'
    '<rect x="0" y="0" width="24" height="12" fill="#e00"/><circle cx="12" cy="6" r="4" fill="#fff"/></svg>'
)


def make_svg(path: Path, text: str = LOGO_SVG) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def make_truncated_jpeg(path: Path) -> Path:
    buf = io.BytesIO()
    _photo(200, 150, seed=7).save(buf, "JPEG", quality=90)
    data = buf.getvalue()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data[: int(len(data) * 0.6)])
    return path


def make_empty(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def make_html_as_jpg(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head><body>gone</body></html>\n")
    return path


def make_random_bytes(path: Path, n: int = 4096, seed: int = 11) -> Path:
    data = _rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()
    if data[:1] == b"<":  # keep it binary noise, not markup
        data = b"\x00" + data[1:]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def png_bytes_declaring(width: int, height: int) -> bytes:
    """A tiny, valid-looking PNG whose header declares ``width`` x ``height`` 8-bit greyscale pixels."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * (width + 1) * 4)  # a few rows only: decoding would need GBs
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def make_bomb_png(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png_bytes_declaring(40000, 40000))
    return path


def make_unreadable(path: Path) -> Path:
    make_jpeg(path)
    os.chmod(path, 0)
    return path


# name -> (builder, expected): expected None = decodes fine, else a substring of the error reason
IMAGE_CASES: dict[str, tuple[Callable[[Path], Path], str | None]] = {
    "cmyk.jpg": (make_cmyk_jpeg, None),
    "gray16.png": (make_gray16_png, None),
    "palette_transparent.png": (make_palette_transparent_png, None),
    "la.png": (make_la_png, None),
    "animated.gif": (make_animated_gif, None),
    "animated.webp": (make_animated_webp, None),
    "photo.webp": (make_webp, None),
    "exif_rotated.jpg": (make_exif_rotated_jpeg, None),
    "transparent.png": (make_transparent_png, None),
    "1x1.png": (make_1x1_png, None),
    "wide_6000x300.jpg": (make_wide_jpeg, None),
    "ünïcødé 商品 ©.jpg": (make_jpeg, None),
    "nested/deeper/photo.png": (make_png, None),
    "logo.svg": (make_svg, None),
    "truncated.jpg": (make_truncated_jpeg, "truncated"),
    "empty.jpg": (make_empty, "empty file"),
    "page.jpg": (make_html_as_jpg, "HTML document, not an image"),
    "random.jpg": (make_random_bytes, "not a recognised image format"),
    "bomb.png": (make_bomb_png, "decompression bomb: 40000x40000 exceeds 64000000 pixels"),
    "unreadable.jpg": (make_unreadable, "permission denied"),
}


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


@pytest.fixture
def image_case(tmp_path: Path) -> Callable[[str], Path]:
    """``image_case(name)`` writes the named :data:`IMAGE_CASES` entry under ``tmp_path/cases``."""

    def build(name: str) -> Path:
        builder, _ = IMAGE_CASES[name]
        return builder(tmp_path / "cases" / name)

    return build


@pytest.fixture
def image_cases(tmp_path: Path) -> tuple[Path, dict[str, str | None]]:
    """Every image case in one messy folder: ``(folder, {relative path: None | reason substring})``."""
    folder = tmp_path / "messy"
    expected: dict[str, str | None] = {}
    for name, (builder, reason) in IMAGE_CASES.items():
        if name == "unreadable.jpg" and _is_root():
            continue  # root can read anything; covered by a monkeypatched test instead
        builder(folder / name)
        expected[name] = reason
    return folder, expected


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny deterministic ONNX embedder (ccu_vision.tinymodel), built once per test session."""
    from ccu_vision.tinymodel import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny-model") / "tiny.onnx")


@pytest.fixture(scope="session")
def tiny_eval_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny evaluation set (``EvalConfig.tiny()``) built on 16 seeded procedural photos (session-scoped)."""
    from ccu_vision.evalset import EvalConfig, build_eval_set
    from ccu_vision.photos import procedural_photos

    base = tmp_path_factory.mktemp("tiny-eval")
    photos = base / "photos"
    photos.mkdir()
    for i, p in enumerate(procedural_photos(16, 256, seed=5)):
        Image.fromarray(p).save(photos / f"p{i:02d}.jpg", quality=90)
    return build_eval_set(base / "set", EvalConfig.tiny(), photos_dir=photos)
