"""ccu_vision.imageio: every real-world oddity decodes, every bad input is an ImageError with a reason."""

from __future__ import annotations

import base64
import gzip
import io
import os
import socket
import threading
from pathlib import Path

import numpy as np
import pytest
from conftest import IMAGE_CASES, LOGO_SVG, make_jpeg, make_png, make_svg, png_bytes_declaring
from PIL import Image, ImageFile

from ccu_vision import imageio
from ccu_vision.errors import ImageError
from ccu_vision.imageio import (
    IMAGE_EXTENSIONS,
    MAX_PIXELS,
    iter_image_files,
    load_image,
    load_image_bytes,
    read_image_bytes,
    sha256_bytes,
)

WHITE = (255, 255, 255)


def px(img: Image.Image, x: int, y: int) -> tuple[int, ...]:
    return tuple(int(v) for v in img.getpixel((x, y)))


def close(a: tuple[int, ...], b: tuple[int, ...], tol: int = 12) -> bool:
    return len(a) == len(b) and all(abs(x - y) <= tol for x, y in zip(a, b, strict=True))


def reason_of(exc: pytest.ExceptionInfo[ImageError]) -> str:
    return exc.value.reason


# ------------------------------------------------------------------------------------- must decode


def test_cmyk_jpeg_becomes_rgb_with_right_colours(image_case):
    img = load_image(image_case("cmyk.jpg"))
    assert img.mode == "RGB" and img.size == (64, 32)
    assert close(px(img, 8, 16), (255, 0, 0), 20)
    assert close(px(img, 56, 16), (0, 0, 255), 20)


def test_cmyk_jpeg_with_unusable_icc_profile_falls_back(tmp_path):
    from PIL import ImageCms

    cmyk = Image.new("CMYK", (16, 16), (0, 255, 255, 0))
    # an sRGB profile tagged on CMYK data cannot be applied: the plain conversion must take over
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    p = tmp_path / "icc.jpg"
    cmyk.save(p, "JPEG", icc_profile=icc)
    img = load_image(p)
    assert img.mode == "RGB" and close(px(img, 8, 8), (255, 0, 0), 20)


def test_16bit_grey_png_is_scaled_not_clipped(image_case):
    path = image_case("gray16.png")
    assert Image.open(path).mode.startswith("I")  # really a 16-bit source
    img = load_image(path)
    row = np.asarray(img)[0, :, 0].astype(int)
    assert img.mode == "RGB"
    assert row[0] == 0 and row[-1] == 255
    assert abs(row[128] - 128) <= 1  # clipping would give 255 for everything above 255/65535
    assert (np.diff(row) >= 0).all() and len(set(row.tolist())) > 200


def test_16bit_and_float_modes_scale_to_8bit():
    assert np.asarray(imageio._high_depth_to_l(Image.fromarray(np.array([[0, 32768, 65535]], np.int32))))[0].tolist() == [0, 128, 255]
    assert np.asarray(imageio._high_depth_to_l(Image.fromarray(np.array([[0.0, 0.5, 1.0]], np.float32))))[0].tolist() == [0, 128, 255]
    assert np.asarray(imageio._high_depth_to_l(Image.fromarray(np.array([[0, 100, 200]], np.int32))))[0].tolist() == [0, 100, 200]


def test_palette_png_with_transparency(image_case):
    path = image_case("palette_transparent.png")
    img = load_image(path)
    assert img.mode == "RGB"
    assert px(img, 5, 5) == WHITE  # transparent -> white, not the palette's black
    assert px(img, 30, 5) == (255, 0, 0)
    rgba = load_image(path, keep_alpha=True)
    assert rgba.mode == "RGBA" and rgba.getpixel((5, 5))[3] == 0 and px(rgba, 30, 5) == (255, 0, 0, 255)


def test_la_png(image_case):
    path = image_case("la.png")
    img = load_image(path)
    assert img.mode == "RGB" and px(img, 15, 5) == WHITE and px(img, 15, 25) == (40, 40, 40)
    rgba = load_image(path, keep_alpha=True)
    assert rgba.mode == "RGBA" and rgba.getpixel((15, 5))[3] == 0


