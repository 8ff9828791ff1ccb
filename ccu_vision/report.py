"""Self-contained HTML report of a scan: flagged listings first, each beside what it matched.

One file, no external resources: inline CSS, images as base64 JPEG thumbnails (about 256 px),
the logo box drawn on the listing thumbnail. Clear listings and error rows follow, collapsed.
Every user-provided string (paths, titles, brand names, ids, error reasons) is HTML-escaped.
"""

from __future__ import annotations

import base64
import html
import io
import logging
import os
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from . import __version__

log = logging.getLogger(__name__)

THUMB = 256
BOX_COLOURS = ("#e11d48", "#f59e0b", "#2563eb", "#16a34a", "#9333ea")

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#1f2937;background:#f9fafb}
h1{font-size:1.5em;margin:0 0 4px}h2{font-size:1.2em;margin:28px 0 10px}
.meta{color:#6b7280;font-size:.9em}
.stats span{display:inline-block;margin:8px 12px 0 0;padding:4px 10px;border-radius:12px;background:#e5e7eb}
.stats .sus{background:#fee2e2;color:#991b1b}.stats .err{background:#fef3c7;color:#92400e}
.card{background:#fff;border:1px solid #e5e7eb;border-left:4px solid #e11d48;border-radius:6px;
padding:12px;margin:0 0 14px;display:flex;gap:18px;flex-wrap:wrap;align-items:flex-start}
.card figure{margin:0;text-align:center;font-size:.8em;color:#6b7280;max-width:260px}
.card img{max-width:256px;max-height:256px;border:1px solid #d1d5db;background:#fff}
.info{flex:1;min-width:260px}.info .path{font-family:monospace;font-size:.85em;word-break:break-all}
table{border-collapse:collapse;font-size:.88em;margin-top:6px}
td,th{padding:3px 8px;border-bottom:1px solid #f3f4f6;text-align:left;vertical-align:top}
th{color:#6b7280;font-weight:600}.over{color:#b91c1c;font-weight:600}
.noimg{width:256px;height:80px;display:flex;align-items:center;justify-content:center;
border:1px dashed #d1d5db;color:#9ca3af}
details{background:#fff;border:1px solid #e5e7eb;border-radius:6px;padding:8px 12px;margin-top:12px}
summary{cursor:pointer;font-weight:600}
.mono{font-family:monospace;word-break:break-all}
"""


def _e(v: Any) -> str:
    return html.escape("" if v is None else str(v), quote=True)


def _thumb(img: Image.Image, boxes: Sequence[tuple[Sequence[float], str]] = (), size: int = THUMB) -> str:
    """A base64 JPEG data URI of ``img`` shrunk to ``size`` px, with boxes (original pixels) drawn."""
    img = img.convert("RGB")
    w, h = img.size
    scale = min(1.0, size / max(w, h))
    if scale < 1.0:
        img = img.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BILINEAR)
    if boxes:
        draw = ImageDraw.Draw(img)
        width = max(2, round(max(img.size) / 90))
        for box, colour in boxes:
            x0, y0, x1, y1 = (float(v) * scale for v in box)
            draw.rectangle([x0, y0, max(x0, x1 - 1), max(y0, y1 - 1)], outline=colour, width=width)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=82)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _load(path: str | os.PathLike, draft_size: int | None) -> Image.Image | None:
    from .imageio import load_image

    try:
        return load_image(path, draft_size=draft_size)
    except Exception as e:  # noqa: BLE001 - a report never fails on one image
        log.debug("report: cannot load %s: %s", path, e)
        return None


def _img_tag(uri: str | None, alt: str) -> str:
    if uri is None:
        return f'<div class="noimg">{_e(alt)}</div>'
    return f'<img src="{uri}" alt="{_e(alt)}">'


def build_report(
    rows: Sequence[Mapping[str, Any]],
    catalog: Any = None,
    *,
    meta: Mapping[tuple[str, str], Any] | None = None,
    title: str = "ccu-vision scan report",
    max_flagged_images: int = 2000,
    summary: Mapping[str, Any] | None = None,
) -> str:
    """The report's HTML as a string.

    ``rows`` are scan rows; ``catalog`` (optional) supplies the stored reference images via
    ``ref_image_path``; ``meta`` maps a row key ``(image, listing_id)`` to an object with
    ``seller_id``/``title`` attributes (the scan's inputs) to show listing details.
    """
    from .scan import row_key

    flagged = [r for r in rows if r.get("verdict") == "suspect"]
    flagged.sort(key=lambda r: -max((f.get("score", 0.0) for f in r.get("flags", [])), default=0.0))
    clear = [r for r in rows if r.get("verdict") == "clear"]
    errors = [r for r in rows if r.get("status") == "error" or r.get("verdict") == "error"]
    ref_cache: dict[str, str | None] = {}

    def ref_thumb(ref_id: str) -> str | None:
        if ref_id not in ref_cache:
            uri = None
            if catalog is not None:
                try:
                    img = _load(catalog.ref_image_path(ref_id), THUMB)
                    uri = _thumb(img) if img is not None else None
                except Exception as e:  # noqa: BLE001
                    log.debug("report: no stored image for %s: %s", ref_id, e)
            ref_cache[ref_id] = uri
        return ref_cache[ref_id]

    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        f'<div class="meta">ccu-vision {_e(__version__)} &middot; generated '
        f"{_e(datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC'))}</div>",
        '<div class="stats">'
        f"<span>{len(rows)} listings</span>"
        f'<span class="sus">{len(flagged)} suspect</span>'
        f"<span>{len(clear)} clear</span>"
        f'<span class="err">{len(errors)} errors</span></div>',
    ]
    if summary:
        ips = summary.get("images_per_s")
        parts.append(f'<div class="meta">scan: {_e(summary.get("scanned"))} images in '
                     f'{_e(summary.get("wall_s"))} s ({_e(ips)} images/s)</div>')

    parts.append(f"<h2>Suspect listings ({len(flagged)})</h2>")
    if not flagged:
        parts.append('<p class="meta">No listing matched a registered reference above its threshold.</p>')
    for n, row in enumerate(flagged):
        flags = list(row.get("flags", []))
        m = meta.get(row_key(row)) if meta else None
        listing_uri = None
        if n < max_flagged_images:
            img = _load(row.get("image", ""), None)  # full size: boxes are in original pixels
            if img is not None:
                boxes = [(f["box"], BOX_COLOURS[i % len(BOX_COLOURS)])
                         for i, f in enumerate(flags) if f.get("box")]
                listing_uri = _thumb(img, boxes)
        parts.append('<div class="card">')
        parts.append(f"<figure>{_img_tag(listing_uri, 'listing image')}<figcaption>listing</figcaption></figure>")
        shown: set[str] = set()
        for i, f in enumerate(flags):
            rid = str(f.get("ref_id", ""))
            if rid in shown or len(shown) >= 3:
                continue
            shown.add(rid)
            uri = ref_thumb(rid) if n < max_flagged_images else None
            kind = "logo" if f.get("type") == "logo" else "official photo"
            colour = BOX_COLOURS[i % len(BOX_COLOURS)] if f.get("box") else "#6b7280"
            parts.append(
                f"<figure>{_img_tag(uri, 'reference ' + rid)}<figcaption>"
                f'<b style="color:{colour}">{_e(f.get("brand"))}</b> {_e(kind)}<br>'
                f'<span class="mono">{_e(rid)}</span></figcaption></figure>'
            )
        parts.append('<div class="info">')
        parts.append(f'<div class="path">{_e(row.get("image"))}</div>')
        details = []
        if row.get("listing_id") is not None:
            details.append(f"listing <b>{_e(row.get('listing_id'))}</b>")
        if m is not None and getattr(m, "seller_id", None):
            details.append(f"seller <b>{_e(m.seller_id)}</b>")
        if details:
            parts.append(f"<div>{' &middot; '.join(details)}</div>")
        if m is not None and getattr(m, "title", None):
            parts.append(f"<div><i>{_e(m.title)}</i></div>")
        parts.append("<table><tr><th>flag</th><th>brand</th><th>score</th><th>threshold</th><th>box</th></tr>")
        for f in flags:
            box = f.get("box")
            parts.append(
                f"<tr><td>{_e(f.get('type'))}</td><td>{_e(f.get('brand'))}"
                + (f"<br><small>text &ldquo;{_e(f['text'])}&rdquo;</small>" if f.get("text") else "") + "</td>"
                f'<td class="over">{float(f.get("score", 0)):.3f}</td><td>&ge; {float(f.get("threshold", 0)):.3f}</td>'
                f"<td>{_e(box) if box else ''}</td></tr>"
            )
        parts.append("</table></div></div>")

    parts.append(f"<details><summary>Clear listings ({len(clear)})</summary>")
    if clear:
        parts.append("<table><tr><th>image</th><th>listing</th><th>best match</th><th>score</th></tr>")
        for row in clear:
            best = max(row.get("matches", []), key=lambda x: x.get("score", 0.0), default=None)
            bm = f"{_e(best.get('brand'))} ({_e(best.get('kind'))})" if best else ""
            sc = f"{float(best.get('score', 0)):.3f}" if best else ""
            parts.append(f'<tr><td class="mono">{_e(row.get("image"))}</td><td>{_e(row.get("listing_id"))}</td>'
                         f"<td>{bm}</td><td>{sc}</td></tr>")
        parts.append("</table>")
    parts.append("</details>")

    parts.append(f"<details><summary>Errors ({len(errors)})</summary>")
    if errors:
        parts.append("<table><tr><th>image</th><th>listing</th><th>reason</th></tr>")
        for row in errors:
            parts.append(f'<tr><td class="mono">{_e(row.get("image"))}</td><td>{_e(row.get("listing_id"))}</td>'
                         f"<td>{_e(row.get('error'))}</td></tr>")
        parts.append("</table>")
    parts.append("</details></body></html>")
    return "\n".join(parts)


def write_report(
    rows: Sequence[Mapping[str, Any]],
    path: str | os.PathLike,
    catalog: Any = None,
    **kwargs: Any,
) -> Path:
    """Write :func:`build_report` to ``path`` (atomically: temp file + rename) and return the path."""
    path = Path(path)
    text = build_report(rows, catalog, **kwargs)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8", errors="backslashreplace")  # non-UTF-8 file names
    os.replace(tmp, path)
    return path
