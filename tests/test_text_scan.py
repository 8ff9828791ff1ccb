"""Text evidence through the model file, the matcher, the scan and the CLI (tiny fused model)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image, ImageDraw, ImageFont
from test_proposals import DIM, BruteCatalog, photo, random_head
from test_scoring import fused_cfg

from ccu_vision.cli import cli
from ccu_vision.embedder import Embedder
from ccu_vision.errors import CcuError
from ccu_vision.matcher import TextContext, match_photos
from ccu_vision.scan import text_context
from ccu_vision.text import TextLine, TextScoring, combine
from ccu_vision.tinymodel import make_tiny_model
from ccu_vision.train.logo_scoring import attach as attach_scoring
from ccu_vision.train.proposals import attach as attach_head
from ccu_vision.train.text_scoring import attach

CFG = TextScoring(beta=6.0, gamma=-4.0)
HAS_OCR = importlib.util.find_spec("rapidocr_onnxruntime") is not None


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny fused model, and the same file with text scoring and a logo_text threshold."""
    d = tmp_path_factory.mktemp("text")
    base = make_tiny_model(d / "base.onnx", dim=DIM, seed=4)
    head = attach_head(base, random_head(np.random.default_rng(0)), d / "head.onnx", boxes=2, model_id="tiny-prop")
    fused = attach_scoring(head, fused_cfg(np.random.default_rng(1)), d / "fused.onnx", model_id="tiny-fused")
    text = attach(fused, CFG, d / "text.onnx", model_id="tiny-text", logo_text=0.9,
                  calibration={"negatives": {"logo_text": 10}}, command=["attach", "--model-id", "tiny-text"])
    return fused, text


def test_attach_writes_text_scoring_and_its_threshold(models, tmp_path: Path) -> None:
    fused, text = models
    emb = Embedder(text)
    assert emb.text_scoring == CFG and emb.info.model_id == "tiny-text"
    assert emb.info.thresholds["logo_text"] == 0.9 and emb.info.thresholds["negatives"] == {"logo_text": 10}
    assert "python scripts/text_evidence.py attach --model-id tiny-text" in emb.info.extra["train_command"]
    assert Embedder(fused).text_scoring is None
    with pytest.raises(ValueError, match="its own model id"):
        attach(fused, CFG, tmp_path / "x.onnx", model_id="tiny-fused", logo_text=0.9)
    plain = make_tiny_model(tmp_path / "plain.onnx", dim=DIM)
    with pytest.raises(ValueError, match="fused"):
        attach(plain, CFG, tmp_path / "y.onnx", model_id="y", logo_text=0.9)
    assert not (tmp_path / "x.onnx").exists() and not (tmp_path / "y.onnx").exists()


class TextCatalog(BruteCatalog):
    thresholds = {"logo": 0.5, "logo_text": 0.8, "near_duplicate": 0.9}


