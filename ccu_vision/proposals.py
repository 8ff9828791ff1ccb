"""Learned mark proposals: decode the model's "is this a mark" head into boxes.

A model file may carry a light class-agnostic head on its local feature map (an ONNX output named
``proposals``, [N, 5, h, w]): per cell a mark logit and a box (centre offset from the cell centre,
log width, log height; all in cells). The scan re-embeds the head's best boxes as crops beside its
best-matching windows (:func:`ccu_vision.embedder.logo_stage_scores`). Its description lives in the
file's metadata (``ccu.proposals``: format, boxes per photo). Fitting and attaching the head:
:mod:`ccu_vision.train.proposals`.
"""

from __future__ import annotations

import logging

import numpy as np

from .errors import ModelError
from .metadata import versioned_json

log = logging.getLogger(__name__)

FORMAT = "ccu-proposals/1"
CHANNELS = 5  # mark logit, centre dx, centre dy, log width, log height
MIN_SIDE_CELLS = 0.5


def parse_config(raw: str, path: str = "") -> dict | None:
    """The ``ccu.proposals`` metadata of a model file (None when it has none); refuses an unknown format."""
    cfg = versioned_json(raw, path, "ccu.proposals", FORMAT, "proposal head")
    if cfg is None:
        return None
    k = cfg.get("boxes")
    if not isinstance(k, int) or isinstance(k, bool) or k < 0:
        raise ModelError(f"{path}: ccu.proposals 'boxes' must be a non-negative integer, got {k!r}")
    return cfg


def decode(out: np.ndarray, stride: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best boxes of one head output [5, g, g]: canvas-pixel boxes [k', 4] (k' <= k) at 3x3
    local maxima of the mark logit, best first, and their logits [k'].

    Box sides are kept between half a cell and the whole map; centres inside the map.
    """
    assert out.ndim == 3 and out.shape[0] == CHANNELS and out.shape[1] == out.shape[2], out.shape
    logit = out[0].astype(np.float64)
    g = logit.shape[0]
    pad = np.pad(logit, 1, constant_values=-np.inf)
    neighbours = np.max(np.stack([pad[dy : dy + g, dx : dx + g] for dy in range(3) for dx in range(3)]), axis=0)
    peaks = np.argwhere(logit >= neighbours)
    order = np.argsort(-logit[peaks[:, 0], peaks[:, 1]], kind="stable")[: max(0, k)]
    r, c = peaks[order, 0], peaks[order, 1]
    cx = np.clip(c + 0.5 + out[1, r, c], 0, g)
    cy = np.clip(r + 0.5 + out[2, r, c], 0, g)
    w = np.exp(np.clip(out[3, r, c], np.log(MIN_SIDE_CELLS), np.log(g)))
    h = np.exp(np.clip(out[4, r, c], np.log(MIN_SIDE_CELLS), np.log(g)))
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1) * stride
    return boxes.astype(np.float64).reshape(-1, 4), logit[r, c]


def head_forward(head: dict[str, np.ndarray], local: np.ndarray) -> np.ndarray:
    """The head's output [5, g, g] for one local map [D, g, g], in numpy (the reference the ONNX graph
    and the torch fit are tested against). ``head``: mean/std [D], w1 [H, D, 3, 3], b1 [H], w2 [5, H, 1, 1], b2 [5]."""
    d, g, g2 = local.shape
    assert g == g2 and head["w1"].shape[1:] == (d, 3, 3), (local.shape, head["w1"].shape)
    hidden = head["w1"].shape[0]
    x = (local.astype(np.float32) - head["mean"][:, None, None]) / head["std"][:, None, None]
    xp = np.zeros((d, g + 2, g + 2), np.float32)
    xp[:, 1:-1, 1:-1] = x
    cols = np.stack([xp[:, dy : dy + g, dx : dx + g] for dy in range(3) for dx in range(3)], axis=1)
    h = np.maximum(head["w1"].reshape(hidden, d * 9) @ cols.reshape(d * 9, g * g) + head["b1"][:, None], 0)
    out = head["w2"].reshape(CHANNELS, hidden) @ h + head["b2"][:, None]
    return out.reshape(CHANNELS, g, g)


def iou(boxes: np.ndarray, box: np.ndarray) -> np.ndarray:
    """IoU of boxes [n, 4] (x0, y0, x1, y1) with one box [4]."""
    assert boxes.ndim == 2 and boxes.shape[1] == 4 and np.shape(box) == (4,), (boxes.shape, np.shape(box))
    ix = np.clip(np.minimum(boxes[:, 2], box[2]) - np.maximum(boxes[:, 0], box[0]), 0, None)
    iy = np.clip(np.minimum(boxes[:, 3], box[3]) - np.maximum(boxes[:, 1], box[1]), 0, None)
    inter = ix * iy
    union = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) + (box[2] - box[0]) * (box[3] - box[1]) - inter
    return inter / np.maximum(union, 1e-9)
