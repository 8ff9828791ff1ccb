"""ccu_vision.catalog: persistence, ids <-> metadata, search vs brute force, model pinning, tampering,
read-only / full disks, the writer lock, snapshots for readers."""

from __future__ import annotations

import errno
import hashlib
import io
import json
import logging
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import faiss
import numpy as np
import pytest
from PIL import Image

from ccu_vision import catalog as catmod
from ccu_vision import index as ix
from ccu_vision.catalog import Catalog, DuplicateRefError, RefRecord
from ccu_vision.embedder import Embedder
from ccu_vision.errors import CatalogError, ModelMismatchError
from ccu_vision.references import add_paths
from ccu_vision.tinymodel import make_tiny_model

REPO = Path(__file__).resolve().parents[1]
DIM = 16


# ----------------------------------------------------------------------------------------- helpers


class FakeModel:
    """The part of ModelInfo a catalog pins."""

    def __init__(self, model_id: str = "fake-a", dim: int = DIM, thresholds: dict | None = None) -> None:
        self.model_id = model_id
        self.embed_dim = dim
        self.sha256 = "0" * 64
        self.thresholds = thresholds or {"logo": 0.8, "near_duplicate": 0.9, "precision": 0.95}
        self.fingerprint = {"model_id": model_id, "preprocess_hash": "abc", "embed_dim": dim, "metric": "cosine"}


def png_bytes(seed: int, size: tuple[int, int] = (20, 16)) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def unit(rng: np.random.Generator, n: int, dim: int = DIM) -> np.ndarray:
    v = rng.standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def fill(cat: Catalog, n: int, seed: int = 0, kind: str = "logo", per_ref: int = 1, brand: str = "Acme") -> dict:
    """Add ``n`` references with random vectors; return {ref_id: vectors}."""
    rng = np.random.default_rng(seed)
    out = {}
    for i in range(n):
        vecs = unit(rng, per_ref)
        ref_id, created = cat.add_reference(png_bytes(seed * 100_000 + i), f"src/{i}.png", brand, kind, vecs, 20, 16)
        assert created
        out[ref_id] = vecs
    return out


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def home_state(home: Path) -> dict:
    """Everything a failed write must leave untouched (file contents + DB rows)."""
    db = sqlite3.connect(f"file:{home / 'catalog.db'}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT ref_id, brand, kind, sha256 FROM refs ORDER BY ref_id").fetchall()
        vecs = db.execute("SELECT vec_id, ref_id, vector FROM vectors ORDER BY vec_id").fetchall()
        meta = db.execute("SELECT key, value FROM meta ORDER BY key").fetchall()
    finally:
        db.close()
    files = sorted(
        str(p.relative_to(home)) for p in home.rglob("*")
        if p.is_file() and not p.name.startswith("catalog.db") and p.name != ".lock"
    )
    return {"refs": rows, "vectors": vecs, "meta": meta, "files": files,
            "manifest": (home / "manifest.json").read_bytes()}


def db_vec_ids(home: Path, kind: str) -> np.ndarray:
    db = sqlite3.connect(f"file:{home / 'catalog.db'}?mode=ro", uri=True)
    try:
        ids = [r[0] for r in db.execute("SELECT vec_id FROM vectors WHERE kind = ?", (kind,))]
    finally:
        db.close()
    return np.sort(np.asarray(ids, dtype=np.int64))


def file_index_ids(home: Path, kind: str) -> np.ndarray:
    index = faiss.read_index(str(home / "index" / f"{kind}.faiss"))
    return ix.index_ids(index)


def brute_force(refs: dict, kind_refs: set[str], q: np.ndarray, k: int) -> list[list[tuple[str, float]]]:
    out = []
    for qv in q:
        best = {r: float(np.max(refs[r] @ qv)) for r in kind_refs}
        out.append(sorted(best.items(), key=lambda t: -t[1])[:k])
    return out


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


# ------------------------------------------------------------------------------ create / persist


