"""Warm starts: load a shipped ONNX embedder's weights back into a torch ``CcuNet``.

The exporter folds every BatchNorm into the convolution before it (eval-mode ONNX export), so the
file holds one (weight, bias) pair per convolution, in execution order. Loading puts the folded
weight into the convolution and turns the BatchNorm after it into ``x + bias`` (scale 1, running
mean 0, running variance 1 - eps). Batch statistics stay frozen in training, so the loaded network
computes exactly what the file computes, and training can continue from it.

Proxies for the normalized-softmax loss are not in the file; :func:`imprint_proxies` starts them at
each training brand's clean-reference embedding.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import ModelError
from .model import CcuNet, gem_global

log = logging.getLogger(__name__)


def _conv_bn_pairs(backbone: nn.Module) -> list[tuple[str, nn.Conv2d, nn.modules.batchnorm._BatchNorm]]:
    """Every convolution of the backbone with the BatchNorm that follows it (module order = execution order)."""
    pairs: list = []
    pending: tuple[str, nn.Conv2d] | None = None
    for name, m in backbone.named_modules():
        if isinstance(m, nn.Conv2d):
            if pending is not None:
                raise ValueError(f"convolution {pending[0]} has no BatchNorm after it")
            pending = (name, m)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            if pending is None:
                raise ValueError(f"BatchNorm {name} follows no convolution")
            pairs.append((pending[0], pending[1], m))
            pending = None
    if pending is not None:
        raise ValueError(f"convolution {pending[0]} has no BatchNorm after it")
    return pairs


def load_onnx_weights(model: CcuNet, path: str | Path) -> dict:
    """Copy the folded weights of an exported ccu-vision ONNX file into ``model`` (in place).

    Raises ``ModelError`` naming the file when it is missing, not ONNX, or its graph does not fit the
    model (another backbone, another embedding dim). Returns the file's ``ccu.*`` metadata.
    """
    import onnx
    from onnx import numpy_helper

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: model file not found")
    try:
        m = onnx.load(str(path))
    except Exception as e:  # noqa: BLE001 - onnx raises protobuf decode errors of several types
        raise ModelError(f"{path}: not an ONNX model ({type(e).__name__})") from None
    meta = {p.key: p.value for p in m.metadata_props}
    inits = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    convs = [n for n in m.graph.node if n.op_type == "Conv"]
    pairs = _conv_bn_pairs(model.backbone)
    n_expected = len(pairs) + (1 if model.proj is not None else 0)
    if meta.get("ccu.dup_backbone") and len(convs) > n_expected:
        # a dual file (export --dup-backbone): the logo network's convolutions come first in the graph,
        # the near-duplicate branch's after them
        convs = convs[:n_expected]
    if len(convs) != n_expected:
        raise ModelError(f"{path}: {len(convs)} convolutions in the graph, the model has {n_expected} "
                         f"(backbone {meta.get('ccu.backbone', '?')}, dim {meta.get('ccu.embed_dim', '?')})")

    def put(dst: torch.Tensor, src: np.ndarray | None) -> None:  # a missing bias is zero
        dst.copy_(torch.from_numpy(np.array(src)) if src is not None else torch.zeros_like(dst))

    def wb(node) -> tuple[np.ndarray, np.ndarray | None]:
        w = inits.get(node.input[1])
        b = inits.get(node.input[2]) if len(node.input) > 2 else None
        if w is None:
            raise ModelError(f"{path}: convolution {node.name} has no constant weight")
        return w, b

    with torch.no_grad():
        for node, (name, conv, bn) in zip(convs, pairs):
            w, b = wb(node)
            if tuple(w.shape) != tuple(conv.weight.shape):
                raise ModelError(f"{path}: weight of {node.name} is {tuple(w.shape)}, "
                                 f"backbone.{name} needs {tuple(conv.weight.shape)}")
            put(conv.weight, w)
            if conv.bias is not None:
                conv.bias.zero_()
            bn.weight.fill_(1.0)
            put(bn.bias, b)
            bn.running_mean.zero_()
            bn.running_var.fill_(1.0 - bn.eps)
        if model.proj is not None:
            w, b = wb(convs[-1])
            if tuple(w.shape) != tuple(model.proj.weight.shape):
                raise ModelError(f"{path}: projection is {tuple(w.shape)}, the model needs "
                                 f"{tuple(model.proj.weight.shape)}")
            put(model.proj.weight, w)
            put(model.proj.bias, b)
    return meta


@torch.no_grad()
def imprint_proxies(model: CcuNet, refs: np.ndarray, mean, std, gem_p: float, batch: int = 128) -> torch.Tensor:
    """Unit-norm reference embeddings [B, D] of uint8 canvases refs [B, H, W, 3] (proxy initialisation)."""
    from .data import to_input

    assert refs.ndim == 4 and refs.shape[-1] == 3 and refs.dtype == np.uint8, (refs.shape, refs.dtype)
    was_training = model.training
    model.eval()
    dev = next(model.parameters()).device
    with torch.no_grad():  # no graph kept across thousands of references
        out = [gem_global(model(to_input(torch.from_numpy(refs[i : i + batch]), mean, std, dev)), gem_p)
               for i in range(0, len(refs), batch)]
    model.train(was_training)
    return torch.cat(out)
