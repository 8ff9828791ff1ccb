"""End-to-end checks of the shipped model (skipped when the package has no trained model)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ccu_vision import demo as demo_mod
from ccu_vision.embedder import Embedder, default_model_path

MODEL = default_model_path()
pytestmark = pytest.mark.skipif(not MODEL.is_file(), reason="no shipped model in this checkout")


@pytest.fixture(scope="module")
def shipped() -> Embedder:
    return Embedder(MODEL)


def test_model_describes_itself(shipped: Embedder) -> None:
    info = shipped.info
    assert info.model_id.startswith("ccu-lite0")
    assert info.embed_dim == 256 and info.metric == "cosine"
    th = info.thresholds
    assert 0 < th["logo"] < 1 and th["precision"] >= 0.95
    # near-duplicates: windows + keypoint verification, threshold calibrated on the fused score
    assert shipped.verify is not None and th["dup_scoring"] == shipped.verify.key()
    assert 0 < th["near_duplicate"] < 1 + shipped.verify.weight
    assert "ccu-vision train" in info.extra["train_command"]
    assert info.preprocess["query_size"] % info.preprocess["stride"] == 0
    assert shipped._whiten is not None  # near-duplicates use the whitened backbone descriptor
    # ... of the un-fine-tuned ImageNet branch on the shared trunk (export --dup-backbone imagenet)
    assert info.extra.get("dup_backbone", "").startswith("imagenet:")
    assert "--dup-backbone imagenet" in info.extra["train_command"]
    assert MODEL.stat().st_size < 30 * 2**20, "the shipped file stays under ~30 MB"
    # a learned mark-proposal head, fitted and attached by the recorded commands
    assert shipped.proposals is not None and shipped.proposals["boxes"] == 3
    assert "python -m ccu_vision.train.proposals fit" in info.extra["train_command"]
    assert "python -m ccu_vision.train.proposals attach" in info.extra["train_command"]
    # its logo scoring: the head's boxes cut again at two more margins, and the evidence fusion fitted on
    # the calibration split (scores are probabilities; the thresholds were calibrated on them)
    sc = shipped.logo_scoring
    assert sc is not None and sc.fused and sc.head_margins == (0.0, 0.4)
    assert "python -m ccu_vision.train.logo_scoring fit" in info.extra["train_command"]
    assert "python -m ccu_vision.train.logo_scoring attach" in info.extra["train_command"]


def test_proposal_head_finds_placed_marks(shipped: Embedder) -> None:
    """Held-out marks printed on procedural photos: the head's 3 boxes cover most of them (IoU >= 0.3)."""
    import numpy as np
    from PIL import Image

    from ccu_vision import synth
    from ccu_vision.logos import brands as split_brands
    from ccu_vision.logos import render_mask
    from ccu_vision.photos import procedural_photos
    from ccu_vision.proposals import iou

    rng = np.random.default_rng(0)
    brands = split_brands("heldout")[:12]
    photos = procedural_photos(12, 480, 0)
    ims, boxes = [], []
    for b, photo in zip(brands, photos, strict=True):
        img, pl = synth.place_mark(photo, render_mask(b, 256), int(min(photo.shape[:2]) * 0.25), rng, b.rgb,
                                   style="print")
        ims.append(Image.fromarray(img))
        boxes.append(np.asarray(pl.box, float))
    found = [bool((iou(pe.proposals.astype(float), box) >= 0.3).any())
             for pe, box in zip(shipped.embed_photos(ims), boxes, strict=True)]
    assert sum(found) >= 8, found


def test_small_demo_scores_against_truth(shipped: Embedder, tmp_path: Path, monkeypatch) -> None:
    """A small demo on procedural photos (no photo folder needed): the shipped model must find
    edited copies of official shots and registered marks, and keep clean listings mostly clear."""
    monkeypatch.setattr(demo_mod, "find_photo_dir", lambda *a, **k: None)
    lines: list[str] = []
    rc = demo_mod.run_demo(tmp_path / "demo", shipped, lines.append, progress=False,
                           n_logo=40, n_copies=20, n_unreg=15, n_clean=15, n_products=8)
    assert rc == 0, lines
    score = json.loads((tmp_path / "demo" / "score.json").read_text())
    rows = [json.loads(x) for x in (tmp_path / "demo" / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 90 and all(r["status"] == "ok" for r in rows)
    assert score["near_duplicate"]["recall"] >= DUP_RECALL, score
    assert score["logo"]["recall"] >= LOGO_RECALL, score
    assert score["listing"]["precision"] >= LISTING_PRECISION, score
    assert (tmp_path / "demo" / "report.html").stat().st_size > 10_000


# floors set well below what the shipped model measured on this exact seeded demo (see MODEL_CARD.md)
DUP_RECALL = 0.5
LOGO_RECALL = 0.1
LISTING_PRECISION = 0.6