def test_create_add_reopen(home: Path):
    model = FakeModel()
    with Catalog.open(home, model) as cat:
        assert cat.count() == 0 and cat.thresholds == model.thresholds
        data = png_bytes(1)
        vec = unit(np.random.default_rng(0), 1)
        ref_id, created = cat.add_reference(data, "/x/nike.png", " Nike  Inc ", "logo", vec, 20, 16)
        assert created and ref_id == hashlib.sha256(data).hexdigest()[:16]
    assert (home / "catalog.db").is_file() and (home / "manifest.json").is_file()
    with Catalog.open(home, model) as cat:
        rec = cat.get(ref_id)
        assert isinstance(rec, RefRecord)
        assert (rec.brand, rec.kind, rec.source_path, rec.width, rec.height) == ("Nike Inc", "logo", "/x/nike.png", 20, 16)
        assert rec.sha256 == hashlib.sha256(data).hexdigest()
        assert cat.ref_image_path(ref_id) == rec.stored_path == home / "refs" / f"{ref_id}.png"
        assert rec.stored_path.read_bytes() == data
        assert cat.count() == cat.count("logo") == 1 and cat.count("product") == 0
        assert [r.ref_id for r in cat.list_refs("nike inc")] == [ref_id] and cat.list_refs("Puma") == []
        assert cat.model_fingerprint == model.fingerprint
        assert cat.search("logo", vec, 3)[0][0][0] == ref_id
        assert cat.check() == []


def test_missing_home_not_created_when_asked(tmp_path: Path):
    with pytest.raises(CatalogError, match="no ccu-vision catalog"):
        Catalog.open(tmp_path / "nope", FakeModel(), create=False)
    with pytest.raises(CatalogError, match="no ccu-vision catalog"):
        Catalog.open(tmp_path / "nope", FakeModel(), readonly=True)
    with pytest.raises(CatalogError, match="model is needed"):
        Catalog.open(tmp_path / "nope")
    assert not (tmp_path / "nope").exists() or not (tmp_path / "nope" / "catalog.db").exists()


def test_idempotent_readd(home: Path):
    data = png_bytes(5)
    vec = unit(np.random.default_rng(1), 1)
    with Catalog.open(home, FakeModel()) as cat:
        a = cat.add_reference(data, "a.png", "Nike", "logo", vec, 20, 16)
        b = cat.add_reference(data, "copy/of/a.png", "Nike", "logo", unit(np.random.default_rng(2), 1), 20, 16)
        assert a == (a[0], True) and b == (a[0], False)
        with pytest.raises(DuplicateRefError, match="already registered"):
            cat.add_reference(data, "a.png", "Puma", "logo", vec, 20, 16)
        with pytest.raises(DuplicateRefError):
            cat.add_reference(data, "a.png", "Nike", "product", vec, 20, 16)
        assert cat.count() == 1 and cat.get(a[0]).source_path == "a.png"
    assert len(db_vec_ids(home, "logo")) == 1
    assert len(list((home / "refs").iterdir())) == 1


def test_bad_arguments_rejected(home: Path):
    with Catalog.open(home, FakeModel()) as cat:
        v = unit(np.random.default_rng(0), 1)
        for bad in ("", "   ", "a\x00b", "x" * 500):
            with pytest.raises(ValueError, match="brand"):
                cat.add_reference(png_bytes(1), "a.png", bad, "logo", v, 1, 1)
        with pytest.raises(ValueError, match="kind"):
            cat.add_reference(png_bytes(1), "a.png", "A", "banner", v, 1, 1)
        with pytest.raises(ValueError, match=r"\[m>=1, 16\]"):
            cat.add_reference(png_bytes(1), "a.png", "A", "logo", np.ones((1, 8), np.float32), 1, 1)
        with pytest.raises(ValueError, match="NaN"):
            cat.add_reference(png_bytes(1), "a.png", "A", "logo", np.full((1, DIM), np.nan, np.float32), 1, 1)
        with pytest.raises(ValueError, match="queries"):
            cat.search("logo", np.ones((2, 8), np.float32), 1)
        assert cat.count() == 0
        assert home_state(home)["files"] == ["manifest.json"]


