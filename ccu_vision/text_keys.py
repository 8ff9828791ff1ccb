"""A catalog's text keys: each brand's name and the lettering read in its logo references.

OCR of a reference logo is slow-ish (~0.3 s), so what was read is cached by the logo's content
hash in ``index/text-cache.json`` inside the catalog's home (a cache like the FAISS files: the
database stays the source of truth, the file is written atomically, and a missing, unreadable or
foreign cache is simply rebuilt). A scan opens the catalog read-only but still writes this cache
(a derived file, replaced by rename, so concurrent scans cannot corrupt it), so only the first scan
after new logos are added reads them; a home that cannot be written keeps it in memory only.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .text import TextLine, TextReader, brand_keys

log = logging.getLogger(__name__)

CACHE_FORMAT = "ccu-text-cache/1"
CACHE_NAME = "text-cache.json"


def _cache_path(home: Path) -> Path:
    return home / "index" / CACHE_NAME


def load_cache(home: Path) -> dict[str, list[TextLine]]:
    """sha256 -> OCR lines; {} when the cache is missing or unreadable (it is rebuilt, never trusted blindly)."""
    p = _cache_path(home)
    try:
        raw = json.loads(p.read_text(encoding="utf-8"))
        if raw.get("format") != CACHE_FORMAT:
            raise ValueError(f"format {raw.get('format')!r}")
        return {str(sha): [TextLine(str(t), float(c)) for t, c in lines] for sha, lines in raw["lines"].items()}
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as e:
        log.warning("%s: ignoring the text cache (%s); it is rebuilt", p, e)
        return {}


def save_cache(home: Path, cache: dict[str, list[TextLine]]) -> None:
    """Write the cache atomically (temp file + fsync + rename); an unwritable home only logs."""
    p = _cache_path(home)
    tmp = p.parent / f".{CACHE_NAME}.{os.getpid()}.tmp"  # the catalog's cleanup removes stale ones
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        data = json.dumps({"format": CACHE_FORMAT,
                           "lines": {k: [ln.to_list() for ln in v] for k, v in sorted(cache.items())}})
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except OSError as e:
        log.warning("%s: cannot write the text cache (%s); text is read again next time", p, e)
        try:
            tmp.unlink()
        except OSError:
            pass


def catalog_text_keys(catalog: Any, reader: TextReader, refs: Iterable[Any] | None = None
                      ) -> tuple[dict[str, list[str]], dict[str, str]]:
    """(brand -> text keys, brand -> the logo reference a text-only match is listed under).

    Logo references missing from the cache are read now (their stored image) and the cache is
    updated when the home is writable. A reference whose image cannot be read contributes its
    brand's name only (and a warning naming it).
    """
    from .errors import ImageError
    from .imageio import load_image

    home = Path(catalog.home)
    cache = load_cache(home)
    logos = [r for r in (catalog.list_refs() if refs is None else refs) if r.kind == "logo"]
    missing = [r for r in logos if r.sha256 not in cache]
    for r in missing:
        try:
            img = load_image(catalog.ref_image_path(r.ref_id), keep_alpha=True)
        except (ImageError, OSError) as e:
            log.warning("text keys: cannot read logo %s of %s (%s); its brand keeps its name only",
                        r.ref_id, r.brand, e)
            continue
        cache[r.sha256] = reader.read_logo(img)
    if missing and os.access(home, os.W_OK):
        save_cache(home, cache)
    lines: dict[str, list[TextLine]] = {}
    first: dict[str, str] = {}
    for r in sorted(logos, key=lambda r: r.ref_id):
        lines.setdefault(r.brand, []).extend(cache.get(r.sha256, []))
        first.setdefault(r.brand, r.ref_id)
    keys = {b: ks for b, ln in lines.items() if (ks := brand_keys(b, ln))}
    if missing:
        log.info("text keys: read %d logo references; %d brands have keys", len(missing), len(keys))
    return keys, first
