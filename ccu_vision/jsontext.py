"""JSON text that is always valid UTF-8 (no heavy imports: the CLI and the scanner both use it)."""

from __future__ import annotations

import json
from typing import Any


def dumps_utf8(obj: Any, allow_nan: bool = True) -> str:
    """``json.dumps`` keeping non-ASCII text readable, falling back to ``\\u`` escapes when needed.

    A file name that is not valid UTF-8 (e.g. Latin-1 bytes from an old archive) reaches Python as a
    string with lone surrogates, which UTF-8 cannot encode; such an object is written with ``\\u``
    escapes instead, so the text is still valid JSON and reads back to the same string.
    """
    text = json.dumps(obj, ensure_ascii=False, allow_nan=allow_nan)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(obj, ensure_ascii=True, allow_nan=allow_nan)
    return text
