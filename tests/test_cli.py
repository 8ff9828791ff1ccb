"""The real `ccu-vision` CLI end to end on temp homes with the tiny model (CliRunner and subprocesses)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result
from PIL import Image, ImageDraw

import ccu_vision
from ccu_vision.cli import cli
from ccu_vision.tinymodel import make_tiny_model

REPO = Path(ccu_vision.__file__).resolve().parents[1]
EVIL = "<script>alert(1)</script>"
TH = {"logo": 0.995, "near_duplicate": 0.995, "precision": 0.95}


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # the tiny model scores any two natural-ish images fairly high; a strict threshold keeps
    # flags for exact copies (cosine 1.0) only
    return make_tiny_model(tmp_path_factory.mktemp("model") / "tiny.onnx", thresholds=TH)


@pytest.fixture()
def env(tmp_path: Path, tiny_model: Path) -> dict[str, str]:
    return {"CCU_MODEL": str(tiny_model), "CCU_HOME": str(tmp_path / "home"), "CCU_THREADS": "1"}


def run(env: dict[str, str], *args: str | Path) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args], env=env, catch_exceptions=False)


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def noise(path: Path, seed: int, size: tuple[int, int] = (120, 90)) -> Path:
    """A distinct synthetic photo: a random background with random coloured rectangles."""
    rng = np.random.default_rng(seed)
    img = Image.new("RGB", size, tuple(int(v) for v in rng.integers(0, 256, 3)))
    d = ImageDraw.Draw(img)
    for _ in range(4):
        x0, y0 = int(rng.integers(0, size[0] - 10)), int(rng.integers(0, size[1] - 10))
        w, h = int(rng.integers(5, size[0] // 2)), int(rng.integers(5, size[1] // 2))
        d.rectangle([x0, y0, x0 + w, y0 + h], fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def logo_png(path: Path, colour: tuple[int, int, int]) -> Path:
    img = Image.new("RGBA", (80, 80), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    d.ellipse([8, 8, 72, 72], fill=(*colour, 255))
    d.rectangle([30, 20, 50, 60], fill=(255, 255, 255, 255))
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


SVG = ('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24"><path fill="#111" '
       'd="M2 12 L12 2 L22 12 L12 22 Z"/><circle cx="12" cy="12" r="4" fill="#fff"/></svg>')


def no_traceback(r: Result) -> None:
    assert "Traceback" not in r.output


# ----------------------------------------------------------------------------- basics


def test_version_and_every_help_has_examples(env: dict[str, str]) -> None:
    r = run(env, "--version")
    assert r.exit_code == 0 and r.stdout.strip() == f"ccu-vision {ccu_vision.__version__}"
    commands = [[], ["ref"], ["ref", "add"], ["ref", "import"], ["ref", "list"], ["ref", "remove"],
                ["check"], ["scan"], ["reindex"], ["model"], ["model", "info"], ["demo"], ["train"],
                ["export"], ["bench"]]
    for cmd in commands:
        r = run(env, *cmd, "--help")
        assert r.exit_code == 0, (cmd, r.output)
        assert "Examples:" in r.stdout and "ccu-vision " in r.stdout.split("Examples:")[1], cmd


def test_usage_errors_exit_2(env: dict[str, str]) -> None:
    assert run(env, "scan", "x").exit_code == 2  # --out missing
    assert run(env, "ref", "add", "--brand", "B", "--kind", "banner", "x.png").exit_code == 2
    assert run(env, "nonsense").exit_code == 2


def test_a_bad_environment_value_is_named_as_such(env: dict[str, str]) -> None:
    r = run({**env, "CCU_THREADS": "abc"}, "model", "info")
    assert r.exit_code == 2
    assert "Invalid value for '--threads' (from $CCU_THREADS): 'abc' is not a valid integer." in r.output
    r = run(env, "--threads", "-1", "model", "info")  # given on the command line: no env hint
    assert r.exit_code == 2 and "'--threads': -1 is not in the range x>=0" in r.output, r.output
    assert run({**env, "CCU_THREADS": "2"}, "model", "info").exit_code == 0


def test_model_info(env: dict[str, str], tmp_path: Path) -> None:
    r = run(env, "model", "info", "--json")
    assert r.exit_code == 0
    info = json.loads(r.stdout)
    assert info["model_id"] == "tiny-test" and info["embed_dim"] == 16
    assert set(info["thresholds"]) >= {"logo", "near_duplicate"}
    r = run(env, "model", "info")
    assert r.exit_code == 0 and "tiny-test" in r.stdout and "thresholds" in r.stdout
    r = run(env, "--model", tmp_path / "nope.onnx", "model", "info")
    assert r.exit_code == 1 and r.stderr.strip().startswith("Error:") and "nope.onnx" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    no_traceback(r)


# ----------------------------------------------------------------------------- ref


def test_ref_add_list_remove(env: dict[str, str], tmp_path: Path) -> None:
    refs = tmp_path / "refs"
    a = logo_png(refs / "a.png", (200, 0, 0))
    svg = refs / "nested" / "mark.svg"
    svg.parent.mkdir(parents=True)
    svg.write_text(SVG, encoding="utf-8")
    r = run(env, "ref", "add", "--brand", "Acme", "--kind", "logo", refs, "--json")
    assert r.exit_code == 0, r.output
    rows = json_lines(r.stdout)
    assert len(rows) == 2
    for row in rows:
        assert set(row) == {"ref_id", "path", "brand", "kind"}
        assert row["brand"] == "Acme" and row["kind"] == "logo"
    ids = {Path(row["path"]).name: row["ref_id"] for row in rows}
    # same content again (also under another name): same ref_id, stored once
    b = refs.parent / "copy_of_a.png"
    shutil.copy(a, b)
    r = run(env, "ref", "add", "--brand", "Acme", "--kind", "logo", a, b, "--json")
    assert r.exit_code == 0
    assert {row["ref_id"] for row in json_lines(r.stdout)} == {ids["a.png"]}
    # a product photo, plus an unreadable file and a missing one: those fail, the photo is added
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"<html>not an image</html>")
    photo = noise(tmp_path / "shot.jpg", 1)
    r = run(env, "ref", "add", "--brand", "Other", "--kind", "product", bad, photo,
            tmp_path / "missing.png", "--json")
    assert r.exit_code == 1
    added = json_lines(r.stdout)
    assert [Path(x["path"]).name for x in added] == ["shot.jpg"]
    errs = r.stderr.strip().splitlines()
    assert len(errs) == 2 and all(e.startswith("Error: ") for e in errs)
    assert any("broken.jpg" in e for e in errs) and any("missing.png" in e for e in errs)
    no_traceback(r)

    r = run(env, "ref", "list", "--json")
    listed = json_lines(r.stdout)
    assert r.exit_code == 0 and len(listed) == 3
    assert {x["ref_id"] for x in listed} == {*ids.values(), added[0]["ref_id"]}
    for x in listed:
        assert {"ref_id", "brand", "kind", "source_path", "sha256", "added_at", "width", "height"} <= set(x)
    r = run(env, "ref", "list", "--brand", "Other")
    assert r.exit_code == 0 and added[0]["ref_id"] in r.stdout and ids["a.png"] not in r.stdout

    r = run(env, "ref", "remove", ids["a.png"])
    assert r.exit_code == 0 and "removed 1" in r.stdout
    r = run(env, "ref", "remove", ids["a.png"], "deadbeef")
    assert r.exit_code == 1 and "deadbeef" in r.stderr
    r = run(env, "ref", "list", "--json")
    assert {x["ref_id"] for x in json_lines(r.stdout)} == {ids["mark.svg"], added[0]["ref_id"]}


def test_ref_import_manifest(env: dict[str, str], tmp_path: Path) -> None:
    up = tmp_path / "upload"
    logo_png(up / "logos" / "x.png", (0, 90, 200))
    noise(up / "shots" / "p1.jpg", 2)
    noise(up / "shots" / "p2.jpg", 3)
    man = up / "catalog.csv"
    man.write_text("path,brand,kind\nlogos/x.png,Xeno,logo\nshots/p1.jpg,Xeno,product\n"
                   "shots/p2.jpg,Yak,product\nshots/nothere.jpg,Yak,product\n", encoding="utf-8")
    r = run(env, "ref", "import", man, "--json")
    assert r.exit_code == 1  # one listed file is missing
    rows = json_lines(r.stdout)
    assert [(Path(x["path"]).name, x["brand"], x["kind"]) for x in rows] == [
        ("x.png", "Xeno", "logo"), ("p1.jpg", "Xeno", "product"), ("p2.jpg", "Yak", "product")]
    assert "nothere.jpg" in r.stderr
    # re-import: idempotent, same ids
    r2 = run(env, "ref", "import", man, "--json")
    assert [x["ref_id"] for x in json_lines(r2.stdout)] == [x["ref_id"] for x in rows]
    assert len(json_lines(run(env, "ref", "list", "--json").stdout)) == 3


# ----------------------------------------------------------------------------- check / scan


def test_check_suspect_clear_and_missing(env: dict[str, str], tmp_path: Path) -> None:
    shot = noise(tmp_path / "official.png", 7)
    logo_png(tmp_path / "logo.png", (0, 120, 0))
    assert run(env, "ref", "add", "--brand", "Acme", "--kind", "product", shot).exit_code == 0
    assert run(env, "ref", "add", "--brand", "Acme", "--kind", "logo", tmp_path / "logo.png").exit_code == 0
    copy = tmp_path / "listing.png"
    shutil.copy(shot, copy)
    r = run(env, "check", copy, "--json")
    assert r.exit_code == 0, r.output
    row = json.loads(r.stdout)
    assert row["image"] == str(copy) and row["status"] == "ok" and row["verdict"] == "suspect"
    flag = next(f for f in row["flags"] if f["type"] == "near_duplicate")
    assert flag["brand"] == "Acme" and flag["score"] >= 0.999 and flag["threshold"] == TH["near_duplicate"]
    kinds = {m["kind"] for m in row["matches"]}
    assert kinds == {"logo", "product"}
    for m in row["matches"]:
        assert ("box" in m) == (m["kind"] == "logo")
        if m["kind"] == "logo":
            x0, y0, x1, y1 = m["box"]
            assert 0 <= x0 < x1 <= 120 and 0 <= y0 < y1 <= 90
    r = run(env, "check", copy)
    assert r.exit_code == 0
    assert "SUSPECT" in r.stdout and "Acme" in r.stdout and ">= threshold 0.995" in r.stdout
    other = noise(tmp_path / "other.png", 8)
    r = run(env, "check", other)
    assert r.exit_code == 0 and ": clear" in r.stdout and "< threshold" in r.stdout
    for bad in (tmp_path / "missing.jpg", tmp_path / "logo.png.html"):
        if bad.suffix == ".html":
            bad.write_text("<html></html>")
        r = run(env, "check", bad)
        assert r.exit_code == 1 and r.stdout == ""
        assert r.stderr.startswith("Error: ") and bad.name in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
        no_traceback(r)


def make_listings(root: Path, shot: Path) -> tuple[int, int]:
    """Listing folder: copies of the official shot, other photos, bad files. Returns (n_files, n_bad)."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(shot, root / "a_copy.png")
    for i in range(5):
        noise(root / ("deep/er" if i % 2 else "") / f"listing_{i}.jpg", 100 + i)
    (root / "zero.jpg").write_bytes(b"")
    (root / "page.jpg").write_text("<!doctype html><html></html>")
    (root / "trunc.jpg").write_bytes((root / "listing_0.jpg").read_bytes()[:200])
    return 9, 3


