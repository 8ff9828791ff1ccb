"""ccu_vision.references: files/folders/manifests -> embeddings -> catalog, one committed event per file."""

from __future__ import annotations

import errno
import io
import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from ccu_vision import catalog as catmod
from ccu_vision import references as refs_mod
from ccu_vision.catalog import Catalog
from ccu_vision.embedder import Embedder, monochrome
from ccu_vision.errors import CatalogError, ManifestError, ModelMismatchError
from ccu_vision.imageio import load_image
from ccu_vision.references import AddEvent, add_paths, import_manifest
from ccu_vision.tinymodel import make_tiny_model


@pytest.fixture(scope="module")
def embedder(tiny_model_path: Path) -> Embedder:
    return Embedder(tiny_model_path)


@pytest.fixture
def cat(tmp_path: Path, embedder: Embedder):
    with Catalog.open(tmp_path / "home", embedder.info) as c:
        yield c


def photo(path: Path, seed: int, size: tuple[int, int] = (64, 48)) -> Path:
    """A seeded, left-right asymmetric photo."""
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    arr[:, : size[0] // 3] = (250, 30, 30)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def vectors_of(home: Path, ref_id: str) -> np.ndarray:
    db = sqlite3.connect(f"file:{home / 'catalog.db'}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT vector FROM vectors WHERE ref_id = ? ORDER BY vec_id", (ref_id,)).fetchall()
    finally:
        db.close()
    return np.stack([np.frombuffer(r[0], np.float32) for r in rows]) if rows else np.zeros((0, 0), np.float32)


@pytest.mark.parametrize("kind", ["logo", "product"])
def test_messy_folder_every_file_answered(cat: Catalog, embedder: Embedder, image_cases, kind: str):
    folder, expected = image_cases
    # decodable but blank: a reference would match plain backgrounds everywhere (scans still read them)
    expected = {**expected, "transparent.png": "blank image", "1x1.png": "one flat colour (1x1)"}
    events = list(add_paths(cat, embedder, [folder, folder / "no-such-file.png"], "Acme", kind))
    by_path = {Path(e.path).relative_to(folder).as_posix(): e for e in events}
    assert len(events) == len(expected) + 1 and set(by_path) == {*expected, "no-such-file.png"}
    assert not by_path["no-such-file.png"].ok and "not found" in by_path["no-such-file.png"].error
    for name, reason in expected.items():
        ev = by_path[name]
        if reason is None:
            assert ev.ok and ev.created and ev.ref_id and ev.error is None, (name, ev)
            rec = cat.get(ev.ref_id)
            assert rec.brand == "Acme" and rec.kind == kind and rec.source_path == ev.path
            assert rec.stored_path.read_bytes() == (folder / name).read_bytes()
        else:
            assert not ev.ok and ev.ref_id is None and reason in ev.error, (name, ev)
    assert cat.count(kind) == sum(r is None for r in expected.values())
    assert cat.check() == []


def test_events_are_yielded_after_commit(tmp_path: Path, embedder: Embedder):
    folder = tmp_path / "imgs"
    for i in range(20):
        photo(folder / f"{i:02d}.png", i)
    home = tmp_path / "home"
    with Catalog.open(home, embedder.info) as cat:
        seen = []
        for ev in add_paths(cat, embedder, [folder], "Acme", "logo", batch_size=8):
            assert ev.ok
            seen.append(ev.ref_id)
            with Catalog.open(home, readonly=True) as other:  # another process's view: already durable
                assert other.get(ev.ref_id) is not None and other.count() == len(seen)
    assert len(set(seen)) == 20
    assert AddEvent(True, "p", "r", "b", "logo").to_dict() == {"ref_id": "r", "path": "p", "brand": "b", "kind": "logo"}


def test_logo_keeps_alpha_and_product_adds_mirrored_view(cat: Catalog, embedder: Embedder, tmp_path: Path):
    logo = tmp_path / "logo.png"
    rgba = np.zeros((40, 60, 4), np.uint8)
    rgba[10:30, 5:50] = (20, 20, 200, 255)  # an opaque bar on a transparent canvas
    Image.fromarray(rgba, "RGBA").save(logo)
    prod = photo(tmp_path / "prod.png", 3)
    sym = tmp_path / "sym.png"
    half = np.random.default_rng(4).integers(0, 256, (48, 32, 3), dtype=np.uint8)
    Image.fromarray(np.concatenate([half, half[:, ::-1]], axis=1)).save(sym)

    (ev,) = add_paths(cat, embedder, [logo], "Acme", "logo")
    got = vectors_of(cat.home, ev.ref_id)
    loaded = load_image(logo, keep_alpha=True)
    assert loaded.mode == "RGBA"
    want_rgba = embedder.embed_logos([loaded])
    want_mono = embedder.embed_logos([monochrome(loaded)])  # the dark single-colour view of the mark
    assert got.shape == (2, embedder.dim)
    np.testing.assert_allclose(got[0], want_rgba[0], atol=1e-5)
    np.testing.assert_allclose(got[1], want_mono[0], atol=1e-5)

    ev_p, ev_s = add_paths(cat, embedder, [prod, sym], "Acme", "product")
    pv = vectors_of(cat.home, ev_p.ref_id)
    assert pv.shape == (2, embedder.dim)
    np.testing.assert_allclose(pv[0], embedder.embed_photos([load_image(prod)])[0].global_vec, atol=1e-5)
    assert vectors_of(cat.home, ev_s.ref_id).shape == (1, embedder.dim)  # mirror is the same vector
    # a mirrored listing of the official photo is found at full similarity
    mirrored = ImageOps.mirror(Image.open(prod).convert("RGB"))
    q = embedder.embed_photos([mirrored])[0].global_vec[None, :]
    top = cat.search("product", q, 1)[0][0]
    assert top[0] == ev_p.ref_id and top[1] > 0.999


def test_readd_is_idempotent_and_skips_embedding(cat: Catalog, embedder: Embedder, tmp_path: Path, monkeypatch):
    folder = tmp_path / "imgs"
    for i in range(5):
        photo(folder / f"{i}.png", 10 + i)
    first = list(add_paths(cat, embedder, [folder], "Acme", "logo"))
    assert all(e.ok and e.created for e in first)

    def boom(*a, **k):
        raise AssertionError("embedding should not be needed for known content")

    monkeypatch.setattr(embedder, "embed_logos", boom)
    again = list(add_paths(cat, embedder, [folder, folder / "2.png"], "Acme", "logo"))
    assert [e.ref_id for e in again] == [e.ref_id for e in first] + [first[2].ref_id]
    assert all(e.ok and not e.created for e in again)
    monkeypatch.undo()
    # the same content under another brand is one clear error; the rest still goes in
    photo(folder / "new.png", 99)
    mixed = list(add_paths(cat, embedder, [folder], "OtherBrand", "logo"))
    assert sum(e.ok for e in mixed) == 1 and all("already registered" in e.error for e in mixed if not e.ok)
    assert cat.count() == 6 and cat.check() == []


def test_import_manifest_csv_and_jsonl(cat: Catalog, embedder: Embedder, tmp_path: Path):
    d = tmp_path / "upload"
    photo(d / "img" / "a.png", 1)
    photo(d / "img" / "b.png", 2)
    photo(d / "c.png", 3)
    (d / "broken.jpg").write_bytes(b"<!DOCTYPE html><html></html>")
    (d / "refs.csv").write_text(
        "path,brand,kind\nimg/a.png,Nike,logo\nimg/b.png,Puma,product\nbroken.jpg,Nike,logo\nmissing.png,Nike,logo\n",
        encoding="utf-8",
    )
    events = list(import_manifest(cat, embedder, d / "refs.csv", root=d))
    assert [e.ok for e in events] == [True, True, False, False]
    assert "HTML" in events[2].error and "not found" in events[3].error
    assert cat.get(events[0].ref_id).brand == "Nike" and cat.get(events[1].ref_id).kind == "product"
    lines = [json.dumps({"path": "c.png", "brand": "Hugo", "kind": "LOGO"}),
             json.dumps({"path": str(d / "img"), "brand": "Hugo", "kind": "product"})]
    (d / "more.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    more = list(import_manifest(cat, embedder, d / "more.jsonl"))
    assert [(Path(e.path).name, e.ok, e.kind) for e in more] == [
        ("c.png", True, "logo"), ("a.png", False, "product"), ("b.png", False, "product"),
    ]
    assert "already registered" in more[1].error  # a.png is Nike's logo already
    assert cat.count() == 3 and cat.check() == []


def test_invalid_manifest_imports_nothing(cat: Catalog, embedder: Embedder, tmp_path: Path):
    d = tmp_path / "upload"
    photo(d / "a.png", 1)
    photo(d / "b.png", 2)
    (d / "bad_kind.csv").write_text("path,brand,kind\na.png,Nike,logo\nb.png,Nike,banner\n", encoding="utf-8")
    with pytest.raises(ManifestError, match=r"line 3.*kind.*nothing was imported"):
        list(import_manifest(cat, embedder, d / "bad_kind.csv"))
    (d / "no_kind.csv").write_text("path,brand\na.png,Nike\n", encoding="utf-8")
    with pytest.raises(ManifestError, match="kind"):
        list(import_manifest(cat, embedder, d / "no_kind.csv"))
    (d / "escape.csv").write_text("path,brand,kind\n../../etc/passwd,Nike,logo\n", encoding="utf-8")
    with pytest.raises(ManifestError):
        list(import_manifest(cat, embedder, d / "escape.csv", root=d))
    assert cat.count() == 0


def test_wrong_model_brand_and_storage_errors_abort(cat: Catalog, embedder: Embedder, tmp_path: Path, monkeypatch):
    img = photo(tmp_path / "a.png", 1)
    other = Embedder(make_tiny_model(tmp_path / "other.onnx", seed=3, model_id="tiny-other"))
    with Catalog.open(cat.home) as unpinned:  # opened without a model: the embedder is checked on add
        with pytest.raises(ModelMismatchError, match="tiny-other"):
            list(add_paths(unpinned, other, [img], "Acme", "logo"))
        with pytest.raises(ModelMismatchError):
            list(import_manifest(unpinned, other, _one_row_manifest(tmp_path, img)))
    with pytest.raises(CatalogError, match="brand"):
        list(add_paths(cat, embedder, [img], "  ", "logo"))
    with pytest.raises(CatalogError, match="kind"):
        list(add_paths(cat, embedder, [img], "Acme", "banner"))

    def full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(catmod, "atomic_write", full)
    with pytest.raises(CatalogError, match="disk full"):  # a storage failure stops the run, loudly
        list(add_paths(cat, embedder, [img, photo(tmp_path / "b.png", 2)], "Acme", "logo"))
    monkeypatch.undo()
    assert cat.count() == 0


def _one_row_manifest(tmp_path: Path, img: Path) -> Path:
    p = tmp_path / "one.csv"
    p.write_text(f"path,brand,kind\n{img},Acme,logo\n", encoding="utf-8")
    return p


def test_embed_images_shapes(embedder: Embedder):
    ims = [Image.open(io.BytesIO(_png(i))).convert("RGB") for i in range(3)]
    logos = refs_mod.embed_images(embedder, "logo", ims)
    assert [v.shape for v in logos] == [(2, embedder.dim)] * 3  # colour view + grayscale view
    gray = [im.convert("L").convert("RGB") for im in ims]
    assert [v.shape for v in refs_mod.embed_images(embedder, "logo", gray)] == [(1, embedder.dim)] * 3
    prods = refs_mod.embed_images(embedder, "product", ims, flip=False)
    assert [v.shape for v in prods] == [(1, embedder.dim)] * 3
    assert refs_mod.embed_images(embedder, "logo", []) == []
    with pytest.raises(ValueError):
        refs_mod.embed_images(embedder, "banner", ims)


def _png(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (20, 30, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def test_blank_references_are_refused_and_the_rest_kept(cat: Catalog, embedder: Embedder, tmp_path: Path):
    """A blank reference (fully transparent, one flat colour, an SVG with nothing drawable) embeds like
    a plain background and would match every listing: refused, naming the reason; good files still added."""
    folder = tmp_path / "refs"
    folder.mkdir()
    (folder / "empty.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64" viewBox="0 0 64 64"></svg>')
    (folder / "only-external.svg").write_text(
        '<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" width="64" height="64">'
        '<image href="http://example.com/logo.png" width="64" height="64"/></svg>')
    Image.new("RGB", (80, 60), (200, 30, 30)).save(folder / "red.png")
    Image.new("RGB", (80, 60), (200, 30, 30)).save(folder / "red.jpg", quality=60)  # JPEG noise stays flat
    Image.new("RGBA", (40, 40), (0, 0, 0, 0)).save(folder / "clear.png")
    shape = np.zeros((40, 40, 4), np.uint8)
    shape[10:30, 10:30] = (200, 30, 30, 255)  # one colour, but a shape against transparency: a mark
    Image.fromarray(shape, "RGBA").save(folder / "square.png")
    photo(folder / "photo.png", 5)
    events = {Path(e.path).name: e for e in add_paths(cat, embedder, [folder], "Acme", "logo")}
    for name in ("empty.svg", "only-external.svg", "clear.png"):
        assert not events[name].ok and "blank image: fully transparent" in events[name].error, events[name]
    for name in ("red.png", "red.jpg"):
        assert not events[name].ok and "blank image: one flat colour (80x60)" in events[name].error, events[name]
        assert "would match plain backgrounds" in events[name].error
    assert events["square.png"].ok and events["photo.png"].ok
    assert cat.count("logo") == 2 and cat.check() == []
    (ev,) = add_paths(cat, embedder, [folder / "red.png"], "Acme", "product")
    assert not ev.ok and "one flat colour" in ev.error, "products too"


def test_blank_reason_tolerance() -> None:
    from ccu_vision.preprocess import BLANK_TOL, blank_reason

    arr = np.full((20, 30, 3), 100, np.uint8)
    assert blank_reason(Image.fromarray(arr)) is not None
    arr[5, 5] = 100 + BLANK_TOL
    assert blank_reason(Image.fromarray(arr)) is not None, "within the tolerance: still flat"
    arr[5, 5] = 100 + BLANK_TOL + 1
    assert blank_reason(Image.fromarray(arr)) is None, "one pixel beyond it is content"
    rgba = np.zeros((20, 20, 4), np.uint8)
    rgba[:, :] = (9, 9, 9, 255)
    assert blank_reason(Image.fromarray(rgba, "RGBA")) is not None, "opaque all over in one colour"
    rgba[:, :10, 3] = 120  # same colour, alpha varies: flattening makes two tones
    assert blank_reason(Image.fromarray(rgba, "RGBA")) is None
