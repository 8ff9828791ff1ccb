"""Matcher vs brute force, and the scan pipeline (rows, error rows, resume, timings) with the tiny model."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ccu_vision.embedder import Embedder, PhotoEmbedding
from ccu_vision.errors import CcuError
from ccu_vision.matcher import match_photo, match_photos
from ccu_vision.scan import ScanInput, check_image, read_rows, row_key, run_scan
from ccu_vision.tinymodel import make_tiny_model

# ----------------------------------------------------------------------------- fakes / fixtures


@dataclass
class Rec:
    ref_id: str
    brand: str
    kind: str


class FakeCatalog:
    """Brute-force in-memory stand-in for the catalog's read API (exact search)."""

    def __init__(self, thresholds: dict | None = None) -> None:
        self.thresholds = thresholds or {"logo": 0.9, "near_duplicate": 0.9}
        self.vecs: dict[str, list[tuple[str, np.ndarray]]] = {"logo": [], "product": []}
        self.recs: dict[str, Rec] = {}
        self.search_calls = 0

    def add(self, ref_id: str, brand: str, kind: str, vectors: np.ndarray) -> None:
        self.recs[ref_id] = Rec(ref_id, brand, kind)
        for v in np.atleast_2d(vectors):
            self.vecs[kind].append((ref_id, np.asarray(v, np.float32)))

    def count(self, kind: str | None = None) -> int:
        return sum(1 for r in self.recs.values() if kind is None or r.kind == kind)

    def get(self, ref_id: str) -> Rec | None:
        return self.recs.get(ref_id)

    def search(self, kind: str, queries: np.ndarray, k: int) -> list[list[tuple[str, float, int]]]:
        self.search_calls += 1
        out = []
        for q in queries:
            best: dict[str, tuple[float, int]] = {}
            for vid, (rid, v) in enumerate(self.vecs[kind]):
                s = float(q @ v)
                if rid not in best or s > best[rid][0]:
                    best[rid] = (s, vid)
            ranked = sorted(best.items(), key=lambda kv: -kv[1][0])[:k]
            out.append([(rid, s, vid) for rid, (s, vid) in ranked])
        return out


def unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("model") / "tiny.onnx")


@pytest.fixture(scope="module")
def embedder(tiny_model: Path) -> Embedder:
    return Embedder(tiny_model, threads=1, batch_size=4)