@pytest.mark.parametrize("name", ["animated.gif", "animated.webp"])
def test_animated_images_give_first_frame(image_case, name):
    path = image_case(name)
    assert getattr(Image.open(path), "n_frames", 1) == 3
    img = load_image(path)
    assert img.mode == "RGB" and img.size == (40, 20)
    assert close(px(img, 20, 10), (255, 0, 0))


def test_webp(image_case):
    img = load_image(image_case("photo.webp"))
    assert img.mode == "RGB" and img.size == (120, 80)


def test_exif_orientation_is_applied(image_case):
    path = image_case("exif_rotated.jpg")
    assert Image.open(path).size == (60, 20)
    img = load_image(path)
    assert img.size == (20, 60)  # rotated for display
    assert close(px(img, 10, 3), (0, 0, 255), 40)  # the blue band is now on top
    assert close(px(img, 10, 56), (255, 0, 0), 40)


def test_exif_orientation_is_applied_with_draft(tmp_path):
    big = Image.new("RGB", (2400, 800), (255, 0, 0))
    big.paste((0, 0, 255), (0, 0, 400, 800))
    exif = Image.Exif()
    exif[0x0112] = 6
    p = tmp_path / "phone.jpg"
    big.save(p, "JPEG", exif=exif.tobytes())
    img = load_image(p, draft_size=128)
    assert img.size == (100, 300)  # drafted 1/8 (long side 300 >= 2 * 128), then rotated
    assert close(px(img, 50, 20), (0, 0, 255), 40) and close(px(img, 50, 200), (255, 0, 0), 40)


def test_fully_transparent_png_is_white(image_case):
    path = image_case("transparent.png")
    img = load_image(path)
    assert img.mode == "RGB" and np.all(np.asarray(img) == 255)
    rgba = load_image(path, keep_alpha=True)
    assert rgba.mode == "RGBA" and rgba.getchannel("A").getextrema() == (0, 0)


def test_opaque_alpha_is_plain_rgb_even_with_keep_alpha(tmp_path):
    p = tmp_path / "opaque.png"
    Image.new("RGBA", (4, 4), (1, 2, 3, 255)).save(p)
    assert load_image(p, keep_alpha=True).mode == "RGB"


def test_tiny_and_extreme_aspect(image_case):
    assert load_image(image_case("1x1.png")).size == (1, 1)
    assert load_image(image_case("wide_6000x300.jpg")).size == (6000, 300)


def test_non_ascii_file_name(image_case):
    path = image_case("ünïcødé 商品 ©.jpg")
    img = load_image(path)
    assert img.size == (96, 64)
    assert path.name in [p.name for p in iter_image_files(path.parent)]


def test_other_modes(tmp_path):
    for mode in ("1", "L", "P", "I"):
        img = Image.new("RGB", (8, 8), (200, 100, 50)).convert(mode) if mode != "I" else Image.new("I", (8, 8), 40000)
        buf = io.BytesIO()
        img.save(buf, "TIFF")
        out = load_image_bytes(buf.getvalue(), f"x-{mode}.tif")
        assert out.mode == "RGB" and out.size == (8, 8)
    bmp = io.BytesIO()
    Image.new("RGB", (5, 3), (9, 8, 7)).save(bmp, "BMP")
    assert px(load_image_bytes(bmp.getvalue(), "a.bmp"), 1, 1) == (9, 8, 7)


def test_jpeg_draft_mode_shrinks_but_never_below_twice_draft_size(tmp_path):
    p = make_jpeg(tmp_path / "big.jpg", size=(1200, 800))
    assert load_image(p).size == (1200, 800)
    assert load_image(p, draft_size=256).size == (600, 400)  # 1/2: long side 600 >= 512
    assert load_image(p, draft_size=100).size == (300, 200)  # 1/4: long side 300 >= 200
    assert load_image(p, draft_size=64).size == (150, 100)  # 1/8 is the most libjpeg does
    assert load_image(p, draft_size=350).size == (1200, 800)  # 1/2 would give 600 < 700
    png = make_png(tmp_path / "big.png", size=(1200, 800))
    assert load_image(png, draft_size=64).size == (1200, 800)  # draft is JPEG-only


