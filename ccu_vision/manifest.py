"""CSV / JSON Lines manifests (reference imports and scan inputs).

Error policy: **all or nothing**. The whole manifest is decoded, parsed and validated before anything
is returned; if any row is bad, :func:`read_manifest` raises one :class:`~ccu_vision.errors.ManifestError`
listing every problem found (up to :data:`MAX_REPORTED_ERRORS`, each as ``FILE:LINE: reason``), so a
caller never imports half a manifest without saying so. Exact duplicate rows are not errors: they are
dropped with a logged warning.

Accepted input:

* CSV with a header row (``,`` by default; ``;`` (European Excel), tab or ``|`` detected from the header
  row by which split finds the required columns; ``.tsv`` is always tab),
  or JSON Lines (one object per line), chosen by extension (``.csv``/``.tsv`` vs ``.jsonl``/``.ndjson``/
  ``.json``) or, for any other extension, by sniffing the first non-blank character (``{`` = JSON Lines);
* UTF-8 with or without BOM, or UTF-16 with BOM; anything else is a ManifestError naming the line;
* column names are matched case-insensitively with surrounding spaces ignored, and values are stripped.

Each returned dict holds every column of the file (normalised lower-case names), ``None`` for an
optional column that is absent or empty, and ``"_line"``: the 1-based line where the row starts.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import ManifestError

log = logging.getLogger(__name__)

MAX_REPORTED_ERRORS = 20
"""At most this many problems are spelled out in one ManifestError (the count is always given)."""
MAX_MANIFEST_BYTES = 512 * 1024 * 1024

_CSV_EXT = {".csv": None, ".tsv": "\t"}  # None: delimiter detected from the header
_JSONL_EXT = {".jsonl", ".ndjson", ".json"}
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")


class _Problems:
    """Collects ``(line, message)`` problems for one manifest."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.items: list[tuple[int, str]] = []

    def add(self, line: int, msg: str) -> None:
        self.items.append((line, msg))

    def raise_if_any(self) -> None:
        if not self.items:
            return
        shown = [f"{self.path}:{line}: {msg}" for line, msg in self.items[:MAX_REPORTED_ERRORS]]
        if len(self.items) == 1:
            text = shown[0]
        else:
            more = len(self.items) - len(shown)
            text = (
                f"{self.path}: {len(self.items)} problems, nothing was read from this manifest:\n  "
                + "\n  ".join(shown)
                + (f"\n  ... and {more} more" if more else "")
            )
        err = ManifestError(text)
        err.path = str(self.path)  # type: ignore[attr-defined]
        err.errors = list(self.items)  # type: ignore[attr-defined]
        raise err


def _fail(path: Path, line: int | None, msg: str) -> ManifestError:
    """A ManifestError for a single problem (``line`` None: the file as a whole)."""
    err = ManifestError(f"{path}:{line}: {msg}" if line else f"{path}: {msg}")
    err.path = str(path)  # type: ignore[attr-defined]
    err.errors = [(line or 0, msg)]  # type: ignore[attr-defined]
    return err


def _norm_key(k: object) -> str:
    return str(k).strip().lower()


def read_manifest(
    path: str | os.PathLike,
    required: Sequence[str],
    optional: Sequence[str] = (),
    root: str | os.PathLike | None = None,
    path_column: str | None = None,
) -> list[dict[str, Any]]:
    """Read and fully validate a CSV or JSONL manifest; return one dict per (deduplicated) row.

    ``required`` columns must exist and be non-empty in every row. ``path_column`` values are
    resolved against the manifest's folder (absolute, normalised strings); with ``root``, a path
    that resolves (symlinks included) outside ``root`` is an error naming the row. Raises
    :class:`ManifestError` naming the file and line(s); nothing is returned unless every row is valid.
    """
    mpath = Path(path)
    required = [_norm_key(c) for c in required]
    optional = [_norm_key(c) for c in optional if _norm_key(c) not in required]
    pcol = _norm_key(path_column) if path_column else None
    text = _decode(_read(mpath), mpath)
    fmt = _format(mpath, text)
    problems = _Problems(mpath)
    if fmt == "csv":
        rows = _parse_csv(text, mpath, required, problems)
    else:
        rows = _parse_jsonl(text, required, problems)
    problems.raise_if_any()

    rows = _dedupe(rows, mpath)
    base = Path(os.path.abspath(mpath.parent))
    root_real = os.path.realpath(root) if root is not None else None
    for row in rows:
        line = row["_line"]
        for col in required:
            value = row.get(col)
            if value is None or (isinstance(value, str) and not value):
                problems.add(line, f"empty value for required column {col!r}")
        for col in optional:
            if row.get(col) == "":
                row[col] = None
            row.setdefault(col, None)
        if pcol and isinstance(row.get(pcol), str) and row[pcol]:
            resolved = _resolve(row[pcol], base, root, root_real, line, problems)
            if resolved is not None:
                row[pcol] = resolved
        elif pcol and row.get(pcol) is not None and not isinstance(row.get(pcol), str):
            problems.add(line, f"column {pcol!r} must be a string path, got {type(row[pcol]).__name__}")
    problems.raise_if_any()
    if not rows:
        log.warning("%s: manifest has no rows", mpath)
    return rows


# ------------------------------------------------------------------------------------------ reading


def _read(path: Path) -> bytes:
    try:
        size = path.stat().st_size
        if size > MAX_MANIFEST_BYTES:
            raise _fail(path, None, f"manifest too large ({size} bytes, limit {MAX_MANIFEST_BYTES})")
        data = path.read_bytes()
    except FileNotFoundError:
        raise _fail(path, None, "manifest not found") from None
    except PermissionError:
        raise _fail(path, None, "permission denied") from None
    except IsADirectoryError:
        raise _fail(path, None, "is a folder, not a manifest file") from None
    except OSError as e:
        raise _fail(path, None, f"cannot read manifest: {e.strerror or e}") from None
    if not data.strip():
        raise _fail(path, None, "empty manifest (no header row or JSON lines)")
    return data


