"""Attach logo keypoint verification (``ccu.logo_verify``, :mod:`ccu_vision.logo_verify`) to a model
file with text scoring.

The settings and the ``logo_text`` threshold for verified scores are chosen and calibrated by
``scripts/logo_verify_evidence.py attach`` (which calls :func:`attach`); see the model card.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..logo_verify import LogoVerifyConfig


def attach(model: str | Path, cfg: LogoVerifyConfig, out: str | Path, *, model_id: str, logo_text: float,
           calibration: dict | None = None, tool: str = "python scripts/logo_verify_evidence.py",
           command: list[str] | None = None) -> Path:
    """Write ``model`` with ``cfg`` as its ``ccu.logo_verify`` and ``logo_text`` replaced by the threshold
    calibrated for verified scores, under its own ``model_id`` (catalogs pin the id); ``calibration``
    is merged into the thresholds record. The model must already have text scoring."""
    import onnx

    from ..text import parse_config as parse_text
    from .export import save_with_metadata

    m = onnx.load(str(model))
    meta = {p.key: p.value for p in m.metadata_props}
    if not model_id or model_id == meta.get("ccu.model_id"):
        raise ValueError(f"{model}: give the file with logo verification its own model id (catalogs pin the id)")
    if parse_text(meta.get("ccu.text_scoring", ""), str(model)) is None:
        raise ValueError(f"{model}: logo verification is applied with text evidence and needs ccu.text_scoring")
    if not 0.0 < logo_text <= 1.0:
        raise ValueError(f"logo_text threshold must be a probability in (0, 1], got {logo_text!r}")
    LogoVerifyConfig.from_dict(cfg.to_dict())  # refuses settings a model file could not be read with
    th = json.loads(meta.get("ccu.thresholds", "{}") or "{}")
    th["logo_text"] = round(float(logo_text), 5)
    for k, v in (calibration or {}).items():
        th[k] = {**th[k], **v} if isinstance(v, dict) and isinstance(th.get(k), dict) else v
    meta.update({"ccu.model_id": model_id, "ccu.logo_verify": json.dumps(cfg.to_dict()),
                 "ccu.thresholds": json.dumps(th)})
    return save_with_metadata(m, meta, out, tool, [command] if command else [])
