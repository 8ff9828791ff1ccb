"""Crash safety and concurrency with real processes: kill -9 during an add, two writers at once,
readers while writers work."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import faiss
import numpy as np
import pytest
from PIL import Image

from ccu_vision import index as ix
from ccu_vision.catalog import Catalog
from ccu_vision.embedder import Embedder
from ccu_vision.errors import CatalogError

REPO = Path(__file__).resolve().parents[1]

# Adds references like `ccu-vision ref add/import --json` does: one JSON line per committed reference.
HELPER = r'''
import json, sys
from ccu_vision.catalog import Catalog
from ccu_vision.embedder import Embedder
from ccu_vision.references import add_paths, import_manifest

home, model, mode, flush_every, *sources = sys.argv[1:]
flush_every = int(flush_every)
emb = Embedder(model, threads=1)
cat = Catalog.open(home, emb.info)
if mode == "add":
    events = add_paths(cat, emb, sources, "Acme", "logo", batch_size=8)
else:
    events = import_manifest(cat, emb, sources[0], batch_size=8)
n = 0
for ev in events:
    if ev.ok:
        n += 1
        print(json.dumps({"ref_id": ev.ref_id, "path": ev.path, "created": ev.created}), flush=True)
        if flush_every and n % flush_every == 0:
            cat.flush()  # index files rewritten mid-run: a kill may land in the middle of it
    else:
        print(json.dumps({"error": ev.error, "path": ev.path}), flush=True)
cat.close()
print(json.dumps({"done": n}), flush=True)
'''


@pytest.fixture(scope="module")
def helper(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("helper") / "add_helper.py"
    p.write_text(HELPER, encoding="utf-8")
    return p


def make_images(folder: Path, n: int, seed: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        p = folder / f"img{i:04d}.png"
        Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(p)
        out.append(p)
    return out


def start(helper: Path, home: Path, model: Path, mode: str, sources: list[Path], flush_every: int = 0) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, str(helper), str(home), str(model), mode, str(flush_every), *map(str, sources)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=env,
    )


def finish(proc: subprocess.Popen) -> list[dict]:
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def db_state(home: Path) -> tuple[dict[str, str], dict[str, np.ndarray]]:
    db = sqlite3.connect(f"file:{home / 'catalog.db'}?mode=ro", uri=True)
    try:
        refs = dict(db.execute("SELECT ref_id, sha256 FROM refs"))
        ids = {k: np.sort(np.asarray([r[0] for r in db.execute("SELECT vec_id FROM vectors WHERE kind = ?", (k,))],
                                     dtype=np.int64)) for k in ("logo", "product")}
    finally:
        db.close()
    return refs, ids


def assert_home_consistent(home: Path, model_info) -> dict[str, str]:
    """Open as a writer (repairs stale index files on close), then compare files and DB directly."""
    with Catalog.open(home, model_info) as cat:
        assert cat.check() == []
    refs, ids = db_state(home)
    for kind in ("logo", "product"):
        np.testing.assert_array_equal(ix.index_ids(faiss.read_index(str(home / "index" / f"{kind}.faiss"))), ids[kind])
    stored = sorted(p.name.split(".")[0] for p in (home / "refs").iterdir())
    assert stored == sorted(refs)  # no orphan copies, none missing
    assert len(set(refs.values())) == len(refs)  # no content stored twice
    return refs


@pytest.mark.parametrize(
    ("mode", "kill_after", "flush_every"),
    [("add", 25, 0), ("import", 40, 6)],
)
def test_kill9_during_add_loses_nothing_printed(
    tmp_path: Path, helper: Path, tiny_model_path: Path, mode: str, kill_after: int, flush_every: int
):
    images = make_images(tmp_path / "imgs", 120, seed=kill_after)
    if mode == "add":
        sources = [tmp_path / "imgs"]
    else:
        manifest = tmp_path / "refs.csv"
        manifest.write_text("path,brand,kind\n" + "".join(f"imgs/{p.name},Acme,logo\n" for p in images), encoding="utf-8")
        sources = [manifest]
    home = tmp_path / "home"
    proc = start(helper, home, tiny_model_path, mode, sources, flush_every)
    printed: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        printed.append(json.loads(line)["ref_id"])
        if len(printed) == kill_after:
            os.kill(proc.pid, signal.SIGKILL)
            break
    # lines flushed before the kill count as printed (a torn last line, if any, was never printed whole)
    printed += [json.loads(line)["ref_id"] for line in proc.stdout if line.endswith("\n")]
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert kill_after <= len(printed) < len(images)

    info = Embedder(tiny_model_path).info
    with Catalog.open(home, info, readonly=True) as cat:  # a reader right after the crash
        assert all(cat.get(r) is not None for r in printed)
        assert cat.check() == []
    refs = assert_home_consistent(home, info)
    assert set(printed) <= set(refs)

    rerun = finish(start(helper, home, tiny_model_path, mode, sources, flush_every))
    assert rerun[-1] == {"done": len(images)}
    events = rerun[:-1]
    assert all("ref_id" in e for e in events)
    assert [e["created"] for e in events if e["ref_id"] in refs] == [False] * len(refs)
    assert sum(e["created"] for e in events) == len(images) - len(refs)
    final = assert_home_consistent(home, info)
    assert len(final) == len(images) and set(final) == {e["ref_id"] for e in events}


def test_two_writers_at_once_and_a_reader(tmp_path: Path, helper: Path, tiny_model_path: Path):
    a = make_images(tmp_path / "a", 40, seed=1)
    b = make_images(tmp_path / "b", 40, seed=2)
    shared = make_images(tmp_path / "shared", 15, seed=3)
    home = tmp_path / "home"  # does not exist yet: both race to create it
    pa = start(helper, home, tiny_model_path, "add", [tmp_path / "shared", tmp_path / "a"])
    pb = start(helper, home, tiny_model_path, "add", [tmp_path / "shared", tmp_path / "b"])
    ones = np.ones((1, Embedder(tiny_model_path).dim), np.float32)
    snapshots = 0
    while pa.poll() is None or pb.poll() is None:  # a scan opening the catalog while both write
        try:
            with Catalog.open(home, readonly=True) as cat:
                n = cat.count("logo")
                hits = cat.search("logo", ones, max(1, n))[0] if n else []
                assert len(hits) == n and all(cat.get(h[0]) is not None for h in hits)
                snapshots += 1
        except CatalogError as e:
            assert "no ccu-vision catalog" in str(e)  # not created yet
        time.sleep(0.02)  # leave the two writers most of the CPU
    ea, eb = finish(pa), finish(pb)
    assert ea[-1] == {"done": 55} and eb[-1] == {"done": 55}
    created = {}
    for e in ea[:-1] + eb[:-1]:
        created.setdefault(e["ref_id"], []).append(e["created"])
    assert len(created) == 95
    assert all(sorted(v) == [False, True] for v in created.values() if len(v) == 2)  # shared: stored once
    assert sum(len(v) == 2 for v in created.values()) == len(shared)
    refs = assert_home_consistent(home, Embedder(tiny_model_path).info)
    assert len(refs) == len(a) + len(b) + len(shared)