def test_persistence_across_processes(home: Path):
    with Catalog.open(home, FakeModel()) as cat:
        refs = fill(cat, 12, seed=3)
    script = textwrap.dedent(
        """
        import json, sys
        import numpy as np
        from ccu_vision.catalog import Catalog
        home = sys.argv[1]
        with Catalog.open(home) as cat:
            rows = [[r.ref_id, r.brand, r.kind] for r in cat.list_refs()]
            v = np.frombuffer(bytes.fromhex(sys.argv[2]), np.float32).reshape(1, -1)
            top = cat.search("logo", v, 1)[0][0][0]
            rid, created = cat.add_reference(b"GIF89a-not-really-an-image", "child.gif", "Child", "product", v, 1, 1)
            problems = cat.check()
        print(json.dumps({"rows": rows, "top": top, "child": rid, "problems": problems}))
        """
    )
    first = next(iter(refs))
    out = subprocess.run(
        [sys.executable, "-c", script, str(home), refs[first].tobytes().hex()],
        capture_output=True, text=True, cwd=REPO, timeout=120, check=True,
    )
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert [r[0] for r in got["rows"]] == list(refs) and got["top"] == first and got["problems"] == []
    with Catalog.open(home, FakeModel()) as cat:
        assert cat.count() == 13 and cat.get(got["child"]).brand == "Child"
        assert cat.search("product", refs[first], 1)[0][0][0] == got["child"]
        assert cat.check() == []


# ------------------------------------------------------------------------- search and consistency


def test_search_matches_brute_force_and_ids_agree(home: Path):
    rng = np.random.default_rng(11)
    with Catalog.open(home, FakeModel()) as cat:
        logos = fill(cat, 150, seed=1)
        products = fill(cat, 60, seed=2, kind="product", per_ref=2)
        refs = {**logos, **products}
        removed = list(logos)[:20] + list(products)[:10]
        assert cat.remove(removed + ["0123456789abcdef", "../etc"]) == 30
        for r in removed:
            del refs[r]
        q = unit(rng, 25)
        db = sqlite3.connect(f"file:{home / 'catalog.db'}?mode=ro", uri=True)
        owner = dict(db.execute("SELECT vec_id, ref_id FROM vectors"))
        db.close()
        for kind in ("logo", "product"):
            kind_refs = {r for r in refs if cat.get(r).kind == kind}
            got = cat.search(kind, q, 7)
            want = brute_force(refs, kind_refs, q, 7)
            for g, w in zip(got, want, strict=True):
                assert [x[0] for x in g] == [x[0] for x in w]
                np.testing.assert_allclose([x[1] for x in g], [x[1] for x in w], atol=1e-5)
                assert [x[1] for x in g] == sorted((x[1] for x in g), reverse=True)
                assert len({x[0] for x in g}) == len(g)  # best score per reference, no repeats
                for rid, _, vid in g:
                    assert owner[vid] == rid  # the vec_id reported is one of that reference's vectors
        assert cat.check() == []
    # index files on disk and DB agree exactly, in both directions
    for kind in ("logo", "product"):
        np.testing.assert_array_equal(file_index_ids(home, kind), db_vec_ids(home, kind))
    assert len(db_vec_ids(home, "product")) == 2 * 50
    db = sqlite3.connect(home / "catalog.db")
    orphans = db.execute("SELECT count(*) FROM vectors WHERE ref_id NOT IN (SELECT ref_id FROM refs)").fetchone()[0]
    bare = db.execute("SELECT count(*) FROM refs WHERE ref_id NOT IN (SELECT ref_id FROM vectors)").fetchone()[0]
    db.close()
    assert orphans == bare == 0
    stored = sorted(p.name.split(".")[0] for p in (home / "refs").iterdir())
    assert stored == sorted(refs)


@pytest.mark.parametrize("kind", ["hnsw", "ivfpq"])
def test_configured_index_kinds(home: Path, kind: str, monkeypatch):
    monkeypatch.setattr(ix, "IVFPQ_MIN_TRAIN", 200)
    rng = np.random.default_rng(4)
    with Catalog.open(home, FakeModel(), index_kind=kind) as cat:
        refs = fill(cat, 250, seed=9)
    manifest = json.loads((home / "manifest.json").read_text())
    assert manifest["index"]["kind"] == kind and manifest["index"]["files"]["logo"]["kind"] == kind
    with Catalog.open(home, FakeModel(), readonly=True) as cat:
        q = np.concatenate([refs[r] for r in list(refs)[:30]])
        hits = cat.search("logo", q, 5)
        assert [h[0][0] for h in hits] == list(refs)[:30]  # exact re-rank for ivfpq
        np.testing.assert_allclose([h[0][1] for h in hits], 1.0, atol=1e-4)
        want = brute_force(refs, set(refs), unit(rng, 20), 5)
        got = cat.search("logo", unit(np.random.default_rng(4), 20), 5)
        recall = np.mean([len({a[0] for a in g} & {b[0] for b in w}) / 5 for g, w in zip(got, want, strict=True)])
        assert recall >= 0.9