def test_scan_with_report_and_resume(env: dict[str, str], tmp_path: Path) -> None:
    shot = noise(tmp_path / "official.png", 11)
    r = run(env, "ref", "add", "--brand", EVIL, "--kind", "product", shot)
    assert r.exit_code == 0, r.output
    listings = tmp_path / "listings"
    n, n_bad = make_listings(listings, shot)
    out, report, summ = tmp_path / "res.jsonl", tmp_path / "rep.html", tmp_path / "summary.json"
    r = run(env, "scan", listings, "--out", out, "--report", report, "--summary-json", summ)
    assert r.exit_code == 0, r.output
    assert "images/s" in r.stdout and "suspect: 1" in r.stdout and "errors: 3" in r.stdout
    rows = json_lines(out.read_text(encoding="utf-8"))
    assert len(rows) == n and len({x["image"] for x in rows}) == n
    assert sum(x["status"] == "error" for x in rows) == n_bad
    for x in rows:
        if x["status"] == "error":
            assert x["verdict"] == "error" and x["error"] and x["flags"] == [] and x["matches"] == []
    sus = [x for x in rows if x["verdict"] == "suspect"]
    assert [Path(x["image"]).name for x in sus] == ["a_copy.png"]
    assert sus[0]["flags"][0]["brand"] == EVIL
    summary = json.loads(summ.read_text())
    assert summary["scanned"] == n and summary["errors"] == n_bad and summary["flagged"] == 1
    assert {"read", "decode", "embed", "search", "decide", "write"} <= set(summary["stages"])
    html = report.read_text(encoding="utf-8")
    assert EVIL not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    first_clear = min(html.index(Path(x["image"]).name) for x in rows if x["verdict"] == "clear")
    assert html.index("a_copy.png") < first_clear
    assert html.count("data:image/jpeg;base64,") == 2  # the listing beside its stored reference

    # simulated kill: the output ends mid-line; --resume completes it, nothing missing or twice
    data = out.read_bytes()
    lines = data.splitlines(keepends=True)
    out.write_bytes(b"".join(lines[:4]) + lines[4][:17])
    r = run(env, "scan", listings, "--out", out, "--resume", "--no-progress")
    assert r.exit_code == 0, r.output
    assert "5 already in" not in r.stdout and "4 already in" in r.stdout
    assert out.read_bytes() == data


