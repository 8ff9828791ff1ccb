"""scripts/device_pack.py: what travels to a lent accelerator machine (photos, training fonts)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def _pack_module():
    spec = importlib.util.spec_from_file_location("device_pack", ROOT / "scripts" / "device_pack.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_pack_keeps_classes_shrinks_photos_and_leaves_heldout_fonts(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)
    photos = tmp_path / "photos"
    for split, cls, name, size in (("train", "shirt", "a.jpg", (640, 480)), ("train", "shoes", "b.png", (120, 90)),
                                   ("test", "shirt", "c.jpg", (300, 300))):
        (photos / split / cls).mkdir(parents=True, exist_ok=True)
        arr = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(arr).save(photos / split / cls / name)
    fonts = tmp_path / "fonts"
    fonts.mkdir()
    for name in ("DejaVuSans.ttf", "DejaVuSerif.ttf", "DejaVuMathTeXGyre.ttf", "Mono-Bold.otf"):
        (fonts / name).write_bytes(b"not read by the packer")
    monkeypatch.setenv("CCU_FONTS", str(fonts))
    out = tmp_path / ".device"
    assert _pack_module().main(["--photos", str(photos), "--out", str(out), "--no-wheels", "--max-side", "200"]) == 0
    packed = sorted(p.relative_to(out).as_posix() for p in (out / "photos").rglob("*") if p.is_file())
    assert packed == ["photos/train/shirt/a.webp", "photos/train/shoes/b.webp"]  # the train split only
    with Image.open(out / "photos/train/shirt/a.webp") as im:
        assert im.format == "WEBP" and im.size == (200, 150)
    with Image.open(out / "photos/train/shoes/b.webp") as im:
        assert im.size == (120, 90)  # never enlarged
    # training faces travel; the held-out serif and the math face stay behind
    assert sorted(p.name for p in (out / "fonts").iterdir()) == ["DejaVuSans.ttf", "Mono-Bold.otf"]


def test_pack_refuses_an_empty_photo_folder(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match="no photos found"):
        _pack_module().main(["--photos", str(tmp_path / "empty"), "--out", str(tmp_path / "o"), "--no-wheels"])
