"""Near-duplicate windows + keypoint verification: settings, inliers, and scan == dense scoring."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageOps

from ccu_vision import verify
from ccu_vision.catalog import Catalog
from ccu_vision.embedder import Embedder
from ccu_vision.errors import ModelError
from ccu_vision.matcher import match_photo
from ccu_vision.references import add_paths
from ccu_vision.tinymodel import TINY_PREPROCESS, make_tiny_model
from ccu_vision.verify import KeypointCache, VerifyConfig

CFG = VerifyConfig()


def scene(seed: int, size: tuple[int, int] = (360, 300)) -> Image.Image:
    """A seeded picture with many corners (shapes, lines, text-like bars) on a noisy background."""
    rng = np.random.default_rng(seed)
    bg = rng.integers(0, 60, (size[1] // 8, size[0] // 8, 3), dtype=np.uint8)
    img = Image.fromarray(bg).resize(size, Image.Resampling.BILINEAR)
    d = ImageDraw.Draw(img)
    for _ in range(40):
        x, y = int(rng.integers(0, size[0] - 30)), int(rng.integers(0, size[1] - 30))
        w, h = int(rng.integers(8, 60)), int(rng.integers(8, 60))
        col = tuple(int(c) for c in rng.integers(60, 256, 3))
        if rng.random() < 0.5:
            d.rectangle((x, y, x + w, y + h), fill=col)
        else:
            d.polygon([(x, y), (x + w, y + int(h / 3)), (x + int(w / 2), y + h)], fill=col)
    return img


def edited(img: Image.Image) -> Image.Image:
    """Crop, downscale and re-compress: a typical reused-photo edit."""
    w, h = img.size
    out = img.crop((int(0.12 * w), int(0.08 * h), int(0.9 * w), int(0.95 * h))).resize((int(0.7 * w), int(0.75 * h)))
    buf = io.BytesIO()
    out.save(buf, "JPEG", quality=60)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def gray(img: Image.Image, size: int = 384) -> np.ndarray:
    return verify.canvas_gray(img, size, "bilinear")


# ----------------------------------------------------------------------------- settings


def test_config_roundtrip_and_refusals() -> None:
    d = CFG.to_dict()
    assert VerifyConfig.from_dict(d) == CFG
    assert VerifyConfig.from_dict({**d, "cap": 16}).key() != CFG.key()
    with pytest.raises(ValueError, match="unknown near-duplicate verification method"):
        VerifyConfig.from_dict({**d, "method": "sift/9"})
    with pytest.raises(ValueError, match="settings"):
        VerifyConfig.from_dict({**d, "colour": 1})
    with pytest.raises(ValueError, match="bad"):
        VerifyConfig.from_dict({**d, "ratio": 0})
    with pytest.raises(ValueError, match="bad"):
        VerifyConfig.from_dict({**d, "floor": 40})
    # window shapes: stored only when set, so settings without them keep their key
    assert "window_shapes" not in d and CFG.key() == VerifyConfig.from_dict(d).key()
    shaped = VerifyConfig.from_dict({**d, "window_shapes": [[1.0, 0.5], [0.5, 1.0]]})
    assert shaped.window_shapes == ((1.0, 0.5), (0.5, 1.0)) and shaped.key() != CFG.key()
    assert VerifyConfig.from_dict(shaped.to_dict()) == shaped
    for bad in ([[1.5, 0.5]], [[0.0, 0.5]], [[0.5]], [0.5], "x"):
        with pytest.raises(ValueError, match="bad near-duplicate"):
            VerifyConfig.from_dict({**d, "window_shapes": bad})
    mid = (CFG.floor + CFG.cap) / 2
    assert np.allclose(CFG.bonus([0, CFG.floor, mid, CFG.cap, 10 * CFG.cap]), [0, 0, CFG.weight / 2, CFG.weight, CFG.weight])
    assert verify.should_verify(0.5, 0.9, CFG) and not verify.should_verify(0.3, 0.9, CFG)
    assert verify.should_verify(-1.0, float("inf"), CFG), "no threshold: every candidate is verified"


def test_window_shapes_travel_in_the_file_and_reach_the_photos(tmp_path: Path) -> None:
    shaped = VerifyConfig(window_shapes=((1.0, 0.5), (0.5, 1.0)))
    emb = Embedder(make_tiny_model(tmp_path / "shaped.onnx", verify=shaped.to_dict()))
    assert emb.verify == shaped
    plain = Embedder(make_tiny_model(tmp_path / "plain.onnx", verify=CFG.to_dict()))
    a, b = emb.embed_photos([scene(3)])[0], plain.embed_photos([scene(3)])[0]
    assert a.dup_windows.shape == (18 + 6, emb.dim) and b.dup_windows.shape == (18, emb.dim)
    assert np.allclose(a.dup_windows[:18], b.dup_windows, atol=1e-6) and np.allclose(a.global_vec, b.global_vec, atol=1e-6)


def test_bad_verify_metadata_names_the_file(tmp_path: Path) -> None:
    p = make_tiny_model(tmp_path / "bad.onnx", verify={"method": "sift/9"})
    with pytest.raises(ModelError, match=r"bad\.onnx: bad ccu\.dup_verify"):
        Embedder(p)
    ok = make_tiny_model(tmp_path / "ok.onnx", verify=CFG.to_dict())
    assert Embedder(ok).verify == CFG
    assert Embedder(make_tiny_model(tmp_path / "none.onnx")).verify is None


def test_sub_windows_lie_in_the_content() -> None:
    content = np.array([2, 0, 10, 12])
    w = verify.sub_windows(content, (0.5, 0.7))
    assert w.shape == (19, 4) and (w[0] == content).all()
    assert (w[:, 0] >= 2).all() and (w[:, 2] <= 10).all() and (w[:, 1] >= 0).all() and (w[:, 3] <= 12).all()
    assert (w[:, 2] > w[:, 0]).all() and (w[:, 3] > w[:, 1]).all()
    assert len({tuple(r) for r in w[1:10]}) == 9, "3 x 3 distinct positions per size"
    # shapes of their own aspect: a full-height half-width strip has 3 positions, a repeat is dropped
    ws = verify.sub_windows(content, (0.5, 0.7), ((1.0, 0.5), (0.5, 0.5), (0.5, 1.0)))
    assert np.array_equal(ws[:19], w) and len(ws) == 19 + 3 + 3
    strips = ws[19:22]
    assert (strips[:, 0] == 2).all() and (strips[:, 2] == 10).all() and (strips[:, 3] - strips[:, 1] == 6).all()
    assert sorted(strips[:, 1].tolist()) == [0, 3, 6]
    assert (ws[22:, 1] == 0).all() and (ws[22:, 3] == 12).all() and (ws[22:, 2] - ws[22:, 0] == 4).all()
    assert len({tuple(r) for r in ws}) == len(ws)


# ----------------------------------------------------------------------------- keypoints


def test_copies_have_inliers_and_other_pictures_do_not() -> None:
    a, b = scene(1), scene(2)
    ref = verify.ref_keypoints(gray(a), CFG)
    assert len(ref[0]) > 100 and len(ref[1]) > 100
    q_copy = verify.keypoints(gray(edited(a)), CFG.features)
    q_other = verify.keypoints(gray(b), CFG.features)
    n_copy, n_other = verify.best_inliers(q_copy, ref, CFG), verify.best_inliers(q_other, ref, CFG)
    assert n_copy >= 30, n_copy
    assert n_other <= 8, n_other


def test_mirrored_copies_are_verified_against_the_mirror() -> None:
    a = scene(3)
    ref = verify.ref_keypoints(gray(a), CFG)
    q = verify.keypoints(gray(ImageOps.mirror(edited(a))), CFG.features)
    as_is, mirror = verify.count_inliers(q, ref[0], CFG), verify.count_inliers(q, ref[1], CFG)
    assert mirror >= 30 and as_is < mirror / 4, (as_is, mirror)  # (symmetric shapes still match a little)
    assert verify.best_inliers(q, ref, CFG) == verify.count_inliers(q, ref[1], CFG)


def test_flat_and_tiny_images_have_no_keypoints() -> None:
    flat = np.full((200, 200), 128, np.uint8)
    assert len(verify.keypoints(flat, 500)) == 0
    assert len(verify.keypoints(np.zeros((1, 1), np.uint8), 500)) == 0
    assert len(verify.keypoints(gray(scene(5, (1600, 40))), 500)) == 0, "a sliver on the canvas: no crash, no points"
    empty = verify.keypoints(flat, 500)
    assert verify.count_inliers(empty, verify.keypoints(gray(scene(4)), 500), CFG) == 0


def test_keypoint_cache_is_bounded_and_loads_once() -> None:
    loads: list[str] = []

    def load(ref_id: str) -> np.ndarray | None:
        loads.append(ref_id)
        return None if ref_id == "gone" else gray(scene(len(ref_id)), 128)

    cache = KeypointCache(load, CFG, max_items=2)
    for r in ("a", "bb", "a", "ccc", "a", "bb"):
        cache.get(r)
    assert loads == ["a", "bb", "ccc", "bb"], "LRU: 'bb' was evicted by 'ccc', 'a' stayed (recently used)"
    assert cache.get("gone") is None and cache.get("gone") is None and loads.count("gone") == 1


# ----------------------------------------------------------------------------- scan == dense


@pytest.fixture(scope="module")
def verify_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny embedder at a 256 px canvas that carries verification settings and matching thresholds."""
    pre = {**TINY_PREPROCESS, "query_size": 256}
    th = {"logo": 0.9, "near_duplicate": 0.9, "precision": 0.95, "dup_scoring": CFG.key()}
    return make_tiny_model(tmp_path_factory.mktemp("verify") / "tiny-verify.onnx", preprocess=pre, thresholds=th,
                           verify=CFG.to_dict())


