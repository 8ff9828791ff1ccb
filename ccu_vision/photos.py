"""Photo folders for training, evaluation and the demo (any folder of photos works).

The clothing dataset in ``../shared`` is one such folder; nothing here depends on it. When no photo
folder is available, :func:`procedural_photos` makes textured stand-ins so the code still runs.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter, ImageOps

log = logging.getLogger(__name__)

PHOTO_EXTS = {".jpg", ".jpeg", ".png", ".webp"}


def find_photo_dir(explicit: str | os.PathLike | None = None) -> Path | None:
    """A photo folder: ``explicit``, else ``$CCU_PHOTOS``, else a clothing dataset beside the checkout."""
    cands = [explicit, os.environ.get("CCU_PHOTOS")]
    here = Path(__file__).resolve().parent.parent
    cands += [here.parent / "shared" / "datasets" / "clothing-dataset-small", Path.cwd().parent / "shared" / "datasets" / "clothing-dataset-small"]
    for c in cands:
        if c and Path(c).is_dir():
            return Path(c)
    return None


def list_photos(root: str | os.PathLike, split: str | None = None) -> list[Path]:
    """Photo files under ``root`` (or ``root/split`` when it exists), sorted."""
    base = Path(root)
    if split and (base / split).is_dir():
        base = base / split
    return sorted(p for p in base.rglob("*") if p.suffix.lower() in PHOTO_EXTS and p.is_file())


def load_photo(path: Path, max_side: int) -> np.ndarray:
    """Decode a photo (EXIF applied) to uint8 RGB with its long side at most ``max_side``."""
    with Image.open(path) as im:
        im.draft("RGB", (max_side, max_side))
        im = ImageOps.exif_transpose(im).convert("RGB")
        im.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)
        return np.asarray(im).copy()


def load_photos(paths: list[Path], max_side: int) -> list[np.ndarray]:
    """Decode many photos; unreadable ones are skipped with a warning."""
    out = []
    for p in paths:
        try:
            out.append(load_photo(p, max_side))
        except Exception as e:
            log.warning("skipping %s: %s", p, e)
    return out


def photo_class(path: Path) -> str:
    """The class of a photo in a class-per-folder dataset (its parent folder name)."""
    return path.parent.name


def procedural_photos(n: int, size: int = 320, seed: int = 0) -> list[np.ndarray]:
    """Textured stand-in photos (fabric-like noise, gradients, shapes) when no photo folder exists."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        h, w = size, int(size * rng.uniform(0.6, 1.0))
        base = rng.integers(0, 256, 3)
        noise = rng.normal(0, 1, (h // 8 + 1, w // 8 + 1))
        img = Image.fromarray(((noise - noise.min()) / (np.ptp(noise) + 1e-6) * 255).astype(np.uint8))
        img = img.resize((w, h), Image.Resampling.BICUBIC).filter(ImageFilter.GaussianBlur(2))
        lum = np.asarray(img, np.float32)[:, :, None] / 255.0
        arr = (base[None, None, :] * (0.6 + 0.5 * lum)).clip(0, 255).astype(np.uint8)
        out.append(arr)
    return out