def test_scan_manifest_and_errors(env: dict[str, str], tmp_path: Path) -> None:
    shot = noise(tmp_path / "official.png", 12)
    assert run(env, "ref", "add", "--brand", "Acme", "--kind", "product", shot).exit_code == 0
    man = tmp_path / "dump.jsonl"
    man.write_text(json.dumps({"image": "official.png", "listing_id": "L1", "title": "nice"}) + "\n"
                   + json.dumps({"image": "nothere.jpg", "listing_id": "L2"}) + "\n", encoding="utf-8")
    out = tmp_path / "r.jsonl"
    r = run(env, "scan", man, "--out", out)
    assert r.exit_code == 0, r.output
    rows = json_lines(out.read_text())
    assert [(x["listing_id"], x["status"], x["verdict"]) for x in rows] == [
        ("L1", "ok", "suspect"), ("L2", "error", "error")]
    assert "nothere.jpg" in rows[1]["image"] and rows[1]["error"]
    # a missing input or a malformed manifest: one-line error, exit 1
    r = run(env, "scan", tmp_path / "nowhere", "--out", out)
    assert r.exit_code == 1 and "nowhere" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    bad = tmp_path / "bad.csv"
    bad.write_text("picture,listing_id\nx.jpg,1\n")
    r = run(env, "scan", bad, "--out", out)
    assert r.exit_code == 1 and r.stderr.startswith("Error: ") and "bad.csv" in r.stderr
    no_traceback(r)


