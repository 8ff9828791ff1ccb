"""Tests for ccu_vision.embedder: GeM pooling, windows, metadata parsing and the Embedder on tiny models."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from PIL import Image

from ccu_vision.embedder import (
    FORMAT,
    PREPROCESS_KEYS,
    Embedder,
    content_window,
    default_model_path,
    gem_pool_windows,
    metadata_dict,
    parse_metadata,
    region_windows,
)
from ccu_vision.errors import ModelError
from ccu_vision.preprocess import letterbox
from ccu_vision.tinymodel import TINY_PREPROCESS, make_tiny_model


def _photo(w: int, h: int, seed: int) -> Image.Image:
    """A smooth photo-like image with a few shapes (seeded)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    f = rng.uniform(5, 30, 3)
    arr = np.stack([127 + 100 * np.sin(x / f[0] + y / f[1]), 127 + 100 * np.cos(y / f[2]), 60 + 0.5 * x % 190], 2)
    arr += rng.normal(0, 6, arr.shape)
    return Image.fromarray(arr.clip(0, 255).astype(np.uint8), "RGB")


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("emb") / "tiny.onnx", dim=24, seed=3)


@pytest.fixture(scope="module")
def emb(model_path: Path) -> Embedder:
    return Embedder(model_path, threads=1)


# ----------------------------------------------------------------------------- pooling


def _brute_gem(local: np.ndarray, win, p: float, eps: float = 1e-6) -> np.ndarray:
    r0, c0, r1, c1 = (int(v) for v in win)
    x = np.maximum(local[:, r0:r1, c0:c1].astype(np.float64), eps) ** p
    v = np.maximum(x.mean(axis=(1, 2)), eps**p) ** (1.0 / p)
    return v / np.linalg.norm(v)


@pytest.mark.parametrize("seed", range(6))
def test_gem_pool_windows_matches_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    d, h, w = int(rng.integers(1, 20)), int(rng.integers(1, 13)), int(rng.integers(1, 13))
    local = np.maximum(rng.normal(0, 1, (d, h, w)), 0).astype(np.float32)  # ReLU-like: many exact zeros
    if seed == 0:
        local[:, : h // 2] = 0  # whole zero windows
    r = 60
    r0 = rng.integers(0, h, r)
    c0 = rng.integers(0, w, r)
    r1 = r0 + 1 + (rng.integers(0, h, r) % (h - r0))
    c1 = c0 + 1 + (rng.integers(0, w, r) % (w - c0))
    wins = np.stack([r0, c0, r1, c1], 1).astype(np.int64)
    # channels that are exactly zero over a window come out of the integral image as rounding noise
    # (~1e-16 before the 1/p power) instead of eps: tiny but growing with p, hence the per-p tolerance
    for p, atol in ((1.0, 1e-6), (3.0, 5e-5), (4.6, 2e-3)):
        got = gem_pool_windows(local, wins, p)
        assert got.shape == (r, d) and got.dtype == np.float32
        want = np.stack([_brute_gem(local, wi, p) for wi in wins])
        assert np.allclose(got, want, atol=atol), np.abs(got - want).max()
        assert (np.sum(got * want, axis=1) > 1 - 1e-5).all()
        assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    # strictly positive maps (no zero channels): agreement to float32 precision for every p
    pos = (np.abs(local) + rng.uniform(0.05, 1.0, local.shape)).astype(np.float32)
    for p in (1.0, 2.0, 3.0, 4.6):
        want = np.stack([_brute_gem(pos, wi, p) for wi in wins])
        assert np.allclose(gem_pool_windows(pos, wins, p), want, atol=1e-5)


def test_gem_pool_windows_p1_is_normalized_mean() -> None:
    local = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4) + 1
    got = gem_pool_windows(local, np.asarray([[0, 0, 3, 4], [1, 2, 2, 3]]), 1.0)
    m = local.mean(axis=(1, 2))
    assert np.allclose(got[0], m / np.linalg.norm(m), atol=1e-6)
    v = local[:, 1, 2]
    assert np.allclose(got[1], v / np.linalg.norm(v), atol=1e-6)


