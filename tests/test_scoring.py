"""Tests for a model's logo scoring (ccu.logo_scoring): extra head crops and the evidence fusion."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from test_proposals import DIM, BruteCatalog, photo, random_head

from ccu_vision.embedder import (
    CROP_MARGIN,
    Embedder,
    combine_logo_scores,
    dense_logo_scores,
    logo_stage_matrix,
)
from ccu_vision.errors import ModelError
from ccu_vision.scoring import DEFAULT_FEATURES, FEATURES, LogoScoring, candidate_features, fuse, parse_config
from ccu_vision.tinymodel import make_tiny_model
from ccu_vision.train.logo_scoring import attach, fit, fit_logistic, parse_features
from ccu_vision.train.proposals import attach as attach_head

K = len(DEFAULT_FEATURES)


def fused_cfg(rng: np.random.Generator, margins: tuple[float, ...] = (0.0, 0.4),
              features: tuple[str, ...] = DEFAULT_FEATURES) -> LogoScoring:
    k = len(features)
    return LogoScoring(margins, 5, rng.uniform(-0.5, 0.5, k), rng.uniform(0.2, 1.0, k), rng.standard_normal(k), -1.0,
                       features)


@pytest.fixture(scope="module", params=["default", "all"])
def models(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny model with a 2-box proposal head, and the same file with a fused scoring (margins 0, 0.4)
    over the seven default features or over all of them."""
    d = tmp_path_factory.mktemp("scoring")
    base = make_tiny_model(d / "base.onnx", dim=DIM, seed=4)
    head = attach_head(base, random_head(np.random.default_rng(0)), d / "head.onnx", boxes=2, model_id="tiny-prop")
    features = parse_features(request.param)
    fused = attach(head, fused_cfg(np.random.default_rng(1), features=features), d / "fused.onnx",
                   model_id="tiny-fused", command=["attach", "--model-id", "tiny-fused"])
    assert Embedder(fused).logo_scoring.features == features
    return head, fused


def test_scoring_metadata_round_trips_and_bad_metadata_is_refused() -> None:
    assert parse_config("") is None
    cfg = fused_cfg(np.random.default_rng(0))
    back = parse_config(cfg.to_json(), "m.onnx")
    assert back.head_margins == (0.0, 0.4) and back.candidates == 5 and back.fused
    assert np.allclose(back.weights, cfg.weights) and back.bias == cfg.bias
    assert not parse_config(LogoScoring((0.3,)).to_json()).fused
    good = json.loads(cfg.to_json())
    bad = {
        "not JSON": "{",
        "unsupported logo scoring": json.dumps({**good, "format": "ccu-logo-scoring/9"}),
        "head_margins in": json.dumps({**good, "head_margins": [2.0]}),
        "candidates >= 1": json.dumps({**good, "candidates": 0}),
        "over features": json.dumps({**good, "fusion": {**good["fusion"], "features": ["score"]}}),
        "over features ": json.dumps({**good, "fusion": {**good["fusion"], "features": ["x", *FEATURES[1:K]]}}),
        "over features  ": json.dumps({**good, "fusion": {**good["fusion"], "features": ["score"] * K}}),
        "bad shapes": json.dumps({**good, "fusion": {**good["fusion"], "std": [0.0] * K}}),
        "incomplete": json.dumps({**good, "fusion": {"features": list(FEATURES)}}),
    }
    for reason, raw in bad.items():
        with pytest.raises(ModelError, match=f"m.onnx: .*{reason.strip()}"):
            parse_config(raw, "m.onnx")
    # a fusion over another subset of the features this version computes reads back with its names
    sub = fused_cfg(np.random.default_rng(2), features=("crop2", "score", "crop_margin"))
    back = parse_config(sub.to_json(), "m.onnx")
    assert back.features == ("crop2", "score", "crop_margin") and np.allclose(back.weights, sub.weights)
    assert parse_features("all") == FEATURES and parse_features("default") == DEFAULT_FEATURES
    assert parse_features("crop2, margin") == ("crop2", "margin")
    for text in ("crop2,nope", "crop2,crop2", ","):
        with pytest.raises(ValueError, match="--features"):
            parse_features(text)