def test_calibrate_raises_thresholds_on_known_negatives(env: dict[str, str], tmp_path: Path) -> None:
    from ccu_vision.catalog import Catalog

    shot = noise(tmp_path / "official.png", 7)
    assert run(env, "ref", "add", "--brand", "Acme", "--kind", "product", shot).exit_code == 0
    assert run(env, "ref", "add", "--brand", "Acme", "--kind", "logo", logo_png(tmp_path / "l.png", (0, 90, 200))).exit_code == 0
    neg = tmp_path / "neg"
    for i in range(40):
        noise(neg / f"n{i:02d}.jpg", 500 + i)
    (neg / "broken.jpg").write_bytes(b"not an image")

    def thresholds() -> dict:
        cat = Catalog.open(Path(env["CCU_HOME"]), readonly=True)
        try:
            return cat.thresholds
        finally:
            cat.close()

    # dry run, empirical 10 %: at most 4 of the 40 readable negatives may score at or above a threshold
    r = run(env, "calibrate", neg, "--max-fpr", "0.1", "--confidence", "0", "--allow-lower", "--dry-run",
            "--json", "--no-progress")
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    assert rep["errors"] == 1 and not rep["written"] and "broken.jpg" in r.stderr
    for name in ("logo", "near_duplicate"):
        t = rep["thresholds"][name]
        assert t["negatives"] == 40 and t["allowed"] == 4 and t["flagged"] <= 4
        assert t["current"] == TH[name] and t["changed"]  # the tiny model scores noise far below 0.995
    assert thresholds()["logo"] == TH["logo"], "a dry run writes nothing"

    # without --allow-lower a threshold is only ever raised: here it is kept
    r = run(env, "calibrate", neg, "--max-fpr", "0.1", "--confidence", "0", "--no-progress")
    assert r.exit_code == 0 and "logo: 40 negatives, 0 flagged at 0.99500; at most 4 may be -> threshold kept" in r.stdout
    assert thresholds()["logo"] == TH["logo"]

    # written: a later scan of the same negatives flags at most the allowed share, per kind
    r = run(env, "calibrate", neg, "--max-fpr", "0.1", "--confidence", "0", "--allow-lower", "--no-progress")
    assert r.exit_code == 0 and "threshold now" in r.stdout, r.output
    th = thresholds()
    for name in ("logo", "near_duplicate"):
        assert th[name] == rep["thresholds"][name]["threshold"] < TH[name]
    r = run(env, "scan", neg, "--out", tmp_path / "r.jsonl", "--no-progress")
    rows = [row for row in json_lines((tmp_path / "r.jsonl").read_text()) if row["status"] == "ok"]
    for name in ("logo", "near_duplicate"):
        n_flag = sum(any(f["type"] == name for f in row["flags"]) for row in rows)
        assert n_flag == rep["thresholds"][name]["flagged"] <= 4
        top = sorted((max(m["score"] for m in row["matches"] if m["kind"] == ("logo" if name == "logo" else "product"))
                      for row in rows), reverse=True)
        assert top[4] < th[name], "a fifth negative would be flagged"

    # 95 % confidence with 40 negatives certifies nothing at 1 %: the highest negative bounds the threshold
    r = run(env, "calibrate", neg, "--json", "--no-progress")
    t = json.loads(r.stdout)["thresholds"]["logo"]
    assert t["allowed"] == 0 and t["flagged"] == 0 and t["threshold"] > th["logo"]
    assert thresholds()["logo"] == t["threshold"]

    empty = tmp_path / "empty"
    empty.mkdir()
    r = run(env, "calibrate", empty)
    assert r.exit_code == 1 and "no images found" in r.stderr and str(empty) in r.stderr
    no_traceback(r)


