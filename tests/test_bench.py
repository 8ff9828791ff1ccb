"""The benchmark: the smoke configuration end to end (what CI runs), its notebook, and its parts.

Never asserts wall-clock times: only that every row is there, sane, and consistent.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageOps

from ccu_vision.bench import baselines, clean_json, main, report
from ccu_vision.bench.accuracy import method_row, run_baseline
from ccu_vision.bench.faiss_scale import VectorSource, recall_at_k

REPO = Path(__file__).resolve().parents[1]
BASELINE_ROWS = ["phash", "dhash", "pdq", "pdq-dihedral", "orb"]


def _photos(folder: Path, n: int = 16, seed: int = 3) -> Path:
    from ccu_vision.photos import procedural_photos

    folder.mkdir(parents=True, exist_ok=True)
    for i, p in enumerate(procedural_photos(n, 320, seed=seed)):
        Image.fromarray(p).save(folder / f"p{i:02d}.jpg", quality=90)
    return folder


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory, tiny_model_path: Path) -> dict:
    """One smoke run of the whole bench (tiny model, tiny eval set, 20-image dump, 10k FAISS)."""
    base = tmp_path_factory.mktemp("bench")
    photos = _photos(base / "photos")
    out = base / "out"
    md = base / "BENCH.md"
    rc = main(["--smoke", "--model", str(tiny_model_path), "--photos", str(photos), "--out", str(out),
               "--cache", str(base / "cache"), "--work", str(base / "work"), "--write-md", str(md), "-q"])
    results = json.loads((out / "results.json").read_text())
    return {"rc": rc, "out": out, "md": md, "results": results, "base": base}


def test_smoke_run_succeeds_and_records_context(smoke: dict) -> None:
    assert smoke["rc"] == 0
    r = smoke["results"]
    assert r["schema"] == "ccu-vision-bench/1"
    assert r["config"]["name"] == "smoke" and r["config"]["dump_n"] == 20 and r["config"]["faiss_sizes"] == [10000]
    assert r["machine"]["cpus"] >= 1 and "onnxruntime" in r["machine"]["versions"]
    assert "commit" in r["git"]
    assert r["eval_set"]["registered"] == 12


def test_smoke_accuracy_rows(smoke: dict) -> None:
    acc = smoke["results"]["accuracy"]
    rows = {m["name"]: m for m in acc["methods"]}
    assert list(rows) == ["tiny-test", "imagenet-tf_efficientnet_lite0", *BASELINE_ROWS]
    assert rows["imagenet-tf_efficientnet_lite0"]["status"].startswith("not run: disabled")
    for name in ["tiny-test", *BASELINE_ROWS]:
        m = rows[name]
        why = baselines.unavailable(name) if name in BASELINE_ROWS else None
        if why:  # an optional dependency missing here: the row stays, saying so
            assert m["status"] == f"not run: {why}"
            continue
        assert m["status"] == "ok", (name, m["status"])
        for key in ("recall@1", "recall@5", "ap", "tpr@0.01fpr"):
            assert 0.0 <= m["logo"][key] <= 1.0
        assert m["logo"]["recall@1"] <= m["logo"]["recall@5"]
        for key in ("muap", "recall@p90", "recall@p99"):
            assert 0.0 <= m["dup"][key] <= 1.0
        assert m["dup"]["recall@p99"] <= m["dup"]["recall@p90"]
        assert m["logo"]["queries"] == 22 and m["dup"]["queries"] == 10
        for task in ("logo", "dup"):
            c = m["pr"][task]
            assert len(c["recall"]) == len(c["precision"]) > 0
            assert all(0 <= v <= 1 for v in c["recall"] + c["precision"])
            assert c["recall"] == sorted(c["recall"])
    assert rows["tiny-test"]["at_model_thresholds"]["logo"]["threshold"] == 0.9
    from ccu_vision.bench.accuracy import at_thresholds
    from ccu_vision.evalset import read_truth

    top1 = rows["tiny-test"]["top1"]
    assert len(top1["logo"]) == 22 and len(top1["dup"]) == 10
    ranked = {t: [[(k, s if s is not None else float("-inf"))] if k else [] for k, s in top1[t]] for t in top1}
    again = at_thresholds(read_truth(acc["eval_root"]), ranked["logo"], ranked["dup"], {"logo": 0.9, "near_duplicate": 0.9})
    assert again["logo"]["flagged"] == rows["tiny-test"]["at_model_thresholds"]["logo"]["flagged"]
    ci = rows["tiny-test"]["logo"]["ci95"]
    assert ci["recall@1"][0] <= rows["tiny-test"]["logo"]["recall@1"] <= ci["recall@1"][1]
    tables = {t.title: t.text() for t in report.accuracy_tables(smoke["results"])}
    ci_text = next(v for k, v in tables.items() if k.startswith("95 % bootstrap intervals"))
    assert "tiny-test" in ci_text and f"{ci['recall@1'][0]:.3f}-{ci['recall@1'][1]:.3f}" in ci_text
    misses = acc["misses"]
    assert misses["method"] == "tiny-test"
    for item in misses["logo"] + misses["dup"]:
        assert (Path(acc["eval_root"]) / item["query"]).is_file()
        assert item["truth"] is None or item["true_rank"] != 1


def test_smoke_speed_rows(smoke: dict) -> None:
    sp = smoke["results"]["speed"]
    assert sp["dump"]["images"] == 20 and 320 <= sp["dump"]["long_side_min"] <= sp["dump"]["long_side_max"] <= 640
    keys = ["decode_full", "decode_draft"] + ([] if baselines.unavailable("phash") else ["phash_1t", "phash"])
    for key in keys:
        assert sp["floor"][key]["images"] == 20 and sp["floor"][key]["images_per_s"] > 0
    scan = sp["scan"]
    assert scan["images"] == 20
    assert scan["summary"]["scanned"] == 20 and scan["summary"]["errors"] == 0
    assert scan["refs"] == {"logo": 12, "product": 6}
    assert scan["peak_rss_mb"] > 0
    assert set(scan["summary"]["stages"]) >= {"read", "decode", "embed", "search", "decide", "write"}
    emb = sp["embedder"]
    assert emb["batch"] == 4
    for key in ("onnx_fp32", "onnx_int8"):
        assert emb[key]["images_per_s"] > 0, (key, emb[key])
    if importlib.util.find_spec("torch") is None:
        assert emb["torch_eager"]["status"].startswith("not run: torch is not installed")
    else:
        assert emb["torch_eager"]["images_per_s"] > 0
        assert emb["torch_eager"]["torch_vs_onnx_cos_min"] > 0.999  # the counterpart really is the same model
    for key, v in emb["int8_drift"].items():
        assert -1.0 <= v <= 1.0 + 1e-6, key


def test_smoke_faiss_rows(smoke: dict) -> None:
    fz = smoke["results"]["faiss"]
    rows = fz["rows"]
    assert {r["n"] for r in rows} == {10000}
    assert [r["kind"] for r in rows] == ["flat", "hnsw", "hnsw", "ivfpq", "ivfpq+rerank"]
    assert rows[0]["recall@10"] == 1.0  # flat is the ground truth
    assert all(0.0 <= r["recall@10"] <= 1.0 for r in rows)
    assert [r["kind"] for r in rows if r["product_choice"]] == ["flat"]
    ivf = {r["kind"]: r for r in rows if r["kind"].startswith("ivfpq")}
    assert ivf["ivfpq+rerank"]["recall@10"] >= ivf["ivfpq"]["recall@10"]
    assert fz["product_kind"]["1000000"] == "hnsw"


def test_smoke_growth_rows(smoke: dict) -> None:
    rows = smoke["results"]["growth"]["rows"]
    assert [(r["images"], r["extra"]) for r in rows] == [(10, 0), (20, 0), (10, 40)]
    small = rows[0]["refs"]["logo"] + rows[0]["refs"]["product"]
    assert rows[2]["refs"]["logo"] + rows[2]["refs"]["product"] == small + 40
    assert all(r["summary"]["errors"] == 0 and r["peak_rss_mb"] > 0 for r in rows)


def test_smoke_targets_and_outputs(smoke: dict) -> None:
    r = smoke["results"]
    names = [t["name"] for t in r["targets"]]
    assert names == ["logo recall@1", "logo TPR@1%FPR", "near-dup muAP", "ahead of every baseline",
                     "scan vs pHash throughput", "ONNX Runtime vs torch eager", "1M refs (product's index)"]
    assert all(t["status"] in ("PASS", "MISS", "not measured") for t in r["targets"])
    assert r["targets"][-1]["status"] == "not measured"  # 1M only with --scale full
    for f in r["plots"].values():
        with Image.open(smoke["out"] / f) as im:
            assert im.format == "PNG" and im.width > 100
    md = smoke["md"].read_text()
    assert "Smoke configuration" in md and "| method | kind | logo R@1" in md and "not run: disabled" in md


def test_markdown_is_regenerated_from_results_alone(smoke: dict, capsys: pytest.CaptureFixture) -> None:
    md2 = smoke["base"] / "again.md"
    assert main(["--results", str(smoke["out"] / "results.json"), "--write-md", str(md2), "-q"]) == 0
    assert md2.read_text() == smoke["md"].read_text()
    assert "Targets" in capsys.readouterr().out


def test_cli_passes_arguments_through(smoke: dict) -> None:
    from click.testing import CliRunner

    from ccu_vision.cli import cli

    res = CliRunner().invoke(cli, ["bench", "--results", str(smoke["out"] / "results.json"), "-q"])
    assert res.exit_code == 0, res.output
    assert "Accuracy (same evaluation set, same run)" in res.output
    bad = CliRunner().invoke(cli, ["bench", "--only", "nonsense"])
    assert bad.exit_code == 2


def test_notebook_runs_on_smoke_results(smoke: dict) -> None:
    pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(REPO / "notebooks" / "bench.ipynb", as_version=4)
    old = os.environ.get("CCU_BENCH_RESULTS")
    os.environ["CCU_BENCH_RESULTS"] = str(smoke["out"] / "results.json")
    try:
        NotebookClient(nb, timeout=120, kernel_name="python3",
                       resources={"metadata": {"path": str(REPO / "notebooks")}}).execute()
    finally:
        if old is None:
            os.environ.pop("CCU_BENCH_RESULTS", None)
        else:
            os.environ["CCU_BENCH_RESULTS"] = old
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    images = sum("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "config smoke" in text and "thumbnails" in text
    assert images >= 2  # PR curves + at least one page of misses


# ----------------------------------------------------------------------------- parts


def test_missing_dependency_gives_a_not_run_row(smoke: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a, **k: None if name == "imagehash" else real(name, *a, **k))
    root = Path(smoke["results"]["accuracy"]["eval_root"])
    from ccu_vision.evalset import read_truth

    run = run_baseline("phash", root, read_truth(root), 10)
    row = method_row(run, read_truth(root))
    assert row["status"] == "not run: imagehash is not installed (pip install imagehash, or 'ccu-vision[bench]')"
    results = {"accuracy": {"methods": [row]}}
    text = report.accuracy_tables(results)[0].text()
    assert "phash" in text and "not run: imagehash" in text


def test_hamming_matches_brute_force() -> None:
    rng = np.random.default_rng(0)
    q = rng.integers(0, 256, (5, 8, 4), dtype=np.uint8)  # 5 queries, 8 variants, 32 bits
    r = rng.integers(0, 256, (7, 4), dtype=np.uint8)
    d = baselines.hamming(q, r)
    for i in range(5):
        for j in range(7):
            want = min(bin(int.from_bytes(bytes(q[i, v] ^ r[j]), "big")).count("1") for v in range(8))
            assert d[i, j] == want
    assert np.array_equal(baselines.hamming(q[:, 0], r), baselines.hamming(q[:, :1], r))


def test_rank_scores_breaks_ties_by_key_order() -> None:
    ranked = baselines.rank_scores(np.array([[-3.0, -1.0, -1.0, -7.0]]), ["a", "b", "c", "d"], k=3)
    assert ranked == [[("b", -1.0), ("c", -1.0), ("a", -3.0)]]


def _textured(seed: int, size: tuple[int, int] = (320, 240)) -> Image.Image:
    rng = np.random.default_rng(seed)
    im = Image.new("RGB", size, tuple(int(v) for v in rng.integers(0, 256, 3)))
    d = ImageDraw.Draw(im)
    for _ in range(40):
        x, y = rng.integers(0, size[0]), rng.integers(0, size[1])
        w, h = rng.integers(8, 60, 2)
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        if rng.random() < 0.5:
            d.rectangle([int(x), int(y), int(x + w), int(y + h)], fill=colour)
        else:
            d.ellipse([int(x), int(y), int(x + w), int(y + h)], outline=colour, width=3)
    return im


def test_pdq_dihedral_sees_through_a_flip() -> None:
    pytest.importorskip("pdqhash")
    im = _textured(1)
    flipped = ImageOps.mirror(im)
    ref = baselines.hash_image("pdq", im)[None]
    plain = baselines.hamming(baselines.hash_image("pdq", flipped)[None], ref)[0, 0]
    dihedral = baselines.hamming(baselines.hash_image("pdq-dihedral", flipped)[None], ref)[0, 0]
    assert dihedral <= 16 < plain


def test_orb_finds_a_rotated_scaled_copy() -> None:
    pytest.importorskip("cv2")
    refs = [(f"r{i}", _textured(10 + i)) for i in range(4)]
    query = Image.new("RGB", (480, 400), (250, 250, 250))
    query.paste(refs[2][1].rotate(12, expand=True, fillcolor=(250, 250, 250)).resize((300, 260)), (90, 70))
    ranked = baselines.rank_task("orb", refs, [lambda: query], k=4)[0]
    assert ranked[0][0] == "r2" and ranked[0][1] >= 10
    blank = baselines.rank_task("orb", refs, [lambda: Image.new("RGB", (200, 200), "white")], k=4)[0]
    assert blank == []


def test_hash_ranking_finds_an_exact_copy() -> None:
    pytest.importorskip("imagehash")
    refs = [(f"r{i}", _textured(20 + i)) for i in range(5)]
    for method in ("phash", "dhash"):
        ranked = baselines.rank_task(method, refs, [lambda: refs[3][1].copy()], k=5)[0]
        assert ranked[0] == ("r3", -0.0) or ranked[0] == ("r3", 0.0)


def test_vector_source_is_seeded_and_unit_norm() -> None:
    a = VectorSource(32, 10, seed=4).sample(500, stream=1)
    b = VectorSource(32, 10, seed=4).sample(500, stream=1)
    c = VectorSource(32, 10, seed=4).sample(500, stream=2)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert np.allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)


def test_recall_at_k() -> None:
    truth = np.array([[1, 2, 3, 4], [5, 6, 7, -1]])
    found = np.array([[4, 3, 9, 8], [5, 6, 7, 8]])
    assert recall_at_k(found, truth) == pytest.approx((2 / 4 + 3 / 3) / 2)


def _fake_results(p50: float, recall: float, mem: float) -> dict:
    ok = {"recall@1": 0.8, "recall@5": 0.9, "ap": 0.7, "tpr@0.01fpr": 0.65}
    weak = {"recall@1": 0.1, "recall@5": 0.2, "ap": 0.05, "tpr@0.01fpr": 0.01}
    return {
        "accuracy": {"methods": [
            {"name": "m", "role": "model", "status": "ok", "logo": ok, "dup": {"muap": 0.9, "recall@p90": 0.8}},
            {"name": "phash", "role": "baseline", "status": "ok", "logo": weak, "dup": {"muap": 0.5, "recall@p90": 0.3}},
            {"name": "orb", "role": "baseline", "status": "not run: cv2 is not installed"},
        ]},
        "speed": {"floor": {"phash": {"images_per_s": 100.0, "threads": 2}, "phash_1t": {"images_per_s": 60.0}},
                  "scan": {"images_per_s": 40.0}, "embedder": {"onnx_vs_torch": 2.5, "model_id": "m", "batch": 16}},
        "faiss": {"rows": [{"n": 1_000_000, "kind": "hnsw", "params": {"ef_search": 64}, "product_choice": True,
                            "single_p50_ms": p50, "recall@10": recall, "mem_mb": mem}]},
    }


def test_targets_pass_and_miss() -> None:
    t = {x["name"]: x for x in report.compute_targets(_fake_results(1.2, 0.97, 1500.0))}
    assert t["logo recall@1"]["status"] == "PASS" and t["near-dup muAP"]["status"] == "PASS"
    assert t["ahead of every baseline"]["status"] == "PASS"
    assert t["scan vs pHash throughput"]["status"] == "MISS" and t["scan vs pHash throughput"]["value"] == 0.4
    assert t["ONNX Runtime vs torch eager"]["status"] == "PASS"
    assert t["1M refs (product's index)"]["status"] == "PASS"
    for args in ((6.0, 0.97, 1500.0), (1.2, 0.90, 1500.0), (1.2, 0.97, 2500.0)):
        t = {x["name"]: x for x in report.compute_targets(_fake_results(*args))}
        assert t["1M refs (product's index)"]["status"] == "MISS"
    res = _fake_results(1.2, 0.97, 1500.0)
    res["accuracy"]["methods"][1]["dup"]["muap"] = 0.95  # a baseline beats the model on one metric
    t = {x["name"]: x for x in report.compute_targets(res)}
    assert t["ahead of every baseline"]["status"] == "MISS" and "phash" in t["ahead of every baseline"]["detail"]


def test_clean_json_makes_results_strict_json() -> None:
    out = clean_json({"a": math.inf, "b": -math.inf, "c": math.nan, "d": np.float32(0.5), "e": np.arange(2),
                      "f": (np.int64(3),), "g": Path("x")})
    assert out == {"a": "inf", "b": "-inf", "c": None, "d": 0.5, "e": [0, 1], "f": [3], "g": "x"}
    json.dumps(out, allow_nan=False)