def test_candidate_features_compare_with_other_brands() -> None:
    # references 0 and 1 are one brand (two drawings), 2 and 3 two others
    score = np.array([0.80, 0.79, 0.50, 0.30])
    region = np.array([0.7, 0.6, 0.5, 0.2])
    crop = np.array([[0.5, 0.9, 0.1, 0.0],     # best: ref 1 (brand 0)
                     [0.2, 0.1, 0.6, 0.3],     # best: ref 2 (brand 1)
                     [-np.inf] * 4])           # a crop this photo does not have
    cand, f = candidate_features(score, region, crop, 1.5, np.array([0, 0, 1, 2]), 3)
    assert cand.tolist() == [0, 1, 2]
    assert np.allclose(f[:, 0], score[:3]) and np.allclose(f[:, 1], region[:3])
    assert np.allclose(f[:, 2], [0.5, 0.9, 0.6])  # best existing crop
    assert np.allclose(f[:, 3], [0.30, 0.29, 0.50 - 0.80])  # the same brand's other drawing is no rival
    assert np.allclose(f[:, 4], [0.5, 0.5, 0.5])  # votes by brand
    assert np.allclose(f[:, 5], [0.35, 0.5, 0.35]) and np.allclose(f[:, 6], 1.5)
    # one brand per reference: the margin is against the runner-up
    _, f1 = candidate_features(score, region, crop, 0.0, np.arange(4), 2)
    assert np.allclose(f1[:, 3], [0.01, -0.01]) and np.allclose(f1[:, 4], [0.0, 0.5])
    # the newer features: second-best crop, and the region and crop stages' own margins by brand
    c2, rm, cm = (FEATURES.index(n) for n in ("crop2", "region_margin", "crop_margin"))
    assert np.allclose(f[:, c2], [0.2, 0.1, 0.1])
    assert np.allclose(f[:, rm], [0.7 - 0.5, 0.6 - 0.5, 0.5 - 0.7])
    assert np.allclose(f[:, cm], [0.5 - 0.6, 0.9 - 0.6, 0.6 - 0.9])
    assert np.allclose(f1[:, rm], [0.1, -0.1]) and np.allclose(f1[:, cm], [0.5 - 0.9, 0.9 - 0.6])
    # one crop only: the second-best crop is the best
    _, f2 = candidate_features(score, region, crop[:1], 0.0, np.arange(4), 2)
    assert np.allclose(f2[:, c2], [0.5, 0.9])


def test_fuse_uses_the_features_the_file_names() -> None:
    rng = np.random.default_rng(4)
    n = 10
    score, region = rng.uniform(0, 1, n), rng.uniform(0, 1, n)
    crop = rng.uniform(0, 1, (5, n))
    only = LogoScoring((), 4, np.zeros(2), np.ones(2), np.array([3.0, -2.0]), 0.5, ("crop_margin", "crop2"))
    out = fuse(only, score, region, crop, 0.3)
    cand, f = candidate_features(score, region, crop, 0.3, np.arange(n), 4)
    z = 3.0 * f[:, FEATURES.index("crop_margin")] - 2.0 * f[:, FEATURES.index("crop2")] + 0.5
    assert np.allclose(out[cand], 1 / (1 + np.exp(-z))) and np.isfinite(out).sum() == 4