# ------------------------------------------------------------------------------------------- SVG


def test_svg_viewbox_only_logo_renders_long_side_512(tmp_path):
    img = load_image(make_svg(tmp_path / "logo.svg"))
    assert img.mode == "RGB" and img.size == (512, 256)
    assert close(px(img, 10, 10), (238, 0, 0), 2) and px(img, 256, 128) == WHITE
    tall = load_image_bytes(b'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 10 40"/>', "tall.svg")
    assert tall.size == (128, 512)


def test_svg_keep_alpha_and_white_background():
    svg = b'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 10 10"><rect width="5" height="10" fill="#00f"/></svg>'
    assert px(load_image_bytes(svg, "a.svg"), 400, 256) == WHITE
    rgba = load_image_bytes(svg, "a.svg", keep_alpha=True)
    assert rgba.mode == "RGBA" and rgba.getpixel((400, 256))[3] == 0 and px(rgba, 100, 256) == (0, 0, 255, 255)


def test_svg_without_xml_prolog_named_anything_and_svgz(tmp_path):
    data = ('<?xml version="1.0" encoding="UTF-8"?>\n<!-- by a designer -->\n' + LOGO_SVG).encode()
    assert load_image_bytes(data, "logo.bin").size == (512, 256)  # sniffed, not by extension
    assert load_image_bytes(gzip.compress(LOGO_SVG.encode()), "logo.svgz").size == (512, 256)
    doctype = (
        '<?xml version="1.0" standalone="no"?><!DOCTYPE svg PUBLIC "-//W3C//DTD SVG 1.1//EN" '
        '"http://www.w3.org/Graphics/SVG/1.1/DTD/svg11.dtd">' + LOGO_SVG
    )
    assert load_image_bytes(doctype.encode(), "dtd.svg").size == (512, 256)


def _svg_with_image(href: str) -> bytes:
    return (
        '<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" viewBox="0 0 10 10">'
        '<rect width="10" height="10" fill="#00f"/>'
        f'<image width="10" height="10" xlink:href="{href}"/><image width="10" height="10" href="{href}"/></svg>'
    ).encode()


def test_svg_external_file_references_are_not_loaded(tmp_path, monkeypatch):
    Image.new("RGB", (10, 10), (0, 255, 0)).save(tmp_path / "secret.png")
    monkeypatch.chdir(tmp_path)  # resvg resolves relative hrefs against the working folder
    for href in (str(tmp_path / "secret.png"), (tmp_path / "secret.png").as_uri(), "secret.png", "./secret.png"):
        svg = tmp_path / "evil.svg"
        svg.write_bytes(_svg_with_image(href))
        img = load_image(svg)
        assert px(img, 256, 256) == (0, 0, 255), href  # green would mean the file was read


def test_svg_network_references_scripts_and_css_are_stripped():
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(8)
        srv.settimeout(0.05)
        url = f"http://127.0.0.1:{srv.getsockname()[1]}"
        hits: list[object] = []
        stop = threading.Event()

        def accept() -> None:
            while not stop.is_set():
                try:
                    conn, _ = srv.accept()
                    hits.append(conn)
                    conn.close()
                except OSError:
                    pass

        t = threading.Thread(target=accept, daemon=True)
        t.start()
        svg = (
            '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 10 10" onload="alert(1)">'
            f"<style>@import url({url}/a.css); rect {{ fill: url({url}/p.svg#g); }}</style>"
            f'<script>fetch("{url}/s")</script><script href="{url}/x.js"/>'
            f'<foreignObject><iframe xmlns="http://www.w3.org/1999/xhtml" src="{url}/f"/></foreignObject>'
            f'<rect width="10" height="10" style="fill:#00f;background:url({url}/b.png)"/>'
            f'<use href="{url}/defs.svg#logo"/><image width="5" height="5" href="{url}/i.png"/>'
            f'<filter id="f"><feImage href="{url}/fe.png"/></filter><circle r="1" filter="url({url}/x#f)"/>'
            '</svg>'
        ).encode()
        text, stripped = imageio._sanitize_svg(svg, "net.svg", MAX_PIXELS)
        img = load_image_bytes(svg, "net.svg")
        stop.set()
        t.join()
    assert url not in text and "<script" not in text and "onload" not in text and "foreignObject" not in text
    assert "@import" not in text and len(stripped) >= 8
    assert img.size == (512, 512) and not hits


