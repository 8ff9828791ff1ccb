"""Keypoint verification of logo candidates (ccu_vision.logo_verify): settings, inlier counts on
seeded synthetic marks, the threshold gate, the matcher, the model file and the scan."""

from __future__ import annotations

import dataclasses
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont
from test_proposals import photo
from test_text_scan import CFG as TEXT_CFG
from test_text_scan import TextCatalog, _cli_with_logo, models  # noqa: F401 - the module fixture

from ccu_vision import logo_verify as lv
from ccu_vision.embedder import Embedder
from ccu_vision.errors import ModelError
from ccu_vision.logo_verify import LogoVerifyConfig, count_inliers, features, query_gray, ref_features
from ccu_vision.matcher import TextContext, match_photos
from ccu_vision.text import TextLine
from ccu_vision.train.logo_verify import attach
from ccu_vision.verify import KeypointCache

CFG = LogoVerifyConfig()


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.truetype("DejaVuSans-Bold.ttf", size)
    except OSError:
        return ImageFont.load_default(size)


def mark(seed: int, word: str) -> Image.Image:
    """A transparent brand mark: a seeded polygon badge with a word on it (corners SIFT can find)."""
    rng = np.random.default_rng(seed)
    im = Image.new("RGBA", (240, 160), (0, 0, 0, 0))
    d = ImageDraw.Draw(im)
    pts = [(float(x), float(y)) for x, y in zip(rng.uniform(5, 235, 7), rng.uniform(5, 155, 7))]
    d.polygon(sorted(pts, key=lambda p: math.atan2(p[1] - 80, p[0] - 120)), fill=(20, 40, 160, 255))
    d.text((18, 50), word, fill=(240, 200, 30, 255), font=_font(52))
    return im


def listing(seed: int, logo: Image.Image | None, angle: float = 12.0, scale: float = 0.7) -> Image.Image:
    """A seeded noisy 'photo' (smooth colour blobs) with ``logo`` pasted rotated and scaled."""
    rng = np.random.default_rng(seed)
    small = rng.integers(60, 200, (6, 8, 3), dtype=np.uint8)
    bg = Image.fromarray(small).resize((640, 480), Image.BICUBIC)
    if logo is not None:
        m = logo.resize((round(logo.width * scale), round(logo.height * scale)), Image.LANCZOS)
        m = m.rotate(angle, expand=True, resample=Image.BICUBIC)
        bg.paste(m, (200, 150), m)
    return bg


# ----------------------------------------------------------------------------- settings


def test_config_round_trip_and_refusals() -> None:
    cfg = dataclasses.replace(CFG, weight=3.0, floor=3, cap=10, outline=True)
    assert LogoVerifyConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert cfg.key() != CFG.key() and len(cfg.key()) == 16
    for bad, why in (({**CFG.to_dict(), "method": "orb/9"}, "unknown logo verification method"),
                     ({**CFG.to_dict(), "shiny": 1}, "unknown logo verification settings"),
                     ({**CFG.to_dict(), "floor": 12, "cap": 12}, "bad logo verification settings"),
                     ({**CFG.to_dict(), "weight": float("nan")}, "bad logo verification settings"),
                     ({**CFG.to_dict(), "outline": "yes"}, "bad logo verification settings")):
        with pytest.raises(ValueError, match=why):
            LogoVerifyConfig.from_dict(bad)
    assert lv.parse_config("") is None
    with pytest.raises(ModelError, match="m.onnx: bad ccu.logo_verify"):
        lv.parse_config('{"method": "x"}', "m.onnx")
    with pytest.raises(ModelError, match="m.onnx: bad ccu.logo_verify"):
        lv.parse_config("[1, 2]", "m.onnx")


