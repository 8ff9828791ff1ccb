"""Tests for learned mark proposals: decoding, the head in the ONNX graph, fitting, and the crop stage."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ccu_vision.embedder import Embedder, combine_logo_scores, dense_logo_scores
from ccu_vision.errors import ModelError
from ccu_vision.proposals import CHANNELS, decode, head_forward, iou, parse_config
from ccu_vision.tinymodel import TINY_PREPROCESS, make_tiny_model
from ccu_vision.train.proposals import attach, targets

DIM = 16


def random_head(rng: np.random.Generator, d: int = DIM, hidden: int = 8) -> dict[str, np.ndarray]:
    f = np.float32
    return {"mean": rng.uniform(0, 0.2, d).astype(f), "std": rng.uniform(0.5, 1.5, d).astype(f),
            "w1": (rng.standard_normal((hidden, d, 3, 3)) * 0.3).astype(f), "b1": rng.standard_normal(hidden).astype(f),
            "w2": (rng.standard_normal((CHANNELS, hidden, 1, 1)) * 0.3).astype(f),
            "b2": rng.standard_normal(CHANNELS).astype(f)}


@pytest.fixture(scope="module")
def head_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    d = tmp_path_factory.mktemp("prop")
    base = make_tiny_model(d / "base.onnx", dim=DIM, seed=4)
    head = random_head(np.random.default_rng(0))
    out = attach(base, head, d / "head.onnx", boxes=2, model_id="tiny-prop", report={"seed": 0},
                 command=["attach", "--boxes", "2"])
    return base, out, head


def photo(seed: int, w: int = 150, h: int = 110) -> Image.Image:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    arr[20:60, 30:80] = (10, 200, 40)
    return Image.fromarray(arr)


# ----------------------------------------------------------------------------- decoding


def test_decode_reads_boxes_at_local_maxima_best_first() -> None:
    g, stride = 6, 16
    out = np.zeros((CHANNELS, g, g), np.float32)
    out[0] = -5.0
    out[0, 1, 1], out[0, 1, 2] = 3.0, 2.0  # (1, 2) is next to a better cell: not a peak
    out[0, 4, 3] = 1.0
    out[1:, 1, 1] = (0.25, -0.5, np.log(2.0), np.log(1.0))
    out[1:, 4, 3] = (0.0, 0.0, np.log(3.0), np.log(0.1))  # height below half a cell: kept at half a cell
    boxes, logits = decode(out, stride, 5)
    assert logits[:2].tolist() == [3.0, 1.0]
    cx, cy = (1 + 0.5 + 0.25) * stride, (1 + 0.5 - 0.5) * stride
    assert np.allclose(boxes[0], [cx - stride, cy - stride / 2, cx + stride, cy + stride / 2])
    assert np.allclose(boxes[1], [3.5 * stride - 1.5 * stride, 4.5 * stride - stride / 4,
                                  3.5 * stride + 1.5 * stride, 4.5 * stride + stride / 4])
    assert not any(np.allclose(b[:2], [(2.5 - 0.5) * stride, 1.0 * stride]) for b in boxes)  # no box from (1, 2)
    assert len(decode(out, stride, 1)[0]) == 1
    assert decode(out, stride, 0)[0].shape == (0, 4)


def test_targets_mark_cells_inside_the_box_and_the_centre_cell() -> None:
    obj, reg, pos = targets([np.array([16.0, 16.0, 64.0, 48.0]), None, np.array([70.0, 70.0, 74.0, 74.0])], 6, 16)
    assert obj[0].sum() == 6 and obj[0, 1:3, 1:4].all()  # cell centres 1.5..3.5 x, 1.5..2.5 y
    assert obj[1].sum() == 0 and not pos[1].any()
    assert obj[2].sum() == 1 and obj[2, 4, 4] == 1  # a mark smaller than a cell: its centre's cell
    assert np.isclose(reg[0, 0, 1, 1], 2.5 - 1.5) and np.isclose(reg[0, 2, 1, 1], np.log(3.0))
    b = np.array([[0, 0, 10, 10], [5, 5, 15, 15], [20, 20, 30, 30]], float)
    assert np.allclose(iou(b, np.array([0, 0, 10, 10.0])), [1.0, 25 / 175, 0.0])


def test_proposal_metadata_is_checked() -> None:
    assert parse_config("") is None
    assert parse_config(json.dumps({"format": "ccu-proposals/1", "boxes": 3}))["boxes"] == 3
    for raw, needle in (("{", "not JSON"), (json.dumps({"format": "other/9", "boxes": 3}), "unsupported"),
                        (json.dumps({"format": "ccu-proposals/1", "boxes": -1}), "non-negative"),
                        (json.dumps({"format": "ccu-proposals/1", "boxes": "3"}), "non-negative")):
        with pytest.raises(ModelError, match=needle):
            parse_config(raw, "m.onnx")


# ----------------------------------------------------------------------------- the head in the model file


def test_attached_head_matches_the_numpy_head(head_model) -> None:
    base, path, head = head_model
    emb = Embedder(path)
    assert emb.info.model_id == "tiny-prop" and emb.proposals["boxes"] == 2
    assert emb.info.extra["train_command"].endswith("python -m ccu_vision.train.proposals attach --boxes 2")
    canvases, _ = emb.photo_canvases([photo(1), photo(2)])
    res = emb._run_outputs(canvases, with_global=True, with_proposals=True)
    assert res["proposals"].shape == (2, CHANNELS, emb.grid, emb.grid)
    for i in range(2):
        assert np.allclose(res["proposals"][i], head_forward(head, res["local"][i]), atol=1e-4)
    # the logo output is untouched by the head
    assert np.allclose(res["local"], Embedder(base)._run(canvases), atol=1e-6)
    with pytest.raises(ValueError, match="already has a proposal head"):
        attach(path, head, path.with_name("twice.onnx"), model_id="tiny-prop2")
    # the base model's thresholds belong to its scoring; the head's file gets its own id and none
    assert Embedder(base).info.thresholds and emb.info.thresholds == {}
    for same in (None, "tiny-test"):
        with pytest.raises(ValueError, match="its own model id"):
            attach(base, head, path.with_name("same.onnx"), model_id=same)
    assert not path.with_name("same.onnx").exists()


def test_metadata_without_the_graph_output_is_refused(head_model, tmp_path: Path) -> None:
    import onnx

    base, _, _ = head_model
    m = onnx.load(str(base))
    m.metadata_props.add(key="ccu.proposals", value=json.dumps({"format": "ccu-proposals/1", "boxes": 3}))
    onnx.save(m, str(tmp_path / "m.onnx"))
    with pytest.raises(ModelError, match="no output named 'proposals'"):
        Embedder(tmp_path / "m.onnx")


def test_photos_carry_proposals_and_the_crop_stage_uses_them(head_model) -> None:
    base, path, head = head_model
    emb, plain = Embedder(path), Embedder(base)
    im = photo(3)
    pe, pe0 = emb.embed_photos([im])[0], plain.embed_photos([im])[0]
    assert pe0.proposals is None and np.array_equal(pe0.crop_candidates(np.array([4, 1])), [4, 1])
    assert pe.proposals.shape == (2, 4)
    assert (pe.proposals[:, 0] >= 0).all() and (pe.proposals[:, 2] <= im.width).all()
    assert np.allclose(pe.regions, pe0.regions) and np.allclose(pe.global_vec, pe0.global_vec)
    r = len(pe.regions)
    cand = pe.crop_candidates(np.array([4, 1]))
    assert cand.tolist() == [4, 1, r, r + 1]
    assert np.array_equal(pe.candidate_boxes()[cand[2:]], pe.proposals)
    # the proposals' crops are the decoded boxes, cut from the canvas like the regions' crops
    canvases, lbs = emb.photo_canvases([im])
    res = emb._run_outputs(canvases, with_proposals=True)
    boxes, _ = decode(res["proposals"][0], emb.stride, 2)
    assert np.allclose(pe.crops(cand[2:]), emb.embed_views(emb.crop_views(canvases[0], boxes)), atol=1e-5)
    # scores: the best crop over the top regions *and* the proposals (two references are the
    # proposals' own crops, so only the proposals can give them their best crop score)
    refs = np.concatenate([emb.embed_logos([photo(5).crop((30, 20, 80, 60)), photo(6)]), pe.crops(cand[2:])])
    score, _ = dense_logo_scores(pe, refs, n_crops=3)
    sim = pe.regions @ refs.T
    top = np.argsort(-sim.max(1), kind="stable")[:3]
    crops = np.concatenate([pe.crops(top), pe.crops(np.array([r, r + 1]))])
    assert np.allclose(score, combine_logo_scores(sim.max(0), (crops @ refs.T).max(0)), atol=1e-6)
    without, _ = dense_logo_scores(replace(pe, proposals=None), refs, n_crops=3)
    assert (score[2:] > without[2:] + 1e-3).all()


class BruteCatalog:
    """Exact in-memory stand-in for the catalog's read API: one vector per logo reference."""

    thresholds = {"logo": 0.5, "near_duplicate": 0.9}

    def __init__(self, vecs: np.ndarray) -> None:
        self.vecs = vecs

    def search(self, kind: str, queries: np.ndarray, k: int) -> list[list[tuple[str, float, int]]]:
        if kind != "logo":
            return [[] for _ in queries]
        sims = queries @ self.vecs.T
        return [[(f"r{j}", float(row[j]), j) for j in np.argsort(-row, kind="stable")[:k]] for row in sims]

    def get(self, ref_id: str):
        return type("Rec", (), {"brand": f"b{ref_id[1:]}"})()


