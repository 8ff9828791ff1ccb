"""Regressions found by an input-robustness audit of the CLI (bad or unusual user inputs).

* a file name that is not valid UTF-8 (Latin-1 bytes from an old archive) aborted a scan with a
  traceback and was refused by `ref add` with a codec message;
* `scan --out` could overwrite the scan input (manifest or image) or the catalog's database;
  a `--summary-json` / `--report` path that could not be written failed only after the scan;
* a model whose metadata declares an impossible preprocessing (query size 0) crashed `check`;
* HEIC photos vanished from folder scans without a word, and a photo without an image extension
  was parsed as a manifest ("not valid UTF-8; save the manifest as UTF-8").
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from conftest import make_jpeg, make_png

from ccu_vision.cli import cli
from ccu_vision.embedder import Embedder
from ccu_vision.errors import ImageError, ModelError
from ccu_vision.imageio import iter_image_files, load_image_bytes
from ccu_vision.tinymodel import TINY_PREPROCESS, make_tiny_model

HEIC_HEAD = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64

needs_utf8_fs = pytest.mark.skipif(
    sys.platform == "win32" or sys.getfilesystemencoding().lower() != "utf-8",
    reason="needs a POSIX file system with UTF-8 file-name decoding",
)


@pytest.fixture()
def env(tmp_path: Path, tiny_model_path: Path) -> dict[str, str]:
    """CLI environment: the tiny model and a fresh catalog home."""
    return {"CCU_MODEL": str(tiny_model_path), "CCU_HOME": str(tmp_path / "home"), "CCU_THREADS": "1"}


def run(env: dict[str, str], *args: str | Path) -> Result:
    """Invoke the CLI in-process; an unexpected exception fails the test with its traceback."""
    return CliRunner().invoke(cli, [str(a) for a in args], env=env, catch_exceptions=False)


def latin1_name(folder: Path, name: bytes = b"caf\xe9.jpg") -> Path:
    """A path whose file name is Latin-1 bytes (decoded by Python with a lone surrogate)."""
    return folder / os.fsdecode(name)


@needs_utf8_fs
def test_scan_and_resume_with_a_non_utf8_file_name(env: dict[str, str], tmp_path: Path) -> None:
    dump = tmp_path / "dump"
    make_jpeg(latin1_name(dump), seed=5)
    make_jpeg(dump / "ok.jpg", seed=6)
    out, report = tmp_path / "r.jsonl", tmp_path / "r.html"
    r = run(env, "ref", "add", "--brand", "Acme", "--kind", "product", dump / "ok.jpg")
    assert r.exit_code == 0, r.output
    r = run(env, "scan", dump, "--out", out, "--report", report, "--no-progress")
    assert r.exit_code == 0, r.output
    raw = out.read_bytes()
    raw.decode("utf-8")  # the results file stays valid UTF-8
    rows = [json.loads(line) for line in raw.splitlines()]
    assert [r["status"] for r in rows] == ["ok", "ok"]
    assert rows[0]["image"] == str(latin1_name(dump))  # reads back to the very same path
    assert report.is_file()
    r = run(env, "scan", dump, "--out", out, "--resume", "--no-progress")
    assert r.exit_code == 0 and "2 already in" in r.output
    assert len(out.read_bytes().splitlines()) == 2  # nothing scanned twice


@needs_utf8_fs
def test_ref_add_accepts_a_non_utf8_file_name(env: dict[str, str], tmp_path: Path) -> None:
    src = make_png(latin1_name(tmp_path / "refs", b"logo-\xe9t\xe9.png"), seed=9)
    r = run(env, "ref", "add", "--brand", "Acme", "--kind", "logo", src, "--json")
    assert r.exit_code == 0, r.output
    (ev,) = [json.loads(line) for line in r.stdout.splitlines()]
    r = run(env, "ref", "list", "--json")
    (rec,) = [json.loads(line) for line in r.stdout.splitlines()]
    assert rec["ref_id"] == ev["ref_id"] and rec["source_path"].endswith("logo-\\xe9t\\xe9.png")
    assert Path(rec["stored_path"]).read_bytes() == src.read_bytes()


def test_scan_refuses_outputs_that_would_overwrite_inputs_or_the_catalog(env: dict[str, str], tmp_path: Path) -> None:
    photo = make_jpeg(tmp_path / "p.jpg", seed=1)
    assert run(env, "ref", "add", "--brand", "Acme", "--kind", "product", photo).exit_code == 0
    manifest = tmp_path / "dump.csv"
    manifest.write_text("image,listing_id\np.jpg,1\n", encoding="utf-8")
    before = {p: p.read_bytes() for p in (photo, manifest)}
    db = Path(env["CCU_HOME"]) / "catalog.db"
    cases = [
        ([manifest, "--out", manifest], "is the scan input"),
        ([photo, "--out", photo], "is the scan input"),
        ([tmp_path, "--out", photo], "is one of the images to scan"),
        ([manifest, "--out", tmp_path / "r.jsonl", "--report", tmp_path / "r.jsonl"], "is also given as --out"),
        ([manifest, "--out", db], "catalog"),
        ([manifest, "--out", tmp_path / "r.jsonl", "--summary-json", photo / "s.json"], "is a file, not a folder"),
    ]
    for args, reason in cases:
        r = run(env, "scan", *args, "--no-progress")
        assert r.exit_code == 2 and reason in r.output, (args, r.output)
        assert "Traceback" not in r.output
    assert {p: p.read_bytes() for p in before} == before
    assert not (tmp_path / "r.jsonl").exists()  # refused before scanning anything
    with sqlite3.connect(db) as con:
        assert con.execute("SELECT COUNT(*) FROM refs").fetchone() == (1,)
    # results beside the catalog (not one of its files) are fine; a new summary folder is created
    r = run(env, "scan", manifest, "--out", Path(env["CCU_HOME"]) / "results.jsonl",
            "--summary-json", tmp_path / "new" / "s.json", "--no-progress")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "new" / "s.json").is_file()


def test_model_with_impossible_preprocessing_is_a_model_error(tmp_path: Path) -> None:
    for key, value in (("query_size", 0), ("ref_size", -64), ("region_scales", []), ("std", [0, 0.5, 0.5])):
        path = make_tiny_model(tmp_path / f"{key}.onnx", preprocess={**TINY_PREPROCESS, key: value})
        with pytest.raises(ModelError, match=f"ccu.{key}"):
            Embedder(path)


def test_check_with_a_bad_model_is_one_line(env: dict[str, str], tmp_path: Path) -> None:
    bad = make_tiny_model(tmp_path / "bad.onnx", preprocess={**TINY_PREPROCESS, "query_size": 0})
    r = run({**env, "CCU_MODEL": str(bad)}, "check", make_jpeg(tmp_path / "p.jpg"))
    assert r.exit_code == 1 and "bad.onnx: bad model metadata: ccu.query_size" in r.output


def test_heic_is_named_and_reported_not_skipped(env: dict[str, str], tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="HEIC/HEIF image"):
        load_image_bytes(HEIC_HEAD, "IMG_0001.HEIC")
    dump = tmp_path / "dump"
    make_jpeg(dump / "a.jpg")
    (dump / "IMG_0001.HEIC").write_bytes(HEIC_HEAD)
    (dump / "notes.txt").write_text("x")
    assert [p.name for p in iter_image_files(dump)] == ["IMG_0001.HEIC", "a.jpg"]
    out = tmp_path / "r.jsonl"
    assert run(env, "ref", "add", "--brand", "Acme", "--kind", "product", dump / "a.jpg").exit_code == 0
    assert run(env, "scan", dump, "--out", out, "--no-progress").exit_code == 0
    rows = {Path(r["image"]).name: r for r in map(json.loads, out.read_text().splitlines())}
    assert rows["IMG_0001.HEIC"]["status"] == "error" and "HEIC" in rows["IMG_0001.HEIC"]["error"]
    assert rows["a.jpg"]["status"] == "ok"


def test_photo_without_image_extension_is_scanned_not_read_as_manifest(env: dict[str, str], tmp_path: Path) -> None:
    photo = make_jpeg(tmp_path / "p.jpg")
    odd = tmp_path / "p.jpg_large"
    odd.write_bytes(photo.read_bytes())
    assert run(env, "ref", "add", "--brand", "Acme", "--kind", "product", photo).exit_code == 0
    out = tmp_path / "r.jsonl"
    r = run(env, "scan", odd, "--out", out, "--no-progress")
    assert r.exit_code == 0, r.output
    (row,) = map(json.loads, out.read_text().splitlines())
    assert row["image"] == str(odd) and row["status"] == "ok"