# ---------------------------------------------------------------------------- model pinning


@pytest.fixture(scope="module")
def two_models(tmp_path_factory) -> tuple[Embedder, Embedder]:
    d = tmp_path_factory.mktemp("models")
    a = Embedder(make_tiny_model(d / "a.onnx", seed=0, model_id="tiny-a"))
    b = Embedder(make_tiny_model(d / "b.onnx", seed=1, model_id="tiny-b", thresholds={"logo": 0.5, "near_duplicate": 0.6, "precision": 0.9}))
    return a, b


def _image_folder(root: Path, n: int, seed: int = 0) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (root / f"img{i:03d}.png").write_bytes(png_bytes(seed * 1000 + i, (40, 32)))
    return root


def test_model_mismatch_refused_then_reindex(home: Path, tmp_path: Path, two_models):
    a, b = two_models
    imgs = _image_folder(tmp_path / "imgs", 6)
    with Catalog.open(home, a.info) as cat:
        events = list(add_paths(cat, a, [imgs], "Nike", "logo"))
        assert all(e.ok for e in events)
        ids = [e.ref_id for e in events]
    before = home_state(home)
    with pytest.raises(ModelMismatchError) as err:
        Catalog.open(home, b.info)
    msg = str(err.value)
    assert "tiny-a" in msg and "tiny-b" in msg and "ccu-vision reindex" in msg
    assert home_state(home) == before  # refusing did not touch the catalog
    with Catalog.open(home) as cat:
        assert cat.reindex(b) == 6
        assert cat.model_fingerprint == b.info.fingerprint and cat.thresholds == b.info.thresholds
        assert cat.check() == []
    with pytest.raises(ModelMismatchError):
        Catalog.open(home, a.info)
    with Catalog.open(home, b.info, readonly=True) as cat:
        assert [r.ref_id for r in cat.list_refs()] == ids
        q = b.embed_logos([Image.open(imgs / "img003.png")])
        top = cat.search("logo", q, 1)[0][0]
        assert top[0] == ids[3] and top[1] > 0.999
    manifest = json.loads((home / "manifest.json").read_text())
    assert manifest["model"]["model_id"] == "tiny-b" and manifest["thresholds"] == b.info.thresholds


def test_reindex_refuses_when_a_stored_copy_is_damaged(home: Path, tmp_path: Path, two_models):
    a, b = two_models
    imgs = _image_folder(tmp_path / "imgs", 3, seed=5)
    with Catalog.open(home, a.info) as cat:
        ids = [e.ref_id for e in add_paths(cat, a, [imgs], "Nike", "logo")]
    victim = next((home / "refs").glob(f"{ids[1]}.*"))
    victim.write_bytes(b"garbage")
    before = home_state(home)
    with Catalog.open(home) as cat, pytest.raises(CatalogError, match=rf"{ids[1]}.*checksum.*left unchanged"):
        cat.reindex(b)
    assert home_state(home) == before
    with Catalog.open(home, a.info) as cat:  # still fully usable with the old model
        assert cat.count() == 3


# --------------------------------------------------------------------------------------- tampering


def test_tampered_manifest_refused(home: Path):
    with Catalog.open(home, FakeModel()) as cat:
        fill(cat, 3)
    path = home / "manifest.json"
    good = path.read_text()
    m = json.loads(good)
    m["thresholds"]["logo"] = 0.01  # a quiet edit: lower the bar, flag everything
    path.write_text(json.dumps(m))
    with pytest.raises(CatalogError, match="checksum"):
        Catalog.open(home, FakeModel())
    with pytest.raises(CatalogError, match="checksum"):
        Catalog.open(home, readonly=True)
    path.write_text("{not json")
    with pytest.raises(CatalogError, match="corrupt"):
        Catalog.open(home, FakeModel())
    path.write_text(good)
    with Catalog.open(home, FakeModel()) as cat:
        assert cat.count() == 3 and cat.thresholds["logo"] == 0.8