def test_scan_and_dense_scores_agree_with_a_head(head_model) -> None:
    from ccu_vision.matcher import match_photos

    _, path, _ = head_model
    emb = Embedder(path)
    pe = emb.embed_photos([photo(11)])[0]
    r = len(pe.regions)
    # two references are the proposals' own crops: their best crop score can only come from a proposal
    refs = np.concatenate([emb.embed_logos([photo(10 + i).crop((30, 20, 80, 60)) for i in range(2)]),
                           pe.crops(np.array([r, r + 1]))])
    res = match_photos([pe], BruteCatalog(refs), top_k=4, region_k=4)[0]  # every region hits every reference
    dense, _ = dense_logo_scores(pe, refs)
    assert (dense[2:] > dense_logo_scores(replace(pe, proposals=None), refs)[0][2:] + 1e-3).all()
    got = {m["brand"]: m["score"] for m in res.matches if m["kind"] == "logo"}
    assert len(got) == 4
    for i in range(4):
        assert got[f"b{i}"] == pytest.approx(float(dense[i]), abs=1e-5)


# ----------------------------------------------------------------------------- fitting


def test_fit_head_learns_where_marks_are() -> None:
    pytest.importorskip("torch")
    from ccu_vision.train.proposals import fit_head

    rng = np.random.default_rng(0)
    g, stride, n = 8, 16, 240
    maps = rng.uniform(0, 0.3, (n, DIM, g, g)).astype(np.float32)
    boxes = []
    for i in range(n):
        if i % 4 == 0:
            boxes.append(None)
            continue
        w, h = rng.integers(1, 4, 2)
        x, y = rng.integers(0, g - w + 1), rng.integers(0, g - h + 1)
        maps[i, :4, y : y + h, x : x + w] += 1.0  # a "mark" lights four channels over its cells
        boxes.append(np.array([x, y, x + w, y + h], float) * stride)
    head, report = fit_head(maps.astype(np.float16), boxes, g, stride, epochs=25, batch=32, lr=1e-2, seed=0)
    assert report["recall_iou50"]["top1"] >= 0.8
    assert head["w1"].shape == (64, DIM, 3, 3) and head["w2"].shape == (CHANNELS, 64, 1, 1)
    a, b = fit_head(maps.astype(np.float16), boxes, g, stride, epochs=2, seed=1)[0], \
        fit_head(maps.astype(np.float16), boxes, g, stride, epochs=2, seed=1)[0]
    assert all(np.array_equal(a[k], b[k]) for k in a)  # seeded: the same head twice


def test_tiny_preprocess_has_a_square_grid() -> None:
    assert TINY_PREPROCESS["stride"] == 16  # the head tests above assume the tiny model's 16 px cells
