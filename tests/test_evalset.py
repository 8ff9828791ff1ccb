"""Tests for ccu_vision.evalset (evaluation sets as files) and evaluate_embedder end to end on a tiny model."""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import ccu_vision.evalset as evalset_mod
from ccu_vision.embedder import Embedder
from ccu_vision.evalset import EvalConfig, build_eval_set, read_truth
from ccu_vision.evaluate import evaluate_embedder, rank_with_embedder
from ccu_vision.logos import is_heldout
from ccu_vision.photos import procedural_photos
from ccu_vision.synth import EDITS, STYLES
from ccu_vision.tinymodel import make_tiny_model

TINY = EvalConfig.tiny()


def _build_procedural(out: Path, cfg: EvalConfig = TINY) -> Path:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(evalset_mod, "find_photo_dir", lambda explicit=None: None)
        return build_eval_set(out, cfg)


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def proc_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _build_procedural(tmp_path_factory.mktemp("evalset") / "set")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("evalmodel") / "tiny.onnx", dim=16, seed=1)


def test_procedural_set_layout_and_counts(proc_set: Path) -> None:
    meta = json.loads((proc_set / "set.json").read_text())
    assert meta["photos"] == "procedural"
    assert meta["config"] == TINY.to_json()
    truth = read_truth(proc_set)
    logo = [t for t in truth if t["task"] == "logo"]
    dup = [t for t in truth if t["task"] == "dup"]
    assert len(truth) == len(logo) + len(dup)
    kinds = [t["kind"] for t in logo]
    assert kinds.count("registered") == TINY.n_brands * TINY.pos_per_brand
    assert kinds.count("unregistered") == TINY.n_unregistered
    assert kinds.count("clean") == TINY.n_clean
    assert meta["logo_queries"] == len(logo) and meta["dup_queries"] == len(dup)
    assert meta["registered"] == TINY.n_brands and meta["products"] == TINY.n_products
    assert sum(t["kind"] == "copy" for t in dup) == TINY.n_products * TINY.edits_per_product
    assert sum(t["kind"] == "lookalike" for t in dup) == TINY.n_lookalikes
    # query names are unique and every file named in the truth exists and decodes
    assert len({t["query"] for t in truth}) == len(truth)
    files = {str(p.relative_to(proc_set)) for p in (proc_set / "queries").rglob("*.jpg")}
    assert files == {t["query"] for t in truth}, "no stray or missing query files"
    for t in truth:
        with Image.open(proc_set / t["query"]) as im:
            assert im.format == "JPEG" and min(im.size) > 16
            assert max(im.size) <= 2 * TINY.max_side


def test_truth_rows_are_consistent_with_files(proc_set: Path) -> None:
    truth = read_truth(proc_set)
    logos = {p.stem for p in (proc_set / "logos").glob("*.png")}
    products = {p.stem for p in (proc_set / "products").glob("*.jpg")}
    assert len(logos) == TINY.n_brands and len(products) == TINY.n_products
    for slug in logos:
        assert is_heldout(slug), f"{slug}: evaluation brands must be held out of training"
        with Image.open(proc_set / "logos" / f"{slug}.png") as im:
            assert im.mode == "RGBA"
            assert np.asarray(im)[:, :, 3].max() == 255
    for t in truth:
        if t["task"] == "logo":
            if t["kind"] == "registered":
                assert t["brand"] in logos and t["title"]
            else:
                assert t["brand"] is None
            if t["kind"] == "unregistered":
                assert t["mark"] not in logos and is_heldout(t["mark"])
            if t["kind"] in ("registered", "unregistered"):
                assert TINY.size_min * 0.999 <= t["size_frac"] <= TINY.size_max * 1.001
                assert t["style"] in STYLES
                x0, y0, x1, y1 = t["box"]
                assert 0 <= x0 < x1 and 0 <= y0 < y1
            else:
                assert "box" not in t
        else:
            if t["kind"] == "copy":
                assert t["product"] in products
                assert t["edits"] and set(t["edits"]) <= set(EDITS)
            else:
                assert t["kind"] == "lookalike" and t["product"] is None
            assert t["class"] == "procedural"


def test_build_is_deterministic_and_idempotent(proc_set: Path, tmp_path: Path) -> None:
    again = _build_procedural(tmp_path / "again")
    assert _digest(again) == _digest(proc_set), "same config and seed -> byte-identical set"
    # a second build into the same folder reuses it (nothing rewritten)
    before = {p: p.stat().st_mtime_ns for p in again.rglob("*") if p.is_file()}
    assert _build_procedural(again) == again
    assert {p: p.stat().st_mtime_ns for p in again.rglob("*") if p.is_file()} == before
    # another seed is another set, rebuilt in place
    other = _build_procedural(again, replace(TINY, seed=99))
    assert json.loads((other / "set.json").read_text())["config"]["seed"] == 99
    assert read_truth(other) != read_truth(proc_set)