def test_model_mismatch_then_reindex(env: dict[str, str], tmp_path: Path) -> None:
    shot = noise(tmp_path / "official.png", 13)
    assert run(env, "ref", "add", "--brand", "Acme", "--kind", "product", shot).exit_code == 0
    other = make_tiny_model(tmp_path / "other.onnx", seed=1, model_id="tiny-other")
    env2 = {**env, "CCU_MODEL": str(other)}
    for args in (["check", shot], ["ref", "add", "--brand", "B", "--kind", "product", shot]):
        r = run(env2, *args)
        assert r.exit_code == 1, args
        assert "reindex" in r.stderr and "tiny-other" in r.stderr and "tiny-test" in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
        no_traceback(r)
    r = run(env2, "reindex")
    assert r.exit_code == 0 and "1" in r.stdout and "tiny-other" in r.stdout
    r = run(env2, "check", shot, "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["verdict"] == "suspect"
    assert run(env, "check", shot).exit_code == 1  # now the old model is the mismatched one


# ----------------------------------------------------------------------------- lazy commands


def test_demo_train_export_bench_are_lazy_passthroughs(env: dict[str, str], tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    calls: dict[str, object] = {}

    def fake_main(name: str):
        def main(argv: list[str]) -> int:
            calls[name] = argv
            lg = logging.getLogger("ccu_vision")  # the tool's own INFO progress must not be filtered by -v
            calls[name + ":logger"] = (lg.level, [type(h).__name__ for h in lg.handlers])
            return 3 if "--fail" in argv else 0
        return main

    for mod, name in (("ccu_vision.train.train", "train"), ("ccu_vision.train.export", "export"),
                      ("ccu_vision.bench", "bench")):
        monkeypatch.setitem(sys.modules, mod, types.SimpleNamespace(main=fake_main(name)))
    r = run(env, "train", "--photos", "p/", "--out", "runs/x", "--steps", "3")
    assert r.exit_code == 0 and calls["train"] == ["--photos", "p/", "--out", "runs/x", "--steps", "3"]
    assert calls["train:logger"] == (logging.NOTSET, [])
    r = run(env, "export", "--", "--help")
    assert r.exit_code == 0 and calls["export"] == ["--help"]
    r = run(env, "bench", "--smoke", "--fail")
    assert r.exit_code == 3 and calls["bench"] == ["--smoke", "--fail"]

    def demo_fn(out_dir: Path, embedder: object, echo) -> None:
        calls["demo"] = (out_dir, embedder.info.model_id)
        echo("demo done")

    monkeypatch.setitem(sys.modules, "ccu_vision.demo", types.SimpleNamespace(run_demo=demo_fn))
    r = run(env, "demo", "--out", tmp_path / "d")
    assert r.exit_code == 0 and "demo done" in r.stdout
    assert calls["demo"] == (tmp_path / "d", "tiny-test")


def test_missing_torch_or_module_is_one_line(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    real = importlib.import_module

    def fake_import(name: str, *a: object, **k: object):
        if name == "ccu_vision.train.train":
            raise ModuleNotFoundError("No module named 'torch'", name="torch")
        if name == "ccu_vision.bench":
            raise ModuleNotFoundError(f"No module named '{name}'", name=name)
        return real(name, *a, **k)

    monkeypatch.setattr(importlib, "import_module", fake_import)
    r = run(env, "train", "--out", "x")
    assert r.exit_code == 1 and "pip install 'ccu-vision[train]'" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    r = run(env, "bench")
    assert r.exit_code == 1 and "not available" in r.stderr
    monkeypatch.setitem(sys.modules, "ccu_vision.demo", None)  # import fails
    r = run(env, "demo")
    assert r.exit_code == 1 and r.stderr.startswith("Error: ") and "demo" in r.stderr
    no_traceback(r)


# ----------------------------------------------------------------------------- real processes


def sub_env(env: dict[str, str]) -> dict[str, str]:
    e = {**os.environ, **env}
    e["PYTHONPATH"] = str(REPO) + os.pathsep + e.get("PYTHONPATH", "")
    return e


def test_subprocess_entry_points(env: dict[str, str], tmp_path: Path) -> None:
    e = sub_env(env)
    p = subprocess.run([sys.executable, "-m", "ccu_vision", "--version"], env=e, capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0 and p.stdout.strip() == f"ccu-vision {ccu_vision.__version__}"
    missing = tmp_path / "nope é.jpg"
    p = subprocess.run([sys.executable, "-m", "ccu_vision.cli", "check", str(missing)], env=e,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 1 and p.stdout == ""
    assert p.stderr.startswith("Error: ") and "nope é.jpg" in p.stderr and "Traceback" not in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1
    script = shutil.which("ccu-vision", path=str(Path(sys.executable).parent))
    if script:  # installed console script (pip install -e .)
        p = subprocess.run([script, "model", "info", "--json"], env=e, capture_output=True, text=True,
                           timeout=60)
        assert p.returncode == 0 and json.loads(p.stdout)["model_id"] == "tiny-test"


def test_resume_after_real_kill(env: dict[str, str], tmp_path: Path) -> None:
    shot = noise(tmp_path / "official.png", 21)
    assert run(env, "ref", "add", "--brand", "Acme", "--kind", "product", shot).exit_code == 0
    dump = tmp_path / "dump"
    dump.mkdir()
    src = noise(tmp_path / "base.png", 22, (320, 240))
    data = src.read_bytes()
    n = 150
    for i in range(n):
        (dump / f"{i:04d}.png").write_bytes(data)
    shutil.copy(shot, dump / "0200_copy.png")
    out = tmp_path / "out.jsonl"
    cmd = [sys.executable, "-m", "ccu_vision", "scan", str(dump), "--out", str(out), "--no-progress",
           "--batch-size", "1", "--workers", "1"]
    proc = subprocess.Popen(cmd, env=sub_env(env), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    seen = 0
    while time.monotonic() < deadline and proc.poll() is None:
        seen = out.read_bytes().count(b"\n") if out.exists() else 0
        if seen >= 20:
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    killed_at = out.read_bytes().count(b"\n")
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read() if proc.stderr else ""
    assert 20 <= seen and killed_at < n + 1, "the scan finished before it could be killed"
    p = subprocess.run(cmd + ["--resume"], env=sub_env(env), capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    rows = json_lines(out.read_text(encoding="utf-8"))
    names = sorted(Path(x["image"]).name for x in rows)
    assert names == sorted(f.name for f in dump.iterdir())  # none missing, none twice
    assert all(x["status"] == "ok" for x in rows)
    assert [Path(x["image"]).name for x in rows if x["verdict"] == "suspect"] == ["0200_copy.png"]


def test_ref_add_refuses_a_blank_logo_naming_the_file(env: dict[str, str], tmp_path: Path) -> None:
    blank = tmp_path / "blank.svg"
    blank.write_text('<svg xmlns="http://www.w3.org/2000/svg" width="32" height="32"></svg>')
    good = noise(tmp_path / "good.png", 3)
    r = run(env, "ref", "add", "--brand", "Acme", "--kind", "logo", blank, good)
    assert r.exit_code == 1, r.output
    assert f"{blank}: blank image: fully transparent" in r.output
    listed = run(env, "ref", "list", "--json")
    assert listed.exit_code == 0 and [row["source_path"] for row in json_lines(listed.output)] == [str(good)]


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (a device where every write fails: disk full)")
def test_scan_onto_a_full_disk_is_one_line_naming_the_file(env: dict[str, str], tmp_path: Path) -> None:
    shot = noise(tmp_path / "refs" / "shot.png", 11)
    assert run(env, "ref", "add", "--brand", "Acme", "--kind", "product", shot).exit_code == 0
    dump = tmp_path / "dump"
    noise(dump / "a.png", 12)
    r = CliRunner().invoke(cli, ["scan", str(dump), "--out", "/dev/full"], env=env)
    assert r.exit_code == 1 and r.exception is not None and isinstance(r.exception, SystemExit)
    assert "Error: [Errno 28] No space left on device (writing results): '/dev/full'" in r.output
