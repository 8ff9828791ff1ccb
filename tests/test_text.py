"""Text evidence: normalization, key extraction, matching rules, and the OCR engine on a rendered word."""

from __future__ import annotations

import importlib.util
import itertools

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from ccu_vision.text import (
    MIN_KEY,
    TextLine,
    TextReader,
    allowed_edits,
    brand_keys,
    match_quality,
    normalize,
    substring_distance,
    words,
)


def brute_substring_distance(key: str, text: str) -> int:
    """Edit distance of key to every substring of text, by plain Levenshtein (the reference)."""
    def lev(a: str, b: str) -> int:
        prev = list(range(len(b) + 1))
        for i, ca in enumerate(a, 1):
            cur = [i]
            for j, cb in enumerate(b, 1):
                cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
            prev = cur
        return prev[-1]
    subs = {text[i:j] for i in range(len(text) + 1) for j in range(i, len(text) + 1)}
    return min(lev(key, s) for s in subs)


def test_normalize_and_words():
    assert normalize("Hugo Boss") == normalize("hugo-boss") == normalize("HUGO  BOSS!") == "hugoboss"
    assert normalize("Café Noir") == "cafenoir"
    assert normalize("Write.as") == "writeas"
    assert words("New Balance-990 v6") == ["new", "balance", "990", "v6"]


def test_substring_distance_matches_brute_force():
    rng = np.random.default_rng(0)
    for _ in range(200):
        key = "".join(rng.choice(list("abc"), rng.integers(1, 6)))
        text = "".join(rng.choice(list("abcd"), rng.integers(0, 8)))
        assert substring_distance(key, text) == brute_substring_distance(key, text), (key, text)


def test_allowed_edits_grow_with_length():
    assert [allowed_edits(n) for n in (3, 5, 6, 9, 10, 20)] == [0, 0, 1, 1, 2, 2]


def test_brand_keys_from_name_and_logo_lettering():
    lines = [TextLine("FLUENTD", 0.97), TextLine("x", 0.99), TextLine("Noise", 0.3)]
    assert brand_keys("fluent-d", lines) == ["fluentd"]
    assert brand_keys("Dolby", [TextLine("DOLBY AUDIO", 0.9)]) == ["dolby", "dolbyaudio"]
    assert brand_keys("HP") == []  # under MIN_KEY characters: too common as text
    assert all(len(k) >= MIN_KEY for k in brand_keys("BMW", [TextLine("M3", 0.99)]))


@pytest.mark.parametrize("key,lines,expect", [
    ("puma", [TextLine("PUMA", 0.9)], 0.9),  # short key, whole line
    ("puma", [TextLine("NEW PUMA 2024", 0.8)], 0.8),  # short key, a whole word
    ("puma", [TextLine("PUMAS", 0.9)], 0.0),  # short key inside a longer word: no
    ("bmw", [TextLine("submwater", 0.99)], 0.0),
    ("dolby", [TextLine("Dolby", 0.5)], 0.0),  # below the confidence floor
    ("fluentd", [TextLine("FUUENTD", 0.9)], pytest.approx(0.9 * (1 - 1 / 7))),  # one edit allowed at 7
    ("fluentd", [TextLine("FUUENTX", 0.9)], 0.0),  # two edits are too many at 7
    ("hugoboss", [TextLine("HUGO", 0.9), TextLine("BOSS", 0.8)], 0.8),  # split over two lines
    ("robinhood", [TextLine("best ROBINHOOD deals", 0.95)], 0.95),  # inside a line
])
def test_match_quality_rules(key, lines, expect):
    assert match_quality(key, lines) == expect


def test_match_quality_of_any_line_is_the_best_line():
    lines = [TextLine("ROBINHOOD", 0.7), TextLine("R0BINHOOD", 0.99)]
    assert match_quality("robinhood", lines) == pytest.approx(max(0.7, 0.99 * (1 - 1 / 9)))
    for perm in itertools.permutations(lines):
        assert match_quality("robinhood", list(perm)) == pytest.approx(match_quality("robinhood", lines))


def _font(size: int):
    try:
        return ImageFont.truetype("DejaVuSans-Bold.ttf", size)
    except OSError:
        return ImageFont.load_default(size)