def test_fuse_scores_only_the_candidates() -> None:
    rng = np.random.default_rng(3)
    n = 12
    score, region = rng.uniform(0, 1, n), rng.uniform(0, 1, n)
    crop = rng.uniform(0, 1, (4, n))
    only_votes = LogoScoring((), 3, np.zeros(K), np.ones(K), np.eye(K)[FEATURES.index("votes")] * 4, 0.0)
    out = fuse(only_votes, score, region, crop, None)
    top3 = np.argsort(-score)[:3]
    assert np.isfinite(out).sum() == 3 and np.isfinite(out[top3]).all()
    assert ((out[top3] > 0) & (out[top3] < 1)).all()
    votes = np.array([np.mean(crop.argmax(1) == c) for c in top3])
    assert np.allclose(out[top3], 1 / (1 + np.exp(-4 * votes)))


def test_fit_logistic_finds_the_separating_direction_deterministically() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((400, 3)) * [1.0, 5.0, 0.1] + [0, 2, 0]
    y = (x[:, 0] + rng.standard_normal(400) * 0.3 > 0.5).astype(float)
    m = fit_logistic(x, y)
    assert m["w"][0] > 5 * max(abs(m["w"][1]), abs(m["w"][2]))
    p = 1 / (1 + np.exp(-((x - m["mean"]) / m["std"] @ m["w"] + m["b"])))
    assert ((p > 0.5) == y).mean() > 0.9
    m2 = fit_logistic(x, y)
    assert np.array_equal(m["w"], m2["w"]) and m["b"] == m2["b"]


def test_attach_writes_the_scoring_under_a_new_id(models, tmp_path: Path) -> None:
    head, fused = models
    emb = Embedder(fused)
    assert emb.info.model_id == "tiny-fused" and emb.info.thresholds == {}
    assert emb.logo_scoring.fused and emb.logo_scoring.head_margins == (0.0, 0.4)
    assert "python -m ccu_vision.train.logo_scoring attach --model-id tiny-fused" in emb.info.extra["train_command"]
    assert Embedder(head).logo_scoring is None
    for same in ("", "tiny-prop"):
        with pytest.raises(ValueError, match="its own model id"):
            attach(head, emb.logo_scoring, tmp_path / "same.onnx", model_id=same)
    assert not (tmp_path / "same.onnx").exists()


def test_crop_plan_cuts_the_head_boxes_again_at_the_extra_margins(models) -> None:
    head, fused = models
    pe, pe0 = Embedder(fused).embed_photos([photo(3)])[0], Embedder(head).embed_photos([photo(3)])[0]
    r = len(pe.regions)
    idx, margins = pe.crop_plan(np.array([4, 1]))
    assert idx.tolist() == [4, 1, r, r + 1, r, r + 1, r, r + 1]
    assert np.allclose(margins, [CROP_MARGIN] * 4 + [0.0, 0.0, 0.4, 0.4])
    views = pe.plan_views(idx, margins)
    assert np.array_equal(views[4:6], pe.crop_views(idx[4:6], 0.0)) and np.array_equal(views[:4], pe.crop_views(idx[:4]))
    # without a scoring the plan is the proposal head's own (no extra crops)
    idx0, m0 = pe0.crop_plan(np.array([4, 1]))
    assert idx0.tolist() == [4, 1, r, r + 1] and np.allclose(m0, CROP_MARGIN)
    vecs = pe.crop_vectors(np.array([4, 1]))
    assert np.allclose(vecs[:4], pe0.crops(idx0), atol=1e-6)


class BrandCatalog(BruteCatalog):
    """References r0 and r1 belong to one brand."""

    def get(self, ref_id: str):
        return type("Rec", (), {"brand": "b0" if ref_id in ("r0", "r1") else f"b{ref_id[1:]}"})()