def _catalog_with_products(tmp_path: Path, emb: Embedder, n: int = 4) -> tuple[Catalog, list[str], list[Image.Image]]:
    imgs = [scene(10 + i) for i in range(n)]
    paths = []
    for i, im in enumerate(imgs):
        paths.append(tmp_path / f"p{i}.png")
        im.save(paths[-1])
    cat = Catalog.open(tmp_path / "home", emb.info)
    ids = [ev.ref_id for i, p in enumerate(paths) for ev in add_paths(cat, emb, [p], f"B{i}", "product")]
    return cat, ids, imgs


def test_scan_scores_equal_dense_scores(tmp_path: Path, verify_model: Path) -> None:
    emb = Embedder(verify_model)
    cat, ids, imgs = _catalog_with_products(tmp_path, emb)
    with cat:
        verifier = verify.for_catalog(emb, cat)
        assert verifier is not None and verifier.cfg == CFG
        photo = emb.embed_photos([edited(imgs[2])])[0]
        assert photo.dup_windows is not None and photo.dup_windows.shape == (18, emb.dim)
        res = match_photo(photo, cat, top_k=10, verifier=verifier)
        got = {m["ref_id"]: m for m in res.matches if m["kind"] == "product"}
        assert set(got) == set(ids)
        # dense: every stored product vector, owned by its reference, keypoints from the same canvases
        vecs, vec_ids = cat.vectors("product")
        hits = cat.search("product", vecs, len(vecs))
        owner_ref = [next(r for r, _s, vid in h if vid == vec_ids[i]) for i, h in enumerate(hits)]
        owner = np.asarray([ids.index(r) for r in owner_ref])
        kps = [verify.ref_keypoints(gray(im, 256), CFG) for im in imgs]
        dense, inl = verify.dense_dup_scores(photo, vecs, owner, len(ids), CFG, kps.__getitem__,
                                             threshold=cat.thresholds["near_duplicate"])
        for j, ref in enumerate(ids):
            assert abs(got[ref]["score"] - dense[j]) < 1e-5, (ref, got[ref], dense[j])
            assert got[ref].get("inliers", -1) == inl[j]
        assert int(np.argmax(dense)) == 2 and inl[2] >= 20, (dense, inl)
        assert res.flags and res.flags[0]["ref_id"] == ids[2] and res.flags[0]["type"] == "near_duplicate"
        assert res.flags[0]["inliers"] == inl[2]
        assert sum(m.get("inliers", -1) >= 0 for m in got.values()) <= CFG.candidates


