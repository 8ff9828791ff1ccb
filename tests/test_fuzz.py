"""Bounded, deterministic fuzzing of the decoder and the manifest parser.

Contract under test: ``load_image_bytes`` raises nothing but ImageError and ``read_manifest`` nothing
but ManifestError, whatever the input. Hypothesis runs derandomized (same examples every run, no
example database) with bounded example counts so this file takes a few seconds on 2 cores.
"""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import LOGO_SVG
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from ccu_vision.errors import ImageError, ManifestError
from ccu_vision.imageio import load_image_bytes
from ccu_vision.manifest import read_manifest

FUZZ = settings(
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=400,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def _seed_images() -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8), "RGB")
    out: dict[str, bytes] = {}

    def enc(name: str, img: Image.Image, fmt: str, **kw: object) -> None:
        buf = io.BytesIO()
        img.save(buf, fmt, **kw)
        out[name] = buf.getvalue()

    enc("rgb.png", rgb, "PNG")
    enc("p_trns.png", rgb.convert("P"), "PNG", transparency=0)
    enc("gray16.png", Image.fromarray(rng.integers(0, 65535, (8, 8), dtype=np.uint16)), "PNG")
    enc("rgba.png", rgb.convert("RGBA"), "PNG")
    enc("base.jpg", rgb, "JPEG", quality=80)
    enc("progressive.jpg", rgb, "JPEG", progressive=True)
    enc("cmyk.jpg", rgb.convert("CMYK"), "JPEG")
    exif = Image.Exif()
    exif[0x0112] = 8
    enc("exif.jpg", rgb, "JPEG", exif=exif.tobytes())
    frames = [rgb, rgb.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    enc("anim.gif", frames[0], "GIF", save_all=True, append_images=frames[1:])
    enc("anim.webp", frames[0], "WEBP", save_all=True, append_images=frames[1:], lossless=True)
    enc("lossy.webp", rgb, "WEBP", quality=50)
    enc("a.bmp", rgb, "BMP")
    enc("a.tif", rgb, "TIFF", compression="tiff_deflate")
    enc("la.png", rgb.convert("LA"), "PNG")
    out["logo.svg"] = LOGO_SVG.encode()
    out["logo.svgz"] = gzip.compress(LOGO_SVG.encode())
    return out


SEEDS = _seed_images()
SEED_NAMES = sorted(SEEDS)


def _check_decode(data: bytes, name: str, keep_alpha: bool, draft: int | None) -> None:
    try:
        img = load_image_bytes(data, name, keep_alpha=keep_alpha, max_pixels=2_000_000, draft_size=draft)
    except ImageError as e:
        assert e.path == name and isinstance(e.reason, str) and e.reason
        return
    assert isinstance(img, Image.Image) and img.mode in ("RGB", "RGBA") and img.width > 0 and img.height > 0
    assert img.mode == "RGB" or keep_alpha
    img.tobytes()  # pixels really decoded


@st.composite
def mutated(draw: st.DrawFn) -> tuple[bytes, str]:
    name = draw(st.sampled_from(SEED_NAMES))
    data = bytearray(SEEDS[name])
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate", "header"]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and data:
            data[pos] = draw(st.sampled_from([0x00, 0xFF, 0x7F, 0x80, 0x3C]))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del data[pos : pos + draw(st.integers(1, 64))]
        elif op == "truncate":
            del data[pos:]
        elif op == "header":  # mutate inside the first 64 bytes, where sizes and magic live
            hpos = draw(st.integers(0, min(63, max(0, len(data) - 1))))
            if data:
                data[hpos] = draw(st.integers(0, 255))
    return bytes(data), name


@FUZZ
@given(case=mutated(), keep_alpha=st.booleans(), draft=st.sampled_from([None, 4, 64]))
def test_decoder_mutated_images_only_raise_image_error(case, keep_alpha, draft):
    data, name = case
    _check_decode(data, name, keep_alpha, draft)


@settings(FUZZ, max_examples=300)
@given(
    data=st.one_of(
        st.binary(max_size=512),
        st.text(max_size=256).map(str.encode),
        st.binary(max_size=64).map(lambda b: b"<svg xmlns='http://www.w3.org/2000/svg'>" + b),
        st.sampled_from([b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF89a", b"RIFF\x00\x00\x00\x00WEBP", b"II*\x00"])
        .flatmap(lambda magic: st.binary(max_size=128).map(lambda tail: magic + tail)),
    ),
    name=st.sampled_from(["x.jpg", "x.png", "x.svg", "x.svgz", "noext"]),
)
def test_decoder_random_bytes_only_raise_image_error(data, name):
    _check_decode(data, name, False, None)


def test_seeds_decode():
    for name, data in SEEDS.items():
        assert load_image_bytes(data, name).mode == "RGB", name


# ------------------------------------------------------------------------------------------ manifests

_CSVISH = st.lists(
    st.sampled_from(list('pathbrndki,;\t"\n\r {}[]:.\\/\ufeff\x00é商\u2028') + ["../", "a.png", "path,brand,kind\n"]),
    max_size=120,
).map("".join)
_JSONISH = st.lists(
    st.one_of(
        st.dictionaries(
            st.sampled_from(["path", "brand", "kind", "PATH", " Brand", "_line", "x"]),
            st.one_of(st.none(), st.integers(), st.text(max_size=12), st.sampled_from(["../up.png", "/etc/x", "a.png"])),
            max_size=5,
        ).map(json.dumps),
        st.text(max_size=30),
    ),
    max_size=8,
).map("\n".join)


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("manifest-fuzz")


@FUZZ
@given(
    content=st.one_of(
        _CSVISH.map(str.encode),
        _JSONISH.map(str.encode),
        st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")),
        st.binary(max_size=200),
        _CSVISH.map(lambda t: t.encode("utf-16", "surrogatepass")),
    ),
    ext=st.sampled_from([".csv", ".jsonl", ".tsv", ".txt"]),
    header=st.booleans(),
)
def test_manifest_parser_only_raises_manifest_error(fuzz_dir, content, ext, header):
    if header:
        content = b"path,brand,kind\n" + content
    p = fuzz_dir / f"m{ext}"
    p.write_bytes(content)
    try:
        rows = read_manifest(p, ["path", "brand"], optional=["kind"], root=fuzz_dir, path_column="path")
    except ManifestError as e:
        assert str(e).startswith(str(p))
        return
    for row in rows:
        assert isinstance(row["_line"], int) and row["_line"] >= 1
        assert isinstance(row["path"], str) and row["path"].startswith(str(fuzz_dir))
        assert row["brand"] not in (None, "") and "kind" in row