def test_bonus_is_the_clipped_ramp_in_logit_units() -> None:
    assert CFG.bonus(0) == 0.0 and CFG.bonus(CFG.floor) == 0.0 and CFG.bonus(100) == CFG.weight
    mid = (CFG.floor + CFG.cap) // 2
    assert CFG.bonus(mid) == pytest.approx(CFG.weight * (mid - CFG.floor) / (CFG.cap - CFG.floor))
    for p in (1e-4, 0.3, 0.9, 0.999):
        z = math.log(p / (1 - p)) + CFG.weight
        assert CFG.apply(p, CFG.cap) == pytest.approx(1 / (1 + math.exp(-z)), rel=1e-9)
        assert CFG.apply(p, 0) == pytest.approx(p, rel=1e-9)


# ----------------------------------------------------------------------------- inliers


def _jpeg(im: Image.Image) -> Image.Image:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=90)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


RIGHT, WRONG = 10, 4  # inliers the pasted mark reaches at least; unrelated marks at most (these seeds)


def test_the_pasted_mark_verifies_and_unrelated_ones_do_not() -> None:
    acme, other = mark(1, "ACME"), mark(2, "ZOLT")
    for angle, scale, seed in ((12.0, 0.7, 5), (-25.0, 0.45, 6), (0.0, 1.2, 7), (40.0, 0.3, 8), (5.0, 2.0, 9)):
        for shot in (listing(seed, acme, angle, scale), _jpeg(listing(seed, acme, angle, scale))):
            q = features(query_gray(shot, CFG))
            assert len(q) > 20
            right = count_inliers(q, ref_features(acme, CFG), CFG)
            wrong = count_inliers(q, ref_features(other, CFG), CFG)
            assert right >= RIGHT, (angle, scale, right)
            assert wrong <= WRONG, (angle, scale, wrong)
    q_clean = features(query_gray(listing(8, None), CFG))
    assert count_inliers(q_clean, ref_features(acme, CFG), CFG) <= WRONG
    assert count_inliers(lv.EMPTY, ref_features(acme, CFG), CFG) == 0


def test_a_light_on_dark_print_verifies_through_the_inverted_views() -> None:
    acme = mark(1, "ACME")
    a = np.asarray(acme)
    neg = Image.fromarray(np.dstack([255 - a[:, :, :3], a[:, :, 3]]))  # the same mark printed in negative
    q = features(query_gray(listing(9, neg, 8.0, 0.8), CFG))
    assert count_inliers(q, ref_features(acme, CFG), CFG) >= RIGHT


def test_query_canvas_and_reference_views() -> None:
    g = query_gray(Image.new("RGB", (400, 300), (10, 20, 30)), CFG)
    assert g.shape == (768, 1024) and g.dtype == np.uint8
    g = query_gray(Image.new("RGB", (3000, 1500)), CFG)
    assert g.shape == (512, 1024)
    views = lv.ref_views(mark(1, "ACME"), CFG)
    assert len(views) == 4 and max(views[0].shape) == CFG.ref_side + 2 * CFG.border
    assert len(lv.ref_views(mark(1, "ACME"), dataclasses.replace(CFG, outline=True))) == 6
    assert len(lv.ref_views(Image.new("RGB", (200, 100), (200, 0, 0)), CFG)) == 2  # opaque: no mask views
    assert lv.ref_views(Image.new("RGBA", (50, 50), (0, 0, 0, 0)), CFG) == []  # nothing drawn
    assert len(features(np.zeros((8, 8), np.uint8))) == 0


# ----------------------------------------------------------------------------- the gate


def test_gate_skips_only_candidates_that_could_not_be_flagged() -> None:
    rng = np.random.default_rng(0)
    for _ in range(2000):
        p, th = float(rng.uniform(0, 1)), float(rng.uniform(0.05, 0.999))
        if not lv.should_verify(p, th, CFG):
            assert CFG.apply(p, 10_000) < th  # not even the largest bonus reaches the threshold
        else:
            assert CFG.apply(p, 10_000) >= th - 1e-12
    assert lv.should_verify(0.01, float("inf"), CFG) and not lv.should_verify(0.99, 1.5, CFG)