def test_svg_local_fragment_refs_and_inline_rasters_are_kept():
    buf = io.BytesIO()
    Image.new("RGB", (4, 4), (0, 255, 0)).save(buf, "PNG")
    png_uri = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    bomb_uri = "data:image/png;base64," + base64.b64encode(png_bytes_declaring(40000, 40000)).decode()
    svg_uri = "data:image/svg+xml;base64," + base64.b64encode(b"<svg/>").decode()
    svg = (
        '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 20 10">'
        '<defs><linearGradient id="g"><stop offset="0" stop-color="#f00"/></linearGradient>'
        '<rect id="r" width="10" height="10" fill="url(#g)"/></defs><use href="#r"/>'
        f'<image x="10" width="10" height="10" href="{png_uri}"/>'
        f'<image href="{bomb_uri}"/><image href="{svg_uri}"/></svg>'
    ).encode()
    text, stripped = imageio._sanitize_svg(svg, "ok.svg", MAX_PIXELS)
    assert png_uri in text and "url(#g)" in text and 'href="#r"' in text
    assert len(stripped) == 2  # the oversized raster and the nested SVG document
    img = load_image_bytes(svg, "ok.svg")
    assert close(px(img, 128, 128), (255, 0, 0), 2) and close(px(img, 384, 128), (0, 255, 0), 2)


@pytest.mark.parametrize(
    "svg",
    [
        # billion laughs
        '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;">'
        '<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;">]>'
        '<svg xmlns="http://www.w3.org/2000/svg"><text>&lol3;</text></svg>',
        # external entity (XXE)
        '<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
        '<svg xmlns="http://www.w3.org/2000/svg"><text>&xxe;</text></svg>',
        # external parameter entity
        '<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY % p SYSTEM "http://127.0.0.1:9/x.dtd"> %p;]>'
        '<svg xmlns="http://www.w3.org/2000/svg"/>',
    ],
)
def test_svg_entities_are_refused(svg):
    with pytest.raises(ImageError) as e:
        load_image_bytes(svg.encode(), "entities.svg")
    assert "unsafe SVG" in reason_of(e) and "entit" in reason_of(e)


def test_svg_encodings_and_complexity_limits(monkeypatch):
    tiny = '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 2 1"><title>Herm\xe8s</title></svg>'
    assert load_image_bytes(tiny.encode("utf-16"), "u16.svg").size == (512, 256)
    latin = '<?xml version="1.0" encoding="ISO-8859-1"?>' + tiny
    assert load_image_bytes(latin.encode("latin-1"), "latin.svg").size == (512, 256)
    deep = '<svg xmlns="http://www.w3.org/2000/svg">' + "<g>" * 5000 + "</g>" * 5000 + "</svg>"
    with pytest.raises(ImageError) as e:
        load_image_bytes(deep.encode(), "deep.svg")
    assert reason_of(e) == "SVG nested too deeply (over 500 levels)"
    monkeypatch.setattr(imageio, "MAX_SVG_ELEMENTS", 100)
    many = '<svg xmlns="http://www.w3.org/2000/svg">' + "<rect/>" * 150 + "</svg>"
    with pytest.raises(ImageError) as e:
        load_image_bytes(many.encode(), "many.svg")
    assert reason_of(e) == "SVG too complex (over 100 elements)"
    with pytest.raises(ImageError) as e:
        load_image_bytes(b"\x1f\x8b\x08\x00garbage", "broken.svgz")
    assert reason_of(e).startswith("corrupt compressed SVG")