def noise_image(seed: int, size: tuple[int, int] = (96, 80)) -> Image.Image:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (size[1] // 8 + 1, size[0] // 8 + 1, 3), dtype=np.uint8)
    return Image.fromarray(small).resize(size, Image.Resampling.BILINEAR)


def make_dump(root: Path) -> tuple[list[Path], list[Path]]:
    """A folder of good and bad images; returns (good, bad)."""
    root.mkdir(parents=True, exist_ok=True)
    good, bad = [], []
    for i in range(7):
        p = root / ("sub" if i % 2 else "") / f"good_{i}.{'jpg' if i % 3 else 'png'}"
        p.parent.mkdir(parents=True, exist_ok=True)
        noise_image(i).save(p)
        good.append(p)
    (root / "empty.jpg").write_bytes(b"")
    (root / "page.jpg").write_bytes(b"<!DOCTYPE html><html><body>not found</body></html>")
    (root / "random.png").write_bytes(np.random.default_rng(3).bytes(600))
    full = root / "full.jpg"
    noise_image(99, (200, 150)).save(full, quality=90)
    (root / "truncated.jpg").write_bytes(full.read_bytes()[:300])
    full.unlink()
    bad += [root / n for n in ("empty.jpg", "page.jpg", "random.png", "truncated.jpg")]
    return good, bad


# ----------------------------------------------------------------------------- matcher


def brute_force(photo: PhotoEmbedding, cat: FakeCatalog, k: int) -> tuple[list, list]:
    logo: dict[str, tuple[float, int]] = {}
    for r, q in enumerate(photo.regions):
        for rid, v in cat.vecs["logo"]:
            s = float(q @ v)
            if rid not in logo or s > logo[rid][0]:
                logo[rid] = (s, r)
    prod: dict[str, float] = {}
    for rid, v in cat.vecs["product"]:
        prod[rid] = max(prod.get(rid, -9.0), float(photo.global_vec @ v))
    lo = sorted(logo.items(), key=lambda kv: -kv[1][0])[:k]
    pr = sorted(prod.items(), key=lambda kv: -kv[1])[:k]
    return lo, pr


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matcher_equals_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    d = 12
    cat = FakeCatalog({"logo": 0.55, "near_duplicate": 0.5})
    for i in range(30):
        cat.add(f"logo{i:02d}", f"Brand{i % 7}", "logo", unit(rng, 1 + i % 3, d))
    for i in range(20):
        cat.add(f"prod{i:02d}", f"Brand{i % 5}", "product", unit(rng, 1 + i % 2, d))
    photos = []
    for _ in range(6):
        regions = unit(rng, 25, d)
        boxes = np.sort(rng.uniform(0, 500, (25, 4)).astype(np.float32), axis=1)
        photos.append(PhotoEmbedding(global_vec=unit(rng, 1, d)[0], regions=regions, boxes=boxes))
    results = match_photos(photos, cat, top_k=5, region_k=5)
    assert cat.search_calls == 2  # one batched search per kind
    for photo, res in zip(photos, results, strict=True):
        lo, pr = brute_force(photo, cat, 5)
        got_logo = [m for m in res.matches if m["kind"] == "logo"]
        got_prod = [m for m in res.matches if m["kind"] == "product"]
        assert [m["ref_id"] for m in got_logo] == [rid for rid, _ in lo]
        assert [m["ref_id"] for m in got_prod] == [rid for rid, _ in pr]
        for m, (rid, (s, r)) in zip(got_logo, lo, strict=True):
            assert m["score"] == pytest.approx(s, abs=1e-5)
            assert m["box"] == [int(round(float(v))) for v in photo.boxes[r]]
            assert m["brand"] == cat.recs[rid].brand
        for m, (_rid, s) in zip(got_prod, pr, strict=True):
            assert m["score"] == pytest.approx(s, abs=1e-5)
            assert "box" not in m
        want_flags = {(rid, "logo") for rid, (s, _) in lo if s >= 0.55} | {
            (rid, "near_duplicate") for rid, s in pr if s >= 0.5}
        assert {(f["ref_id"], f["type"]) for f in res.flags} == want_flags
        for f in res.flags:
            assert f["threshold"] == (0.55 if f["type"] == "logo" else 0.5)
            assert f["score"] >= f["threshold"]
            assert ("box" in f) == (f["type"] == "logo")
        assert res.verdict == ("suspect" if want_flags else "clear")
        assert [f["score"] for f in res.flags] == sorted((f["score"] for f in res.flags), reverse=True)


def test_matcher_empty_catalog_and_exact_copy() -> None:
    rng = np.random.default_rng(5)
    photo = PhotoEmbedding(global_vec=unit(rng, 1, 8)[0], regions=unit(rng, 4, 8),
                           boxes=np.tile(np.array([[0, 0, 10, 10]], np.float32), (4, 1)))
    empty = FakeCatalog()
    res = match_photo(photo, empty)
    assert res.to_row() == {"verdict": "clear", "flags": [], "matches": []}
    assert empty.search_calls == 2  # empty indices answer with empty lists
    cat = FakeCatalog()
    cat.add("p", "Acme", "product", photo.global_vec[None])
    cat.add("l", "Acme", "logo", photo.regions[2:3])
    res = match_photo(photo, cat)
    assert res.verdict == "suspect"
    assert {f["type"] for f in res.flags} == {"logo", "near_duplicate"}
    assert all(f["score"] == pytest.approx(1.0, abs=1e-5) for f in res.flags)
    json.dumps(res.to_row(), allow_nan=False)  # serializable, no inf/nan


# ----------------------------------------------------------------------------- scan pipeline


def product_catalog(embedder: Embedder, images: list[Path]) -> FakeCatalog:
    cat = FakeCatalog()
    for i, p in enumerate(images):
        with Image.open(p) as im:
            vec = embedder.embed_photos([im.convert("RGB")])[0].global_vec
        cat.add(f"ref{i}", f"Brand<{i}>", "product", vec[None])
    return cat


def test_scan_folder_good_and_bad(tmp_path: Path, embedder: Embedder) -> None:
    from ccu_vision.scan import collect_inputs

    good, bad = make_dump(tmp_path / "dump")
    cat = product_catalog(embedder, [good[0]])
    items = collect_inputs(tmp_path / "dump")
    assert len(items) == len(good) + len(bad)
    out = tmp_path / "out" / "results.jsonl"
    summary = run_scan(items, out, embedder, cat, workers=2, batch_size=3, progress=False)
    rows = read_rows(out)
    assert [r["image"] for r in rows] == [it.image for it in items]  # input order, one row each
    by_name = {Path(r["image"]).name: r for r in rows}
    for p in bad:
        r = by_name[p.name]
        assert r["status"] == "error" and r["verdict"] == "error"
        assert r["error"] and r["flags"] == [] and r["matches"] == []
    assert "empty" in by_name["empty.jpg"]["error"].lower()
    for p in good:
        r = by_name[p.name]
        assert r["status"] == "ok" and "error" not in r
        assert set(r) == {"image", "status", "verdict", "flags", "matches"}
    hit = by_name[good[0].name]
    assert hit["verdict"] == "suspect"
    assert hit["flags"][0]["type"] == "near_duplicate" and hit["flags"][0]["brand"] == "Brand<0>"
    assert hit["flags"][0]["score"] >= 0.999
    assert summary.inputs == summary.scanned == len(items)
    assert summary.errors == len(bad) and summary.ok == len(good)
    assert summary.flagged == sum(r["verdict"] == "suspect" for r in rows)
    assert summary.flagged + summary.clear == summary.ok
    d = summary.to_dict()
    for stage in ("read", "decode", "embed", "search", "decide", "write"):
        assert d["stages"][stage]["seconds"] >= 0
    assert d["stages"]["embed"]["images"] == len(good)
    assert d["stages"]["read"]["images"] == d["stages"]["write"]["images"] == len(items)
    assert summary.images_per_s > 0
    assert "images/s" in summary.format()


def test_scan_rows_match_check_image(tmp_path: Path, embedder: Embedder) -> None:
    good, _ = make_dump(tmp_path / "dump")
    cat = product_catalog(embedder, good[:2])
    out = tmp_path / "r.jsonl"
    run_scan([ScanInput(str(p)) for p in good], out, embedder, cat, batch_size=2, progress=False)
    for row in read_rows(out):
        single = check_image(row["image"], embedder, cat)
        assert single["verdict"] == row["verdict"]
        assert [m["ref_id"] for m in single["matches"]] == [m["ref_id"] for m in row["matches"]]
        for a, b in zip(single["matches"], row["matches"], strict=True):
            assert a["score"] == pytest.approx(b["score"], abs=1e-4)
    with pytest.raises(CcuError, match="missing.jpg"):
        check_image(tmp_path / "missing.jpg", embedder, cat)


def test_resume_after_truncated_line(tmp_path: Path, embedder: Embedder) -> None:
    good, bad = make_dump(tmp_path / "dump")
    items = [ScanInput(str(p), listing_id=f"L{i}") for i, p in enumerate(good + bad)]
    # the same image under two listings, and one input listed twice: both must be answered twice
    items.append(ScanInput(str(good[1]), listing_id="other"))
    items.append(ScanInput(str(good[2]), listing_id="L2"))
    cat = product_catalog(embedder, good[:1])
    full = tmp_path / "full.jsonl"
    run_scan(items, full, embedder, cat, batch_size=2, progress=False)
    lines = full.read_bytes().splitlines(keepends=True)
    assert len(lines) == len(items)

    for cut in (1, 5, len(lines) - 1):
        part = tmp_path / f"part{cut}.jsonl"
        # a kill mid-write: `cut` complete lines then half of the next one
        part.write_bytes(b"".join(lines[:cut]) + lines[cut][: len(lines[cut]) // 2])
        s = run_scan(items, part, embedder, cat, resume=True, batch_size=2, progress=False)
        assert s.dropped_partial_line and s.skipped == cut and s.scanned == len(items) - cut
        rows = read_rows(part)
        assert sorted(row_key(r) for r in rows) == sorted(it.key for it in items)
        assert part.read_bytes().count(b"\n") == len(items)
        assert [json.loads(x) for x in part.read_bytes().splitlines()] == [json.loads(x) for x in lines]
        # resuming a finished scan is a no-op
        s2 = run_scan(items, part, embedder, cat, resume=True, progress=False)
        assert s2.scanned == 0 and s2.skipped == len(items) and not s2.dropped_partial_line
        assert len(read_rows(part)) == len(items)


def test_resume_refuses_corrupt_middle_line(tmp_path: Path, embedder: Embedder) -> None:
    good, _ = make_dump(tmp_path / "dump")
    items = [ScanInput(str(p)) for p in good]
    out = tmp_path / "r.jsonl"
    run_scan(items, out, embedder, FakeCatalog(), progress=False)
    lines = out.read_bytes().splitlines(keepends=True)
    out.write_bytes(lines[0] + b"garbage\n" + b"".join(lines[1:]))
    with pytest.raises(CcuError, match="line 2"):
        run_scan(items, out, embedder, FakeCatalog(), resume=True, progress=False)
    # without --resume the file is simply replaced
    s = run_scan(items, out, embedder, FakeCatalog(), progress=False)
    assert s.scanned == len(items) and len(read_rows(out)) == len(items)


class FlakyEmbedder:
    """Wraps an embedder and fails on canvases whose top-left pixel is pure black."""

    def __init__(self, inner: Embedder) -> None:
        self.inner = inner
        self.query_size, self.interp, self.batch_size = inner.query_size, inner.interp, 4

    def embed_canvases(self, canvases: np.ndarray, boxes: list) -> list:
        if any((c[0, 0] == 0).all() for c in canvases):
            raise RuntimeError("boom")
        return self.inner.embed_canvases(canvases, boxes)


def test_embedding_failure_isolated_to_one_row(tmp_path: Path, embedder: Embedder) -> None:
    paths = []
    for i in range(6):
        p = tmp_path / f"im{i}.png"
        img = Image.new("RGB", (128, 128), (0, 0, 0) if i == 3 else (200, 10 * i, 30))
        img.save(p)
        paths.append(p)
    out = tmp_path / "r.jsonl"
    s = run_scan([ScanInput(str(p)) for p in paths], out, FlakyEmbedder(embedder), FakeCatalog(),
                 batch_size=4, progress=False)
    rows = read_rows(out)
    assert [r["status"] for r in rows] == ["ok", "ok", "ok", "error", "ok", "ok"]
    assert "boom" in rows[3]["error"]
    assert s.errors == 1 and s.ok == 5


def test_manifest_input(tmp_path: Path, embedder: Embedder) -> None:
    from ccu_vision.scan import collect_inputs

    good, bad = make_dump(tmp_path / "dump")
    man = tmp_path / "dump" / "listings.csv"
    man.write_text("image,listing_id,seller_id,title\n"
                   f"{good[0].relative_to(man.parent)},A1,s1,Real <b>shoes</b>\n"
                   f"{bad[0].name},A2,,\n"
                   f"{good[1].relative_to(man.parent)},A3,s2,\n", encoding="utf-8")
    items = collect_inputs(man)
    assert [it.listing_id for it in items] == ["A1", "A2", "A3"]
    assert items[0].title == "Real <b>shoes</b>" and items[1].seller_id is None
    out = tmp_path / "r.jsonl"
    run_scan(items, out, embedder, product_catalog(embedder, good[:1]), progress=False)
    rows = read_rows(out)
    assert [r["listing_id"] for r in rows] == ["A1", "A2", "A3"]
    assert [r["status"] for r in rows] == ["ok", "error", "ok"]
    assert rows[0]["verdict"] == "suspect"
    assert Path(rows[0]["image"]).resolve() == good[0].resolve()


def test_scan_messy_dump_one_correct_row_per_file(tmp_path: Path, embedder: Embedder,
                                                  image_cases: tuple[Path, dict[str, str | None]]) -> None:
    """Issue 5: a folder mixing every hard case finishes with one correct row per file."""
    from ccu_vision.scan import collect_inputs

    folder, expected = image_cases
    (folder / "loop").symlink_to(folder, target_is_directory=True)  # a loop: followed once, detected
    items = collect_inputs(folder)
    out = tmp_path / "messy.jsonl"
    s = run_scan(items, out, embedder, FakeCatalog(), workers=2, batch_size=4, progress=False)
    rows = read_rows(out)
    got = {Path(r["image"]).relative_to(folder).as_posix(): r for r in rows}
    assert len(rows) == len(got)  # none twice
    assert set(got) == set(expected)  # none missing
    for name, reason in expected.items():
        r = got[name]
        if reason is None:
            assert r["status"] == "ok", (name, r.get("error"))
        else:
            assert r["status"] == "error" and reason in r["error"], (name, r.get("error"))
    assert s.errors == sum(v is not None for v in expected.values())


def test_a_failed_results_write_names_the_file(tmp_path: Path) -> None:
    """Disk full / I/O errors while appending results carry no file name of their own: the error names ``out``."""
    import errno

    from ccu_vision.scan import _write_rows

    class Full:
        def write(self, s: str) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

        def flush(self) -> None:
            pass

    out = tmp_path / "r.jsonl"
    with pytest.raises(OSError) as e:
        _write_rows(Full(), ['{"a": 1}\n'], out, sync=False)
    assert e.value.errno == errno.ENOSPC and e.value.filename == str(out)
    assert str(out) in str(e.value) and "writing results" in str(e.value)
    with open(out, "a", encoding="utf-8") as f:  # and a working file gets every line, fsynced
        _write_rows(f, ['{"a": 1}\n', '{"b": 2}\n'], out, sync=True)
    assert out.read_text() == '{"a": 1}\n{"b": 2}\n'


def test_boxes_of_a_draft_decoded_jpeg_are_in_the_files_pixels(tmp_path: Path, embedder: Embedder) -> None:
    """A big JPEG is decoded at a fraction of its size (libjpeg draft); its boxes still come back in
    the file's pixels, as for the same picture stored as PNG (decoded at full size)."""
    from ccu_vision import imageio
    from ccu_vision.scan import decode_checked

    big = noise_image(5, (3200, 2400))
    jpg, png = tmp_path / "big.jpg", tmp_path / "big.png"
    big.save(jpg, quality=95)
    big.save(png)
    assert imageio.load_image(jpg, draft_size=embedder.query_size).size[0] < 3200  # it is drafted
    boxes = []
    for p in (jpg, png):
        d = decode_checked(embedder, p)
        assert (d.lb.width, d.lb.height) == (3200, 2400)
        boxes.append(embedder.embed_canvases(d.canvas[None], [d.lb])[0].boxes)
    assert boxes[0].shape == boxes[1].shape and boxes[1][:, 2].max() > 3000
    assert np.abs(boxes[0] - boxes[1]).max() <= 4  # every region: the same box, to the draft's rounding
    cat = FakeCatalog({"logo": 2.0, "near_duplicate": 2.0})
    for i, v in enumerate(unit(np.random.default_rng(0), 6, embedder.dim)):
        cat.add(f"L{i}", f"brand{i}", "logo", v)
    row = check_image(jpg, embedder, cat)
    got = np.array([m["box"] for m in row["matches"] if m["kind"] == "logo"], float)
    assert len(got) and (got[:, [0, 2]] <= 3200).all() and (got[:, [1, 3]] <= 2400).all()
    assert all((np.abs(boxes[1] - g).max(1) <= 5).any() for g in got)  # a row's box is one of the file-pixel boxes
