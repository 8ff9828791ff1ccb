"""Tests for ccu_vision.wordmarks: lettered marks (wordmarks, lockups), the font split, and their use
as training classes and as an evaluation set."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import ImageFont

from ccu_vision import evalset as evalset_mod
from ccu_vision import wordmarks as wm
from ccu_vision.evalset import EvalConfig, build_eval_set, read_truth
from ccu_vision.logos import Brand, MaskBank, brands, is_heldout


def _pillow_font_bytes() -> bytes:
    return ImageFont.load_default(size=20).path.getvalue()  # Pillow's built-in face (a TrueType file)


@pytest.fixture()
def font_dir(tmp_path: Path) -> Path:
    """Two real font files: one held out by name (a serif face), one training face; plus non-fonts."""
    d = tmp_path / "fonts"
    (d / "sub").mkdir(parents=True)
    (d / "TestSerif-Bold.ttf").write_bytes(_pillow_font_bytes())
    (d / "sub" / "TestSans.ttf").write_bytes(_pillow_font_bytes())
    (d / "TestMath.otf").write_bytes(_pillow_font_bytes())
    (d / "readme.txt").write_text("not a font")
    return d


def test_font_discovery_and_split(font_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CCU_FONTS", str(font_dir))
    fonts = wm.find_fonts()
    assert fonts == sorted(str(font_dir / n) for n in ("TestMath.otf", "sub/TestSans.ttf", "TestSerif-Bold.ttf"))
    assert wm.font_split(fonts, "heldout") == [str(font_dir / "TestSerif-Bold.ttf")]
    assert wm.font_split(fonts, "train") == [None, str(font_dir / "sub" / "TestSans.ttf")]  # math face skipped
    assert wm.is_heldout_font("/x/DejaVuSerifCondensed-Italic.ttf")
    assert not wm.is_heldout_font("/x/PTSansSerif.ttf") and not wm.is_heldout_font(None)
    with pytest.raises(ValueError, match="unknown font split"):
        wm.font_split(fonts, "val")
    assert wm.find_fonts(str(font_dir / "missing")) == []


def test_text_mask_is_trimmed_ink_and_grows_with_text() -> None:
    a, b = wm.text_mask("AB", None), wm.text_mask("ABCDEFGH", None)
    for m in (a, b):
        assert m.dtype == np.float32 and 0 <= m.min() and m.max() <= 1
        assert m[0].max() > 0.02 and m[-1].max() > 0.02 and m[:, 0].max() > 0.02 and m[:, -1].max() > 0.02
    assert b.shape[1] > 2.5 * a.shape[1] and abs(a.shape[0] - b.shape[0]) <= 2


def test_a_broken_font_file_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "Broken.ttf"
    bad.write_bytes(b"not a font")
    with pytest.raises(ValueError, match=r"Broken\.ttf: cannot load font"):
        wm.text_mask("Brand", str(bad))


def test_lockups_place_symbol_and_lettering_apart() -> None:
    text = wm.text_mask("Brand", None)
    icon = np.ones((30, 30), np.float32)
    right = wm.compose(icon, text, "lockup_right", icon_scale=1.5, gap=0.3)
    th, tw = text.shape
    ih = round(1.5 * th)
    assert right.shape == (max(ih, th), ih + max(2, round(0.3 * th)) + tw)
    assert right[:, :ih].mean() > 0.9 and right[:, ih : ih + 2].max() == 0  # solid symbol, then a clear gap
    below = wm.compose(icon, text, "lockup_below")
    assert below.shape[1] == tw and below.shape[0] > th and below[-th:].sum() == pytest.approx(text.sum(), rel=1e-3)
    assert wm.compose(icon, text, "wordmark") is text
    with pytest.raises(ValueError, match="unknown mark kind"):
        wm.compose(icon, text, "stamp")


def test_lettered_marks_are_deterministic_distinct_classes() -> None:
    tr = brands("train")[:40]
    icons = [np.ones((20, 20), np.float32)] * len(tr)
    fonts: list = [None]
    b1, m1 = wm.lettered_marks(tr, icons, fonts, 60, seed=3)
    b2, m2 = wm.lettered_marks(tr, icons, fonts, 60, seed=3)
    assert [b.slug for b in b1] == [b.slug for b in b2] and all(np.array_equal(x, y) for x, y in zip(m1, m2))
    assert len(b1) == 60 and len({b.slug for b in b1}) == 60  # each drawing a class of its own
    by_slug = {b.slug: b for b in tr}
    for b in b1:
        src = by_slug[b.slug.split("~")[0]]
        assert (b.title, b.hex, b.svg) == (src.title, src.hex, "")
    assert {b.slug.split("~")[1] for b in b1} == set(wm.KINDS)
    b3, _ = wm.lettered_marks(tr, icons, fonts, 60, seed=4)
    assert [b.slug for b in b3] != [b.slug for b in b1]
    with pytest.raises(ValueError, match="no fonts"):
        wm.lettered_marks(tr, icons, [], 5, seed=3)


def test_mask_bank_extend_adds_classes() -> None:
    bank = MaskBank(brands("train")[:3], size=32)
    extra = [Brand("x~wordmark~pillow", "X", "FF0000", "")]
    bank.extend(extra, [wm.text_mask("X", None)])
    assert len(bank) == 4 and bank.brands[-1] is extra[0] and bank.masks[-1].shape[0] > 4
    with pytest.raises(AssertionError):
        bank.extend(extra, [])


def test_lettered_eval_set_uses_heldout_brands_and_fonts(tmp_path: Path, font_dir: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(evalset_mod, "find_photo_dir", lambda explicit=None: None)
    cfg = EvalConfig(**{**EvalConfig.tiny().__dict__, "marks": "lettered"})
    monkeypatch.setenv("CCU_FONTS", str(tmp_path / "nofonts"))
    with pytest.raises(ValueError, match="no held-out"):
        build_eval_set(tmp_path / "none", cfg)
    monkeypatch.setenv("CCU_FONTS", str(font_dir))
    root = build_eval_set(tmp_path / "set", cfg)
    icons = build_eval_set(tmp_path / "icons", EvalConfig.tiny())
    assert json.loads((root / "set.json").read_text())["config"]["marks"] == "lettered"
    rows = read_truth(root)
    assert rows and all(is_heldout(r["brand"]) for r in rows if r.get("brand"))
    slug = next(r["brand"] for r in rows if r.get("brand"))
    from PIL import Image

    lettered = np.asarray(Image.open(root / "logos" / f"{slug}.png"))
    symbol = np.asarray(Image.open(icons / "logos" / f"{slug}.png"))
    assert lettered.shape != symbol.shape  # the registered reference is the lettered drawing
    with pytest.raises(ValueError, match="unknown marks"):
        build_eval_set(tmp_path / "bad", EvalConfig(**{**EvalConfig.tiny().__dict__, "marks": "emoji"}))