def test_training_brand_sets_for_fitting(proc_set: Path, tmp_path: Path) -> None:
    """brand_split="train" draws marks from training brands only (for fitting post-processing); the
    default stays held-out brands, and a set written before the option existed is still reused."""
    assert all(is_heldout(r["brand"]) for r in read_truth(proc_set) if r.get("brand"))
    fit = _build_procedural(tmp_path / "fit", replace(TINY, brand_split="train", n_unregistered=0, n_clean=0))
    rows = [r for r in read_truth(fit) if r["task"] == "logo"]
    assert len(rows) == TINY.n_brands * TINY.pos_per_brand and all(r["kind"] == "registered" for r in rows)
    assert not any(is_heldout(r["brand"]) for r in rows)
    assert not any(is_heldout(p.stem) for p in (fit / "logos").glob("*.png"))
    old = json.loads((proc_set / "set.json").read_text())
    del old["config"]["brand_split"]
    copy = tmp_path / "old"
    shutil.copytree(proc_set, copy)
    (copy / "set.json").write_text(json.dumps(old))
    before = _digest(copy)
    assert _build_procedural(copy) == copy and _digest(copy) == before
    with pytest.raises(ValueError, match="unknown split"):
        _build_procedural(tmp_path / "bad", replace(TINY, brand_split="everything"))


