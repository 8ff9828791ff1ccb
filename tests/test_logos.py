"""Tests for ccu_vision.logos: the fixed brand split, rendering and reference colours."""

from __future__ import annotations

import hashlib
import logging

import numpy as np
import pytest

from ccu_vision import logos
from ccu_vision.logos import (
    DEMO_BRANDS,
    HELDOUT_PERCENT,
    Brand,
    MaskBank,
    all_brands,
    brands,
    get_brand,
    is_heldout,
    logo_rgba,
    reference_color,
    render_mask,
    render_svg,
)

SQUARE_SVG = '<svg viewBox="0 0 24 24" xmlns="http://www.w3.org/2000/svg"><rect x="6" y="4" width="12" height="16"/></svg>'


def test_all_brands_sorted_unique_and_plentiful() -> None:
    bs = all_brands()
    slugs = [b.slug for b in bs]
    assert len(bs) > 1000
    assert slugs == sorted(slugs) and len(set(slugs)) == len(slugs)
    assert all(b.svg.lstrip().startswith("<svg") for b in bs[:50])


def test_split_is_disjoint_complete_and_deterministic() -> None:
    train, held = brands("train"), brands("heldout")
    ts, hs = {b.slug for b in train}, {b.slug for b in held}
    assert not ts & hs
    assert ts | hs == {b.slug for b in brands("all")}
    assert brands("train") == train and brands("heldout") == held  # same order every call
    # the split is a pure function of the slug: recompute it independently
    for b in all_brands()[::37]:
        want = b.slug in DEMO_BRANDS or int(hashlib.sha1(b.slug.encode()).hexdigest(), 16) % 100 < HELDOUT_PERCENT
        assert is_heldout(b.slug) == want
    frac = len(held) / (len(held) + len(train))
    assert 0.10 < frac < 0.25, frac


def test_demo_brands_are_held_out() -> None:
    train = {b.slug for b in brands("train")}
    present = [s for s in DEMO_BRANDS if get_brand(s) is not None]
    assert len(present) >= 20, "the demo needs its brands in the icon pack"
    for s in DEMO_BRANDS:
        assert is_heldout(s)
        assert s not in train


def test_unknown_split_and_brand() -> None:
    with pytest.raises(ValueError, match="unknown split"):
        brands("test")
    assert get_brand("definitely-not-a-brand-slug") is None
    nike = get_brand("nike")
    assert nike is not None and nike.title.lower() == "nike"


def test_render_svg_long_side_and_alpha() -> None:
    wide = '<svg viewBox="0 0 48 24" xmlns="http://www.w3.org/2000/svg"><rect width="48" height="24" fill="red"/></svg>'
    im = render_svg(wide, 100)
    assert im.mode == "RGBA" and im.size == (100, 50)
    arr = np.asarray(im)
    assert (arr[:, :, 3] == 255).all() and (arr[:, :, 0] == 255).all()


def test_render_mask_trimmed_and_in_range() -> None:
    m = render_mask(Brand("sq", "Square", "000000", SQUARE_SVG), 96)
    assert m.dtype == np.float32 and 0 <= m.min() and m.max() <= 1
    # rect 12x16 of a 24 viewBox at 96 px -> about 48x64, trimmed to its bounding box
    assert abs(m.shape[0] - 64) <= 1 and abs(m.shape[1] - 48) <= 1
    assert m.mean() > 0.95
    for b in [get_brand("nike"), get_brand("bmw"), *all_brands()[:5]]:
        assert b is not None
        mk = render_mask(b, 64)
        assert mk.size > 16 and mk.max() > 0.5
        assert max(mk.shape) <= 64
        # trimmed: every edge row/column touches the mark
        for edge in (mk[0], mk[-1], mk[:, 0], mk[:, -1]):
            assert edge.max() > 0.02
    empty = render_mask(Brand("e", "Empty", "000000", '<svg viewBox="0 0 24 24" xmlns="http://www.w3.org/2000/svg"/>'))
    assert empty.shape == (8, 8) and (empty == 1).all()


def test_logo_rgba_and_brand_colour() -> None:
    mask = np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4)
    im = logo_rgba(mask, (10, 20, 30))
    arr = np.asarray(im)
    assert im.mode == "RGBA" and im.size == (4, 3)
    assert (arr[:, :, :3] == (10, 20, 30)).all()
    assert np.array_equal(arr[:, :, 3], (mask * 255).astype(np.uint8))
    assert Brand("x", "X", "#1A2B3C", "").rgb == (0x1A, 0x2B, 0x3C)
    assert Brand("x", "X", "1a2b3c", "").rgb == (0x1A, 0x2B, 0x3C)
    assert Brand("x", "X", "zz", "").rgb == (0, 0, 0)


@pytest.mark.parametrize(
    "hexv,want",
    [("FFFFFF", (0, 0, 0)), ("F5F5F5", (0, 0, 0)), ("E10600", (0xE1, 0x06, 0x00)), ("000000", (0, 0, 0)),
     ("FFD700", (0xFF, 0xD7, 0x00))],
)
def test_reference_color(hexv: str, want: tuple[int, int, int]) -> None:
    assert reference_color(Brand("x", "X", hexv, "")) == want


def test_mask_bank_survives_broken_icons(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    good = get_brand("nike")
    assert good is not None
    broken = Brand("broken", "Broken", "000000", "<svg")

    def render(b: Brand, size: int = 128) -> np.ndarray:
        if b.slug == "broken":
            raise RuntimeError("bad svg")
        return np.ones((size // 2, size), np.float32)

    monkeypatch.setattr(logos, "render_mask", render)
    with caplog.at_level(logging.WARNING, logger="ccu_vision.logos"):
        bank = MaskBank([good, broken], size=32)
    assert len(bank) == 2 and bank.brands == [good, broken]
    assert bank.masks[0].shape == (16, 32)
    assert bank.masks[1].shape == (8, 8)
    assert "broken" in caplog.text