def test_missing_manifest_is_rebuilt_from_db(home: Path, caplog):
    with Catalog.open(home, FakeModel()) as cat:
        refs = fill(cat, 4)
    (home / "manifest.json").unlink()
    with caplog.at_level(logging.WARNING), Catalog.open(home, FakeModel()) as cat:
        assert cat.count() == 4 and cat.check() == []
    assert "manifest is missing" in caplog.text
    m = json.loads((home / "manifest.json").read_text())
    assert m["model"]["fingerprint"] == FakeModel().fingerprint and m["index"]["files"]["logo"]["count"] == len(refs)


@pytest.mark.parametrize("damage", ["garbage", "other_valid_index", "missing", "truncated"])
def test_tampered_or_missing_index_is_rebuilt(home: Path, damage: str, caplog):
    with Catalog.open(home, FakeModel()) as cat:
        refs = fill(cat, 30, seed=2)
    path = home / "index" / "logo.faiss"
    if damage == "garbage":
        path.write_bytes(os.urandom(4096))
    elif damage == "other_valid_index":  # a well-formed index whose ids point at the wrong vectors
        evil = ix.make_index(DIM, "flat")
        rng = np.random.default_rng(99)
        ix.add(evil, unit(rng, 30), np.sort(db_vec_ids(home, "logo")))
        path.write_bytes(ix.serialize(evil))
    elif damage == "missing":
        path.unlink()
    else:
        path.write_bytes(path.read_bytes()[:100])
    q = np.concatenate(list(refs.values()))
    with caplog.at_level(logging.WARNING), Catalog.open(home, FakeModel(), readonly=True) as cat:
        hits = cat.search("logo", q, 1)
        assert [h[0][0] for h in hits] == list(refs)
        assert cat.check() == []
    assert "rebuilding the logo index" in caplog.text
    if damage != "missing":
        assert "not trusting" in caplog.text or "checksum" in caplog.text
    with Catalog.open(home, FakeModel()) as cat:  # a writer repairs the file on close
        assert cat.count() == 30
    entry = json.loads((home / "manifest.json").read_text())["index"]["files"]["logo"]
    assert entry["sha256"] == file_digest(path)
    np.testing.assert_array_equal(file_index_ids(home, "logo"), db_vec_ids(home, "logo"))


def test_index_stale_after_crash_is_caught_up(home: Path, caplog):
    with Catalog.open(home, FakeModel()) as cat:
        first = fill(cat, 10, seed=1)
    cat = Catalog.open(home, FakeModel())
    later = fill(cat, 5, seed=2)  # committed, but the index files are never rewritten:
    cat._close_handles()  # what a kill -9 leaves behind
    manifest_before = (home / "manifest.json").read_bytes()
    with Catalog.open(home, FakeModel(), readonly=True) as reader:  # a reader rebuilds in memory only
        assert reader.count() == 15 and reader.check() == []
        q = np.concatenate(list(later.values()))
        assert [h[0][0] for h in reader.search("logo", q, 1)] == list(later)
    assert (home / "manifest.json").read_bytes() == manifest_before
    assert file_index_ids(home, "logo").size == 10
    with Catalog.open(home, FakeModel()) as cat:
        assert cat.count() == 15
    np.testing.assert_array_equal(file_index_ids(home, "logo"), db_vec_ids(home, "logo"))
    with Catalog.open(home, readonly=True) as cat:
        assert first.keys() | later.keys() == {r.ref_id for r in cat.list_refs()}


def test_damaged_db_row_cannot_escape_home(home: Path):
    with Catalog.open(home, FakeModel()) as cat:
        (rid,) = fill(cat, 1)
        assert cat.get("../../etc/passwd") is None and cat.remove(["../../x"]) == 0
        with pytest.raises(CatalogError, match="unknown reference"):
            cat.ref_image_path("../../etc/passwd")
        # brand names are data, never paths
        r2, _ = cat.add_reference(png_bytes(77), "x.png", "../../evil/brand", "logo", unit(np.random.default_rng(0), 1), 1, 1)
        assert cat.ref_image_path(r2).parent == home / "refs"
    db = sqlite3.connect(home / "catalog.db")
    db.execute("UPDATE refs SET stored_name = '../../../../etc/passwd' WHERE ref_id = ?", (rid,))
    db.commit()
    db.close()
    with pytest.raises(CatalogError, match="damaged reference row"):
        Catalog.open(home, FakeModel())