def test_scan_and_dense_scores_agree_with_fusion(models) -> None:
    from ccu_vision.matcher import match_photos

    _, fused = models
    emb = Embedder(fused)
    pe = emb.embed_photos([photo(11)])[0]
    refs = emb.embed_logos([photo(10 + i).crop((30, 20, 80, 60)) for i in range(4)])
    group = np.array([0, 0, 1, 2])
    res = match_photos([pe], BrandCatalog(refs), top_k=4, region_k=4)[0]  # every crop hits every reference
    dense, _ = dense_logo_scores(pe, refs, group=group)
    assert np.isfinite(dense).all() and ((dense > 0) & (dense < 1)).all()
    got = {m["ref_id"]: m["score"] for m in res.matches if m["kind"] == "logo"}
    assert len(got) == 4
    for i in range(4):
        assert got[f"r{i}"] == pytest.approx(float(dense[i]), abs=1e-5)
    # the fused score is not the plain one, and the plain one is what a file without fusion gives
    region, crop, _ = logo_stage_matrix(pe, refs)
    plain = combine_logo_scores(region, crop.max(0))
    assert not np.allclose(dense, plain)
    assert np.allclose(dense_logo_scores(replace(pe, scoring=replace(pe.scoring, weights=None)), refs)[0], plain)


def test_fit_on_an_evaluation_set_and_score_with_it(models, tiny_eval_set: Path, tmp_path: Path) -> None:
    from ccu_vision.evaluate import rank_with_embedder

    head, _ = models
    root = tiny_eval_set
    scoring, report = fit(head, root, (0.4,), candidates=3)
    assert scoring.fused and scoring.head_margins == (0.4,) and tuple(report["weights"]) == DEFAULT_FEATURES
    again, _ = fit(head, root, (0.4,), candidates=3)
    assert np.array_equal(again.weights, scoring.weights)  # deterministic
    # pooled over two sets (here the same one twice) with all features: twice the candidates
    pooled, rep2 = fit(head, [root, root], (0.4,), candidates=3, features=FEATURES)
    assert pooled.features == FEATURES and tuple(rep2["weights"]) == FEATURES
    assert rep2["candidates"] == 2 * report["candidates"] and rep2["positives"] == 2 * report["positives"]
    out = attach(head, scoring, tmp_path / "fitted.onnx", model_id="tiny-fitted")
    logo_ranked, _, _ = rank_with_embedder(Embedder(out), root, k=5)
    assert all(len(r) <= 3 and all(0 < s < 1 for _, s in r) for r in logo_ranked)  # candidates only, probabilities


def test_real_catalog_scan_rescores_candidates_exactly(models, tmp_path: Path) -> None:
    """With a real catalog (SQLite + FAISS) and only 2 hits per region/crop, the scan's fused scores
    still equal the dense scorer's: the candidates are re-scored against their stored vectors."""
    import io

    from ccu_vision.catalog import Catalog
    from ccu_vision.matcher import match_photos

    _, fused = models
    emb = Embedder(fused)
    logos = [photo(20 + i).crop((10, 10, 90, 80)) for i in range(6)]  # the green block plus distinct noise
    views = emb.embed_logo_views(logos)
    with Catalog.open(tmp_path / "home", model=emb.info) as cat:
        ids = []
        for i, (im, v) in enumerate(zip(logos, views, strict=True)):
            buf = io.BytesIO()
            im.save(buf, format="PNG")
            ids.append(cat.add_reference(buf.getvalue(), f"l{i}.png", "acme" if i < 2 else f"brand{i}", "logo",
                                         v, im.width, im.height)[0])
        stored = cat.ref_vectors(ids[:2] + ["missing"])
        assert set(stored) == set(ids[:2]) and np.allclose(stored[ids[0]], views[0])
        pe = emb.embed_photos([photo(31)])[0]
        res = match_photos([pe], cat, top_k=6, region_k=2)[0]
    owner = np.concatenate([np.full(len(v), i) for i, v in enumerate(views)])
    group = np.array([0, 0, 1, 2, 3, 4])
    dense, _ = dense_logo_scores(pe, np.concatenate(views), owner, group=group)
    got = {m["ref_id"]: m["score"] for m in res.matches if m["kind"] == "logo"}
    assert 0 < len(got) <= 5
    for rid, score in got.items():
        assert score == pytest.approx(float(dense[ids.index(rid)]), abs=1e-5), rid
    best = ids[int(np.argmax(dense))]
    assert best in got and got[best] == max(got.values())