def test_matcher_adds_text_evidence_exactly_as_combine(models) -> None:
    _, text = models
    emb = Embedder(text)
    pe = emb.embed_photos([photo(11)])[0]
    refs = emb.embed_logos([photo(10 + i).crop((30, 20, 80, 60)) for i in range(4)])
    cat = TextCatalog(refs)  # reference r<i> belongs to brand b<i>
    base = match_photos([pe], cat, top_k=10, region_k=4)[0]
    before = {m["ref_id"]: m["score"] for m in base.matches if m["kind"] == "logo"}
    listed = sorted(before, key=lambda r: -before[r])
    boosted = listed[-1]  # the weakest listed reference gets its brand read in the photo
    missing = next(f"r{i}" for i in range(4) if f"r{i}" not in before) if len(before) < 4 else None
    keys = {f"b{boosted[1:]}": [f"brand{boosted[1:]}x"]}
    text_only = {}
    if missing is not None:
        keys[f"b{missing[1:]}"] = ["zzbrandonly"]
        text_only[f"b{missing[1:]}"] = missing
    lines = [TextLine(f"BRAND{boosted[1:]}X", 0.97, (1, 2, 30, 12)), TextLine("zzbrandonly", 0.9, (5, 40, 60, 52))]
    ctx = TextContext(CFG, keys, text_only)
    res = match_photos([pe], cat, top_k=10, region_k=4, text=ctx, texts=[lines])[0]
    got = {m["ref_id"]: m for m in res.matches if m["kind"] == "logo"}
    want = combine(before, lambda r: f"b{r[1:]}", {b: q for b, q in
                   ((f"b{boosted[1:]}", 0.97),) + (((f"b{missing[1:]}", 0.9),) if missing else ())},
                   text_only, CFG)
    assert set(got) == set(want)
    for r, p in want.items():
        assert got[r]["score"] == pytest.approx(p, abs=1e-5)
    assert got[boosted]["score"] > before[boosted] and got[boosted]["text"] == f"BRAND{boosted[1:]}X"
    assert got[boosted]["text_match"] == pytest.approx(0.97)
    if missing is not None:
        assert got[missing]["box"] == [5, 40, 60, 52]  # listed by its text: the text's box
    assert res.text == [ln.text for ln in lines] and res.to_row()["text"] == res.text
    for f in res.flags:  # flags answer to the threshold calibrated for text-evidence scores
        assert f["type"] != "logo" or (f["threshold"] == 0.8 and f["score"] >= 0.8)
    assert "text" not in base.to_row()
    # no text read: the scores are the image scores and only the threshold changes
    none = match_photos([pe], cat, top_k=10, region_k=4, text=ctx, texts=[[]])[0]
    assert {m["ref_id"]: m["score"] for m in none.matches if m["kind"] == "logo"} == before


def test_text_context_is_off_on_on_or_refused(models, tmp_path: Path) -> None:
    fused, text = models
    cat = TextCatalog(np.zeros((1, DIM), np.float32))
    cat.home, cat.list_refs = tmp_path, (lambda: [])
    assert text_context(Embedder(fused), cat, None) == (None, None)
    assert text_context(Embedder(text), cat, False) == (None, None)
    with pytest.raises(CcuError, match="no text scoring"):
        text_context(Embedder(fused), cat, True)
    old = BruteCatalog(np.zeros((1, DIM), np.float32))  # thresholds without logo_text: an older catalog
    with pytest.raises(CcuError, match="logo_text"):
        text_context(Embedder(text), old, True)
    if HAS_OCR:
        ctx, reader = text_context(Embedder(text), cat, None)
        assert ctx is not None and ctx.cfg == CFG and reader is not None


def _word_photo(path: Path, word: str) -> Path:
    img = Image.fromarray(np.asarray(photo(3).resize((480, 360))))
    d = ImageDraw.Draw(img)
    d.rectangle([40, 130, 440, 230], fill=(245, 245, 240))
    try:
        font = ImageFont.truetype("DejaVuSans-Bold.ttf", 44)
    except OSError:
        font = ImageFont.load_default(44)
    d.text((60, 145), word, fill=(15, 15, 20), font=font)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def _cli_with_logo(model: Path, tmp_path: Path):
    """(env, run, logo): a CLI runner on a fresh home with ``model``, a red disc registered as Robinhood's logo."""
    env = {"CCU_MODEL": str(model), "CCU_HOME": str(tmp_path / "home"), "CCU_THREADS": "1"}
    run = lambda *a: CliRunner().invoke(cli, [str(x) for x in a], env=env, catch_exceptions=False)  # noqa: E731
    logo = tmp_path / "logo.png"
    im = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    ImageDraw.Draw(im).ellipse([8, 8, 56, 56], fill=(200, 0, 0, 255))
    im.save(logo)
    r = run("ref", "add", "--brand", "Robinhood", "--kind", "logo", logo)
    assert r.exit_code == 0, r.output
    return env, run, logo


