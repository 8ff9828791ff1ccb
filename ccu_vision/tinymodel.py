"""A tiny, deterministic, self-describing embedder built with ``onnx.helper`` (no torch).

Used by the test-suite and the benchmark smoke run: it follows the same file contract as the
shipped model (input ``image`` [N,3,H,W] -> ``local`` [N,D,h,w], ``ccu.*`` metadata), so every
code path that loads a model can be tested in milliseconds. It is a random patch projection:
identical images embed identically, different images differently, nothing more.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .embedder import metadata_dict

TINY_PREPROCESS = {
    "query_size": 128,
    "ref_size": 64,
    "mean": [0.5, 0.5, 0.5],
    "std": [0.5, 0.5, 0.5],
    "interpolation": "bilinear",
    "logo_fill": 0.8,
    "stride": 16,
    "gem_p": 3.0,
    "region_scales": [1, 2, 3],
}


def make_tiny_model(
    path: str | Path,
    dim: int = 16,
    seed: int = 0,
    model_id: str = "tiny-test",
    thresholds: dict | None = None,
    preprocess: dict | None = None,
    verify: dict | None = None,
) -> Path:
    """Write a tiny ONNX embedder to ``path`` and return the path."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    pre = dict(TINY_PREPROCESS if preprocess is None else preprocess)
    stride = int(pre["stride"])
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((dim, 3, stride, stride)) / (stride * np.sqrt(3.0))).astype(np.float32)
    b = np.full((dim,), 0.05, dtype=np.float32)
    nodes = [
        helper.make_node(
            "Conv", ["image", "W", "B"], ["conv"], kernel_shape=[stride, stride],
            strides=[stride, stride], auto_pad="SAME_UPPER",
        ),
        helper.make_node("Relu", ["conv"], ["local"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("local", TensorProto.FLOAT, ["N", dim, "h", "w"])],
        initializer=[numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    th = thresholds if thresholds is not None else {"logo": 0.9, "near_duplicate": 0.9, "precision": 0.95}
    extra = {} if verify is None else {"dup_verify": json.dumps(verify)}
    for k, v in metadata_dict(model_id, dim, pre, th, **extra).items():
        model.metadata_props.add(key=k, value=v)
    onnx.checker.check_model(model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path
