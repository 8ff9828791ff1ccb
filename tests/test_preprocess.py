"""Tests for ccu_vision.preprocess: letterbox geometry, trimming, alpha flattening, logo canvases, normalize."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from ccu_vision.preprocess import (
    Letterbox,
    feature_grid,
    flatten_alpha,
    interpolation,
    letterbox,
    normalize,
    prepare_logo,
    trim_to_content,
)

FILL = 128


def _noise(w: int, h: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    # keep values away from the fill colour so content and padding are distinguishable
    arr = rng.integers(160, 256, (h, w, 3), dtype=np.uint8)
    return Image.fromarray(arr, "RGB")


# ----------------------------------------------------------------------------- letterbox


@pytest.mark.parametrize(
    "w,h",
    [(60, 200), (200, 60), (128, 128), (300, 300), (1, 1), (3, 2), (1000, 3), (4000, 10), (7, 900), (129, 127)],
)
def test_letterbox_geometry(w: int, h: int) -> None:
    size = 128
    canvas, lb = letterbox(_noise(w, h, seed=w * 7 + h), size, fill=FILL)
    assert canvas.shape == (size, size, 3) and canvas.dtype == np.uint8
    assert (lb.width, lb.height, lb.size) == (w, h, size)
    assert lb.scale == pytest.approx(size / max(w, h))
    nw, nh = max(1, round(w * lb.scale)), max(1, round(h * lb.scale))
    # content is centred; the long side fills the canvas
    assert (lb.ox, lb.oy) == ((size - nw) // 2, (size - nh) // 2)
    assert max(nw, nh) == size
    content = np.zeros((size, size), bool)
    content[lb.oy : lb.oy + nh, lb.ox : lb.ox + nw] = True
    assert (canvas[~content] == FILL).all(), "padding must be the fill colour"
    assert (canvas[content] >= 150).all(), "content pixels must come from the image (all >= 160 before resampling)"
    # the content box maps back to exactly the whole original image
    x0, y0, x1, y1 = lb.content_box()
    assert (x0, y0) == (lb.ox, lb.oy)
    assert x1 == pytest.approx(lb.ox + w * lb.scale) and y1 == pytest.approx(lb.oy + h * lb.scale)
    back = lb.to_original(np.asarray([lb.content_box()]))
    assert np.allclose(back, [[0, 0, w, h]], atol=1e-9)


@pytest.mark.parametrize("w,h", [(60, 200), (200, 60), (333, 250), (1000, 40), (25, 700), (64, 64)])
def test_to_original_inverts_canvas_mapping(w: int, h: int) -> None:
    lb = letterbox(_noise(w, h), 96)[1]
    rng = np.random.default_rng(w + h)
    x = np.sort(rng.uniform(0, w, (50, 2)), axis=1)
    y = np.sort(rng.uniform(0, h, (50, 2)), axis=1)
    orig = np.stack([x[:, 0], y[:, 0], x[:, 1], y[:, 1]], axis=1)
    canvas_boxes = orig.copy()
    canvas_boxes[:, [0, 2]] = orig[:, [0, 2]] * lb.scale + lb.ox
    canvas_boxes[:, [1, 3]] = orig[:, [1, 3]] * lb.scale + lb.oy
    assert np.allclose(lb.to_original(canvas_boxes), orig, atol=1e-6)
    assert np.allclose(lb.to_canvas(orig), canvas_boxes, atol=1e-9)  # and back
    # boxes on the padding or beyond the canvas are clipped into the image
    wild = np.asarray([[-50, -50, 500, 500], [0, 0, 96, 96], [0, 0, lb.ox, lb.oy]], dtype=np.float64)
    got = lb.to_original(wild)
    assert (got[:, [0, 2]] >= 0).all() and (got[:, [0, 2]] <= w).all()
    assert (got[:, [1, 3]] >= 0).all() and (got[:, [1, 3]] <= h).all()
    assert np.allclose(got[0], [0, 0, w, h]) and np.allclose(got[1], [0, 0, w, h])
    assert got.dtype == np.float64 and canvas_boxes.dtype == np.float64  # input not modified in place
    assert np.allclose(canvas_boxes[:, 0], orig[:, 0] * lb.scale + lb.ox)


@pytest.mark.parametrize("w,h", [(240, 400), (400, 240), (800, 90), (50, 50), (30, 500)])
def test_to_original_finds_a_marker_in_the_original(w: int, h: int) -> None:
    """A red square found in the canvas maps back onto where it is in the original image."""
    rng = np.random.default_rng(w * h)
    arr = np.full((h, w, 3), 200, np.uint8)
    side = max(6, min(w, h) // 3)
    x0, y0 = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
    arr[y0 : y0 + side, x0 : x0 + side] = (255, 0, 0)
    canvas, lb = letterbox(Image.fromarray(arr), 128, interp="nearest")
    red = (canvas[:, :, 0] > 200) & (canvas[:, :, 1] < 60)
    ys, xs = np.nonzero(red)
    assert len(xs) > 0
    found = lb.to_original(np.asarray([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], dtype=np.float64))[0]
    tol = 1.5 / lb.scale + 1  # one canvas pixel of resampling error, in original pixels
    assert np.allclose(found, [x0, y0, x0 + side, y0 + side], atol=tol), (found, (x0, y0, side), lb)


def test_letterbox_no_resize_keeps_pixels_and_non_rgb_input() -> None:
    img = _noise(64, 40, seed=3)
    canvas, lb = letterbox(img, 64)
    assert lb.scale == 1.0 and (lb.ox, lb.oy) == (0, 12)
    assert np.array_equal(canvas[12:52], np.asarray(img))
    gray = Image.fromarray(np.full((10, 20), 77, np.uint8), "L")
    c2, _ = letterbox(gray, 40, fill=0)
    assert c2.shape == (40, 40, 3) and (c2[10:30] == 77).all() and (c2[:10] == 0).all()


def test_letterbox_dataclass_is_frozen() -> None:
    lb = Letterbox(scale=1.0, ox=0, oy=0, width=1, height=1, size=1)
    with pytest.raises(AttributeError):
        lb.scale = 2.0  # type: ignore[misc]


def test_interpolation_names() -> None:
    assert interpolation("bilinear") == Image.Resampling.BILINEAR
    assert interpolation("nearest") == Image.Resampling.NEAREST
    with pytest.raises(ValueError, match="unknown interpolation 'cubicle'"):
        interpolation("cubicle")


# ----------------------------------------------------------------------------- trimming and alpha


def test_trim_to_content_by_alpha() -> None:
    arr = np.zeros((50, 80, 4), np.uint8)
    arr[:, :, :3] = 255  # transparent white everywhere: colour must not matter, alpha does
    arr[10:30, 20:61, 3] = 255
    arr[10:30, 20:61, :3] = (0, 0, 200)
    arr[40, 5, 3] = 5  # nearly transparent speck: ignored (alpha <= 8)
    out = trim_to_content(Image.fromarray(arr, "RGBA"))
    assert out.mode == "RGBA" and out.size == (41, 20)
    assert (np.asarray(out)[:, :, 3] == 255).all()
    # fully transparent: nothing to trim to, returned whole
    empty = trim_to_content(Image.fromarray(np.zeros((9, 7, 4), np.uint8), "RGBA"))
    assert empty.size == (7, 9)


def test_trim_to_content_uniform_border() -> None:
    arr = np.full((60, 90, 3), (250, 250, 250), np.uint8)
    arr[15:45, 30:71] = (20, 120, 40)
    arr[0, 0] = (0, 0, 0)  # one odd corner: the median of the four corners still says "border"
    arr[59, 89] = (249, 251, 250)  # within tolerance
    out = trim_to_content(Image.fromarray(arr))
    # the odd corner pixel itself is content (it differs from the border colour) -> crop starts at (0, 0)
    assert out.size == (71, 45)
    arr[0, 0] = (250, 250, 250)
    out = trim_to_content(Image.fromarray(arr))
    assert out.mode == "RGB" and out.size == (41, 30)
    assert (np.asarray(out) == (20, 120, 40)).all()
    # a uniform image has no content box: returned as is
    flat = trim_to_content(Image.fromarray(np.full((5, 6, 3), 9, np.uint8)))
    assert flat.size == (6, 5)


def test_trim_to_content_palette_with_transparency() -> None:
    p = Image.new("P", (40, 30), 0)
    p.putpalette([255, 255, 255, 200, 0, 0] + [0] * 762)
    p.info["transparency"] = 0
    for x in range(10, 20):
        for y in range(5, 25):
            p.putpixel((x, y), 1)
    assert trim_to_content(p).size == (10, 20)


def _mark_rgba(color: tuple[int, int, int]) -> Image.Image:
    arr = np.zeros((40, 40, 4), np.uint8)
    arr[:, :, :3] = color
    arr[10:30, 5:35, 3] = 255
    return Image.fromarray(arr, "RGBA")


def test_flatten_alpha_background_follows_mark_brightness() -> None:
    white = np.asarray(flatten_alpha(_mark_rgba((255, 255, 255))))
    assert white[0, 0].tolist() == [31, 31, 31], "a white mark goes on dark grey"
    assert white[20, 20].tolist() == [255, 255, 255]
    black = np.asarray(flatten_alpha(_mark_rgba((0, 0, 0))))
    assert black[0, 0].tolist() == [255, 255, 255], "a dark mark goes on white"
    assert black[20, 20].tolist() == [0, 0, 0]
    red = np.asarray(flatten_alpha(_mark_rgba((220, 30, 30))))
    assert red[0, 0].tolist() == [255, 255, 255] and red[20, 20].tolist() == [220, 30, 30]
    # half-transparent pixels blend with the background
    arr = np.zeros((4, 4, 4), np.uint8)
    arr[:, :, 3] = 128
    half = np.asarray(flatten_alpha(Image.fromarray(arr, "RGBA")))
    assert abs(int(half[0, 0, 0]) - 127) <= 1
    # opaque modes only change mode
    rgb = flatten_alpha(Image.new("L", (3, 3), 50))
    assert rgb.mode == "RGB" and np.asarray(rgb)[0, 0].tolist() == [50, 50, 50]
    # an LA image is handled like RGBA
    la = _mark_rgba((255, 255, 255)).convert("LA")
    assert np.asarray(flatten_alpha(la))[0, 0].tolist() == [31, 31, 31]


@pytest.mark.parametrize("fill", [0.5, 0.8, 1.0])
@pytest.mark.parametrize("color,bg", [((0, 0, 0), 255), ((255, 255, 255), 31), ((10, 90, 200), 255)])
def test_prepare_logo_size_and_fill(fill: float, color: tuple[int, int, int], bg: int) -> None:
    arr = np.zeros((300, 500, 4), np.uint8)  # mark 200x100 inside a big transparent canvas
    arr[:, :, :3] = color
    arr[50:150, 100:300, 3] = 255
    size = 64
    out = prepare_logo(Image.fromarray(arr, "RGBA"), size, fill, "nearest")
    assert out.shape == (size, size, 3) and out.dtype == np.uint8
    assert out[0, 0].tolist() == [bg] * 3 and out[-1, -1].tolist() == [bg] * 3
    mark = (np.abs(out.astype(int) - np.asarray(color)).max(axis=2) <= 2)
    ys, xs = np.nonzero(mark)
    target = round(size * fill)
    assert xs.max() - xs.min() + 1 == target  # long side is fill * size
    assert abs((ys.max() - ys.min() + 1) - target / 2) <= 1  # aspect kept
    # centred
    assert abs((xs.min() + xs.max()) / 2 - (size - 1) / 2) <= 1
    assert abs((ys.min() + ys.max()) / 2 - (size - 1) / 2) <= 1


def test_prepare_logo_opaque_image_on_its_own_background() -> None:
    arr = np.full((80, 80, 3), (240, 230, 10), np.uint8)  # yellow background, uniform -> trimmed away
    arr[20:60, 30:50] = (0, 0, 120)
    out = prepare_logo(Image.fromarray(arr), 32, 1.0, "nearest")
    assert out.shape == (32, 32, 3)
    assert out[0, 0].tolist() == [240, 230, 10]  # padding uses the image's own border colour
    assert out[16, 16].tolist() == [0, 0, 120]


def test_prepare_logo_tiny_mark() -> None:
    arr = np.zeros((10, 10, 4), np.uint8)
    arr[4, 4] = (0, 0, 0, 255)
    out = prepare_logo(Image.fromarray(arr, "RGBA"), 16, 0.5)
    assert out.shape == (16, 16, 3)
    assert (out < 50).any()


# ----------------------------------------------------------------------------- normalize


def test_normalize_shape_values_and_channel_order() -> None:
    batch = np.zeros((2, 5, 7, 3), np.uint8)
    batch[0, :, :, 0] = 255  # red image
    batch[1] = 128
    mean, std = (0.5, 0.4, 0.3), (0.5, 0.25, 0.2)
    x = normalize(batch, mean, std)
    assert x.shape == (2, 3, 5, 7) and x.dtype == np.float32 and x.flags["C_CONTIGUOUS"]
    assert np.allclose(x[0, 0], (1 - 0.5) / 0.5)
    assert np.allclose(x[0, 1], (0 - 0.4) / 0.25)
    assert np.allclose(x[0, 2], (0 - 0.3) / 0.2)
    assert np.allclose(x[1, 1], (128 / 255 - 0.4) / 0.25, atol=1e-6)
    rng = np.random.default_rng(0)
    b = rng.integers(0, 256, (3, 4, 6, 3), dtype=np.uint8)
    want = ((b.astype(np.float64) / 255 - np.asarray(mean)) / np.asarray(std)).transpose(0, 3, 1, 2)
    assert np.allclose(normalize(b, mean, std), want, atol=1e-5)
    with pytest.raises(AssertionError):
        normalize(np.zeros((5, 7, 3), np.uint8), mean, std)


def test_feature_grid_is_ceil() -> None:
    assert feature_grid(128, 16) == 8
    assert feature_grid(129, 16) == 9
    assert feature_grid(384, 32) == 12
    assert feature_grid(1, 32) == 1