@pytest.mark.skipif(importlib.util.find_spec("rapidocr_onnxruntime") is None, reason="OCR engine not installed")
def test_reader_reads_a_rendered_brand_name():
    img = Image.new("RGB", (480, 320), (236, 232, 224))
    d = ImageDraw.Draw(img)
    d.text((60, 120), "ROBINHOOD", fill=(20, 20, 30), font=_font(56))
    lines = TextReader(threads=1).read(img)
    assert match_quality("robinhood", lines) > 0.8, lines
    blank = TextReader(threads=1).read(Image.new("RGB", (320, 240), (200, 200, 200)))
    assert blank == []


def test_photo_canvas_sizes():
    small, big = Image.new("L", (400, 300)), Image.new("RGB", (3000, 2000))
    assert photo_canvas(small).size == (400, 300) and photo_canvas(small).mode == "RGB"  # never upscaled
    assert photo_canvas(big).size == (1024, 683)
    assert photo_canvas(small, 736, exact=True).size == (736, 552)  # exact: up ...
    assert photo_canvas(big, 736, exact=True).size == (736, 491)  # ... or down
    assert photo_canvas(Image.new("RGB", (300, 736)), 736, exact=True).size == (300, 736)


@pytest.mark.skipif(importlib.util.find_spec("rapidocr_onnxruntime") is None, reason="OCR engine not installed")
def test_reader_exact_setting_reads_and_boxes_are_in_the_source_photo():
    img = Image.new("RGB", (1600, 1000), (236, 232, 224))
    ImageDraw.Draw(img).text((200, 420), "ROBINHOOD", fill=(20, 20, 30), font=_font(150))
    how = PhotoOCR(640, True, False)
    reader = TextReader(threads=1)
    direct = reader.read(img, how)
    assert match_quality("robinhood", direct) > 0.8, direct
    x0, y0, x1, y1 = next(ln.box for ln in direct if "ROBIN" in ln.text.upper())
    assert 120 < x0 < 280 and 350 < y0 < 520 and x1 > 900, direct  # in the 1600-px photo's pixels
    canvas = photo_canvas(img, 640, exact=True)  # what a scan keeps after decoding
    assert reader.read(canvas, how, source_width=1600) == direct


# ----------------------------------------------------------------------------- scoring with text

import json  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

from ccu_vision.errors import ModelError  # noqa: E402
from ccu_vision.text import (  # noqa: E402
    LEGACY_PHOTO,
    PhotoOCR,
    TextScoring,
    brand_evidence,
    combine,
    parse_config,
    photo_canvas,
)
from ccu_vision.text_keys import CACHE_NAME, catalog_text_keys, load_cache  # noqa: E402


def _sig(z: float) -> float:
    return float(1 / (1 + np.exp(-z)))


def test_combine_raises_matched_brands_and_adds_text_only_ones():
    cfg = TextScoring(beta=4.0, gamma=-3.0)
    brand = {"r1": "puma", "r2": "nike", "r3": "puma"}.get
    scores = {"r1": 0.2, "r2": 0.6, "r3": 0.5}
    assert combine(scores, brand, {}, {}, cfg) == pytest.approx(scores)  # no text: nothing moves
    out = combine(scores, brand, {"puma": 0.5, "adidas": 1.0}, {"puma": "r1", "adidas": "r9"}, cfg)
    assert out["r1"] == pytest.approx(_sig(np.log(0.2 / 0.8) + 2.0))
    assert out["r3"] == pytest.approx(_sig(0.0 + 2.0))  # every reference of the brand
    assert out["r2"] == pytest.approx(0.6)
    assert out["r9"] == pytest.approx(_sig(-3.0 + 4.0))  # only the text found adidas
    assert set(out) == {"r1", "r2", "r3", "r9"}


def test_combine_without_a_listed_reference_adds_nothing():
    out = combine({"r1": 0.3}, {"r1": "nike"}.get, {"zara": 1.0}, {}, TextScoring(5.0, -2.0))
    assert out == pytest.approx({"r1": 0.3})