def test_verify_candidates_raises_the_best_candidates_in_place() -> None:
    scores = {"a": 0.9, "b": 0.5, "c": 0.4, "d": 0.1, "e": 0.05, "f": 0.01}
    inl = {"a": 2, "b": 20, "c": 7, "d": 12, "e": 0, "f": 30}
    q = lv.Features(np.zeros((3, 2), np.float32), np.zeros((3, 128), np.uint8))
    calls = []

    def fake_count(query, ref, cfg):
        return inl[ref]

    orig = lv.count_inliers
    lv.count_inliers = fake_count
    try:
        before = dict(scores)
        got = lv.verify_candidates(scores, lambda: calls.append(1) or q, lambda k: k, CFG)
        assert got == {k: inl[k] for k in "abcde"}  # the five best; f is not a candidate
        assert scores == {**{k: CFG.apply(before[k], inl[k]) for k in "abcde"}, "f": 0.01}
        assert calls == [1]
        # a threshold none can reach with the largest bonus: nothing verified, keypoints never taken
        low = {"a": 1e-6, "b": 1e-7}
        assert lv.verify_candidates(low, lambda: calls.append(2) or q, lambda k: k, CFG, 0.99) == {}
        assert calls == [1] and low == {"a": 1e-6, "b": 1e-7}
        # an unreadable photo or reference: not verified, scores untouched
        s2 = {"a": 0.5, "b": 0.4}
        assert lv.verify_candidates(s2, lambda: None, lambda k: k, CFG) == {} and s2 == {"a": 0.5, "b": 0.4}
        assert lv.verify_candidates(s2, lambda: q, lambda k: None if k == "a" else k, CFG) == {"b": 20}
        assert s2["a"] == 0.5
    finally:
        lv.count_inliers = orig


def test_keypoint_cache_computes_each_reference_once_and_stays_bounded() -> None:
    loads, computes = [], []
    cache = KeypointCache(lambda r: loads.append(r) or (None if r == "bad" else r.upper()), None, max_items=2,
                          compute=lambda x: computes.append(x) or f"kp:{x}", what="logo")
    assert cache.get("a") == "kp:A" and cache.get("a") == "kp:A" and computes == ["A"]
    assert cache.get("bad") is None and cache.get("bad") is None and loads.count("bad") == 1
    cache.get("b")  # 'a' is the least recently used of three: dropped
    assert cache.get("a") == "kp:A" and computes == ["A", "B", "A"]


# ----------------------------------------------------------------------------- matcher, model, scan


class FakeRefs:
    def __init__(self, feats: dict) -> None:
        self.feats = feats

    def get(self, ref_id: str):
        return self.feats.get(ref_id)