# ----------------------------------------------------------------------------- failing storage


def test_disk_full_leaves_catalog_unchanged(home: Path, monkeypatch):
    with Catalog.open(home, FakeModel()) as cat:
        fill(cat, 3)
    before = home_state(home)
    with Catalog.open(home, FakeModel()) as cat:
        def full(path, data):
            raise OSError(errno.ENOSPC, "No space left on device")

        with monkeypatch.context() as m:
            m.setattr(catmod, "atomic_write", full)
            with pytest.raises(CatalogError, match="disk full.*left unchanged"):
                cat.add_reference(png_bytes(50), "new.png", "A", "logo", unit(np.random.default_rng(0), 1), 1, 1)
        # SQLite itself running out of space (max_page_count caps the file at its current size)
        pages = cat.db.execute("PRAGMA page_count").fetchone()[0]
        cat.db.execute(f"PRAGMA max_page_count = {pages}")
        with pytest.raises(CatalogError, match="disk full.*left unchanged"):
            for i in range(200):  # the first insert that needs a new page fails
                cat.add_reference(png_bytes(60 + i), "new.png", "A", "logo", unit(np.random.default_rng(i), 64 // DIM * 8), 1, 1)
        added = cat.count() - 3
        cat.db.execute("PRAGMA max_page_count = 1073741823")
        assert cat.check() == []
    after = home_state(home)
    assert len(after["refs"]) == 3 + added and len(after["files"]) == len(before["files"]) + added
    # nothing half-written: every file is a committed reference, the index or the manifest
    assert not [f for f in after["files"] if f.endswith(".tmp")]


RO_MOUNT = 'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1"'


def _readonly_mount_available() -> bool:
    """Non-root: chmod makes a home read-only. Root ignores permissions: needs a private
    mount namespace where a read-only bind mount can be made (probed on a scratch folder)."""
    if os.geteuid() != 0:
        return True
    if shutil.which("unshare") is None:
        return False
    with tempfile.TemporaryDirectory() as d:
        probe = subprocess.run(
            ["unshare", "-m", "sh", "-c", RO_MOUNT + ' && ! touch "$1/x" 2>/dev/null', "sh", d],
            capture_output=True,
        )
    return probe.returncode == 0


READONLY_PROBE = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from ccu_vision.catalog import Catalog
    from ccu_vision.errors import CatalogError
    home = sys.argv[1]
    out = {}
    cat = Catalog.open(home)
    try:
        cat.add_reference(b"\\x89PNG-new", "new.png", "A", "logo", np.ones((1, 16), np.float32), 1, 1)
        out["add"] = "succeeded"
    except CatalogError as e:
        out["add"] = str(e)
    try:
        out["remove"] = cat.remove([r.ref_id for r in cat.list_refs()])
    except CatalogError as e:
        out["remove"] = str(e)
    cat.close()
    with Catalog.open(home, readonly=True) as r:  # scanning a read-only home works
        out["count"] = r.count()
        out["hits"] = len(r.search("logo", np.ones((1, 16), np.float32), 3)[0])
    print(json.dumps(out))
    """
)


@pytest.mark.skipif(not _readonly_mount_available(), reason="needs non-root or unshare to make a read-only home")
def test_readonly_home_clear_error_and_unchanged(home: Path):
    with Catalog.open(home, FakeModel()) as cat:
        fill(cat, 3)
    before = home_state(home)
    db_before = file_digest(home / "catalog.db")
    if os.geteuid() == 0:  # root ignores permissions: use a real read-only bind mount
        cmd = ["unshare", "-m", "sh", "-c",
               RO_MOUNT + ' && exec "$2" -c "$3" "$1"',
               "sh", str(home), sys.executable, READONLY_PROBE]
    else:
        for p in [home, *home.rglob("*")]:
            p.chmod(p.stat().st_mode & ~0o222)
        cmd = [sys.executable, "-c", READONLY_PROBE, str(home)]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=120)
    finally:
        for p in [home, *home.rglob("*")]:
            p.chmod(p.stat().st_mode | 0o200)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert "read-only" in out["add"] or "permission denied" in out["add"], out
    assert "left unchanged" in out["add"]
    assert "read-only" in out["remove"] or "permission denied" in out["remove"], out
    assert out["count"] == 3 and out["hits"] == 3
    assert home_state(home) == before and file_digest(home / "catalog.db") == db_before


# ------------------------------------------------------------------------------ lock and readers


def test_second_writer_waits_then_times_out(home: Path, caplog):
    with Catalog.open(home, FakeModel()) as cat:
        fill(cat, 1)
    holder = Catalog.open(home, FakeModel())
    other = Catalog.open(home, FakeModel(), lock_timeout=0.3)
    try:
        with holder._writing():  # hold the write lock as a long add would
            with caplog.at_level(logging.WARNING), pytest.raises(CatalogError, match=rf"locked by another writer \(pid {os.getpid()}\)"):
                other.add_reference(png_bytes(9), "b.png", "A", "logo", unit(np.random.default_rng(0), 1), 1, 1)
            assert f"waiting for catalog lock {home / '.lock'} held by pid {os.getpid()}" in caplog.text
        rid, created = other.add_reference(png_bytes(9), "b.png", "A", "logo", unit(np.random.default_rng(0), 1), 1, 1)
        assert created
        # the holder catches up with what the other writer committed before its next write
        holder.add_reference(png_bytes(10), "c.png", "A", "logo", unit(np.random.default_rng(1), 1), 1, 1)
        assert holder.get(rid) is not None and holder.count() == 3 and holder.check() == []
    finally:
        other.close()
        holder.close()
    with Catalog.open(home, readonly=True) as cat:
        assert cat.count() == 3 and cat.check() == []


def test_reader_sees_a_consistent_snapshot(home: Path):
    with Catalog.open(home, FakeModel()) as cat:
        refs = fill(cat, 10, seed=1)
    reader = Catalog.open(home, readonly=True)
    with Catalog.open(home, FakeModel()) as writer:
        fill(writer, 10, seed=2)
        writer.remove(list(refs)[:3])
        writer.flush()
        assert reader.count() == 10  # the reader's snapshot does not move under it
        hits = reader.search("logo", np.concatenate(list(refs.values())), 1)
        assert [h[0][0] for h in hits] == list(refs) and all(reader.get(h[0][0]) for h in hits)
    reader.close()
    with Catalog.open(home, readonly=True) as fresh:
        assert fresh.count() == 17 and fresh.check() == []


def test_set_thresholds_persists(home: Path):
    with Catalog.open(home, FakeModel()) as cat:
        cat.set_thresholds({"logo": 0.71})
        with pytest.raises(ValueError):
            cat.set_thresholds({"logo": float("nan")})
    with Catalog.open(home, FakeModel(), readonly=True) as cat:
        assert cat.thresholds == {"logo": 0.71, "near_duplicate": 0.9, "precision": 0.95}
    assert json.loads((home / "manifest.json").read_text())["thresholds"]["logo"] == 0.71


def test_reader_racing_a_flush_is_not_alarmed(home: Path, monkeypatch, caplog):
    """A reader that read the manifest just before a writer replaced index + manifest must not
    mistake the new file for tampering: it re-reads the manifest and uses the new file."""
    with Catalog.open(home, FakeModel()) as cat:
        fill(cat, 5, seed=1)
    old = json.loads((home / "manifest.json").read_text())
    with Catalog.open(home, FakeModel()) as cat:
        fill(cat, 3, seed=2)
    real = Catalog._read_manifest
    calls = []

    def first_stale(self):
        calls.append(1)
        return old if len(calls) == 1 else real(self)

    monkeypatch.setattr(Catalog, "_read_manifest", first_stale)
    with caplog.at_level(logging.INFO), Catalog.open(home, readonly=True) as cat:
        assert cat.count() == 8 and cat.check() == []
    assert len(calls) >= 2
    assert "not trusting" not in caplog.text and "rebuilding" not in caplog.text