def test_badge_artwork_sets(tmp_path: Path) -> None:
    """ref_style="badge": references are opaque two-colour badges, and every marked listing shows a badge."""
    root = _build_procedural(tmp_path / "badge", replace(TINY, ref_style="badge"))
    for p in (root / "logos").glob("*.png"):
        arr = np.asarray(Image.open(p))
        assert arr.shape[2] == 4 and arr[0, 0, 3] == 0 and arr[arr.shape[0] // 2, 1, 3] == 255
        assert len(np.unique(arr[arr[:, :, 3] == 255][:, :3], axis=0)) > 1  # badge colour and mark ink
    marked = [r for r in read_truth(root) if r["task"] == "logo" and r["kind"] != "clean"]
    assert marked and all(r["style"] == "badge" for r in marked)
    with pytest.raises(ValueError, match="unknown ref_style"):
        _build_procedural(tmp_path / "bad", replace(TINY, ref_style="sticker"))


def test_clutter_sets(tmp_path: Path) -> None:
    """clutter=1: every logo listing (registered, unregistered, clean) is printed with clutter first and
    says so in its truth row; the default set has none; a share outside [0, 1] is refused."""
    root = _build_procedural(tmp_path / "clutter", replace(TINY, clutter=1.0))
    rows = [r for r in read_truth(root) if r["task"] == "logo"]
    assert {r["kind"] for r in rows} == {"registered", "unregistered", "clean"}
    assert all(r.get("clutter") for r in rows)
    plain = [r for r in read_truth(_build_procedural(tmp_path / "plain")) if r["task"] == "logo"]
    assert not any(r.get("clutter") for r in plain)
    with pytest.raises(ValueError, match="clutter must be a share"):
        _build_procedural(tmp_path / "bad", replace(TINY, clutter=1.5))


def test_training_brand_sets_letter_in_training_faces(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Clutter lettering of a training-brand set (for fitting) uses the training faces; evaluation sets
    keep the held-out ones."""
    asked: list[str] = []
    real = evalset_mod.font_split
    monkeypatch.setattr(evalset_mod, "font_split", lambda fonts, which: asked.append(which) or real(fonts, which))
    _build_procedural(tmp_path / "fit", replace(TINY, clutter=1.0, brand_split="train"))
    _build_procedural(tmp_path / "eval", replace(TINY, clutter=1.0))
    assert asked == ["train", "heldout"]


def test_style_mix_sets(tmp_path: Path) -> None:
    """styles: every marked listing (registered and unregistered) is drawn in a listed style; a stored
    set is reused for the same config after its JSON round trip; an unknown style is refused."""
    cfg = replace(TINY, styles=("tone", "texture"), n_brands=16, pos_per_brand=2)
    root = _build_procedural(tmp_path / "low", cfg)
    marked = [r for r in read_truth(root) if r["task"] == "logo" and r["kind"] != "clean"]
    assert marked and {r["style"] for r in marked} == {"tone", "texture"}
    stamp = (root / "set.json").stat().st_mtime_ns
    assert _build_procedural(tmp_path / "low", cfg) == root and (root / "set.json").stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match="EvalConfig.styles.*'neon'"):
        _build_procedural(tmp_path / "bad", replace(TINY, styles=("neon",)))


def test_marks_box_follows_white_padding(tmp_path: Path) -> None:
    """A listing padded to a square by its chrome keeps the mark's box on the mark (the photo moved)."""
    cfg = replace(TINY, n_unregistered=0, n_clean=0, n_products=0, n_lookalikes=0, seed=5)
    pad = 40

    def padded(img: Image.Image, rng: np.random.Generator) -> Image.Image:
        out = Image.new("RGB", (img.width + 2 * pad, img.height + 2 * pad), (255, 255, 255))
        out.paste(img.convert("RGB"), (pad, pad))
        return out

    sets = {}
    for name, chrome in (("plain", lambda img, rng: img.convert("RGB")), ("padded", padded)):
        with pytest.MonkeyPatch.context() as mp:  # same random stream in both: only the chrome differs
            mp.setattr(evalset_mod.synth, "listing_chrome", chrome)
            mp.setattr(evalset_mod.synth, "photo_effects", lambda img, rng, strength=1.0: img)
            sets[name] = _build_procedural(tmp_path / name, cfg)
    plain, padded_rows = read_truth(sets["plain"]), read_truth(sets["padded"])
    moved = 0
    for a, b in zip(plain, padded_rows, strict=True):
        ia = np.asarray(Image.open(sets["plain"] / a["query"]), np.float32)
        ib = np.asarray(Image.open(sets["padded"] / b["query"]), np.float32)
        if ib.shape == ia.shape:
            assert b["box"] == a["box"]
            continue
        moved += 1
        assert b["box"] == [v + pad for v in a["box"]]
        x0, y0, x1, y1 = a["box"]
        assert np.abs(ib[y0 + pad : y1 + pad, x0 + pad : x1 + pad] - ia[y0:y1, x0:x1]).mean() < 4.0
    assert moved >= 2


def test_build_from_a_photo_folder_with_classes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CCU_PHOTOS", raising=False)
    root = tmp_path / "photos"
    pics = procedural_photos(16, 200, seed=4)
    for i, arr in enumerate(pics):
        cls = ("shirt", "pants")[i % 2]
        (root / "test" / cls).mkdir(parents=True, exist_ok=True)
        Image.fromarray(arr).save(root / "test" / cls / f"{i:02d}.jpg", quality=90)
    (root / "train" / "shirt").mkdir(parents=True)  # other splits are ignored
    Image.fromarray(np.zeros((30, 30, 3), np.uint8)).save(root / "train" / "shirt" / "black.jpg")
    out = build_eval_set(tmp_path / "set", TINY, photos_dir=root)
    assert json.loads((out / "set.json").read_text())["photos"] == str(root)
    truth = read_truth(out)
    dup = [t for t in truth if t["task"] == "dup"]
    assert {t["class"] for t in dup} <= {"shirt", "pants"}
    prod_classes = {t["class"] for t in dup if t["kind"] == "copy"}
    assert all(t["class"] in prod_classes for t in dup if t["kind"] == "lookalike")
    # products are photos of the test split, downscaled to max_side
    for p in (out / "products").glob("*.jpg"):
        with Image.open(p) as im:
            assert max(im.size) == 200 and im.getpixel((0, 0)) != (0, 0, 0)


# ----------------------------------------------------------------------------- evaluate_embedder end to end


def test_evaluate_embedder_returns_metrics(proc_set: Path, tiny_model: Path) -> None:
    res = evaluate_embedder(Embedder(tiny_model), proc_set)
    assert res["model_id"] == "tiny-test"
    lm, dm = res["logo"], res["dup"]
    n_logo = TINY.n_brands * TINY.pos_per_brand + TINY.n_unregistered + TINY.n_clean
    assert lm["queries"] == n_logo and lm["positives"] == TINY.n_brands
    for k in ("recall@1", "recall@5", "ap", "tpr@0.01fpr", "threshold@fpr", "threshold@p95", "recall@p95",
              "by_size", "by_style"):
        assert k in lm
    assert 0 <= lm["recall@1"] <= lm["recall@5"] <= 1
    assert sum(v["n"] for v in lm["by_size"].values()) == TINY.n_brands
    for k in ("muap", "recall@p90", "recall@p99", "threshold@p95", "recall@p95", "per_edit_recall@p95"):
        assert k in dm
    assert dm["queries"] == TINY.n_products * TINY.edits_per_product + TINY.n_lookalikes
    assert dm["positives"] == TINY.n_products * TINY.edits_per_product
    assert 0 <= dm["muap"] <= 1
    json.dumps(res)  # reports are JSON-serialisable


def test_exact_copies_give_perfect_near_duplicate_scores(proc_set: Path, tiny_model: Path, tmp_path: Path) -> None:
    """Replace every edited copy by the product file itself: any embedder is then perfect on copies."""
    root = tmp_path / "exact"
    shutil.copytree(proc_set, root)
    for t in read_truth(root):
        if t["task"] == "dup" and t["kind"] == "copy":
            shutil.copyfile(root / "products" / f"{t['product']}.jpg", root / t["query"])
    emb = Embedder(tiny_model)
    res = evaluate_embedder(emb, root)
    dm = res["dup"]
    assert dm["muap"] == pytest.approx(1.0)
    assert dm["recall@p99"] == pytest.approx(1.0) and dm["recall@p95"] == pytest.approx(1.0)
    _, dup_ranked, _ = rank_with_embedder(emb, root)
    copies = [t for t in read_truth(root) if t["task"] == "dup"]
    for t, r in zip(copies, dup_ranked):
        if t["kind"] == "copy":
            assert r[0][0] == t["product"] and r[0][1] == pytest.approx(1.0, abs=1e-5)