def test_text_scoring_metadata_round_trip_and_refusals():
    cfg = TextScoring(8.5, -6.0, 0.6)
    assert parse_config(cfg.to_json(), "m.onnx") == cfg
    assert "photo" not in json.loads(cfg.to_json())  # a file from before the setting reads as it did
    assert parse_config(cfg.to_json(), "m.onnx").photo == LEGACY_PHOTO
    exact = TextScoring(8.5, -6.0, 0.6, PhotoOCR(640, True, False))
    assert json.loads(exact.to_json())["photo"] == {"side": 640, "exact": True, "angle_cls": False}
    assert parse_config(exact.to_json(), "m.onnx") == exact
    assert parse_config("", "m.onnx") is None
    for photo in ({"side": 8, "exact": True, "angle_cls": True}, {"side": 640, "exact": 1, "angle_cls": True},
                  {"side": 640}, "640"):
        with pytest.raises(ModelError, match="m.onnx.*photo"):
            parse_config(json.dumps({**json.loads(cfg.to_json()), "photo": photo}), "m.onnx")
    for bad in ({"format": "ccu-text-scoring/1", "beta": -1, "gamma": 0, "min_conf": 0.5},
                {"format": "ccu-text-scoring/1", "beta": 1, "gamma": "x", "min_conf": 0.5},
                {"format": "ccu-text-scoring/1", "beta": 1, "gamma": 0, "min_conf": 2},
                {"format": "ccu-text-scoring/9", "beta": 1, "gamma": 0, "min_conf": 0.5}):
        with pytest.raises(ModelError, match="m.onnx"):
            parse_config(json.dumps(bad), "m.onnx")


def test_brand_evidence_names_the_line():
    lines = [TextLine("100% AUTH", 0.99, (0, 0, 10, 10)), TextLine("Robinhood", 0.9, (5, 6, 50, 20))]
    ev = brand_evidence({"robinhood": ["robinhood"], "auth0": ["auth0"], "sale": ["sale"]}, lines)
    assert list(ev) == ["robinhood"]
    q, line = ev["robinhood"]
    assert q == pytest.approx(0.9) and line.box == (5, 6, 50, 20)


@dataclass
class _Ref:
    ref_id: str
    brand: str
    kind: str
    sha256: str


class _FakeCatalog:
    def __init__(self, home: Path, refs: list[_Ref]):
        self.home, self.refs = home, refs

    def list_refs(self):
        return list(self.refs)

    def ref_image_path(self, ref_id: str) -> Path:
        return self.home / "refs" / f"{ref_id}.png"


class _CountingReader:
    def __init__(self):
        self.calls = 0

    def read_logo(self, img):
        self.calls += 1
        return [TextLine("DOLBY", 0.95)] if img.size[0] > 40 else []


def _catalog(tmp_path: Path) -> _FakeCatalog:
    (tmp_path / "refs").mkdir(exist_ok=True)
    Image.new("RGBA", (64, 32), (0, 0, 0, 255)).save(tmp_path / "refs" / "a.png")
    Image.new("RGBA", (16, 16), (0, 0, 0, 255)).save(tmp_path / "refs" / "b.png")
    refs = [_Ref("a", "Dolby Labs", "logo", "sha-a"), _Ref("b", "HP", "logo", "sha-b"),
            _Ref("c", "Dolby Labs", "product", "sha-c")]
    return _FakeCatalog(tmp_path, refs)


def test_catalog_text_keys_reads_each_logo_once_and_caches(tmp_path):
    reader = _CountingReader()
    keys, first = catalog_text_keys(_catalog(tmp_path), reader)
    assert keys == {"Dolby Labs": ["dolby", "dolbylabs"]}  # "hp" is too short to be a key
    assert first == {"Dolby Labs": "a", "HP": "b"}
    assert reader.calls == 2
    assert set(load_cache(tmp_path)) == {"sha-a", "sha-b"}
    again = _CountingReader()
    assert catalog_text_keys(_catalog(tmp_path), again)[0] == keys and again.calls == 0


def test_catalog_text_keys_survives_a_corrupt_or_foreign_cache(tmp_path):
    (tmp_path / "index").mkdir()
    for bad in ("{not json", json.dumps({"format": "other/1", "lines": {}})):
        (tmp_path / "index" / CACHE_NAME).write_text(bad)
        reader = _CountingReader()
        keys, _ = catalog_text_keys(_catalog(tmp_path), reader)
        assert keys == {"Dolby Labs": ["dolby", "dolbylabs"]} and reader.calls == 2
        assert set(load_cache(tmp_path)) == {"sha-a", "sha-b"}  # replaced by a good one
    assert not [p for p in (tmp_path / "index").iterdir() if p.name.endswith(".tmp")]


def test_catalog_text_keys_names_an_unreadable_logo(tmp_path, caplog):
    cat = _catalog(tmp_path)
    (tmp_path / "refs" / "a.png").write_bytes(b"not an image")
    keys, _ = catalog_text_keys(cat, _CountingReader())
    assert keys == {"Dolby Labs": ["dolbylabs"]}  # its name still is a key
    assert "cannot read logo a of Dolby Labs" in caplog.text
