"""Attach text scoring (``ccu.text_scoring``, :mod:`ccu_vision.text`) to a model file with fused logo scoring.

The parameters and the ``logo_text`` threshold are fitted and calibrated by
``scripts/text_evidence.py attach`` (which calls :func:`attach`); see the model card.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..text import TextScoring


def attach(model: str | Path, cfg: TextScoring, out: str | Path, *, model_id: str, logo_text: float,
           calibration: dict | None = None, tool: str = "python scripts/text_evidence.py",
           command: list[str] | None = None) -> Path:
    """Write ``model`` with ``cfg`` as its ``ccu.text_scoring`` and ``logo_text`` added to its thresholds,
    under its own ``model_id`` (catalogs pin the id); ``calibration`` is merged into the thresholds
    record (how ``logo_text`` was set). The model must already have a fused logo scoring."""
    import onnx

    from ..scoring import parse_config as parse_scoring
    from .export import save_with_metadata

    m = onnx.load(str(model))
    meta = {p.key: p.value for p in m.metadata_props}
    if not model_id or model_id == meta.get("ccu.model_id"):
        raise ValueError(f"{model}: give the file with text scoring its own model id (catalogs pin the id)")
    scoring = parse_scoring(meta.get("ccu.logo_scoring", ""), str(model))
    if scoring is None or not scoring.fused:
        raise ValueError(f"{model}: text scoring needs a fused ccu.logo_scoring (its scores are probabilities)")
    if not 0.0 < logo_text <= 1.0:
        raise ValueError(f"logo_text threshold must be a probability in (0, 1], got {logo_text!r}")
    th = json.loads(meta.get("ccu.thresholds", "{}") or "{}")
    th["logo_text"] = round(float(logo_text), 5)
    for k, v in (calibration or {}).items():
        th[k] = {**th[k], **v} if isinstance(v, dict) and isinstance(th.get(k), dict) else v
    meta.update({"ccu.model_id": model_id, "ccu.text_scoring": cfg.to_json(), "ccu.thresholds": json.dumps(th)})
    return save_with_metadata(m, meta, out, tool, [command] if command else [])
