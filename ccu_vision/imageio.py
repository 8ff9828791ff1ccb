"""Safe, tolerant image reading for listings and references.

Everything a user hands us goes through here. Two promises:

* every decodable real-world image comes back as 8-bit ``RGB`` (or ``RGBA`` with ``keep_alpha``):
  EXIF orientation applied; CMYK (ICC-converted when a profile is embedded), 16-bit, palette,
  LA/PA, 1-bit etc. converted; animated GIF/WebP/PNG reduced to their first frame; alpha
  flattened onto white; SVG rendered with resvg so its long side is 512 px;
* everything else raises :class:`~ccu_vision.errors.ImageError` with a reason that names the
  problem ("empty file (0 bytes)", "HTML document, not an image", "decompression bomb: ...",
  "truncated or corrupt JPEG data: ..."); no other exception escapes :func:`load_image_bytes`.

Limits that are enforced
------------------------
* ``max_pixels`` (default :data:`MAX_PIXELS` = 64 Mpx): checked on the size declared in the file
  header, *before* any pixel data is decoded; PIL's own ``DecompressionBombError`` is mapped to the
  same reason. Because raster decoding is linear in the pixel count this also bounds decode time
  and memory (measured on one core: a 64 Mpx JPEG decodes in ~0.5 s, ~0.1 s with ``draft_size``;
  a 64 Mpx PNG in ~2 s).
* ``time_limit`` (default :data:`DECODE_TIME_LIMIT` seconds): a deadline checked between the decode
  stages (header, pixel decode, colour conversion, SVG sanitising, SVG render). A single stage is
  not interrupted (that would need a subprocess per image), but an image whose decode overran the
  limit is reported as "too slow" instead of being used, so a pathological file yields an error
  row and the scan goes on.
* :data:`MAX_FILE_BYTES` on the file size; :data:`MAX_SVG_BYTES`, :data:`MAX_SVG_ELEMENTS` and
  :data:`MAX_SVG_DEPTH` on SVG sources (resvg's own node limit also stops ``<use>`` bombs).
* Only JPEG/MPO, PNG/APNG, WebP, GIF, BMP, TIFF and SVG are decoded: other PIL plugins (EPS, which
  would run Ghostscript, PSD, ICO, ...) are never invoked.

SVG safety: entity declarations (billion laughs, external entities) are refused with a reason;
``<script>``, ``<foreignObject>``, event handlers, and every reference that is not a local
``#fragment`` or an inline raster ``data:`` URI (``file:``, ``http:``, relative and absolute paths,
``@import``, ``url(...)`` to another document) are stripped before resvg sees the document, so
rendering touches no file and no network (system fonts aside).
"""

from __future__ import annotations

import base64
import binascii
import gzip
import hashlib
import io
import logging
import math
import os
import re
import stat
import time
import xml.etree.ElementTree as ET
import xml.parsers.expat as expat
import zlib
from collections.abc import Iterator
from pathlib import Path
from struct import error as struct_error  # raised by a few PIL plugins on short headers

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageError

log = logging.getLogger(__name__)

MAX_PIXELS = 64_000_000
"""Largest accepted image, in pixels (width x height declared by the file header)."""
DECODE_TIME_LIMIT = 10.0
"""Seconds one image may take to decode before it is reported as too slow."""
MAX_FILE_BYTES = 256 * 1024 * 1024
"""Largest accepted input file."""
MAX_SVG_BYTES = 16 * 1024 * 1024
"""Largest accepted SVG source (after gunzip for .svgz)."""
MAX_SVG_ELEMENTS = 50_000
"""Most XML elements accepted in one SVG."""
MAX_SVG_DEPTH = 500
"""Deepest element nesting accepted in one SVG."""
SVG_RENDER_SIZE = 512
"""Long side, in pixels, SVGs are rendered at."""

# Raster formats we let PIL decode (the JPEG opener also returns MPO, multi-picture phone JPEGs).
_PIL_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")
_SVG_NS = "http://www.w3.org/2000/svg"
_XLINK_NS = "http://www.w3.org/1999/xlink"
_SAFE_DATA_URI = re.compile(r"^data:image/(png|jpe?g|gif|webp)\s*;\s*base64\s*,", re.IGNORECASE)
_CSS_URL = re.compile(r"url\(\s*(['\"]?)(.*?)\1\s*\)", re.IGNORECASE | re.DOTALL)
_CSS_IMPORT = re.compile(r"@import[^;]*;?", re.IGNORECASE)