def test_candidates_that_cannot_reach_the_threshold_are_not_verified(tmp_path: Path, verify_model: Path) -> None:
    emb = Embedder(verify_model)
    cat, ids, imgs = _catalog_with_products(tmp_path, emb, 2)
    with cat:
        cat.set_thresholds({"near_duplicate": 5.0})  # out of reach even with the largest bonus
        photo = emb.embed_photos([edited(imgs[0])])[0]
        res = match_photo(photo, cat, top_k=5, verifier=verify.for_catalog(emb, cat))
        assert all("inliers" not in m for m in res.matches) and not res.flags


def test_thresholds_calibrated_for_another_scoring_turn_verification_off(tmp_path: Path, verify_model: Path,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    pre = {**TINY_PREPROCESS, "query_size": 256}
    plain = make_tiny_model(tmp_path / "plain.onnx", preprocess=pre, verify=CFG.to_dict())  # no dup_scoring
    emb = Embedder(plain)
    cat, _ids, imgs = _catalog_with_products(tmp_path, emb, 2)
    with cat, caplog.at_level(logging.WARNING, logger="ccu_vision.verify"):
        assert verify.for_catalog(emb, cat) is None
        assert "calibrated without keypoint verification" in caplog.text
        res = match_photo(emb.embed_photos([edited(imgs[0])])[0], cat, top_k=5)
        assert all("inliers" not in m for m in res.matches)


def test_scan_reports_the_verify_stage(tmp_path: Path, verify_model: Path) -> None:
    from ccu_vision.scan import ScanInput, read_rows, run_scan

    emb = Embedder(verify_model)
    cat, ids, imgs = _catalog_with_products(tmp_path, emb, 3)
    dump = tmp_path / "dump"
    dump.mkdir()
    for i in (0, 1, 2):
        edited(imgs[i]).save(dump / f"c{i}.jpg")
    with cat:
        summary = run_scan([ScanInput(image=str(p)) for p in sorted(dump.glob("*.jpg"))], tmp_path / "out.jsonl",
                           emb, cat, progress=False)
    rows = read_rows(tmp_path / "out.jsonl")
    assert summary.ok == 3 and summary.stages["verify"].seconds > 0
    for i, row in enumerate(rows):
        top = next(m for m in row["matches"] if m["kind"] == "product")
        assert top["ref_id"] == ids[i] and top["inliers"] >= 20, row


def test_cli_check_shows_the_verified_copy(tmp_path: Path, verify_model: Path) -> None:
    import json

    from click.testing import CliRunner

    from ccu_vision.cli import cli

    env = {"CCU_HOME": str(tmp_path / "home"), "CCU_MODEL": str(verify_model)}
    official, other = tmp_path / "official.png", tmp_path / "other.png"
    scene(30).save(official)
    scene(31).save(other)
    edited(scene(30)).save(tmp_path / "listing.jpg")
    r = CliRunner().invoke(cli, ["ref", "add", "--brand", "Acme", "--kind", "product", str(official), str(other)],
                           env=env, catch_exceptions=False)
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(cli, ["check", str(tmp_path / "listing.jpg")], env=env, catch_exceptions=False)
    assert r.exit_code == 0 and "SUSPECT" in r.output and "near-duplicate" in r.output, r.output
    assert "keypoint inliers" in r.output
    r = CliRunner().invoke(cli, ["check", str(tmp_path / "listing.jpg"), "--json"], env=env, catch_exceptions=False)
    flag = json.loads(r.output)["flags"][0]
    assert flag["type"] == "near_duplicate" and flag["inliers"] >= 20


def test_a_lost_reference_copy_only_skips_its_verification(tmp_path: Path, verify_model: Path,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    """A stored product copy that vanished (or rotted) is not verified; the scan row is still written."""
    emb = Embedder(verify_model)
    cat, ids, imgs = _catalog_with_products(tmp_path, emb, 2)
    with cat:
        cat.ref_image_path(ids[0]).write_bytes(b"not an image any more")
        verifier = verify.for_catalog(emb, cat)
        with caplog.at_level(logging.WARNING, logger="ccu_vision.verify"):
            res = match_photo(emb.embed_photos([edited(imgs[0])])[0], cat, top_k=5, verifier=verifier)
        assert f"reference {ids[0]}: image unavailable" in caplog.text
        got = {m["ref_id"]: m for m in res.matches if m["kind"] == "product"}
        assert got[ids[0]]["inliers"] == 0, "unverifiable: no bonus, but still scored by the CNN"
        res2 = match_photo(emb.embed_photos([edited(imgs[1])])[0], cat, top_k=5, verifier=verifier)
        assert next(m for m in res2.matches if m["ref_id"] == ids[1])["inliers"] >= 20
