"""Tests for ccu_vision.synth: marks placed on photos, listing chrome and near-duplicate edits."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageOps

from ccu_vision import synth
from ccu_vision.photos import procedural_photos
from ccu_vision.synth import EDITS, STYLES, copy_edit, listing_chrome, photo_effects, place_mark, warp_mask


def _ring_mask(n: int = 64) -> np.ndarray:
    y, x = np.mgrid[0:n, 0:n] - (n - 1) / 2
    r = np.hypot(x, y)
    return ((r < n / 2) & (r > n / 4)).astype(np.float32)


@pytest.fixture(scope="module")
def photos() -> list[np.ndarray]:
    return procedural_photos(4, 160, seed=3)


def _changed(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a.astype(int) != b.astype(int)).any(axis=2)


def _inside(box, shape) -> np.ndarray:
    m = np.zeros(shape[:2], bool)
    x0, y0, x1, y1 = box
    m[y0:y1, x0:x1] = True
    return m


@pytest.mark.parametrize("style", sorted(set(STYLES)))
@pytest.mark.parametrize("seed", range(4))
def test_place_mark_stays_inside_its_box(photos: list[np.ndarray], style: str, seed: int) -> None:
    photo = photos[seed % len(photos)]
    rng = np.random.default_rng(seed)
    size = int(rng.integers(20, 80))
    out, pl = place_mark(photo, _ring_mask(), size, rng, brand_rgb=(200, 10, 10), style=style,
                         texture=photos[(seed + 1) % len(photos)])
    H, W = photo.shape[:2]
    assert out.shape == photo.shape and out.dtype == np.uint8
    x0, y0, x1, y1 = pl.box
    assert 0 <= x0 < x1 <= W and 0 <= y0 < y1 <= H
    assert pl.style == style
    ch = _changed(out, photo)
    inside = _inside(pl.box, photo.shape)
    assert ch[inside].sum() > 0.05 * inside.sum(), "the mark must change pixels inside its box"
    assert not ch[~inside].any(), "nothing outside the box may change"
    assert np.array_equal(out[~inside], photo[~inside])
    assert len(pl.color) == 3 and all(0 <= c <= 255 for c in pl.color)


def test_print_box_is_tight(photos: list[np.ndarray]) -> None:
    for seed in range(6):
        rng = np.random.default_rng(100 + seed)
        out, pl = place_mark(photos[0], _ring_mask(), 50, rng, style="print", occlude=0.0)
        ys, xs = np.nonzero(_changed(out, photos[0]))
        x0, y0, x1, y1 = pl.box
        assert abs(xs.min() - x0) <= 3 and abs(ys.min() - y0) <= 3
        assert abs(xs.max() + 1 - x1) <= 3 and abs(ys.max() + 1 - y1) <= 3
        assert max(x1 - x0, y1 - y0) >= 30  # roughly the requested size (rotation/perspective allowed)


def test_texture_style_without_texture_falls_back_to_print(photos: list[np.ndarray]) -> None:
    _, pl = place_mark(photos[0], _ring_mask(), 40, np.random.default_rng(0), style="texture", texture=None)
    assert pl.style == "print"


def test_place_mark_explicit_position_and_oversized_mark(photos: list[np.ndarray]) -> None:
    photo = photos[1]
    H, W = photo.shape[:2]
    out, pl = place_mark(photo, _ring_mask(), 30, np.random.default_rng(1), style="print", xy=(5, 7), occlude=0.0)
    # the warped mask may be a little smaller than requested, so its box starts where asked (clamped)
    assert (pl.box[0], pl.box[1]) == (5, 7)
    out, pl = place_mark(photo, _ring_mask(), 10 * max(H, W), np.random.default_rng(2), style="print",
                         xy=(10_000, -50))
    x0, y0, x1, y1 = pl.box
    assert 0 <= x0 < x1 <= W and 0 <= y0 < y1 <= H
    assert out.shape == photo.shape


def test_place_mark_is_deterministic(photos: list[np.ndarray]) -> None:
    for style in (None, "badge", "tone"):
        a, pa = place_mark(photos[2], _ring_mask(), 45, np.random.default_rng(7), style=style, texture=photos[3])
        b, pb = place_mark(photos[2], _ring_mask(), 45, np.random.default_rng(7), style=style, texture=photos[3])
        assert np.array_equal(a, b) and pa == pb
    c, pc = place_mark(photos[2], _ring_mask(), 45, np.random.default_rng(8), texture=photos[3])
    assert not np.array_equal(a, c) or pa != pc


def test_random_styles_cover_all(photos: list[np.ndarray]) -> None:
    rng = np.random.default_rng(0)
    seen = {place_mark(photos[0], _ring_mask(32), 20, rng, texture=photos[1])[1].style for _ in range(60)}
    assert seen == set(STYLES)


def test_warp_mask_size_and_range() -> None:
    rng = np.random.default_rng(4)
    for size in (12, 40, 90):
        m = warp_mask(_ring_mask(), size, rng)
        assert m.dtype == np.float32 and m.min() >= 0 and m.max() <= 1 and m.max() > 0.5
        assert 0.5 * size <= max(m.shape) <= 1.6 * size + 4
    flat = warp_mask(_ring_mask(), 30, rng, max_rot=0, persp=0)
    assert abs(max(flat.shape) - 30) <= 6


def test_redraw_mask_changes_strokes_and_slant_but_keeps_the_mark() -> None:
    """Another drawing of the same mark: bolder, lighter or unchanged strokes, slanted; same height,
    ink never more than halved, deterministic for a seed."""
    thick = _ring_mask(64)  # 16-px strokes: thinning applies
    base_ink, (h, w) = float(thick.sum()), thick.shape
    rng = np.random.default_rng(0)
    inks, widths = [], []
    for _ in range(60):
        r = synth.redraw_mask(thick, rng)
        assert r.dtype == np.float32 and r.min() >= 0 and r.max() <= 1
        assert abs(r.shape[0] - h) <= 2, "a horizontal shear keeps the height"
        inks.append(float(r.sum()) / base_ink)
        widths.append(r.shape[1])
    inks = np.asarray(inks)
    assert (inks > 1.1).any() and (inks < 0.92).any() and (np.abs(inks - 1) < 0.05).any(), inks
    assert inks.min() >= 0.5
    assert max(widths) >= w + 5, "slanted cuts are wider"
    a = synth.redraw_mask(thick, np.random.default_rng(5))
    b = synth.redraw_mask(thick, np.random.default_rng(5))
    assert np.array_equal(a, b)
    hair = np.zeros((40, 40), np.float32)
    hair[5:35, 20] = 1.0  # 1-px stroke: thinning would erase it
    for seed in range(20):
        assert synth.redraw_mask(hair, np.random.default_rng(seed)).sum() >= 0.5 * hair.sum()
    # the slant is a shear about the middle row: a vertical bar becomes a diagonal
    bar = np.zeros((60, 20), np.float32)
    bar[:, 8:12] = 1.0
    rng = np.random.default_rng(1)
    offsets = []
    for _ in range(20):
        r = synth.redraw_mask(bar, rng, max_shear=0.3)
        offsets.append(np.nonzero(r[2] > 0.5)[0].mean() - np.nonzero(r[-3] > 0.5)[0].mean())
    offsets = np.asarray(offsets)
    assert np.abs(offsets).max() <= 0.3 * 60 + 3 and np.abs(offsets).max() > 8
    assert (offsets > 3).any() and (offsets < -3).any(), "slants both ways"


# ----------------------------------------------------------------------------- chrome and effects


def test_listing_chrome_and_photo_effects(photos: list[np.ndarray]) -> None:
    img = Image.fromarray(photos[0])
    for seed in range(8):
        out = listing_chrome(img, np.random.default_rng(seed))
        assert out.mode == "RGB"
        assert out.size[0] >= img.size[0] and out.size[1] >= img.size[1]
        if out.size != img.size:  # white padding to a square canvas
            assert out.size[0] == out.size[1] and out.size[0] >= max(img.size)
        else:
            assert not np.array_equal(np.asarray(out), photos[0])
        eff = photo_effects(img, np.random.default_rng(seed))
        assert eff.size == img.size and eff.mode == "RGB"
    a = listing_chrome(img, np.random.default_rng(3))
    b = listing_chrome(img, np.random.default_rng(3))
    assert np.array_equal(np.asarray(a), np.asarray(b))
    assert np.array_equal(np.asarray(photo_effects(img, np.random.default_rng(5))),
                          np.asarray(photo_effects(img, np.random.default_rng(5))))
    # strength 0: untouched
    assert np.array_equal(np.asarray(photo_effects(img, np.random.default_rng(1), strength=0.0)), photos[0])


# ----------------------------------------------------------------------------- near-duplicate edits


def _contains(big: np.ndarray, small: np.ndarray) -> bool:
    H, W = big.shape[:2]
    h, w = small.shape[:2]
    for y in range(H - h + 1):
        for x in range(W - w + 1):
            if np.array_equal(big[y : y + h, x : x + w], small):
                return True
    return False


@pytest.mark.parametrize("edit", EDITS)
def test_every_edit_runs(photos: list[np.ndarray], edit: str) -> None:
    img = Image.fromarray(photos[0][:96, :80])
    orig = np.asarray(img)
    others = photos[1:]
    for seed in range(3):
        out, names = copy_edit(img, np.random.default_rng(seed), others, edits=(edit,))
        assert names == [edit]
        assert isinstance(out, Image.Image) and out.mode == "RGB" and min(out.size) >= 1
        arr = np.asarray(out)
        assert not (arr.shape == orig.shape and np.array_equal(arr, orig)), f"{edit} changed nothing"
        W, H = img.size
        if edit == "flip":
            assert np.array_equal(arr, np.asarray(ImageOps.mirror(img)))
        elif edit == "grayscale":
            assert (arr[:, :, 0] == arr[:, :, 1]).all() and (arr[:, :, 1] == arr[:, :, 2]).all()
        elif edit == "crop":
            assert out.size[0] <= W and out.size[1] <= H and _contains(orig, arr)
        elif edit in ("border", "screenshot", "collage"):
            assert out.size[0] >= W and out.size[1] >= H and out.size != img.size
            if edit == "border":
                b = (out.size[0] - W) // 2
                assert out.size[0] - W == out.size[1] - H == 2 * b > 0
                assert np.array_equal(arr[b : b + H, b : b + W], orig)
        elif edit == "resize":
            assert min(out.size) >= 16 and out.size != img.size
        elif edit in ("jpeg", "watermark", "color", "blur", "emoji"):
            assert out.size == img.size


def test_collage_without_others_is_identity(photos: list[np.ndarray]) -> None:
    img = Image.fromarray(photos[0])
    out, _ = copy_edit(img, np.random.default_rng(0), None, edits=("collage",))
    assert np.array_equal(np.asarray(out), photos[0])


def test_collage_contains_the_original(photos: list[np.ndarray]) -> None:
    img = Image.fromarray(photos[0][:60, :40])
    for seed in range(3):
        out, _ = copy_edit(img, np.random.default_rng(seed), photos[1:], edits=("collage",))
        cell = 60 // 2 + 1
        tile = img.copy()
        tile.thumbnail((cell, cell))
        assert out.size[0] == 2 * cell and out.size[1] % cell == 0
        assert _contains(np.asarray(out), np.asarray(tile)), "the edited photo is one of the collage tiles"


def test_random_edits_are_distinct_known_and_deterministic(photos: list[np.ndarray]) -> None:
    img = Image.fromarray(photos[2])
    for seed in range(10):
        a, ea = copy_edit(img, np.random.default_rng(seed), photos[:2])
        b, eb = copy_edit(img, np.random.default_rng(seed), photos[:2])
        assert ea == eb and np.array_equal(np.asarray(a), np.asarray(b))
        assert 1 <= len(ea) <= 3 and len(set(ea)) == len(ea) and set(ea) <= set(EDITS)
    _, e4 = copy_edit(img, np.random.default_rng(0), photos[:2], n_edits=4)
    assert len(e4) == 4 and len(set(e4)) == 4


def test_unknown_edit(photos: list[np.ndarray]) -> None:
    with pytest.raises(ValueError, match="unknown edit 'sepia'"):
        copy_edit(Image.fromarray(photos[0]), np.random.default_rng(0), edits=("sepia",))


def test_jpeg_helper_roundtrip(photos: list[np.ndarray]) -> None:
    img = Image.fromarray(photos[0])
    hi = np.asarray(synth.jpeg(img, 95)).astype(int)
    lo = np.asarray(synth.jpeg(img, 10)).astype(int)
    assert hi.shape == lo.shape == photos[0].shape
    assert np.abs(hi - photos[0]).mean() < np.abs(lo - photos[0]).mean()


def test_graphic_clutter_prints_lettering_and_panels_deterministically(photos: list[np.ndarray]) -> None:
    """Packaging-like print changes a real share of the photo (not all of it), keeps its shape and is
    reproducible from the seed; a font that cannot be read is an error naming the file."""
    base = photos[0]
    outs = [synth.graphic_clutter(base, np.random.default_rng(s), [None]) for s in range(6)]
    for out in outs:
        assert out.shape == base.shape and out.dtype == np.uint8
    shares = np.array([_changed(base, o).mean() for o in outs])
    assert (shares > 0.01).all() and (shares < 0.95).all(), shares
    assert np.array_equal(outs[0], synth.graphic_clutter(base, np.random.default_rng(0), [None]))
    assert not np.array_equal(outs[0], outs[1])
    assert base is photos[0] and not np.shares_memory(outs[0], base)
    with pytest.raises(ValueError, match="/nonexistent/font.ttf: cannot load font"):
        synth.graphic_clutter(base, np.random.default_rng(0), ["/nonexistent/font.ttf"])


def test_clutter_lettering_is_made_up_text() -> None:
    rng = np.random.default_rng(0)
    lines = [synth._clutter_text(rng) for _ in range(200)]
    assert all(lines) and len(set(lines)) > 150
    assert any(ch.isdigit() for ln in lines for ch in ln) and any(ln.isupper() for ln in lines)