@pytest.mark.skipif(not HAS_OCR, reason="OCR engine not installed")
def test_cli_check_and_scan_read_the_brand_name(models, tmp_path: Path) -> None:
    fused, text = models
    env, run, logo = _cli_with_logo(text, tmp_path)
    assert (tmp_path / "home" / "index" / "text-cache.json").exists()  # read at add time
    listing = _word_photo(tmp_path / "listings" / "shirt.jpg", "ROBINHOOD")
    r = run("check", listing, "--json")
    assert r.exit_code == 0, r.output
    row = json.loads(r.stdout)
    assert any("ROBINHOOD" in t.upper() for t in row["text"])
    m = next(m for m in row["matches"] if m["kind"] == "logo")
    assert m["brand"] == "Robinhood" and m["text_match"] > 0.8
    r = run("check", listing, "--no-text", "--json")
    assert "text" not in json.loads(r.stdout)
    out = tmp_path / "r.jsonl"
    r = run("scan", tmp_path / "listings", "--out", out, "--summary-json", tmp_path / "s.json")
    assert r.exit_code == 0, r.output
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["text"] is True and summary["stages"]["text"]["images"] == 1
    assert json.loads(out.read_text())["matches"][0]["brand"] == "Robinhood"
    # a model without text scoring: --text is refused in one line
    env.update(CCU_MODEL=str(fused), CCU_HOME=str(tmp_path / "h2"))
    assert run("ref", "add", "--brand", "Robinhood", "--kind", "logo", logo).exit_code == 0
    r = CliRunner().invoke(cli, ["check", str(listing), "--text"], env=env)
    assert r.exit_code == 1 and "text evidence is not available" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_rank_with_embedder_adds_text_as_the_scan_does(models, tiny_eval_set: Path, monkeypatch) -> None:
    import ccu_vision.text as text_mod
    from ccu_vision.evalset import read_truth
    from ccu_vision.evaluate import rank_with_embedder
    from ccu_vision.text import brand_keys, rerank

    fused, text = models
    root = tiny_eval_set
    slugs = sorted(p.stem for p in (root / "logos").glob("*.png"))
    target = next(s for s in slugs if len(brand_keys(s)) == 1)

    class Reader:  # every photo "shows" one brand's name; logos carry no lettering
        def read(self, img, how=None, source_width=None):
            return [TextLine(target.upper(), 0.95, (0, 0, 5, 5))]

        def read_logo(self, img):
            return []

    monkeypatch.setattr(text_mod, "default_reader", lambda: Reader())
    emb = Embedder(text)
    base, _, _ = rank_with_embedder(emb, root, k=5)
    got, _, _ = rank_with_embedder(emb, root, k=5, text=True)
    n = sum(t["task"] == "logo" for t in read_truth(root))
    assert len(got) == len(base) == n
    for b, g in zip(base, got):
        assert g == rerank(b, {target: 0.95}, CFG, 5)
        assert g[0][0] == target or target in dict(b)  # the named brand rises (to the top unless already listed)
    with pytest.raises(ValueError, match="no text scoring"):
        rank_with_embedder(Embedder(fused), root, k=5, text=True)


def test_scan_reads_photos_as_the_model_file_says(models, tmp_path: Path, monkeypatch) -> None:
    """A file's ``photo`` setting decides the OCR canvas; boxes come back in the listing's pixels."""
    import ccu_vision.text as text_mod
    from ccu_vision.text import PhotoOCR

    fused, _ = models
    how = PhotoOCR(320, True, False)
    model = attach(fused, TextScoring(6.0, -4.0, photo=how), tmp_path / "exact.onnx", model_id="tiny-exact",
                   logo_text=0.9)
    seen = []

    class Reader:
        def read(self, img, how_=None, source_width=None):
            seen.append((img.size, how_, source_width))
            return [TextLine("ROBINHOOD", 0.95, (100, 120, 900, 300))]

        def read_logo(self, img):
            return []

    monkeypatch.setattr(text_mod, "default_reader", lambda: Reader())
    assert Embedder(model).text_scoring.photo == how
    _, run, _ = _cli_with_logo(model, tmp_path)
    photo = tmp_path / "in" / "big.jpg"
    photo.parent.mkdir()
    Image.new("RGB", (1600, 1000), (90, 120, 150)).save(photo)
    out = tmp_path / "r.jsonl"
    r = run("scan", photo.parent, "--out", out, "--summary-json", tmp_path / "s.json")
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "s.json").read_text())["text"] is True
    assert seen == [((320, 200), how, 1600)]
    row = json.loads(out.read_text())
    m = next(m for m in row["matches"] if m["brand"] == "Robinhood")
    assert m["text_match"] > 0.9 and m["text"] == "ROBINHOOD"
