"""Versioned JSON entries in a model file's ``ccu.*`` metadata (the proposal head, the logo scoring)."""

from __future__ import annotations

import json

from .errors import ModelError


def versioned_json(raw: str, path: str, key: str, fmt: str, what: str) -> dict | None:
    """The JSON object stored under metadata ``key`` (None when the file has none). Refuses text that is
    not JSON or an object whose ``format`` is not ``fmt`` (this version reads only that), naming the file."""
    if not raw:
        return None
    try:
        cfg = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ModelError(f"{path}: {key} metadata is not JSON ({e.msg})") from None
    if not isinstance(cfg, dict) or cfg.get("format") != fmt:
        raise ModelError(f"{path}: unsupported {what} {cfg.get('format') if isinstance(cfg, dict) else cfg!r} "
                         f"(this version reads {fmt})")
    return cfg