def test_matcher_verifies_after_text_exactly_as_apply(models) -> None:  # noqa: F811
    _, text = models
    emb = Embedder(text)
    pe = emb.embed_photos([photo(11)])[0]
    refs = emb.embed_logos([photo(10 + i).crop((30, 20, 80, 60)) for i in range(4)])
    cat = TextCatalog(refs)
    before = {m["ref_id"]: m["score"] for m in match_photos([pe], cat, top_k=10, region_k=4)[0].matches if m["kind"] == "logo"}
    # a logo_text threshold between the scores: the best candidates can reach it, the weakest cannot
    lo, hi = min(before.values()), max(before.values())
    cat.thresholds = {**cat.thresholds, "logo_text": CFG.apply(math.sqrt(lo * hi), CFG.cap)}
    acme, other = mark(1, "ACME"), mark(2, "ZOLT")
    query = features(query_gray(listing(5, acme), CFG))
    feats = {"r0": ref_features(acme, CFG), "r1": ref_features(other, CFG),
             "r2": ref_features(acme, CFG), "r3": ref_features(other, CFG)}
    ctx = TextContext(TEXT_CFG, {}, {})
    lines = [[TextLine("nothing here", 0.9, (0, 0, 5, 5))]]
    plain = match_photos([pe], cat, top_k=10, region_k=4, text=ctx, texts=lines)[0]
    before = {m["ref_id"]: m["score"] for m in plain.matches if m["kind"] == "logo"}
    verifier = lv.LogoVerifier(CFG, FakeRefs(feats))
    res = match_photos([pe], cat, top_k=10, region_k=4, text=ctx, texts=lines, logo_verifier=verifier,
                       logo_queries=[lambda: query])[0]
    got = {m["ref_id"]: m for m in res.matches if m["kind"] == "logo"}
    assert set(got) == set(before)
    raised = skipped = 0
    for r, p in before.items():
        if not lv.should_verify(p, cat.thresholds["logo_text"], CFG):  # cannot be flagged: not verified
            assert "inliers" not in got[r] and got[r]["score"] == p
            skipped += 1
            continue
        n = count_inliers(query, feats[r], CFG)
        assert got[r]["inliers"] == n
        assert got[r]["score"] == pytest.approx(CFG.apply(p, n), abs=1e-4)
        raised += n >= CFG.cap
    assert raised >= 1 and skipped >= 1
    scores = [m["score"] for m in res.matches if m["kind"] == "logo"]
    assert scores == sorted(scores, reverse=True)
    for f in res.flags:
        if f["type"] == "logo":
            assert f["score"] >= 0.8 and "inliers" in f
    # without text evidence the verifier is not applied (the plain logo threshold is calibrated without it)
    bare = match_photos([pe], cat, top_k=10, region_k=4, logo_verifier=verifier, logo_queries=[lambda: query])[0]
    assert all("inliers" not in m for m in bare.matches)
    assert [m["score"] for m in bare.matches] == [m["score"] for m in match_photos([pe], cat, top_k=10, region_k=4)[0].matches]


def test_attach_and_model_file(models, tmp_path: Path) -> None:  # noqa: F811
    fused, text = models
    cfg = dataclasses.replace(CFG, weight=3.0)
    out = attach(text, cfg, tmp_path / "v.onnx", model_id="tiny-verify", logo_text=0.95,
                 calibration={"negatives": {"logo_text": 11}}, command=["attach", "--weight", "3"])
    emb = Embedder(out)
    assert emb.logo_verify == cfg and emb.info.model_id == "tiny-verify"
    assert emb.info.thresholds["logo_text"] == 0.95 and emb.info.thresholds["negatives"]["logo_text"] == 11
    assert Embedder(text).logo_verify is None
    with pytest.raises(ValueError, match="own model id"):
        attach(text, cfg, tmp_path / "x.onnx", model_id="tiny-text", logo_text=0.95)
    with pytest.raises(ValueError, match="needs ccu.text_scoring"):
        attach(fused, cfg, tmp_path / "y.onnx", model_id="y", logo_text=0.95)
    with pytest.raises(ValueError, match="probability"):
        attach(text, cfg, tmp_path / "z.onnx", model_id="z", logo_text=1.5)
    assert not any((tmp_path / n).exists() for n in ("x.onnx", "y.onnx", "z.onnx"))
    # a file that claims verification without text scoring is refused when loaded
    import onnx

    m = onnx.load(str(fused))
    p = m.metadata_props.add()
    p.key, p.value = "ccu.logo_verify", json.dumps(cfg.to_dict())
    onnx.save(m, str(tmp_path / "bad.onnx"))
    with pytest.raises(ModelError, match="needs ccu.text_scoring"):
        Embedder(tmp_path / "bad.onnx")


