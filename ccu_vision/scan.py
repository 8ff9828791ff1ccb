"""The batch scan: listing images in, one JSON line per image out.

Stages, each timed::

    read  ->  decode  ->  embed  ->  text  ->  search  ->  decide  ->  write
    (thread pool, bounded)   (main thread, batched ONNX Runtime; text: OCR, when on)

``read`` and ``decode`` (file bytes, JPEG draft-mode decode, letterbox onto the model canvas) run in
a pool of threads, at most ``max_inflight`` images ahead of the embedder, so decoding overlaps
inference (ONNX Runtime and PIL release the GIL). The main thread embeds batches, matches them
(:mod:`ccu_vision.matcher`) and appends the rows, in input order, to the output file, flushing each
line and fsyncing every few lines. A bad image becomes an ``error`` row, never a crash.

``resume=True`` reads the existing output first, drops a truncated last line (a kill mid-write)
and skips inputs already answered (key: image path + listing_id, counted, so an input listed twice
is answered twice, never more), so a killed scan continues where it stopped with no row missing or
duplicated.

Text evidence (:mod:`ccu_vision.text`): with a model that carries ``ccu.text_scoring`` and a catalog
whose thresholds include ``logo_text``, each photo is also read by OCR (as the model's text scoring
says, :class:`ccu_vision.text.PhotoOCR`) and the matcher adds what the text shows. ``text=None`` (the
default) turns it on when both allow it and the OCR engine is installed; ``True`` requires it (a
clear error otherwise); ``False`` turns it off (logo flags then use the ``logo`` threshold). With
text evidence, a model with ``ccu.logo_verify`` also verifies the best logo candidates with
keypoints (:mod:`ccu_vision.logo_verify`): the decode threads keep each photo's grey verification
canvas, and its keypoints are taken only when a candidate could reach the threshold.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import sys
import time
from collections import Counter, deque
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import logo_verify, verify
from .errors import CcuError, ImageError
from .jsontext import dumps_utf8
from .matcher import DEFAULT_REGION_K, DEFAULT_TOP_K, CatalogLike, TextContext, match_photos
from .preprocess import Letterbox, letterbox

log = logging.getLogger(__name__)

MANIFEST_EXTENSIONS = {".csv", ".jsonl", ".json", ".ndjson", ".tsv", ".txt"}
STAGES = ("read", "decode", "decode_wait", "embed", "text", "search", "verify", "decide", "write")


# ----------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class ScanInput:
    """One listing image to scan, with the optional manifest fields."""

    image: str
    listing_id: str | None = None
    seller_id: str | None = None
    title: str | None = None

    @property
    def key(self) -> tuple[str, str]:
        """Identity used by ``--resume``: image path + listing_id."""
        return row_key({"image": self.image, "listing_id": self.listing_id})


def row_key(row: dict) -> tuple[str, str]:
    """The ``(image, listing_id)`` key of a scan row or input."""
    lid = row.get("listing_id")
    return (str(row.get("image")), "" if lid is None else str(lid))


def _opt(v: Any) -> str | None:
    if v is None:
        return None
    s = str(v).strip()
    return s or None


def collect_inputs(path: str | os.PathLike) -> list[ScanInput]:
    """The images a scan of ``path`` covers.

    A folder is walked recursively (:func:`ccu_vision.imageio.iter_image_files`); an image file is
    scanned alone; any other file is read as a CSV/JSONL manifest with an ``image`` column and
    optional ``listing_id``, ``seller_id``, ``title`` (paths relative to the manifest's folder).
    """
    from . import imageio

    p = Path(path)
    if not p.exists():
        raise CcuError(f"{p}: no such file or folder")
    if p.is_dir() or p.suffix.lower() in imageio.IMAGE_EXTENSIONS or _starts_like_image(p):
        return [ScanInput(image=str(f)) for f in imageio.iter_image_files(p)]
    from .manifest import read_manifest

    rows = read_manifest(p, required=["image"], optional=["listing_id", "seller_id", "title"],
                         path_column="image")
    return [
        ScanInput(image=str(r["image"]), listing_id=_opt(r.get("listing_id")),
                  seller_id=_opt(r.get("seller_id")), title=_opt(r.get("title")))
        for r in rows
    ]


def _starts_like_image(path: Path) -> bool:
    """A photo without an image extension ("x.jpg_large", "x.heic") is scanned, not read as a manifest."""
    from . import imageio

    try:
        with open(path, "rb") as f:
            return imageio.looks_like_image(f.read(16))
    except OSError:
        return False  # the manifest reader reports why it cannot be read


# ----------------------------------------------------------------------------- rows


def ok_row(item: ScanInput, result: Any) -> dict:
    """A ``status: ok`` row from a :class:`ccu_vision.matcher.MatchResult`."""
    row: dict[str, Any] = {"image": item.image}
    if item.listing_id is not None:
        row["listing_id"] = item.listing_id
    row["status"] = "ok"
    row.update(result.to_row())
    return row


def error_row(item: ScanInput, reason: str) -> dict:
    """A ``status: error`` row carrying the reason."""
    row: dict[str, Any] = {"image": item.image}
    if item.listing_id is not None:
        row["listing_id"] = item.listing_id
    row.update({"status": "error", "error": reason, "verdict": "error", "flags": [], "matches": []})
    return row


def json_line(row: dict) -> str:
    """One results-file line for ``row``: UTF-8 JSON plus a newline.

    A file name that is not valid UTF-8 (e.g. Latin-1 bytes from an old archive) reaches us as a
    string with lone surrogates, which UTF-8 cannot encode; such a row is written with ``\\u``
    escapes instead, so it is still one valid JSON line and reads back to the same ``image`` key.
    """
    return dumps_utf8(row, allow_nan=False) + "\n"


# ----------------------------------------------------------------------------- timings / summary


@dataclass
class StageTime:
    """Time spent in one stage. For threaded stages ``seconds`` is busy time summed over workers."""

    seconds: float = 0.0
    images: int = 0

    def to_dict(self) -> dict:
        ips = self.images / self.seconds if self.seconds > 0 else None
        return {"seconds": round(self.seconds, 4), "images": self.images,
                "images_per_s": round(ips, 2) if ips is not None else None}


@dataclass
class ScanSummary:
    """What a scan did: counts, per-stage times, wall time and throughput (read by the CLI and bench)."""

    out: str = ""
    inputs: int = 0
    skipped: int = 0  # already answered in the output (resume)
    scanned: int = 0  # rows written by this run
    ok: int = 0
    errors: int = 0
    flagged: int = 0
    clear: int = 0
    dropped_partial_line: bool = False
    wall_s: float = 0.0
    workers: int = 0
    batch_size: int = 0
    text: bool = False  # whether text evidence (OCR) was on
    stages: dict[str, StageTime] = field(default_factory=lambda: {s: StageTime() for s in STAGES})

    @property
    def images_per_s(self) -> float:
        """End-to-end throughput of this run (rows written / wall seconds)."""
        return self.scanned / self.wall_s if self.wall_s > 0 else 0.0

    def to_dict(self) -> dict:
        return {
            "out": self.out, "inputs": self.inputs, "skipped": self.skipped, "scanned": self.scanned,
            "ok": self.ok, "errors": self.errors, "flagged": self.flagged, "clear": self.clear,
            "dropped_partial_line": self.dropped_partial_line,
            "wall_s": round(self.wall_s, 4), "images_per_s": round(self.images_per_s, 2),
            "workers": self.workers, "batch_size": self.batch_size, "text": self.text,
            "stages": {k: v.to_dict() for k, v in self.stages.items()},
        }

    def format(self) -> str:
        """Human-readable multi-line summary."""
        lines = [
            f"scanned {self.scanned} images in {self.wall_s:.2f}s ({self.images_per_s:.1f} images/s)"
            + (f", {self.skipped} already in {self.out} (resumed)" if self.skipped else ""),
            f"  suspect: {self.flagged}   clear: {self.clear}   errors: {self.errors}",
            f"  stages ({self.workers} decode threads, batch {self.batch_size}, text evidence "
            f"{'on' if self.text else 'off'}; threaded stages = busy time summed over threads):",
        ]
        for name, st in self.stages.items():
            d = st.to_dict()
            ips = f"{d['images_per_s']:.1f} images/s" if d["images_per_s"] is not None else "-"
            lines.append(f"    {name:<12} {st.seconds:8.3f}s  {ips}")
        return "\n".join(lines)


# ----------------------------------------------------------------------------- decode


@dataclass
class _Decoded:
    canvas: np.ndarray | None
    lb: Letterbox | None
    error: str | None
    read_s: float
    decode_s: float
    text_img: Any = None  # the photo as OCR reads it (text evidence on)
    text_how: Any = None  # the PhotoOCR it was decoded for (None: text off)
    text_src_w: int = 0  # the image file's width (OCR boxes are given in its pixels, as the row's other boxes)
    logo_gray: np.ndarray | None = None  # the photo as logo candidates are verified (logo verification on)

    def logo_query(self) -> Any:
        """A function giving this photo's keypoints for logo verification (taken once, on first call)."""
        return functools.cache(lambda: None if self.logo_gray is None else logo_verify.features(self.logo_gray))


def _decode(path: str, size: int, interp: str, text_how: Any = None, logo_how: Any = None) -> _Decoded:
    """Read + decode + letterbox one image (runs in a worker thread; never raises). With ``text_how``
    (a :class:`ccu_vision.text.PhotoOCR`) the photo is decoded at least that large and also kept as
    OCR reads it; with ``logo_how`` (a :class:`ccu_vision.logo_verify.LogoVerifyConfig`) also as
    logo candidates are verified."""
    from . import imageio
    from .text import photo_canvas

    t0 = time.perf_counter()
    t1 = t0
    try:
        data = imageio.read_image_bytes(path)
        t1 = time.perf_counter()
        side = text_how.side if text_how is not None else 0
        side = max(side, logo_how.canvas // 2 if logo_how is not None else 0)  # a draft keeps 2 x draft_size
        img = imageio.load_image_bytes(data, path, draft_size=max(size, side))
        canvas, lb = letterbox(img, size, interp)
        full = imageio.source_size(data, img)
        if full != img.size:  # a JPEG draft decode: boxes are reported in the file's pixels
            lb = dataclasses.replace(lb, scale=lb.scale * img.size[0] / full[0], width=full[0], height=full[1])
        text_img = photo_canvas(img, text_how.side, text_how.exact) if text_how is not None else None
        logo_gray = logo_verify.query_gray(img, logo_how) if logo_how is not None else None
        return _Decoded(canvas, lb, None, t1 - t0, time.perf_counter() - t1, text_img, text_how, full[0], logo_gray)
    except ImageError as e:
        err = e.reason
    except Exception as e:  # noqa: BLE001 - a bad image must become an error row, whatever broke
        log.debug("unexpected decode failure for %s", path, exc_info=True)
        err = f"cannot decode image: {type(e).__name__}: {e}"
    t2 = time.perf_counter()
    if t1 == t0:
        return _Decoded(None, None, err, t2 - t0, 0.0)
    return _Decoded(None, None, err, t1 - t0, t2 - t1)


def decode_checked(embedder: Any, path: str | os.PathLike, text_how: Any = None) -> _Decoded:
    """Decode one image as a scan does (``text_how``: also for OCR, and for logo verification when the
    model has it); raises :class:`ImageError`."""
    d = _decode(str(path), embedder.query_size, embedder.interp, text_how, _logo_how(embedder, text_how))
    if d.error is not None:
        raise ImageError(path, d.error)
    assert d.canvas is not None and d.lb is not None
    return d


def _logo_how(embedder: Any, text_how: Any) -> Any:
    """The model's logo verification settings when its photos are verified (with text evidence only)."""
    return getattr(embedder, "logo_verify", None) if text_how is not None else None


def text_context(embedder: Any, catalog: CatalogLike, text: bool | None = None) -> tuple[TextContext | None, Any]:
    """(TextContext, reader) when text evidence is on for this model and catalog, else (None, None).

    ``text=None``: on when the model has ``ccu.text_scoring``, the catalog's thresholds have
    ``logo_text`` and the OCR engine is installed; ``True``: the same, but a clear error when one is
    missing; ``False``: off.
    """
    import importlib.util

    if text is False:
        return None, None
    cfg = getattr(embedder, "text_scoring", None)
    why = None
    if cfg is None:
        why = "the model has no text scoring (ccu.text_scoring)"
    elif "logo_text" not in (catalog.thresholds or {}):
        why = ("the catalog's thresholds have no 'logo_text' threshold (a catalog made with an older "
               "model: `ccu-vision reindex` pins the current one and its thresholds)")
    elif importlib.util.find_spec("rapidocr_onnxruntime") is None:
        why = "the OCR engine is not installed (pip install rapidocr-onnxruntime)"
    if why is not None:
        if text:
            raise CcuError(f"text evidence is not available: {why}")
        log.info("text evidence off: %s", why)
        return None, None
    from .text import default_reader
    from .text_keys import catalog_text_keys

    reader = default_reader()
    keys, first = catalog_text_keys(catalog, reader)
    return TextContext(cfg, keys, first), reader


def warm_text_keys(embedder: Any, catalog: CatalogLike) -> None:
    """Read the lettering of logo references not yet in the catalog's text cache (after an add), so
    the next scan does not pay for it; a failure here only logs (the references are already added)."""
    try:
        text_context(embedder, catalog, None)
    except Exception:  # noqa: BLE001 - the add succeeded; the next scan reads what is missing
        log.warning("could not read the new logos' lettering now; the next scan will", exc_info=True)


def check_image(path: str | os.PathLike, embedder: Any, catalog: CatalogLike, *, top_k: int = DEFAULT_TOP_K,
                region_k: int = DEFAULT_REGION_K, text: bool | None = None, decoded: _Decoded | None = None) -> dict:
    """Scan one image and return its row (same schema as a scan row). Raises ImageError if unreadable.

    ``decoded`` (from :func:`decode_checked`) is used when it was decoded for the text setting this
    model and catalog end up with, so a caller that checked the file first does not decode it twice."""
    ctx, reader = text_context(embedder, catalog, text)
    how = ctx.cfg.photo if ctx is not None else None
    d = decoded if decoded is not None and decoded.text_how == how else decode_checked(embedder, path, how)
    lines = [read_text(reader, d)] if ctx is not None else None
    return check_canvas(path, d.canvas, d.lb, embedder, catalog, top_k=top_k, region_k=region_k,
                        text=ctx, lines=lines, logo_query=d.logo_query())


def check_canvas(path: str | os.PathLike, canvas: np.ndarray, lb: Letterbox, embedder: Any, catalog: CatalogLike,
                 *, top_k: int = DEFAULT_TOP_K, region_k: int = DEFAULT_REGION_K, text: TextContext | None = None,
                 lines: Sequence[Any] | None = None, logo_query: Any = None) -> dict:
    """The row of one already decoded image (see :func:`decode_checked`); ``text``/``lines``: text evidence;
    ``logo_query``: the photo's keypoints for logo verification (:meth:`_Decoded.logo_query`)."""
    photo = embedder.embed_canvases(canvas[None], [lb])[0]
    lv = logo_verify.for_catalog(embedder, catalog) if text is not None and logo_query is not None else None
    res = match_photos([photo], catalog, top_k=top_k, region_k=region_k,
                       verifier=verify.for_catalog(embedder, catalog), text=text, texts=lines,
                       logo_verifier=lv, logo_queries=[logo_query] if lv is not None else None)[0]
    return ok_row(ScanInput(image=str(path)), res)


# ----------------------------------------------------------------------------- resume


def read_rows(path: str | os.PathLike) -> list[dict]:
    """All complete rows of a results file (a truncated last line is ignored)."""
    rows, _, _ = _scan_existing(Path(path))
    return rows


def _scan_existing(out: Path) -> tuple[list[dict], int, int]:
    """Parse ``out``: (rows, byte offset where valid content ends, file size)."""
    rows: list[dict] = []
    good_end = 0
    size = out.stat().st_size
    with open(out, "rb") as f:
        lineno = 0
        for raw in f:
            lineno += 1
            complete = raw.endswith(b"\n")
            row = None
            try:
                row = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, ValueError):
                pass
            if not complete:  # truncated by a kill mid-write: drop, it will be rewritten
                break
            if not isinstance(row, dict) or "image" not in row:
                if not raw.strip():
                    good_end += len(raw)
                    continue
                rest = f.read(1)
                if not rest:  # garbage last line: treat like a truncated one
                    break
                raise CcuError(f"{out}: line {lineno} is not a scan row; cannot resume safely "
                               "(fix or remove that line, or scan to a new file)")
            rows.append(row)
            good_end += len(raw)
    return rows, good_end, size


def _prepare_resume(out: Path) -> tuple[Counter, bool]:
    """Answered keys in ``out`` (counted) and whether a partial last line was dropped."""
    rows, good_end, size = _scan_existing(out)
    dropped = False
    if good_end < size:
        log.warning("%s: dropping a truncated last line (%d bytes); that image is scanned again",
                    out, size - good_end)
        with open(out, "r+b") as f:
            f.truncate(good_end)
            f.flush()
            os.fsync(f.fileno())
        dropped = True
    return Counter(row_key(r) for r in rows), dropped


# ----------------------------------------------------------------------------- the pipeline


def _results_error(e: OSError, out: Path) -> OSError:
    """A failed write of the results file as an ``OSError`` naming it (write errors carry no file name)."""
    return e if e.filename is not None else OSError(e.errno, f"{e.strerror or e} (writing results)", str(out))


def _write_rows(f: Any, lines: list[str], out: Path, sync: bool) -> None:
    """Append result lines to ``out`` one write per row (a kill leaves at most one partial line),
    fsync when asked; a failed write (disk full, I/O error) is an ``OSError`` naming ``out``."""
    try:
        for line in lines:
            f.write(line)
            f.flush()
        if sync:
            os.fsync(f.fileno())
    except OSError as e:
        named = _results_error(e, out)
        if named is e:
            raise
        raise named from e


def default_workers() -> int:
    """Decode threads: one per core, at least 2, at most 8."""
    return max(2, min(8, os.cpu_count() or 2))


def run_scan(
    inputs: Sequence[ScanInput] | Iterable[ScanInput],
    out: str | os.PathLike,
    embedder: Any,
    catalog: CatalogLike,
    *,
    resume: bool = False,
    top_k: int = DEFAULT_TOP_K,
    region_k: int = DEFAULT_REGION_K,
    batch_size: int | None = None,
    workers: int | None = None,
    max_inflight: int | None = None,
    fsync_every: int = 64,
    progress: bool = True,
    text: bool | None = None,
) -> ScanSummary:
    """Scan ``inputs`` into the JSONL file ``out`` and return a :class:`ScanSummary`.

    Without ``resume`` an existing ``out`` is replaced; with it, answered inputs are skipped and new
    rows appended. ``embedder`` needs ``query_size``, ``interp``, ``batch_size`` and
    ``embed_canvases``; ``catalog`` the read API used by :func:`ccu_vision.matcher.match_photos`.
    """
    t_wall = time.perf_counter()
    out = Path(out)
    items = list(inputs)
    summary = ScanSummary(out=str(out), inputs=len(items))
    bs = int(batch_size or getattr(embedder, "batch_size", 16) or 16)
    nw = int(workers or default_workers())
    inflight = int(max_inflight or (2 * bs + nw))
    summary.workers, summary.batch_size = nw, bs
    st = summary.stages

    answered: Counter = Counter()
    if resume and out.exists():
        answered, summary.dropped_partial_line = _prepare_resume(out)
    else:
        if out.parent and not out.parent.exists():
            out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(b"")
    todo: list[ScanInput] = []
    for item in items:
        k = item.key
        if answered[k] > 0:
            answered[k] -= 1
            summary.skipped += 1
        else:
            todo.append(item)

    size, interp = int(embedder.query_size), str(embedder.interp)
    verifier = verify.for_catalog(embedder, catalog)  # product keypoints are cached for the whole run
    text_ctx, reader = text_context(embedder, catalog, text)
    summary.text = text_ctx is not None
    text_how = text_ctx.cfg.photo if text_ctx is not None else None
    logo_verifier = logo_verify.for_catalog(embedder, catalog) if _logo_how(embedder, text_how) is not None else None
    logo_how = logo_verifier.cfg if logo_verifier is not None else None  # no grey canvases when nothing verifies
    match_t: dict[str, float] = {}
    from tqdm import tqdm

    bar = tqdm(total=len(todo), unit="img", desc="scan", file=sys.stderr, disable=not progress,
               dynamic_ncols=True, leave=True)
    pool = ThreadPoolExecutor(max_workers=nw, thread_name_prefix="ccu-decode")
    f = open(out, "a", encoding="utf-8", newline="\n")
    since_sync, done = 0, False
    try:
        pending: deque[tuple[ScanInput, Future]] = deque()
        it = iter(todo)

        def refill() -> None:
            while len(pending) < inflight:
                nxt = next(it, None)
                if nxt is None:
                    return
                pending.append((nxt, pool.submit(_decode, nxt.image, size, interp, text_how, logo_how)))

        def flush_batch(batch: list[tuple[ScanInput, _Decoded]]) -> None:
            nonlocal since_sync
            good = [(i, d) for i, d in enumerate(batch) if d[1].error is None]
            results: dict[int, Any] = {}
            errors: dict[int, str] = {}
            if good:
                t0 = time.perf_counter()
                photos = _embed(embedder, [d for _, (_, d) in good], errors, [i for i, _ in good])
                st["embed"].seconds += time.perf_counter() - t0
                st["embed"].images += len(photos)
                if photos:
                    idx = [i for i, _ in good if i not in errors]
                    texts = None
                    if text_ctx is not None:
                        t0 = time.perf_counter()
                        texts = [_read_text(reader, batch[i][1]) for i in idx]
                        st["text"].seconds += time.perf_counter() - t0
                        st["text"].images += len(idx)
                    queries = [batch[i][1].logo_query() for i in idx] if logo_verifier is not None else None
                    for i, r in zip(idx, match_photos(photos, catalog, top_k=top_k, region_k=region_k,
                                                      timings=match_t, verifier=verifier, text=text_ctx,
                                                      texts=texts, logo_verifier=logo_verifier,
                                                      logo_queries=queries), strict=True):
                        results[i] = r
            t0 = time.perf_counter()
            lines = []
            for i, (item, d) in enumerate(batch):
                if i in results:
                    row = ok_row(item, results[i])
                    summary.ok += 1
                    if row["verdict"] == "suspect":
                        summary.flagged += 1
                    else:
                        summary.clear += 1
                else:
                    row = error_row(item, d.error if d.error is not None else errors.get(i, "not scanned"))
                    summary.errors += 1
                lines.append(json_line(row))
            since_sync += len(lines)
            sync = since_sync >= fsync_every
            _write_rows(f, lines, out, sync=sync)
            if sync:
                since_sync = 0
            summary.scanned += len(batch)
            st["write"].seconds += time.perf_counter() - t0
            st["write"].images += len(batch)
            bar.update(len(batch))
            bar.set_postfix(suspect=summary.flagged, errors=summary.errors, refresh=False)

        refill()
        batch: list[tuple[ScanInput, _Decoded]] = []
        n_good = 0
        while pending:
            item, fut = pending.popleft()
            refill()
            t0 = time.perf_counter()
            d = fut.result()
            st["decode_wait"].seconds += time.perf_counter() - t0
            st["decode_wait"].images += 1
            st["read"].seconds += d.read_s
            st["read"].images += 1
            st["decode"].seconds += d.decode_s
            st["decode"].images += 1
            batch.append((item, d))
            n_good += d.error is None
            if n_good >= bs:
                flush_batch(batch)
                batch, n_good = [], 0
        if batch:
            flush_batch(batch)
        _write_rows(f, [], out, sync=True)
        done = True
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        bar.close()
        try:
            f.close()  # retries whatever a failed write left buffered
        except OSError as e:
            if done:  # otherwise the write error already on its way names the file
                raise _results_error(e, out) from e
    st["search"].seconds = match_t.get("search", 0.0)
    st["decide"].seconds = match_t.get("decide", 0.0)
    st["verify"].seconds = match_t.get("verify", 0.0)
    st["search"].images = st["decide"].images = st["verify"].images = summary.ok
    summary.wall_s = time.perf_counter() - t_wall
    return summary


def read_text(reader: Any, d: _Decoded) -> list:
    """One decoded photo's OCR lines (boxes in the photo's pixels), read as it was decoded for."""
    return reader.read(d.text_img, d.text_how, d.text_src_w)


def _read_text(reader: Any, d: _Decoded) -> list:
    """One photo's OCR lines; an OCR failure costs that photo its text evidence, not its row."""
    try:
        return read_text(reader, d)
    except Exception:  # noqa: BLE001 - the image scan goes on without text for this photo
        log.warning("text reading failed for one image; scored without text", exc_info=True)
        return []


def _embed(embedder: Any, decoded: list[_Decoded], errors: dict[int, str], index: list[int]) -> list:
    """Embed a batch; if the batch fails, retry one by one so only the culprit becomes an error row."""
    canvases = np.stack([d.canvas for d in decoded])
    boxes = [d.lb for d in decoded]
    try:
        return list(embedder.embed_canvases(canvases, boxes))
    except Exception:  # noqa: BLE001
        if len(decoded) == 1:
            errors[index[0]] = f"embedding failed: {sys.exc_info()[1]}"
            return []
        log.warning("batch embedding failed; retrying images one by one", exc_info=True)
    out = []
    for d, i in zip(decoded, index, strict=True):
        try:
            out.extend(embedder.embed_canvases(d.canvas[None], [d.lb]))
        except Exception as e:  # noqa: BLE001
            errors[i] = f"embedding failed: {type(e).__name__}: {e}"
    return out