@pytest.mark.parametrize("grid,scales", [(8, [1, 2, 3]), (12, [1, 2, 3, 4, 6]), (5, [4, 7]), (2, [1, 2, 3]), (9, [6])])
def test_region_windows_cover_the_grid(grid: int, scales: list[int]) -> None:
    win = region_windows(grid, scales)
    assert win.dtype == np.int64 and win.ndim == 2 and win.shape[1] == 4
    assert len({tuple(w) for w in win.tolist()}) == len(win), "no duplicate windows"
    assert (win[:, :2] >= 0).all() and (win[:, 2:] <= grid).all()
    sides_r, sides_c = win[:, 2] - win[:, 0], win[:, 3] - win[:, 1]
    assert (sides_r == sides_c).all(), "square windows"
    assert set(sides_r.tolist()) == {k for k in scales if k <= grid}
    for k in scales:
        if k > grid:
            continue
        sub = win[sides_r == k]
        cover = np.zeros((grid, grid), int)
        for r0, c0, r1, c1 in sub:
            cover[r0:r1, c0:c1] += 1
        assert (cover > 0).all(), f"windows of side {k} must cover every cell"
        starts = sorted(set(sub[:, 0].tolist()))
        assert starts[0] == 0 and starts[-1] == grid - k
        assert max(np.diff(starts), default=1) <= max(1, k // 3)
    if 1 in scales:
        assert (sides_r == 1).sum() == grid * grid


def test_region_windows_all_scales_too_big() -> None:
    win = region_windows(3, [4, 5])
    assert win.shape == (0, 4)


@pytest.mark.parametrize("w,h", [(60, 200), (200, 60), (128, 128), (1000, 3), (3, 1000), (1, 1), (130, 70)])
@pytest.mark.parametrize("size,stride", [(128, 16), (384, 32), (64, 32)])
def test_content_window_covers_exactly_the_content_cells(w: int, h: int, size: int, stride: int) -> None:
    lb = letterbox(Image.new("RGB", (w, h)), size)[1]
    grid = -(-size // stride)
    (r0, c0, r1, c1), = content_window(lb, grid, stride).tolist()
    assert 0 <= r0 < r1 <= grid and 0 <= c0 < c1 <= grid
    x0, y0, x1, y1 = lb.content_box()
    for c in range(grid):
        overlaps = min(x1, (c + 1) * stride) - max(x0, c * stride) > 0
        assert (c0 <= c < c1) == overlaps or (c1 - c0 == 1 and c == c0), (c, (c0, c1), (x0, x1))
    for r in range(grid):
        overlaps = min(y1, (r + 1) * stride) - max(y0, r * stride) > 0
        assert (r0 <= r < r1) == overlaps or (r1 - r0 == 1 and r == r0), (r, (r0, r1), (y0, y1))


# ----------------------------------------------------------------------------- metadata and loading


def _rewrite_meta(src: Path, dst: Path, drop: tuple[str, ...] = (), **set_: str) -> Path:
    m = onnx.load(str(src))
    meta = {p.key: p.value for p in m.metadata_props}
    for k in drop:
        meta.pop(k)
    meta.update({k.replace("__", "."): v for k, v in set_.items()})
    del m.metadata_props[:]
    for k, v in meta.items():
        m.metadata_props.add(key=k, value=v)
    onnx.save(m, str(dst))
    return dst


def test_metadata_roundtrip() -> None:
    meta = metadata_dict("m1", 8, TINY_PREPROCESS, {"logo": 0.5}, backbone="x", train={"steps": 3})
    assert meta["ccu.format"] == FORMAT
    info = parse_metadata(meta, path="f.onnx", sha256="abc")
    assert info.model_id == "m1" and info.embed_dim == 8 and info.metric == "cosine"
    assert info.preprocess == TINY_PREPROCESS
    assert info.thresholds == {"logo": 0.5}
    assert info.extra == {"backbone": "x", "train": json.dumps({"steps": 3})}
    d = info.to_dict()
    assert d["path"] == "f.onnx" and d["sha256"] == "abc" and d["backbone"] == "x"
    assert {k: d[k] for k in info.fingerprint} == info.fingerprint
    with pytest.raises(AssertionError):
        metadata_dict("m1", 8, {k: v for k, v in TINY_PREPROCESS.items() if k != "gem_p"})


@pytest.mark.parametrize("key", ["ccu.model_id", "ccu.embed_dim", *(f"ccu.{k}" for k in PREPROCESS_KEYS)])
def test_missing_metadata_key_names_file_and_key(model_path: Path, tmp_path: Path, key: str) -> None:
    bad = _rewrite_meta(model_path, tmp_path / "bad.onnx", drop=(key,))
    with pytest.raises(ModelError) as e:
        Embedder(bad)
    msg = str(e.value)
    assert str(bad) in msg and key in msg and "lacks" in msg


@pytest.mark.parametrize(
    "change,needle",
    [
        ({"ccu__format": "something-else/2"}, "not a ccu-vision embedder"),
        ({"ccu__embed_dim": "sixteen"}, "bad model metadata"),
        ({"ccu__gem_p": "{not json"}, "bad model metadata"),
        ({"ccu__thresholds": "[1,"}, "bad model metadata"),
        ({"ccu__mean": "[0.5, 0.5]"}, "mean/std must have 3 values"),
        ({"ccu__std": "[0.5, 0.5, 0.5, 0.5]"}, "mean/std must have 3 values"),
    ],
)
def test_bad_metadata_is_a_model_error(model_path: Path, tmp_path: Path, change: dict, needle: str) -> None:
    bad = _rewrite_meta(model_path, tmp_path / "bad.onnx", **change)
    with pytest.raises(ModelError) as e:
        Embedder(bad)
    assert str(bad) in str(e.value) and needle in str(e.value)


def test_no_metadata_at_all(model_path: Path, tmp_path: Path) -> None:
    m = onnx.load(str(model_path))
    del m.metadata_props[:]
    onnx.save(m, str(tmp_path / "plain.onnx"))
    with pytest.raises(ModelError, match="not a ccu-vision embedder"):
        Embedder(tmp_path / "plain.onnx")


def test_missing_and_garbage_files(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="model file not found") as e:
        Embedder(tmp_path / "nope.onnx")
    assert str(tmp_path / "nope.onnx") in str(e.value)
    with pytest.raises(ModelError, match="is a folder, not a model file"):
        Embedder(tmp_path)  # a directory is not a model file
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(ModelError, match="cannot load ONNX model") as e:
        Embedder(junk)
    assert str(junk) in str(e.value)
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    with pytest.raises(ModelError, match="cannot load ONNX model"):
        Embedder(empty)


def test_wrong_embed_dim_in_metadata_is_a_model_error(model_path: Path, tmp_path: Path) -> None:
    """A file whose metadata lies about its output dimension must fail clearly, not with an assert."""
    bad = _rewrite_meta(model_path, tmp_path / "lying.onnx", ccu__embed_dim="32")
    with pytest.raises(ModelError) as e:
        Embedder(bad).embed_logos([_photo(40, 40, 0)])
    assert str(bad) in str(e.value) and "32" in str(e.value)


def test_wrong_stride_in_metadata_is_a_model_error(model_path: Path, tmp_path: Path) -> None:
    bad = _rewrite_meta(model_path, tmp_path / "stride.onnx", ccu__stride="32")
    with pytest.raises(ModelError) as e:
        Embedder(bad).embed_photos([_photo(40, 30, 0)])
    assert str(bad) in str(e.value) and "stride 32" in str(e.value)


def test_graph_without_local_output_is_a_model_error(model_path: Path, tmp_path: Path) -> None:
    m = onnx.load(str(model_path))
    m.graph.node[-1].output[0] = "features"
    m.graph.output[0].name = "features"
    onnx.save(m, str(tmp_path / "renamed.onnx"))
    with pytest.raises(ModelError, match="no output named 'local'"):
        Embedder(tmp_path / "renamed.onnx")


def test_default_model_path_env(monkeypatch: pytest.MonkeyPatch, model_path: Path) -> None:
    monkeypatch.setenv("CCU_MODEL", str(model_path))
    assert default_model_path() == model_path
    assert Embedder().info.path == str(model_path)
    monkeypatch.delenv("CCU_MODEL")
    assert default_model_path().name == "ccu-lite0-v15cdpft3.onnx"
    assert default_model_path().parent.name == "models"


def test_model_info(emb: Embedder, model_path: Path) -> None:
    import hashlib

    info = emb.info
    assert info.model_id == "tiny-test" and emb.dim == info.embed_dim == 24
    assert info.sha256 == hashlib.sha256(model_path.read_bytes()).hexdigest()
    assert set(info.thresholds) == {"logo", "near_duplicate", "precision"}
    fp = info.fingerprint
    assert set(fp) == {"model_id", "preprocess_hash", "embed_dim", "metric"}
    assert len(fp["preprocess_hash"]) == 16
    assert emb.query_size == 128 and emb.ref_size == 64 and emb.grid == 8


def test_fingerprint_tracks_preprocessing(tmp_path: Path) -> None:
    base = Embedder(make_tiny_model(tmp_path / "a.onnx")).info
    same = Embedder(make_tiny_model(tmp_path / "b.onnx", seed=9, thresholds={"logo": 0.1})).info
    assert same.fingerprint == base.fingerprint  # weights/thresholds are not part of the pin (model_id is)
    seen = {json.dumps(base.fingerprint, sort_keys=True)}
    changes = [("logo_fill", 0.7), ("mean", [0.485, 0.456, 0.406]), ("query_size", 96), ("gem_p", 4.0),
               ("region_scales", [1, 2]), ("interpolation", "bicubic")]
    for i, (k, v) in enumerate(changes):
        info = Embedder(make_tiny_model(tmp_path / f"c{i}.onnx", preprocess={**TINY_PREPROCESS, k: v})).info
        assert info.preprocess[k] == v
        assert info.preprocess_hash != base.preprocess_hash, k
        seen.add(json.dumps(info.fingerprint, sort_keys=True))
    assert len(seen) == len(changes) + 1
    other_id = Embedder(make_tiny_model(tmp_path / "d.onnx", model_id="other")).info
    assert other_id.fingerprint != base.fingerprint
    other_dim = Embedder(make_tiny_model(tmp_path / "e.onnx", dim=8)).info
    assert other_dim.fingerprint["embed_dim"] == 8 and other_dim.fingerprint != base.fingerprint


# ----------------------------------------------------------------------------- embedding


SIZES = [(200, 120), (90, 300), (128, 128), (1000, 40), (17, 23), (640, 480)]


def test_embed_photos_shapes_norms_and_boxes(emb: Embedder) -> None:
    imgs = [_photo(w, h, i) for i, (w, h) in enumerate(SIZES)]
    out = emb.embed_photos(imgs)
    assert len(out) == len(imgs)
    for im, e in zip(imgs, out):
        w, h = im.size
        assert e.global_vec.shape == (24,) and e.global_vec.dtype == np.float32
        assert abs(np.linalg.norm(e.global_vec) - 1) < 1e-5
        assert e.regions.ndim == 2 and e.regions.shape[1] == 24 and len(e.regions) >= 1
        assert np.allclose(np.linalg.norm(e.regions, axis=1), 1, atol=1e-5)
        assert e.boxes.shape == (len(e.regions), 4) and e.boxes.dtype == np.float32
        b = e.boxes
        assert (b[:, 0] >= 0).all() and (b[:, 1] >= 0).all()
        assert (b[:, 2] <= w + 1e-3).all() and (b[:, 3] <= h + 1e-3).all()
        assert (b[:, 2] > b[:, 0]).all() and (b[:, 3] > b[:, 1]).all()
    # a full square image keeps every window (1x1 windows: 64 cells, plus larger ones)
    sq = out[2]
    assert len(sq.regions) == len(region_windows(8, [1, 2, 3]))
    assert emb.embed_photos([]) == []


def test_layout_override_for_measurement(model_path: Path) -> None:
    """set_layout letterboxes to another multiple of the stride (a finer grid, more regions, boxes still
    in photo pixels) and pools other region sizes; bad values are refused naming the file."""
    im = _photo(128, 128, 5)
    emb = Embedder(model_path)
    base = emb.embed_photos([im])[0]
    emb.set_layout(query_size=192)
    assert emb.query_size == 192 and emb.grid == 12
    big = emb.embed_photos([im])[0]
    assert len(big.regions) == len(region_windows(12, [1, 2, 3])) > len(base.regions)
    assert big.boxes.max() <= 128 + 1e-3 and emb.photo_canvases([im])[0].shape == (1, 192, 192, 3)
    emb.set_layout(region_scales=[1, 2, 3, 5])  # the query size set before is kept
    wide = emb.embed_photos([im])[0]
    assert emb.query_size == 192 and len(wide.regions) == len(region_windows(12, [1, 2, 3, 5]))
    assert np.allclose(wide.regions[: len(big.regions)], big.regions, atol=1e-6), "the shared windows come first, unchanged"
    with pytest.raises(ModelError, match=r"tiny\.onnx: query size 100 is not a positive multiple of the stride 16"):
        emb.set_layout(query_size=100)
    with pytest.raises(ModelError, match=r"tiny\.onnx: region scales \[0, 2\] must be positive"):
        emb.set_layout(region_scales=[0, 2])
    assert emb.query_size == 192 and len(emb.embed_photos([im])[0].regions) == len(wide.regions), \
        "a refused layout changes nothing"


def test_crop_margin_for_measurement(emb: Embedder) -> None:
    """crops(idx) uses the scan's margin; another margin cuts other views (and descriptors) of the same windows."""
    from ccu_vision.embedder import CROP_MARGIN

    photo = emb.embed_photos([_photo(160, 120, 3)])[0]
    idx = np.asarray([0, len(photo.regions) - 1])
    assert np.array_equal(photo.crops(idx), photo.crops(idx, CROP_MARGIN))
    assert np.array_equal(photo.crop_views(idx), photo.crop_views(idx, CROP_MARGIN))
    tight, wide = photo.crop_views(idx, 0.0), photo.crop_views(idx, 0.4)
    assert tight.shape == wide.shape == (2, emb.ref_size, emb.ref_size, 3)
    assert not np.array_equal(tight, wide)
    assert not np.allclose(photo.crops(idx, 0.0), photo.crops(idx, 0.4), atol=1e-4)


def test_identical_images_embed_identically(emb: Embedder) -> None:
    a = _photo(150, 110, 7)
    b = a.copy()
    c = _photo(150, 110, 8)
    ea, eb, ec = emb.embed_photos([a, b, c])
    assert float(ea.global_vec @ eb.global_vec) == pytest.approx(1.0, abs=1e-6)
    assert np.allclose(ea.regions, eb.regions) and np.array_equal(ea.boxes, eb.boxes)
    assert float(ea.global_vec @ ec.global_vec) < 0.9999
    la, lb_, lc = emb.embed_logos([a, b, c])
    assert float(la @ lb_) == pytest.approx(1.0, abs=1e-6) and float(la @ lc) < 0.9999
    assert np.allclose(np.linalg.norm(emb.embed_logos([a, c]), axis=1), 1, atol=1e-5)
    assert emb.embed_logos([]).shape == (0, 24)


def test_results_do_not_depend_on_batching(model_path: Path) -> None:
    imgs = [_photo(100 + 13 * i, 90 + 7 * i, i) for i in range(5)]
    one = Embedder(model_path, batch_size=1)
    many = Embedder(model_path, batch_size=16)
    for x, y in zip(one.embed_photos(imgs), many.embed_photos(imgs)):
        assert np.allclose(x.global_vec, y.global_vec, atol=1e-6)
        assert np.allclose(x.regions, y.regions, atol=1e-6)
    assert np.allclose(one.embed_logos(imgs), many.embed_logos(imgs), atol=1e-6)
    canv, lbs = many.photo_canvases(imgs)
    assert canv.shape == (5, 128, 128, 3) and canv.dtype == np.uint8
    for x, y in zip(many.embed_canvases(canv, lbs), many.embed_photos(imgs)):
        assert np.array_equal(x.global_vec, y.global_vec) and np.array_equal(x.boxes, y.boxes)


@pytest.mark.parametrize("w,h", [(128, 128), (64, 128), (128, 96)])
def test_region_boxes_describe_their_pixels(emb: Embedder, w: int, h: int) -> None:
    """Changing pixels outside a region's box leaves that region's descriptor unchanged (tiny model:
    each cell sees exactly its own 16x16 patch; these sizes need no resampling)."""
    img = _photo(w, h, 11)
    base = emb.embed_photos([img])[0]
    rng = np.random.default_rng(1)
    checked = 0
    for i in rng.choice(len(base.boxes), size=min(12, len(base.boxes)), replace=False):
        x0, y0, x1, y1 = (int(round(v)) for v in base.boxes[i])
        arr = np.asarray(img).copy()
        noise = rng.integers(0, 256, arr.shape, dtype=np.uint8)
        inside = np.zeros(arr.shape[:2], bool)
        inside[y0:y1, x0:x1] = True
        arr[~inside] = noise[~inside]
        e = emb.embed_photos([Image.fromarray(arr)])[0]
        assert np.array_equal(e.boxes, base.boxes)
        assert np.allclose(e.regions[i], base.regions[i], atol=1e-5)
        if (~inside).any():
            assert not np.allclose(e.global_vec, base.global_vec, atol=1e-4)
        checked += 1
    assert checked > 0


def test_logo_view_uses_ref_size(emb: Embedder) -> None:
    arr = np.zeros((50, 90, 4), np.uint8)
    arr[5:45, 10:80] = (200, 0, 0, 255)
    canvas = emb.logo_canvas(Image.fromarray(arr, "RGBA"))
    assert canvas.shape == (64, 64, 3)


def _disc_mask(n: int = 40) -> np.ndarray:
    yy, xx = np.mgrid[:n, :n]
    return (((yy - n / 2) ** 2 + (xx - n / 2) ** 2) < (n / 3) ** 2).astype(np.float32)


@pytest.mark.parametrize("color", [(0, 0, 0), (200, 30, 40), (250, 220, 0)])
def test_monochrome_of_a_single_colour_mark_is_its_silhouette(color: tuple[int, int, int]) -> None:
    """Single-colour transparent marks (all of simple-icons) keep exactly the black silhouette view."""
    from ccu_vision.embedder import monochrome, silhouette
    from ccu_vision.logos import logo_rgba

    m = _disc_mask()
    m[0, :] = 0.4  # antialiased edge pixels share the colour
    im = logo_rgba(m, color)
    mono = np.asarray(monochrome(im))
    assert np.array_equal(mono, np.asarray(silhouette(im)))
    assert (mono[:, :, :3] == 0).all() and np.array_equal(mono[:, :, 3], np.asarray(im)[:, :, 3])
    opaque = Image.fromarray(np.full((8, 8, 3), (200, 30, 40), np.uint8))
    assert monochrome(opaque).mode == "RGB" and np.ptp(np.asarray(monochrome(opaque))) == 0  # grayscale


def test_monochrome_keeps_a_knocked_out_drawing() -> None:
    """Badge artwork (white mark knocked out of a colour badge): the dark view is a black badge with the
    mark still knocked out, where the silhouette would be a blank black shape."""
    from ccu_vision.embedder import monochrome, silhouette
    from ccu_vision.synth import badge_artwork

    m = _disc_mask()
    art = badge_artwork(m, (30, 60, 200))
    arr = np.asarray(art)
    p = (arr.shape[0] - m.shape[0]) // 2
    inside = np.zeros(arr.shape[:2], bool)
    inside[p : p + 40, p : p + 40] = m > 0.5
    assert (arr[inside][:, :3] == 255).all() and (arr[inside][:, 3] == 255).all()  # white, opaque mark
    assert tuple(arr[p // 2, arr.shape[1] // 2, :3]) == (30, 60, 200)  # badge colour around it
    assert arr[0, 0, 3] == 0  # rounded corner: transparent
    mono, sil = np.asarray(monochrome(art)), np.asarray(silhouette(art))
    assert (mono[:, :, :3] == 0).all()
    assert (mono[inside][:, 3] == 0).all(), "the white mark stays knocked out"
    assert mono[p // 2, arr.shape[1] // 2, 3] == 255, "the darkest ink becomes black"
    assert (sil[inside][:, 3] == 255).all(), "the silhouette loses the mark"
    light = badge_artwork(m, (250, 230, 120))  # light badge: the mark is drawn in black
    lm = np.asarray(monochrome(light))
    assert (lm[inside][:, 3] == 255).all() and 0 < lm[p // 2, arr.shape[1] // 2, 3] < 128
    near = arr.copy()  # two shades within the tolerance count as one colour: the silhouette
    near[:, :, :3] = np.where(inside[:, :, None], 255, 236)
    near = Image.fromarray(near, "RGBA")
    assert np.array_equal(np.asarray(monochrome(near)), np.asarray(silhouette(near)))