def _use_bomb() -> bytes:
    levels = "".join(
        f'<g id="a{i}">' + f'<use href="#a{i - 1}"/>' * 10 + "</g>" for i in range(1, 8)
    )
    return (
        '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 10 10"><defs><rect id="a0" width="1" height="1"/>'
        f'{levels}</defs><use href="#a7"/></svg>'
    ).encode()


def test_invalid_svgs():
    for data, why in [
        (b"<svg><g></svg>", "invalid SVG XML"),
        (b'<svg xmlns="http://www.w3.org/2000/svg"><text>&nbsp;</text></svg>', "undefined entity"),
        (b"just words, named .svg", "invalid SVG XML"),
        (b'<svg xmlns="http://www.w3.org/2000/svg" width="0" height="0"/>', "invalid SVG"),
        (_use_bomb(), "nodes limit"),  # exponential <use> expansion stopped by resvg
        (b'<svg xmlns="http://www.w3.org/2000/svg"><g id="a"><use href="#b"/></g><g id="b"><use href="#a"/></g></svg>',
         "invalid SVG"),
        (b"<?xml version='1.0'?><notsvg/>", "XML document (root element <notsvg>), not an image"),
    ]:
        with pytest.raises(ImageError) as e:
            load_image_bytes(data, "bad.svg")
        assert why in reason_of(e), (data, reason_of(e))


# ------------------------------------------------------------------------------------------ errors


def test_truncated_jpeg_is_an_error(image_case):
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False  # nobody may flip it globally
    with pytest.raises(ImageError) as e:
        load_image(image_case("truncated.jpg"))
    assert "truncated" in reason_of(e) and "JPEG" in reason_of(e)


def test_truncated_png_is_an_error(tmp_path):
    data = (make_png(tmp_path / "t.png", size=(200, 100))).read_bytes()
    with pytest.raises(ImageError) as e:
        load_image_bytes(data[: len(data) // 2], "t.png")
    assert "PNG" in reason_of(e)


@pytest.mark.parametrize(
    "name", ["empty.jpg", "page.jpg", "random.jpg", "bomb.png"]
)
def test_bad_files_raise_image_error_naming_the_problem(image_case, name):
    path = image_case(name)
    with pytest.raises(ImageError) as e:
        load_image(path)
    assert IMAGE_CASES[name][1] in reason_of(e)
    assert e.value.path == str(path) and str(path) in str(e.value)


def test_other_non_images():
    cases = [
        (b"%PDF-1.7\n...", "PDF document, not an image"),
        (b"PK\x03\x04rest", "ZIP archive, not an image"),
        (b"hello, I am a text file\n", "text file, not an image"),
        (b"<?xml version='1.0'?><rss><channel/></rss>", "XML document (root element <rss>), not an image"),
        (b"\n  <html lang='en'><body>x</body></html>", "HTML document, not an image"),
        (b"\xef\xbb\xbf<!doctype HTML><p>x", "HTML document, not an image"),
    ]
    for data, why in cases:
        with pytest.raises(ImageError) as e:
            load_image_bytes(data, "x.jpg")
        assert reason_of(e) == why


def test_unsupported_pil_formats_are_not_decoded():
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, "PPM")
    with pytest.raises(ImageError) as e:
        load_image_bytes(buf.getvalue(), "x.ppm")
    assert "not a recognised image format" in reason_of(e)


def test_decompression_bomb_rejected_from_header_without_decoding(monkeypatch):
    def no_decode(self):  # any pixel decode would hit this
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decode)
    with pytest.raises(ImageError) as e:
        load_image_bytes(png_bytes_declaring(40000, 40000), "bomb.png")
    assert reason_of(e) == "decompression bomb: 40000x40000 exceeds 64000000 pixels"


