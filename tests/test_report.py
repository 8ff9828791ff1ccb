"""The HTML report: self-contained, flagged first, references beside listings, boxes drawn, escaped."""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path

import numpy as np
from PIL import Image

from ccu_vision.report import build_report, write_report
from ccu_vision.scan import ScanInput


class StubCatalog:
    def __init__(self, paths: dict[str, Path]) -> None:
        self.paths = paths

    def ref_image_path(self, ref_id: str) -> Path:
        if ref_id not in self.paths:
            raise KeyError(ref_id)
        return self.paths[ref_id]


def _img(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (400, 300)) -> Path:
    Image.new("RGB", size, colour).save(path)
    return path


def _rows(tmp_path: Path) -> tuple[list[dict], StubCatalog]:
    listing = _img(tmp_path / "listing <1>.png", (240, 240, 240))
    clear = _img(tmp_path / "clear.png", (10, 200, 10))
    ref = _img(tmp_path / "ref.png", (0, 0, 200), (64, 64))
    evil = "<script>alert('x')</script>"
    rows = [
        {"image": str(clear), "listing_id": "C1", "status": "ok", "verdict": "clear", "flags": [],
         "matches": [{"ref_id": "r1", "brand": evil, "kind": "logo", "score": 0.41, "box": [0, 0, 10, 10]}]},
        {"image": str(tmp_path / "broken.jpg"), "status": "error", "error": "empty file <0 bytes>",
         "verdict": "error", "flags": [], "matches": []},
        {"image": str(listing), "listing_id": "L<7>", "status": "ok", "verdict": "suspect",
         "flags": [{"type": "logo", "brand": evil, "ref_id": "r1", "score": 0.97, "threshold": 0.8,
                    "box": [100, 50, 300, 250], "text": "<i>HUGO</i> BOSS"}],
         "matches": [{"ref_id": "r1", "brand": evil, "kind": "logo", "score": 0.97, "box": [100, 50, 300, 250]}]},
        {"image": str(tmp_path / "gone.jpg"), "status": "ok", "verdict": "suspect",
         "flags": [{"type": "near_duplicate", "brand": "Acme & Co", "ref_id": "missing", "score": 0.91,
                    "threshold": 0.9}],
         "matches": [{"ref_id": "missing", "brand": "Acme & Co", "kind": "product", "score": 0.91}]},
    ]
    return rows, StubCatalog({"r1": ref})


def _data_uris(html: str) -> list[Image.Image]:
    out = []
    for b64 in re.findall(r'src="data:image/jpeg;base64,([A-Za-z0-9+/=]+)"', html):
        out.append(Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB"))
    return out


def test_report_flagged_first_escaped_self_contained(tmp_path: Path) -> None:
    rows, cat = _rows(tmp_path)
    meta = {("" + rows[2]["image"], "L<7>"): ScanInput(rows[2]["image"], "L<7>", "seller&1", "Nike <b>Air</b>")}
    out = write_report(rows, tmp_path / "out" / "report.html", cat, meta=meta)
    html = out.read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>")
    # user strings are escaped, never live markup
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "<b>Air</b>" not in html and "Nike &lt;b&gt;Air&lt;/b&gt;" in html
    assert "listing &lt;1&gt;.png" in html and "L&lt;7&gt;" in html and "seller&amp;1" in html
    assert "Acme &amp; Co" in html and "empty file &lt;0 bytes&gt;" in html
    assert "text &ldquo;&lt;i&gt;HUGO&lt;/i&gt; BOSS&rdquo;" in html  # the text that matched, escaped
    # self-contained: no external resource references
    assert not re.search(r'(src|href)="(?!data:)', html)
    # flagged listings first (highest score first), then clear, then errors
    i_sus1, i_sus2 = html.index("listing &lt;1&gt;.png"), html.index("gone.jpg")
    assert i_sus1 < i_sus2 < html.index("clear.png") < html.index("broken.jpg")
    assert html.index("Clear listings") < html.index("Errors")
    assert "<details>" in html  # clear listings collapsed
    assert "0.970" in html and "0.800" in html  # score vs threshold
    # the listing thumbnail (box drawn in red) and the reference thumbnail are embedded
    imgs = _data_uris(html)
    assert len(imgs) == 2
    listing, ref = imgs
    assert max(listing.size) <= 256 and ref.size == (64, 64)
    a = np.asarray(listing).astype(int)
    red = (a[:, :, 0] > 180) & (a[:, :, 1] < 90) & (a[:, :, 2] < 120)
    ys, xs = np.nonzero(red)
    scale = 256 / 400
    # the box edges lie where [100, 50, 300, 250] maps on the thumbnail
    assert abs(xs.min() - 100 * scale) <= 3 and abs(xs.max() - 300 * scale) <= 4
    assert abs(ys.min() - 50 * scale) <= 3 and abs(ys.max() - 250 * scale) <= 4
    assert np.asarray(ref)[32, 32, 2] > 150  # the blue reference
    assert not (tmp_path / "out" / "report.html.tmp").exists()


def test_report_without_catalog_or_rows() -> None:
    html = build_report([], None)
    assert "0 listings" in html and "No listing matched" in html