def _decode(data: bytes, path: Path) -> str:
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            text = data.decode("utf-16")
        except UnicodeDecodeError as e:
            raise _fail(path, None, f"not valid UTF-16 (byte offset {e.start})") from None
    else:
        if data.startswith(codecs.BOM_UTF8):
            data = data[len(codecs.BOM_UTF8) :]
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            line = data.count(b"\n", 0, e.start) + 1
            col = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
            raise _fail(
                path, line,
                f"not valid UTF-8 (byte 0x{data[e.start]:02x} at column {col}); save the manifest as UTF-8",
            ) from None
    nul = text.find("\x00")
    if nul >= 0:
        raise _fail(path, text.count("\n", 0, nul) + 1, "contains a NUL byte (binary file, not a manifest?)")
    return text


def _format(path: Path, text: str) -> str:
    ext = path.suffix.lower()
    if ext in _CSV_EXT:
        return "csv"
    if ext in _JSONL_EXT:
        return "jsonl"
    return "jsonl" if text.lstrip().startswith("{") else "csv"


def _parse_csv(text: str, path: Path, required: list[str], problems: _Problems) -> list[dict[str, Any]]:
    delim = _CSV_EXT.get(path.suffix.lower()) or _sniff_delimiter(text, required)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delim)
    header: list[str] | None = None
    rows: list[dict[str, Any]] = []
    last = 0
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            problems.add(reader.line_num or last + 1, f"malformed CSV: {e}")
            return rows
        start, last = last + 1, reader.line_num
        if not fields or all(not f.strip() for f in fields):
            continue
        if header is None:
            header = [_norm_key(f) for f in fields]
            dup = sorted({h for h in header if header.count(h) > 1 and h})
            if dup:
                problems.add(start, f"duplicate column(s) in header: {', '.join(dup)}")
            missing = [c for c in required if c not in header]
            if missing:
                raise _fail(
                    path, start,
                    f"missing required column(s): {', '.join(missing)} (header has: {', '.join(h for h in header if h)})",
                )
            continue
        values = [f.strip() for f in fields]
        if len(values) > len(header):
            extra = values[len(header) :]
            if any(extra):
                problems.add(start, f"{len(values)} fields but the header has {len(header)} columns")
                continue
            values = values[: len(header)]
        values += [""] * (len(header) - len(values))
        row: dict[str, Any] = {h: v for h, v in zip(header, values, strict=True) if h}
        row["_line"] = start
        rows.append(row)
    if header is None:
        problems.add(1, "no header row")
    return rows


def _sniff_delimiter(text: str, required: list[str]) -> str:
    first = next((ln for ln in text.splitlines() if ln.strip()), "")
    best, best_score = ",", -1
    for d in (",", ";", "\t", "|"):
        try:
            cols = [_norm_key(c) for c in next(csv.reader([first], delimiter=d))]
        except (csv.Error, StopIteration):
            continue
        score = sum(c in cols for c in required) * 100 + len(cols)
        if score > best_score:
            best, best_score = d, score
    return best


def _parse_jsonl(text: str, required: list[str], problems: _Problems) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    # split on "\n" only: str.splitlines() would also split on U+2028 etc. inside JSON strings
    for n, raw in enumerate(text.split("\n"), start=1):
        line = raw.strip()
        if not line:
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            problems.add(n, f"malformed JSON: {e.msg} (column {e.colno})")
            continue
        except RecursionError:
            problems.add(n, "malformed JSON: nested too deeply")
            continue
        if not isinstance(obj, dict):
            problems.add(n, f"expected a JSON object, got {type(obj).__name__}")
            continue
        row: dict[str, Any] = {}
        for k, v in obj.items():
            key = _norm_key(k)
            if key in row or key == "_line":
                problems.add(n, f"duplicate key {key!r}")
                continue
            row[key] = v.strip() if isinstance(v, str) else v
        missing = [c for c in required if c not in row]
        if missing:
            problems.add(n, f"missing required key(s): {', '.join(missing)}")
            continue
        row["_line"] = n
        rows.append(row)
    return rows


# --------------------------------------------------------------------------------------- validation


def _dedupe(rows: list[dict[str, Any]], path: Path) -> list[dict[str, Any]]:
    first_seen: dict[str, int] = {}
    out: list[dict[str, Any]] = []
    dropped: list[tuple[int, int]] = []
    for row in rows:
        key = json.dumps({k: v for k, v in row.items() if k != "_line"}, sort_keys=True, default=str)
        if key in first_seen:
            dropped.append((row["_line"], first_seen[key]))
            continue
        first_seen[key] = row["_line"]
        out.append(row)
    for line, orig in dropped[:10]:
        log.warning("%s:%d: exact duplicate of line %d; dropped", path, line, orig)
    if len(dropped) > 10:
        log.warning("%s: %d exact duplicate rows dropped in total", path, len(dropped))
    return out


def _resolve(
    raw: str, base: Path, root: str | os.PathLike | None, root_real: str | None, line: int, problems: _Problems
) -> str | None:
    if _URL.match(raw):
        problems.add(line, f"path {raw!r} is a URL; download the images and list local paths")
        return None
    p = Path(raw)
    full = os.path.normpath(p if p.is_absolute() else base / p)
    if root_real is not None:
        real = os.path.realpath(full)
        if not (real == root_real or real.startswith(root_real.rstrip(os.sep) + os.sep)):
            problems.add(line, f"path {raw!r} escapes the root folder {os.fspath(root)}")
            return None
    return full