def test_custom_pixel_limit_and_pil_bomb_error():
    data = png_bytes_declaring(300, 300)
    with pytest.raises(ImageError) as e:
        load_image_bytes(data, "a.png", max_pixels=50_000)
    assert reason_of(e) == "decompression bomb: 300x300 exceeds 50000 pixels"
    # with our limit lifted, PIL's own DecompressionBombError must still come out as a clear reason
    with pytest.raises(ImageError) as e:
        load_image_bytes(png_bytes_declaring(40000, 40000), "b.png", max_pixels=10**12)
    assert reason_of(e).startswith("decompression bomb:")


def test_decode_time_limit(monkeypatch, tmp_path):
    p = make_png(tmp_path / "slow.png")
    ticks = iter(range(0, 10_000, 4))  # every clock read is 4 "seconds" later
    monkeypatch.setattr(imageio, "_clock", lambda: float(next(ticks)))
    with pytest.raises(ImageError) as e:
        load_image(p, time_limit=5.0)
    assert reason_of(e).startswith("too slow: decoding took") and "limit 5 s" in reason_of(e)
    assert load_image(p, time_limit=None).size == (48, 32)
    with pytest.raises(ImageError) as e:
        load_image(make_svg(tmp_path / "slow.svg"), time_limit=5.0)
    assert "too slow" in reason_of(e)


def test_read_errors(tmp_path, monkeypatch):
    with pytest.raises(ImageError) as e:
        read_image_bytes(tmp_path / "missing.jpg")
    assert reason_of(e) == "file not found"
    with pytest.raises(ImageError) as e:
        load_image(tmp_path)
    assert reason_of(e) == "is a folder, not a file"
    (tmp_path / "dangling.jpg").symlink_to(tmp_path / "gone.jpg")
    with pytest.raises(ImageError) as e:
        load_image(tmp_path / "dangling.jpg")
    assert "broken symlink" in reason_of(e)
    if hasattr(os, "mkfifo"):
        os.mkfifo(tmp_path / "pipe.jpg")
        with pytest.raises(ImageError) as e:  # must not block on open
            load_image(tmp_path / "pipe.jpg")
        assert reason_of(e) == "not a regular file"
    monkeypatch.setattr(imageio, "MAX_FILE_BYTES", 10)
    with pytest.raises(ImageError) as e:
        read_image_bytes(make_png(tmp_path / "big.png"))
    assert reason_of(e).startswith("file too large")