def test_scan_and_check_verify_the_registered_mark(models, tmp_path: Path, monkeypatch) -> None:  # noqa: F811
    """The real CLI: a registered mark pasted into a listing is verified (its match carries inliers
    and scores above the same model without verification); an unrelated listing's matches do not rise."""
    import ccu_vision.text as text_mod

    _, text = models

    class Reader:  # the listing shows the brand's name: its candidates reach the verification gate
        def read(self, img, how=None, source_width=None):
            return [TextLine("ACME", 0.95, (10, 10, 90, 30))]

        def read_logo(self, img):
            return []

    monkeypatch.setattr(text_mod, "default_reader", lambda: Reader())
    model = attach(text, CFG, tmp_path / "v.onnx", model_id="tiny-verify", logo_text=0.9)
    acme = mark(1, "ACME")
    shots = tmp_path / "listings"
    shots.mkdir()
    listing(5, acme).save(shots / "hit.jpg", quality=92)
    listing(6, mark(3, "QUUX")).save(shots / "miss.jpg", quality=92)
    rows = {}
    for m in (model, text):
        (tmp_path / m.stem).mkdir()
        env, run, _ = _cli_with_logo(m, tmp_path / m.stem)
        acme.save(tmp_path / "acme.png")
        assert run("ref", "add", "--brand", "Acme", "--kind", "logo", tmp_path / "acme.png").exit_code == 0
        out = tmp_path / f"{m.stem}.jsonl"
        r = run("scan", shots, "--out", out)
        assert r.exit_code == 0, r.output
        rows[m.stem] = {Path(json.loads(ln)["image"]).name: json.loads(ln) for ln in out.read_text().splitlines()}
        r = run("check", shots / "hit.jpg", "--json")
        assert r.exit_code == 0, r.output
        rows[m.stem + "-check"] = json.loads(r.stdout)
    hit = {m["brand"]: m for m in rows["v"]["hit.jpg"]["matches"] if m["kind"] == "logo"}
    plain = {m["brand"]: m for m in rows["text"]["hit.jpg"]["matches"] if m["kind"] == "logo"}
    assert hit["Acme"]["inliers"] >= RIGHT
    assert hit["Acme"]["score"] == pytest.approx(CFG.apply(plain["Acme"]["score"], hit["Acme"]["inliers"]), abs=2e-4)
    assert rows["v-check"]["matches"] == rows["v"]["hit.jpg"]["matches"]  # check == scan
    assert all("inliers" not in m for m in rows["text"]["hit.jpg"]["matches"])
    miss = {m["brand"]: m for m in rows["v"]["miss.jpg"]["matches"] if m["kind"] == "logo"}
    for b, m in miss.items():
        assert m.get("inliers", 0) <= WRONG, (b, m)


def test_rank_with_embedder_verifies_as_the_scan_does(models, tiny_eval_set: Path, monkeypatch) -> None:  # noqa: F811
    import ccu_vision.text as text_mod
    from ccu_vision import imageio
    from ccu_vision.evalset import read_truth
    from ccu_vision.evaluate import rank_with_embedder

    class Reader:
        def read(self, img, how=None, source_width=None):
            return []

        def read_logo(self, img):
            return []

    monkeypatch.setattr(text_mod, "default_reader", lambda: Reader())
    _, text = models
    model = attach(text, CFG, tiny_eval_set.parent / "rank-v.onnx", model_id="tiny-verify", logo_text=0.9)
    base, _, _ = rank_with_embedder(Embedder(text), tiny_eval_set, k=5, text=True)
    got, _, _ = rank_with_embedder(Embedder(model), tiny_eval_set, k=5, text=True)
    rows = [t for t in read_truth(tiny_eval_set) if t["task"] == "logo"]
    assert len(got) == len(base) == len(rows)
    for t, b, g in zip(rows, base, got):
        q = features(query_gray(Image.open(tiny_eval_set / t["query"]).convert("RGB"), CFG))
        want = dict(b)
        for slug, p in b[: CFG.candidates]:
            ref = ref_features(imageio.load_image(tiny_eval_set / "logos" / f"{slug}.png", keep_alpha=True), CFG)
            want[slug] = CFG.apply(p, count_inliers(q, ref, CFG))
        assert g == sorted(want.items(), key=lambda kv: (-kv[1], kv[0]))[:5]