# Injectable clock so the time limit can be tested without wall-clock assertions.
_clock = time.monotonic


class _Extensions(frozenset):
    """Lower-case dotted extensions; membership also accepts ``"JPG"`` or ``"jpg"`` spellings."""

    def __contains__(self, item: object) -> bool:
        if isinstance(item, str):
            item = item.lower()
            if not item.startswith("."):
                item = "." + item
        return super().__contains__(item)


IMAGE_EXTENSIONS: frozenset[str] = _Extensions(
    {".jpg", ".jpeg", ".png", ".webp", ".gif", ".svg", ".bmp", ".tif", ".tiff"}
)
"""File extensions treated as images by :func:`iter_image_files` (``".jpg" in`` and ``"jpg" in`` both work)."""
UNSUPPORTED_PHOTO_EXTENSIONS: frozenset[str] = _Extensions({".heic", ".heif", ".avif"})
"""Phone photo formats we cannot decode: still listed by :func:`iter_image_files` so each gets an error."""
_HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"}
_AVIF_BRANDS = {b"avif", b"avis"}


# --------------------------------------------------------------------------------------------- bytes


def sha256_bytes(data: bytes) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def read_image_bytes(path: str | os.PathLike) -> bytes:
    """Read a whole input file; raise :class:`ImageError` naming why it cannot be read.

    Reasons: file not found, broken symlink, permission denied, is a folder, not a regular file,
    file too large, empty file (0 bytes).
    """
    p = os.fspath(path)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        if os.path.islink(p):
            raise ImageError(p, "broken symlink (its target does not exist)") from None
        raise ImageError(p, "file not found") from None
    except PermissionError:
        raise ImageError(p, "permission denied") from None
    except NotADirectoryError:
        raise ImageError(p, "file not found (a parent path is not a folder)") from None
    except (OSError, ValueError) as e:  # ValueError: embedded NUL byte in the path
        raise ImageError(p, f"cannot access file: {_os_reason(e)}") from None
    if stat.S_ISDIR(st.st_mode):
        raise ImageError(p, "is a folder, not a file")
    if not stat.S_ISREG(st.st_mode):
        raise ImageError(p, "not a regular file")
    if st.st_size > MAX_FILE_BYTES:
        raise ImageError(p, f"file too large ({st.st_size} bytes, limit {MAX_FILE_BYTES})")
    try:
        with open(p, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except PermissionError:
        raise ImageError(p, "permission denied") from None
    except FileNotFoundError:
        raise ImageError(p, "file not found") from None
    except IsADirectoryError:
        raise ImageError(p, "is a folder, not a file") from None
    except OSError as e:
        raise ImageError(p, f"cannot read file: {_os_reason(e)}") from None
    if len(data) > MAX_FILE_BYTES:
        raise ImageError(p, f"file too large (over {MAX_FILE_BYTES} bytes)")
    if not data:
        raise ImageError(p, "empty file (0 bytes)")
    return data


def _os_reason(e: BaseException) -> str:
    return getattr(e, "strerror", None) or str(e) or type(e).__name__


# -------------------------------------------------------------------------------------------- decode


def load_image(
    path: str | os.PathLike,
    *,
    keep_alpha: bool = False,
    max_pixels: int = MAX_PIXELS,
    draft_size: int | None = None,
    time_limit: float | None = DECODE_TIME_LIMIT,
) -> Image.Image:
    """Read and decode one image file into an 8-bit ``RGB`` (or ``RGBA``) PIL image.

    See :func:`load_image_bytes` for the decoding rules. Raises :class:`ImageError` on any failure.
    """
    data = read_image_bytes(path)
    return load_image_bytes(
        data, os.fspath(path), keep_alpha=keep_alpha, max_pixels=max_pixels,
        draft_size=draft_size, time_limit=time_limit,
    )


def load_image_bytes(
    data: bytes,
    name: str,
    *,
    keep_alpha: bool = False,
    max_pixels: int = MAX_PIXELS,
    draft_size: int | None = None,
    time_limit: float | None = DECODE_TIME_LIMIT,
) -> Image.Image:
    """Decode image bytes (``name`` is used for messages and the SVG extension hint).

    Returns mode ``"RGB"``, or ``"RGBA"`` when ``keep_alpha`` and the image has transparent pixels.
    ``draft_size``: the caller needs about this many pixels on the long side; big JPEGs are then
    decoded with libjpeg's DCT scaling, keeping the long side at least ``2 * draft_size``.
    ``time_limit``: seconds (``None`` = unlimited); see the module docstring for what is enforced.
    Only :class:`ImageError` is raised.
    """
    name = str(name)
    try:
        return _load(bytes(data), name, keep_alpha, max_pixels, draft_size, time_limit)
    except ImageError:
        raise
    except MemoryError:
        raise ImageError(name, "out of memory while decoding") from None
    except RecursionError:
        raise ImageError(name, "corrupt image: structure nested too deeply") from None
    except Exception as e:  # noqa: BLE001 - the contract: nothing but ImageError escapes
        log.debug("unexpected decode failure for %s", name, exc_info=True)
        raise ImageError(name, f"corrupt or unsupported image: {type(e).__name__}: {e}") from None


class _Deadline:
    def __init__(self, name: str, limit: float | None) -> None:
        self.name, self.limit, self.start = name, limit, _clock()

    def check(self, stage: str) -> None:
        if self.limit is None:
            return
        spent = _clock() - self.start
        if spent > self.limit:
            raise ImageError(
                self.name, f"too slow: decoding took {spent:.1f} s at the {stage} stage (limit {self.limit:g} s)"
            )


def _load(
    data: bytes, name: str, keep_alpha: bool, max_pixels: int, draft_size: int | None, time_limit: float | None
) -> Image.Image:
    if not data:
        raise ImageError(name, "empty file (0 bytes)")
    deadline = _Deadline(name, time_limit)
    kind = _sniff_markup(data)
    svg_name = name.lower().endswith((".svg", ".svgz"))
    if kind == "svg" or (kind is None and svg_name and (data[:2] == b"\x1f\x8b" or _looks_like_text(data))):
        return _finish(_render_svg(data, name, max_pixels, deadline), keep_alpha, name, deadline)
    if kind is not None:
        raise ImageError(name, kind)
    return _finish(_decode_raster(data, name, max_pixels, draft_size, deadline), keep_alpha, name, deadline)


def _decode_raster(
    data: bytes, name: str, max_pixels: int, draft_size: int | None, deadline: _Deadline
) -> Image.Image:
    fmt = _magic_format(data)
    try:
        img = Image.open(io.BytesIO(data), formats=_PIL_FORMATS)
        fmt = img.format or fmt
        w, h = img.size
        if w <= 0 or h <= 0:
            raise ImageError(name, f"corrupt {fmt} header: size {w}x{h}")
        if w * h > max_pixels:
            raise ImageError(name, f"decompression bomb: {w}x{h} exceeds {max_pixels} pixels")
        if draft_size and fmt in ("JPEG", "MPO"):
            _draft(img, int(draft_size))
        deadline.check("header")
        img.load()  # first frame only for animations / multi-page files
    except ImageError:
        raise
    except Image.DecompressionBombError as e:
        size = _declared_size(data)
        if size is not None:
            raise ImageError(name, f"decompression bomb: {size[0]}x{size[1]} exceeds {max_pixels} pixels") from None
        raise ImageError(name, f"decompression bomb: {e}") from None
    except UnidentifiedImageError:
        raise ImageError(name, _unidentified_reason(data, name)) from None
    except (OSError, SyntaxError, ValueError, EOFError, struct_error, IndexError, KeyError, TypeError) as e:
        msg = str(e) or type(e).__name__
        if "truncated" in msg.lower() or isinstance(e, EOFError):
            raise ImageError(name, f"truncated or corrupt {fmt} data: {msg}") from None
        raise ImageError(name, f"corrupt {fmt} data: {msg}") from None
    deadline.check("pixel decode")
    try:
        img = ImageOps.exif_transpose(img) or img
    except Exception:  # noqa: BLE001 - malformed EXIF must not lose an otherwise fine image
        log.debug("%s: ignoring malformed EXIF orientation", name, exc_info=True)
    return img


def source_size(data: bytes, decoded: Image.Image) -> tuple[int, int]:
    """The full pixel size of the image ``decoded`` came from, in ``decoded``'s orientation: a JPEG
    decoded with ``draft_size`` is smaller than the file, and boxes reported for it must be in the
    file's pixels. ``decoded.size`` when the header cannot be read again."""
    try:
        w, h = Image.open(io.BytesIO(data), formats=_PIL_FORMATS).size
    except Exception:  # noqa: BLE001 - it decoded once; fall back to what it decoded to
        return decoded.size
    dw, dh = decoded.size
    if (w > h) != (dw > dh) and w != h and dw != dh:  # EXIF rotated by 90 degrees
        w, h = h, w
    return (w, h) if w >= dw and h >= dh else decoded.size


def sniff_format(data: bytes) -> str | None:
    """Raster format name (JPEG, PNG, GIF, BMP, TIFF, WEBP) from the file signature, or None."""
    for magic, fmt in (
        (b"\xff\xd8", "JPEG"), (b"\x89PNG", "PNG"), (b"GIF8", "GIF"), (b"BM", "BMP"),
        (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"),
    ):
        if data.startswith(magic):
            return fmt
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


def heif_kind(data: bytes) -> str | None:
    """``"HEIC/HEIF"`` or ``"AVIF"`` when ``data`` starts like such a file (ISO-BMFF ``ftyp`` box), else None."""
    if data[4:8] != b"ftyp":
        return None
    brand = data[8:12]
    if brand in _AVIF_BRANDS:
        return "AVIF"
    if brand in _HEIF_BRANDS:
        return "HEIC/HEIF"
    return None


def looks_like_image(data: bytes) -> bool:
    """Whether the first bytes of a file are those of a raster image (decodable or HEIC/AVIF).

    BMP is left out: its two-letter signature ``BM`` could start a line of text.
    """
    return sniff_format(data) not in (None, "BMP") or heif_kind(data) is not None


def _magic_format(data: bytes) -> str:
    """Format name from the file signature, for messages when PIL gave up before naming it."""
    return sniff_format(data) or "image"


def _declared_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from the header alone, bypassing PIL's own bomb check (which hides them)."""
    Image.init()
    for fmt in _PIL_FORMATS:
        factory, accept = Image.OPEN.get(fmt, (None, None))
        try:
            if factory is None or (accept is not None and not accept(data[:16])):
                continue
            return tuple(factory(io.BytesIO(data), "").size)  # type: ignore[return-value]
        except Exception:  # noqa: BLE001 - best effort, only used for the message
            continue
    return None


def _draft(img: Image.Image, draft_size: int) -> None:
    """Ask libjpeg for a 1/2, 1/4 or 1/8 scale decode that keeps the long side >= 2 * draft_size."""
    w, h = img.size
    target = 2 * max(1, draft_size)
    long_side = max(w, h)
    if long_side < 2 * target:  # no power-of-two reduction possible
        return
    req = (max(1, math.ceil(w * target / long_side)), max(1, math.ceil(h * target / long_side)))
    img.draft(None, req)


def _unidentified_reason(data: bytes, name: str) -> str:
    head = data[:16]
    if head.startswith(b"%PDF"):
        return "PDF document, not an image"
    if head.startswith(b"PK\x03\x04"):
        return "ZIP archive, not an image"
    heif = heif_kind(head)
    if heif is not None:
        return f"{heif} image (a phone photo format), not supported: convert it to JPEG or PNG"
    if name.lower().endswith((".svg", ".svgz")) and _looks_like_text(data):
        return "invalid SVG: no <svg> root element"
    if _looks_like_text(data):
        return "text file, not an image"
    return f"not a recognised image format (file starts with {data[:8].hex()})"


def _looks_like_text(data: bytes) -> bool:
    head = data[:1024]
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as e:
        if e.start < len(head) - 4:  # a multibyte char cut at the end is fine
            return False
        text = head[: e.start].decode("utf-8")
    return bool(text) and all(c.isprintable() or c in "\r\n\t\f\ufeff" for c in text)


_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
_PI = re.compile(r"<\?.*?\?>", re.DOTALL)
_DOCTYPE = re.compile(r"<!DOCTYPE[^\[>]*(\[.*?\]\s*)?>", re.DOTALL | re.IGNORECASE)
_FIRST_TAG = re.compile(r"<\s*(?:[A-Za-z_][\w.\-]*:)?([A-Za-z_][\w.\-]*)")


def _sniff_markup(data: bytes) -> str | None:
    """``"svg"`` for an SVG document, an error reason for other markup, ``None`` for anything else."""
    head = data[:8192]
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        text = head.decode("utf-16", errors="ignore")
    else:
        text = head.decode("utf-8", errors="ignore")
    text = text.lstrip("\ufeff \t\r\n")
    if not text.startswith("<"):
        return None
    if re.match(r"<!doctype\s+html", text, re.IGNORECASE):
        return "HTML document, not an image"
    body = _DOCTYPE.sub("", _PI.sub("", _COMMENT.sub("", text))).lstrip()
    m = _FIRST_TAG.match(body)
    if not m:
        return None
    tag = m.group(1).lower()
    if tag == "svg":
        return "svg"
    if not _looks_like_text(data):
        return None
    if tag in ("html", "head", "body", "meta", "title", "script", "div", "p"):
        return "HTML document, not an image"
    return f"XML document (root element <{m.group(1)}>), not an image"


# --------------------------------------------------------------------------------------------- colour


def _finish(img: Image.Image, keep_alpha: bool, name: str, deadline: _Deadline) -> Image.Image:
    """Any PIL mode -> 8-bit RGB, or RGBA when ``keep_alpha`` and some pixel is transparent."""
    try:
        out = _to_rgb(img, keep_alpha)
    except ImageError:
        raise
    except (OSError, ValueError) as e:
        raise ImageError(name, f"unsupported colour mode {img.mode}: {e}") from None
    deadline.check("colour conversion")
    return out


def _to_rgb(img: Image.Image, keep_alpha: bool) -> Image.Image:
    mode = img.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        img = _high_depth_to_l(img)
        mode = img.mode
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info
    if has_alpha:
        rgba = img.convert("RGBA")
        alpha = rgba.getchannel("A")
        lo, _ = alpha.getextrema()
        if lo == 255:  # declared alpha but fully opaque
            return rgba.convert("RGB")
        if keep_alpha:
            return rgba
        out = Image.new("RGB", rgba.size, (255, 255, 255))
        out.paste(rgba.convert("RGB"), (0, 0), alpha)
        return out
    if mode == "CMYK":
        return _cmyk_to_rgb(img)
    if mode == "RGB":
        return img
    return img.convert("RGB")


def _high_depth_to_l(img: Image.Image) -> Image.Image:
    """Scale (never clip) 16/32-bit integer and float greyscale to 8-bit ``L``."""
    arr = np.asarray(img).astype(np.float64)
    arr = np.nan_to_num(arr, nan=0.0, posinf=0.0, neginf=0.0)
    vmax = float(arr.max()) if arr.size else 0.0
    if img.mode.startswith("I;16"):
        full = 65535.0
    elif img.mode == "F" and vmax <= 1.0:
        full = 1.0
    elif vmax <= 255.0:
        full = 255.0  # 8-bit data stored in a wide mode
    elif vmax <= 65535.0:
        full = 65535.0
    else:
        full = vmax
    out = np.clip(np.rint(arr * (255.0 / full)), 0, 255).astype(np.uint8)
    return Image.fromarray(out, "L")


def _cmyk_to_rgb(img: Image.Image) -> Image.Image:
    icc = img.info.get("icc_profile")
    if icc:
        try:
            from PIL import ImageCms

            src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            dst = ImageCms.createProfile("sRGB")
            out = ImageCms.profileToProfile(img, src, dst, outputMode="RGB")
            if out is not None:
                return out
        except Exception:  # noqa: BLE001 - a broken profile falls back to the plain formula
            log.debug("CMYK ICC conversion failed; using the plain formula", exc_info=True)
    return img.convert("RGB")


# ------------------------------------------------------------------------------------------------ SVG


class _UnsafeSvg(Exception):
    pass


def _render_svg(data: bytes, name: str, max_pixels: int, deadline: _Deadline) -> Image.Image:
    import resvg_py

    if data[:2] == b"\x1f\x8b":  # .svgz
        try:
            with gzip.GzipFile(fileobj=io.BytesIO(data)) as gz:
                data = gz.read(MAX_SVG_BYTES + 1)
        except (OSError, EOFError, zlib.error) as e:
            raise ImageError(name, f"corrupt compressed SVG: {e}") from None
    if len(data) > MAX_SVG_BYTES:
        raise ImageError(name, f"SVG too large (over {MAX_SVG_BYTES} bytes)")
    svg, stripped = _sanitize_svg(data, name, max_pixels)
    if stripped:
        log.warning("%s: stripped %d unsafe item(s) from SVG (%s)", name, len(stripped), ", ".join(stripped[:5]))
    deadline.check("SVG sanitising")
    try:
        png = resvg_py.svg_to_bytes(svg_string=svg, width=SVG_RENDER_SIZE, height=SVG_RENDER_SIZE)
    except Exception as e:  # noqa: BLE001 - resvg raises ValueError, be safe with anything
        raise ImageError(name, f"invalid SVG: {e}") from None
    deadline.check("SVG render")
    try:
        img = Image.open(io.BytesIO(bytes(png)), formats=("PNG",))
        img.load()
    except Exception as e:  # noqa: BLE001
        raise ImageError(name, f"SVG render produced no image: {e}") from None
    return img


def _sanitize_svg(data: bytes, name: str, max_pixels: int) -> tuple[str, list[str]]:
    """Parse without entities/DTDs, strip scripts and external references; return (svg text, stripped)."""
    try:
        root = _parse_xml_no_entities(data)
    except _UnsafeSvg as e:
        raise ImageError(name, str(e)) from None
    except expat.ExpatError as e:
        raise ImageError(name, f"invalid SVG XML: {expat.ErrorString(e.code)} (line {e.lineno}, column {e.offset})") from None
    except (ValueError, IndexError) as e:  # TreeBuilder: mismatched or missing root element
        raise ImageError(name, f"invalid SVG XML: {e}") from None

    if _local(root.tag) != "svg":
        raise ImageError(name, f"not an SVG: root element is <{_local(root.tag)}>")
    stripped: list[str] = []
    n = 0
    for parent in root.iter():
        n += 1
        if n > MAX_SVG_ELEMENTS:
            raise ImageError(name, f"SVG too complex (over {MAX_SVG_ELEMENTS} elements)")
        for child in list(parent):
            if not isinstance(child.tag, str):
                continue
            if _local(child.tag).lower() in ("script", "foreignobject", "handler", "iframe", "object", "embed"):
                parent.remove(child)
                stripped.append(f"<{_local(child.tag)}>")
        _sanitize_attrs(parent, stripped, max_pixels)
        if _local(parent.tag) == "style" and parent.text:
            parent.text = _sanitize_css(parent.text, stripped)
    return ET.tostring(root, encoding="unicode"), stripped


def _parse_xml_no_entities(data: bytes) -> ET.Element:
    """Parse XML with pyexpat directly, refusing any entity declaration and never loading external entities."""
    builder = ET.TreeBuilder()
    p = expat.ParserCreate(namespace_separator="}")
    p.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)

    def qname(n: str) -> str:
        return "{" + n if "}" in n else n

    def refuse_entity(entity_name: str, *args: object) -> None:
        raise _UnsafeSvg(f"unsafe SVG: declares XML entity {entity_name!r} (entities are refused)")

    def refuse_external(*args: object) -> int:
        raise _UnsafeSvg("unsafe SVG: references an external entity (refused)")

    p.EntityDeclHandler = refuse_entity
    p.UnparsedEntityDeclHandler = refuse_entity
    p.ExternalEntityRefHandler = refuse_external
    depth = 0

    def start(tag: str, attrs: dict[str, str]) -> None:
        nonlocal depth
        depth += 1
        if depth > MAX_SVG_DEPTH:
            raise _UnsafeSvg(f"SVG nested too deeply (over {MAX_SVG_DEPTH} levels)")
        builder.start(qname(tag), {qname(k): v for k, v in attrs.items()})

    def end(tag: str) -> None:
        nonlocal depth
        depth -= 1
        builder.end(qname(tag))

    p.StartElementHandler = start
    p.EndElementHandler = end
    p.CharacterDataHandler = builder.data
    p.Parse(data, True)
    return builder.close()


def _local(tag: object) -> str:
    t = tag if isinstance(tag, str) else ""
    return t.rsplit("}", 1)[-1].split(":")[-1]


def _sanitize_attrs(el: ET.Element, stripped: list[str], max_pixels: int) -> None:
    for key in list(el.attrib):
        value = el.attrib[key]
        local = _local(key).lower()
        if local.startswith("on"):
            del el.attrib[key]
            stripped.append(f"{local} handler")
        elif local in ("href", "src"):
            v = value.strip()
            if v.startswith("#"):
                continue
            if _SAFE_DATA_URI.match(v) and _data_uri_ok(v, max_pixels):
                continue
            del el.attrib[key]
            stripped.append(f"reference {v[:60]!r}")
        elif local == "style":
            el.attrib[key] = _sanitize_css(value, stripped)
        elif "url(" in value.lower():
            if any(not u.strip().startswith("#") for _, u in _CSS_URL.findall(value)):
                del el.attrib[key]
                stripped.append(f"{local}={value[:60]!r}")


def _sanitize_css(css: str, stripped: list[str]) -> str:
    if "@import" in css.lower():
        css = _CSS_IMPORT.sub("", css)
        stripped.append("CSS @import")

    def repl(m: re.Match) -> str:
        if m.group(2).strip().startswith("#"):
            return m.group(0)
        stripped.append(f"CSS url({m.group(2)[:60]!r})")
        return "none"

    return _CSS_URL.sub(repl, css)


def _data_uri_ok(uri: str, max_pixels: int) -> bool:
    """An inline raster image is allowed when it decodes its header and is within the pixel limit."""
    try:
        payload = base64.b64decode(uri.split(",", 1)[1], validate=False)
        with Image.open(io.BytesIO(payload), formats=("PNG", "JPEG", "GIF", "WEBP")) as im:
            w, h = im.size
        return 0 < w * h <= max_pixels
    except (binascii.Error, ValueError, OSError, Image.DecompressionBombError):
        return False


# ------------------------------------------------------------------------------------------- folders


def _has_image_ext(name: str) -> bool:
    ext = os.path.splitext(name)[1].lower()
    return ext in IMAGE_EXTENSIONS or ext in UNSUPPORTED_PHOTO_EXTENSIONS


def _within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def iter_image_files(root: str | os.PathLike) -> Iterator[Path]:
    """Yield image files under ``root`` (recursive, sorted by path components, deterministic).

    * a file passed directly is yielded whatever its extension (the user named it);
    * inside folders only :data:`IMAGE_EXTENSIONS` files are yielded (case-insensitive), and
      :data:`UNSUPPORTED_PHOTO_EXTENSIONS` ones (HEIC...), so the caller reports them instead of
      leaving them out without a word;
    * symlinks are followed once: a link to a folder/file inside the tree is skipped (it is reached
      through its real path), a link to a folder outside is walked once, however many links point
      at it; loops are detected by (device, inode) and skipped with a warning;
    * a broken symlink with an image extension is yielded, so the caller reports it as an error;
    * an unlistable folder is logged and skipped.

    Raises :class:`ImageError` when ``root`` does not exist or is neither file nor folder.
    """
    top = Path(root)
    if os.path.isfile(top):
        yield top
        return
    if not os.path.isdir(top):
        if os.path.islink(top):
            raise ImageError(top, "broken symlink (its target does not exist)")
        if not os.path.lexists(top):
            raise ImageError(top, "file not found")
        raise ImageError(top, "not a file or folder")
    root_real = os.path.realpath(top)
    visited: set[tuple[int, int]] = set()
    stack: list[Iterator[os.DirEntry]] = []
    first = _list_dir(top, visited)
    if first is not None:
        stack.append(first)
    while stack:
        entry = next(stack[-1], None)
        if entry is None:
            stack.pop()
            continue
        path = Path(entry.path)
        try:
            is_link = entry.is_symlink()
            if is_link:
                target = os.path.realpath(entry.path)
                if os.path.isdir(entry.path):
                    if _within(target, root_real):
                        log.debug("skipping symlink %s -> %s: inside the tree", path, target)
                        continue
                    sub = _list_dir(path, visited)
                    if sub is not None:
                        stack.append(sub)
                elif _has_image_ext(entry.name):
                    if os.path.isfile(entry.path) and _within(target, root_real) and _has_image_ext(target):
                        log.debug("skipping symlink %s -> %s: inside the tree", path, target)
                        continue
                    yield path  # includes broken links: the caller reports them
                continue
            if entry.is_dir(follow_symlinks=False):
                sub = _list_dir(path, visited)
                if sub is not None:
                    stack.append(sub)
            elif entry.is_file(follow_symlinks=False) and _has_image_ext(entry.name):
                yield path
        except OSError as e:
            log.warning("skipping %s: %s", path, _os_reason(e))


def _list_dir(path: Path, visited: set[tuple[int, int]]) -> Iterator[os.DirEntry] | None:
    try:
        st = os.stat(path)
        key = (st.st_dev, st.st_ino)
        if key in visited:
            log.warning("skipping %s: folder already visited (symlink loop or second link)", path)
            return None
        visited.add(key)
        with os.scandir(path) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as e:
        log.warning("cannot list folder %s: %s", path, _os_reason(e))
        return None
    return iter(entries)