def test_permission_denied_via_open(tmp_path, monkeypatch):
    p = make_png(tmp_path / "locked.png")

    def deny(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(imageio, "open", deny, raising=False)
    with pytest.raises(ImageError) as e:
        load_image(p)
    assert reason_of(e) == "permission denied" and e.value.path == str(p)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root can read mode-000 files")
def test_permission_denied_chmod(image_case):
    with pytest.raises(ImageError) as e:
        load_image(image_case("unreadable.jpg"))
    assert reason_of(e) == "permission denied"


def test_unexpected_exceptions_become_image_errors(monkeypatch, tmp_path):
    p = make_png(tmp_path / "x.png")
    monkeypatch.setattr(imageio, "_to_rgb", lambda img, keep: 1 / 0)
    with pytest.raises(ImageError) as e:
        load_image(p)
    assert "ZeroDivisionError" in reason_of(e)


def test_mixed_folder_every_file_has_an_answer(image_cases):
    folder, expected = image_cases
    seen = {}
    for path in iter_image_files(folder):
        rel = path.relative_to(folder).as_posix()
        try:
            img = load_image(path, draft_size=224)
            assert img.mode == "RGB" and img.width >= 1
            seen[rel] = None
        except ImageError as e:
            seen[rel] = e.reason
    assert set(seen) == set(expected)
    for rel, reason in expected.items():
        if reason is None:
            assert seen[rel] is None, (rel, seen[rel])
        else:
            assert seen[rel] is not None and reason in seen[rel], (rel, seen[rel])


# ----------------------------------------------------------------------------------- misc helpers


def test_sha256_and_read_bytes(tmp_path):
    p = make_png(tmp_path / "a.png")
    data = read_image_bytes(p)
    assert data == p.read_bytes()
    assert sha256_bytes(b"abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_image_extensions():
    for ext in ("jpg", "jpeg", "png", "webp", "gif", "svg", "bmp", "tif", "tiff"):
        assert ext in IMAGE_EXTENSIONS and "." + ext in IMAGE_EXTENSIONS and "." + ext.upper() in IMAGE_EXTENSIONS
    assert ".txt" not in IMAGE_EXTENSIONS and "html" not in IMAGE_EXTENSIONS
    assert all(e.startswith(".") for e in IMAGE_EXTENSIONS)


# -------------------------------------------------------------------------------- iter_image_files


def _touch_image(path: Path) -> Path:
    return make_png(path, size=(4, 4))


def _rel(root: Path, paths) -> list[str]:
    return [p.relative_to(root).as_posix() for p in paths]


def test_iter_recursive_sorted_and_filtered(tmp_path):
    root = tmp_path / "dump"
    for rel in ["b.png", "A.JPG", "a/z.webp", "a/b/c.gif", "a/b/d.svg", "a0.tiff", "é.bmp", "x.jpeg"]:
        _touch_image(root / rel)
    for rel in ["notes.txt", "a/readme.md", "a/b/thumbs.db", "noext"]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("x")
    got = _rel(root, iter_image_files(root))
    assert got == ["A.JPG", "a/b/c.gif", "a/b/d.svg", "a/z.webp", "a0.tiff", "b.png", "x.jpeg", "é.bmp"]
    assert _rel(root, iter_image_files(root)) == got  # deterministic
    assert list(iter_image_files(str(root / "notes.txt"))) == [root / "notes.txt"]  # named directly
    assert list(iter_image_files(root / "b.png")) == [root / "b.png"]


def test_iter_missing_root(tmp_path):
    with pytest.raises(ImageError) as e:
        list(iter_image_files(tmp_path / "nope"))
    assert reason_of(e) == "file not found"


def test_iter_symlink_loops_terminate_and_links_followed_once(tmp_path):
    root = tmp_path / "root"
    outside = tmp_path / "outside"
    _touch_image(root / "a" / "1.png")
    _touch_image(outside / "o.png")
    (root / "a" / "loop").symlink_to(root, target_is_directory=True)  # loop to an ancestor
    (root / "a" / "self").symlink_to(root / "a", target_is_directory=True)
    (root / "ext1").symlink_to(outside, target_is_directory=True)  # same outside folder twice
    (root / "ext2").symlink_to(outside, target_is_directory=True)
    (outside / "back").symlink_to(root, target_is_directory=True)  # outside links back in
    (outside / "me").symlink_to(outside, target_is_directory=True)  # outside loop
    (root / "dup.png").symlink_to(root / "a" / "1.png")  # file link inside the tree
    (root / "far.png").symlink_to(outside / "o.png")  # file link to outside
    (root / "broken.png").symlink_to(root / "missing.png")
    got = _rel(root, iter_image_files(root))
    assert got == ["a/1.png", "broken.png", "ext1/o.png", "far.png"]


def test_iter_root_given_through_a_symlink(tmp_path):
    real = tmp_path / "real"
    _touch_image(real / "x.png")
    (tmp_path / "link").symlink_to(real, target_is_directory=True)
    assert list(iter_image_files(tmp_path / "link")) == [tmp_path / "link" / "x.png"]


def test_iter_deep_nesting_without_recursion(tmp_path):
    deep = tmp_path / "deep"
    dirs = []
    d = deep
    for _ in range(1100):  # deeper than Python's default recursion limit (mkdir(parents=True) recurses)
        d = d / "d"
        d.mkdir(parents=d == deep / "d")
        dirs.append(d)
    try:
        _touch_image(d / "bottom.png")
        assert list(iter_image_files(deep)) == [d / "bottom.png"]
    finally:  # pytest's own tmp cleanup (shutil.rmtree) recurses and would overflow on this tree
        (d / "bottom.png").unlink(missing_ok=True)
        for sub in reversed(dirs):
            sub.rmdir()
