"""The ``ccu-vision`` command line.

Every :class:`~ccu_vision.errors.CcuError` or ``OSError`` becomes a one-line ``Error: ...`` on stderr
with exit code 1 (usage errors: 2), never a traceback. Heavy modules (the embedder, the catalog,
torch for ``train``/``export``) are imported only by the commands that need them.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any, NoReturn

import click

from . import __version__
from .errors import CcuError
from .jsontext import dumps_utf8

log = logging.getLogger(__name__)

DEFAULT_HOME = "~/.ccu-vision"
TRAIN_DEPS = {"torch", "torchvision", "timm", "onnx", "onnxscript", "safetensors"}
BENCH_DEPS = {"imagehash", "pdqhash", "cv2", "matplotlib", "psutil", "nbclient", "nbformat"}


def _one_line(e: BaseException) -> str:
    msg = " ".join(str(e).split()) or type(e).__name__
    return msg


class CcuGroup(click.Group):
    """A group that turns ccu-vision and OS errors into one-line ``Error:`` messages (exit 1)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BrokenPipeError:
            raise
        except (CcuError, OSError) as e:
            log.debug("command failed", exc_info=True)
            raise click.ClickException(_one_line(e)) from None


class State:
    """Global options, with the embedder and catalog opened lazily (and closed at exit)."""

    def __init__(self, home: str, model: str | None, threads: int | None) -> None:
        self.home = Path(home).expanduser()
        self.model = model
        self.threads = threads
        self._embedder: Any = None
        self._catalogs: list[Any] = []

    def embedder(self) -> Any:
        if self._embedder is None:
            from .embedder import Embedder

            self._embedder = Embedder(self.model, threads=self.threads)
        return self._embedder

    def catalog(self, *, with_model: bool = True, create: bool = False, readonly: bool = False) -> Any:
        from .catalog import Catalog

        model = self.embedder().info if with_model else None
        cat = Catalog.open(self.home, model=model, create=create, readonly=readonly)
        self._catalogs.append(cat)
        return cat

    def close(self) -> None:
        for cat in self._catalogs:
            try:
                cat.close()
            except Exception:  # noqa: BLE001 - closing must not hide the real outcome
                log.debug("closing catalog failed", exc_info=True)
        self._catalogs.clear()


def _state(ctx: click.Context) -> State:
    return ctx.find_object(State)  # type: ignore[return-value]


def _fail(msg: str) -> NoReturn:
    raise click.ClickException(msg)


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "to_dict") and callable(obj.to_dict):
        obj = obj.to_dict()
    elif is_dataclass(obj) and not isinstance(obj, type):
        obj = asdict(obj)
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _echo_json(obj: Any) -> None:
    click.echo(dumps_utf8(_jsonable(obj)))


# ----------------------------------------------------------------------------- root


class _EnvOption(click.Option):
    """An option whose errors say when the bad value came from its environment variable."""

    def get_error_hint(self, ctx: click.Context) -> str:
        hint = super().get_error_hint(ctx)
        if self.envvar and ctx.get_parameter_source(self.name) == click.core.ParameterSource.ENVIRONMENT:
            hint += f" (from ${self.envvar})"
        return hint


_NON_NEGATIVE_INT = click.IntRange(min=0)
_NON_NEGATIVE_INT.name = "integer"  # Click's own wording would be "not a valid integer range"


class _ClickHandler(logging.Handler):
    """Log records to the *current* stderr via click (works under CliRunner and real processes)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            click.echo(self.format(record), err=True)
        except Exception:  # noqa: BLE001
            self.handleError(record)


def _setup_logging(verbose: int) -> None:
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    lg = logging.getLogger("ccu_vision")
    lg.setLevel(level)
    if not any(isinstance(h, _ClickHandler) for h in lg.handlers):
        h = _ClickHandler()
        h.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
        lg.addHandler(h)


@click.group(
    cls=CcuGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog="""\b
Examples:
  ccu-vision demo --out demo/                       # build a demo catalog, scan a demo dump, write a report
  ccu-vision ref add --brand Nike --kind logo logos/nike.svg
  ccu-vision ref import brand_catalog.csv --json
  ccu-vision scan listings/ --out results.jsonl --report report.html
  ccu-vision --home /data/ccu check listing.jpg
""",
)
@click.version_option(__version__, "--version", prog_name="ccu-vision", message="%(prog)s %(version)s")
@click.option("--home", envvar="CCU_HOME", cls=_EnvOption, default=DEFAULT_HOME, show_default=True, metavar="DIR",
              help="Reference catalog folder [env CCU_HOME].")
@click.option("--model", envvar="CCU_MODEL", cls=_EnvOption, default=None, metavar="PATH",
              help="ONNX embedder file [env CCU_MODEL; default: the shipped model].")
@click.option("--threads", envvar="CCU_THREADS", type=_NON_NEGATIVE_INT, default=None, metavar="N", cls=_EnvOption,
              help="ONNX Runtime threads (0 = all cores) [env CCU_THREADS].")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.pass_context
def cli(ctx: click.Context, home: str, model: str | None, threads: int | None, verbose: int) -> None:
    """ccu-vision: find registered brand logos and reused official product photos in listing images.

    Register references (brand logos, official product shots) once with `ref add` / `ref import`,
    then `check` one listing image or `scan` a whole dump into JSON lines and an HTML report.
    """
    _setup_logging(verbose)
    state = State(home, model, threads)
    ctx.obj = state
    ctx.call_on_close(state.close)


# ----------------------------------------------------------------------------- ref


@cli.group(
    cls=CcuGroup,
    epilog="""\b
Examples:
  ccu-vision ref add --brand Nike --kind logo nike.svg nike_swoosh.png
  ccu-vision ref add --brand Nike --kind product official_shots/ --json
  ccu-vision ref import partner_upload.csv        # columns: path,brand,kind
  ccu-vision ref list --brand Nike
  ccu-vision ref remove 3fa9c1d2e4b5a6f7
""",
)
def ref() -> None:
    """Register, list and remove reference images (logos and official product photos)."""


def _report_events(events: Any, as_json: bool) -> tuple[int, int, int]:
    """Print add events as they are committed; return (created, existing, failed)."""
    created = existing = failed = 0
    for ev in events:
        if not ev.ok:
            failed += 1
            err = _one_line(Exception(ev.error or "failed"))
            click.echo(f"Error: {err if err.startswith(str(ev.path)) else f'{ev.path}: {err}'}", err=True)
            continue
        if ev.created:
            created += 1
        else:
            existing += 1
        if as_json:
            _echo_json({"ref_id": ev.ref_id, "path": str(ev.path), "brand": ev.brand, "kind": ev.kind})
        else:
            what = "added  " if ev.created else "exists "
            click.echo(f"{what} {ev.ref_id}  {ev.brand}  {ev.kind}  {ev.path}")
    return created, existing, failed


def _finish_add(ctx: click.Context, counts: tuple[int, int, int], as_json: bool) -> None:
    created, existing, failed = counts
    if not as_json:
        click.echo(f"{created} added, {existing} already registered, {failed} failed", err=True)
    if failed:
        ctx.exit(1)


@ref.command("add", epilog="""\b
Examples:
  ccu-vision ref add --brand Nike --kind logo nike.svg swoosh.png
  ccu-vision ref add --brand "Under Armour" --kind product shots/ua/ --json
""")
@click.option("--brand", required=True, help="Brand the references belong to.")
@click.option("--kind", required=True, type=click.Choice(["logo", "product"]),
              help="logo: a brand mark; product: an official product photo.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per committed reference.")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.pass_context
def ref_add(ctx: click.Context, brand: str, kind: str, as_json: bool, paths: tuple[Path, ...]) -> None:
    """Add reference images (files or folders, recursive): JPEG, PNG, WebP, GIF, SVG.

    The same file content always gets the same ref_id and is stored once. Unreadable files are
    reported one per line on stderr, the others are still added, and the exit code is 1.
    """
    from .references import add_paths

    st = _state(ctx)
    cat = st.catalog(create=True)
    counts = _report_events(add_paths(cat, st.embedder(), list(paths), brand, kind), as_json)
    if kind == "logo":
        _warm_text(st, cat)
    _finish_add(ctx, counts, as_json)


@ref.command("import", epilog="""\b
Examples:
  ccu-vision ref import brand_catalog.csv
  ccu-vision ref import upload.jsonl --json --root /data/uploads

\b
brand_catalog.csv:
  path,brand,kind
  logos/nike.svg,Nike,logo
  shots/air-max-90.jpg,Nike,product
""")
@click.argument("manifest", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per committed reference.")
@click.option("--root", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Refuse manifest paths that escape this folder.")
@click.pass_context
def ref_import(ctx: click.Context, manifest: Path, as_json: bool, root: Path | None) -> None:
    """Bulk-register references from a CSV or JSONL manifest with columns path,brand,kind.

    Paths are relative to the manifest's folder. Same output and error rules as `ref add`.
    """
    from .references import import_manifest

    st = _state(ctx)
    cat = st.catalog(create=True)
    counts = _report_events(import_manifest(cat, st.embedder(), manifest, root=root), as_json)
    _warm_text(st, cat)
    _finish_add(ctx, counts, as_json)


def _warm_text(st, cat) -> None:
    """Read new logos' lettering now (text evidence), so the next scan does not."""
    from .scan import warm_text_keys

    warm_text_keys(st.embedder(), cat)


@ref.command("list", epilog="""\b
Examples:
  ccu-vision ref list
  ccu-vision ref list --brand Nike --json | jq -r .ref_id
""")
@click.option("--brand", default=None, help="Only this brand.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per reference.")
@click.pass_context
def ref_list(ctx: click.Context, brand: str | None, as_json: bool) -> None:
    """List registered references."""
    st = _state(ctx)
    cat = st.catalog(with_model=False, create=False, readonly=True)
    recs = cat.list_refs(brand=brand)
    for r in recs:
        if as_json:
            _echo_json(r)
        else:
            click.echo(f"{r.ref_id}  {r.kind:<7}  {r.brand}  {r.width}x{r.height}  {r.source_path}")
    if not as_json:
        click.echo(f"{len(recs)} reference(s)", err=True)


@ref.command("remove", epilog="""\b
Examples:
  ccu-vision ref remove 3fa9c1d2e4b5a6f7
  ccu-vision ref list --brand OldBrand --json | jq -r .ref_id | xargs ccu-vision ref remove
""")
@click.argument("ref_ids", nargs=-1, required=True)
@click.pass_context
def ref_remove(ctx: click.Context, ref_ids: tuple[str, ...]) -> None:
    """Remove references by ref_id. Unknown ids are reported and give exit code 1."""
    st = _state(ctx)
    cat = st.catalog(with_model=False, create=False)
    known = [r for r in dict.fromkeys(ref_ids) if cat.get(r) is not None]
    unknown = [r for r in dict.fromkeys(ref_ids) if r not in known]
    n = cat.remove(known) if known else 0
    for r in unknown:
        click.echo(f"Error: no reference {r}", err=True)
    click.echo(f"removed {n} reference(s)")
    if unknown:
        ctx.exit(1)


# ----------------------------------------------------------------------------- check / scan


def _fmt_box(box: Any) -> str:
    return "[" + ", ".join(str(int(v)) for v in box) + "]" if box else ""


def _print_check(row: dict, thresholds: dict, n_refs: int) -> None:
    verdict = row["verdict"]
    click.echo(f"{row['image']}: {verdict.upper() if verdict == 'suspect' else verdict}")
    logo_th = "logo_text" if "text" in row else "logo"  # a row with text evidence answers to logo_text
    if row.get("text"):
        click.echo("  text read: " + " | ".join(row["text"][:8]))
    for f in row["flags"]:
        what = "logo" if f["type"] == "logo" else "near-duplicate of an official photo"
        where = f"  at {_fmt_box(f['box'])}" if f.get("box") else ""
        where += f", {f['inliers']} keypoint inliers" if "inliers" in f else ""
        where += f", text {f['text']!r}" if "text" in f else ""
        click.echo(f"  {f['brand']}: {what}, score {f['score']:.3f} >= threshold {f['threshold']:.3f}"
                   f"{where}  (ref {f['ref_id']})")
    if n_refs == 0:
        click.echo("  (the catalog has no references: nothing to match against)")
        return
    flagged = {(f["ref_id"], f["type"]) for f in row["flags"]}
    others = [m for m in row["matches"]
              if (m["ref_id"], "logo" if m["kind"] == "logo" else "near_duplicate") not in flagged]
    if others:
        click.echo("  closest matches below threshold:" if row["flags"] else "  closest matches:")
        for m in others[:6]:
            th = thresholds.get(logo_th if m["kind"] == "logo" else "near_duplicate")
            ths = f" < threshold {float(th):.3f}" if th is not None else ""
            where = f"  at {_fmt_box(m['box'])}" if m.get("box") else ""
            where += f", {m['inliers']} keypoint inliers" if "inliers" in m else ""
            kind = "logo" if m["kind"] == "logo" else "product photo"
            click.echo(f"    {m['brand']} ({kind}) score {m['score']:.3f}{ths}{where}  (ref {m['ref_id']})")


def _same_file(a: Path, b: str | Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except (OSError, ValueError):
        return False


def _check_scan_outputs(outputs: dict[str, Path | None], input_path: Path, images: list[str], home: Path) -> None:
    """Refuse, before scanning, output files that would overwrite an input, each other or the catalog.

    Also creates their folders, so a typo in ``--report`` or ``--summary-json`` fails now and not
    after a long scan. Raises :class:`click.BadParameter` (exit code 2) naming the file.
    """
    from .catalog import is_catalog_file

    given = {opt: p for opt, p in outputs.items() if p is not None}
    names: dict[str, list[str]] = {}
    for img in images:  # only same-named inputs can be the same file (links aside): no stat per image
        names.setdefault(os.path.basename(img), []).append(img)
    seen: dict[str, str] = {}
    for opt, p in given.items():
        real = os.path.realpath(p)
        if real in seen:
            raise click.BadParameter(f"{p}: is also given as {seen[real]}", param_hint=opt)
        seen[real] = opt
        if real == os.path.realpath(input_path) or _same_file(p, input_path):
            raise click.BadParameter(f"{p}: is the scan input; it would be overwritten", param_hint=opt)
        if is_catalog_file(home, p):
            raise click.BadParameter(f"{p}: is a file of the catalog in {home}; writing there would damage "
                                     "the catalog", param_hint=opt)
        if any(_same_file(p, img) for img in names.get(p.name, []) + names.get(os.path.basename(real), [])):
            raise click.BadParameter(f"{p}: is one of the images to scan; it would be overwritten", param_hint=opt)
        if p.parent.exists() and not p.parent.is_dir():
            raise click.BadParameter(f"{p}: {p.parent} is a file, not a folder", param_hint=opt)
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise click.BadParameter(f"{p}: cannot create its folder {p.parent}: {e.strerror or e}",
                                     param_hint=opt) from None


def _text_option(f):
    return click.option(
        "--text/--no-text", "text", default=None, envvar="CCU_TEXT", cls=_EnvOption,
        help="Text evidence: read the photo (OCR) for brand names and logo lettering. Default: on when the "
             "model and catalog support it and the OCR engine is installed; --text requires it.")(f)


@cli.command(epilog="""\b
Examples:
  ccu-vision check listing.jpg
  ccu-vision --home /data/ccu check listing.jpg --json
  ccu-vision check listing.jpg --no-text      # shapes only, no OCR
""")
@click.argument("image", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the scan row as JSON.")
@click.option("--top-k", default=5, show_default=True, type=click.IntRange(min=1), help="Matches per kind.")
@_text_option
@click.pass_context
def check(ctx: click.Context, image: Path, as_json: bool, top_k: int, text: bool | None) -> None:
    """Check one listing image: verdict, brand, what matched, score vs threshold, where."""
    from .scan import check_image, decode_checked

    st = _state(ctx)
    emb = st.embedder()
    cfg = getattr(emb, "text_scoring", None) if text is not False else None
    d = decode_checked(emb, image, cfg.photo if cfg is not None else None)  # bad image reported first; decoded as the check will want
    cat = st.catalog(readonly=True)
    row = check_image(image, emb, cat, top_k=top_k, text=text, decoded=d)
    if as_json:
        _echo_json(row)
    else:
        _print_check(row, dict(cat.thresholds or {}), cat.count())


@cli.command(epilog="""\b
Examples:
  ccu-vision scan listings/ --out results.jsonl --report report.html
  ccu-vision scan dump.csv --out results.jsonl --resume      # continue a killed scan
  ccu-vision --threads 4 scan dump.jsonl --out r.jsonl --summary-json timings.json

\b
dump.csv (image required; listing_id, seller_id, title optional):
  image,listing_id,seller_id,title
  photos/123.jpg,123,s-77,Air Max 90 brand new
""")
@click.argument("input_path", metavar="INPUT", type=click.Path(path_type=Path))
@click.option("--out", "out", required=True, type=click.Path(path_type=Path, dir_okay=False),
              help="Results file (JSON lines, one per input image).")
@click.option("--report", "report", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Also write a self-contained HTML report.")
@click.option("--resume", is_flag=True, help="Keep rows already in --out and scan only the rest.")
@click.option("--top-k", default=5, show_default=True, type=click.IntRange(min=1), help="Matches per kind.")
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="Images per ONNX batch.")
@click.option("--workers", type=click.IntRange(min=1), default=None, help="Decode threads.")
@click.option("--progress/--no-progress", default=True, help="Progress bar on stderr.")
@click.option("--summary-json", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Write the run summary (counts, per-stage times) as JSON.")
@_text_option
@click.pass_context
def scan(ctx: click.Context, input_path: Path, out: Path, report: Path | None, resume: bool, top_k: int,
         batch_size: int | None, workers: int | None, progress: bool, summary_json: Path | None,
         text: bool | None) -> None:
    """Scan a folder (recursive) or a CSV/JSONL manifest of listing images into JSON lines.

    One row per input image; unreadable images become error rows and the scan goes on.
    """
    from .scan import collect_inputs, read_rows, run_scan

    st = _state(ctx)
    items = collect_inputs(input_path)
    _check_scan_outputs({"--out": out, "--report": report, "--summary-json": summary_json},
                        input_path, [it.image for it in items], st.home)
    if not items:
        click.echo(f"warning: no images found in {input_path}", err=True)
    emb = st.embedder()
    cat = st.catalog(readonly=True)
    if cat.count() == 0:
        click.echo(f"warning: the catalog at {st.home} has no references; every listing will be clear "
                   "(add some with `ccu-vision ref add`)", err=True)
    summary = run_scan(items, out, emb, cat, resume=resume, top_k=top_k, batch_size=batch_size,
                       workers=workers, progress=progress, text=text)
    click.echo(summary.format())
    click.echo(f"results: {out}")
    if summary_json is not None:
        summary_json.write_text(json.dumps(summary.to_dict(), indent=2) + "\n", encoding="utf-8")
    if report is not None:
        from .report import write_report

        rows = read_rows(out)
        write_report(rows, report, cat, meta={it.key: it for it in items}, summary=summary.to_dict())
        click.echo(f"report: {report}")


@cli.command(epilog="""\b
Examples:
  ccu-vision calibrate known-clean/                  # flag at most 1 % of your own clean listings
  ccu-vision calibrate clean.csv --max-fpr 0.005 --json
  ccu-vision calibrate known-clean/ --dry-run        # what would change, nothing written

\b
NEGATIVES: a folder or CSV/JSONL manifest of listing photos known to carry no registered mark and
no copy of a registered product photo (e.g. reviewed listings). The model's thresholds come from
synthetic listings; your own dump can score higher, and this raises them to match it.
""")
@click.argument("negatives", type=click.Path(path_type=Path))
@click.option("--max-fpr", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.01,
              show_default=True, help="Largest share of the negatives a threshold may flag.")
@click.option("--confidence", type=click.FloatRange(0, 1, max_open=True), default=0.95, show_default=True,
              help="Confidence that the flag rate is at most --max-fpr (Clopper-Pearson; 0 = this sample's rate).")
@click.option("--kind", type=click.Choice(["logo", "near_duplicate", "both"]), default="both", show_default=True)
@click.option("--allow-lower", is_flag=True,
              help="Also lower a threshold (gives up the model's precision calibration on wrong-brand matches).")
@click.option("--dry-run", is_flag=True, help="Report only; leave the catalog's thresholds as they are.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--progress/--no-progress", default=True, help="Progress bar on stderr.")
@_text_option
@click.pass_context
def calibrate(ctx: click.Context, negatives: Path, max_fpr: float, confidence: float, kind: str,
              allow_lower: bool, dry_run: bool, as_json: bool, progress: bool, text: bool | None) -> None:
    """Raise the catalog's flag thresholds so your own known negatives are flagged at most --max-fpr.

    The logo threshold tightened is the one the scan used: ``logo_text`` with text evidence on,
    ``logo`` without (run it once with --no-text too if you scan both ways)."""
    import tempfile

    from .scan import collect_inputs, read_rows, run_scan
    from .thresholds import tighten

    st = _state(ctx)
    items = collect_inputs(negatives)
    if not items:
        _fail(f"{negatives}: no images found")
    emb = st.embedder()
    cat = st.catalog(readonly=dry_run)
    if cat.count() == 0:
        _fail(f"the catalog at {st.home} has no references: add them before calibrating")
    with tempfile.TemporaryDirectory(prefix="ccu-calibrate-") as tmp:
        out = Path(tmp) / "negatives.jsonl"
        summary = run_scan(items, out, emb, cat, progress=progress, text=text)
        rows = read_rows(out)
    bad = [r for r in rows if r.get("status") != "ok"]
    for r in bad:
        click.echo(f"warning: {r['image']}: {r.get('error', 'not scanned')} (left out)", err=True)
    names = ("logo", "near_duplicate") if kind == "both" else (kind,)
    if summary.text:  # the scan's logo scores had text evidence: they answer to the logo_text threshold
        names = tuple("logo_text" if n == "logo" else n for n in names)
    report = tighten(rows, cat.thresholds, max_fpr, confidence or None, names, allow_lower)
    changed = {n: r["threshold"] for n, r in report.items() if r["changed"]}
    if changed and not dry_run:
        cat.set_thresholds(changed)
    if as_json:
        _echo_json({"negatives": str(negatives), "max_fpr": max_fpr, "confidence": confidence or None,
                    "errors": len(bad), "written": bool(changed) and not dry_run, "thresholds": report})
        return
    for n, r in report.items():
        cur = "no threshold" if r["current"] is None else f"{r['current']:.5f}"
        line = f"{n}: {r['negatives']} negatives, {r['flagged_at_current']} flagged at {cur}; at most {r['allowed']} may be"
        if r["changed"]:
            verb = "would be" if dry_run else "now"
            line += f" -> threshold {verb} {r['threshold']:.5f} ({r['flagged']} flagged)"
        else:
            line += " -> threshold kept"
        click.echo(line)


# ----------------------------------------------------------------------------- catalog / model


@cli.command(epilog="""\b
Examples:
  CCU_MODEL=new-model.onnx ccu-vision reindex
  ccu-vision --home /data/ccu --model ccu-lite0-v15cdpft3.onnx reindex
""")
@click.pass_context
def reindex(ctx: click.Context) -> None:
    """Re-embed every stored reference with the current model and re-pin the catalog to it."""
    st = _state(ctx)
    emb = st.embedder()
    cat = st.catalog(with_model=False, create=False)
    n = cat.reindex(emb)
    click.echo(f"re-embedded {n} reference(s) with model {emb.info.model_id}")


@cli.group(cls=CcuGroup, epilog="""\b
Examples:
  ccu-vision model info
  ccu-vision --model my-model.onnx model info --json
""")
def model() -> None:
    """Inspect the embedding model."""


@model.command("info", epilog="""\b
Examples:
  ccu-vision model info
  ccu-vision --model my-model.onnx model info --json
""")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.pass_context
def model_info(ctx: click.Context, as_json: bool) -> None:
    """Model id, embedding dim, preprocessing, calibrated thresholds, file hash."""
    info = _state(ctx).embedder().info
    d = info.to_dict()
    if as_json:
        _echo_json(d)
        return
    for k, v in d.items():
        if isinstance(v, (dict, list)):
            v = json.dumps(v, ensure_ascii=False)
        click.echo(f"{k:<16} {v}")


# ----------------------------------------------------------------------------- demo / train / bench


def _missing_dep(cmd: str, e: ModuleNotFoundError, module: str) -> NoReturn:
    root = (e.name or "").split(".")[0]
    if root in TRAIN_DEPS:
        _fail(f"`ccu-vision {cmd}` needs {root}, which is not installed: pip install 'ccu-vision[train]'")
    if root in BENCH_DEPS:
        _fail(f"`ccu-vision {cmd}` needs {root}, which is not installed: pip install 'ccu-vision[bench]'")
    if e.name and (module == e.name or module.startswith(e.name + ".")):
        _fail(f"`ccu-vision {cmd}` is not available in this installation ({module} is missing)")
    raise e


def _passthrough(ctx: click.Context, cmd: str, module: str, args: tuple[str, ...]) -> None:
    # train/export/bench set up their own logging (progress lines, log files): hand the package logger
    # back to them, or their INFO progress is filtered by -v and warnings print twice
    lg = logging.getLogger("ccu_vision")
    lg.setLevel(logging.NOTSET)
    for h in [h for h in lg.handlers if isinstance(h, _ClickHandler)]:
        lg.removeHandler(h)
    try:
        mod = importlib.import_module(module)
        rc = mod.main(list(args))
    except ModuleNotFoundError as e:
        _missing_dep(cmd, e, module)
    ctx.exit(int(rc or 0))


PASS = {"ignore_unknown_options": True, "allow_extra_args": True}


@cli.command(epilog="""\b
Examples:
  ccu-vision demo                       # writes ./ccu-vision-demo/ (catalog, listings, results, report)
  ccu-vision demo --out /tmp/demo
""")
@click.option("--out", "out_dir", type=click.Path(path_type=Path, file_okay=False), default=Path("ccu-vision-demo"),
              show_default=True, help="Folder for the demo catalog, listing dump, results and report.")
@click.pass_context
def demo(ctx: click.Context, out_dir: Path) -> None:
    """Build a demo catalog from real brand marks, scan a demo listing dump with known truth, report."""
    try:
        from .demo import run_demo
    except ModuleNotFoundError as e:
        _missing_dep("demo", e, "ccu_vision.demo")
    emb = _state(ctx).embedder()
    rc = run_demo(out_dir, emb, click.echo)
    if isinstance(rc, int) and rc:
        ctx.exit(rc)


@cli.command(context_settings=PASS, epilog="""\b
Examples:
  ccu-vision train -- --help              # the trainer's own options
  ccu-vision train --photos photos/ --out runs/v1
  ccu-vision train --photos photos/ --out runs/v1 --resume --minutes 30
""")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def train(ctx: click.Context, args: tuple[str, ...]) -> None:
    """Fine-tune the embedder (needs `pip install 'ccu-vision[train]'`); arguments go to the trainer."""
    _passthrough(ctx, "train", "ccu_vision.train.train", args)


@cli.command(context_settings=PASS, epilog="""\b
Examples:
  ccu-vision export -- --help             # the exporter's own options
  ccu-vision export --run runs/v2 --out ccu-lite0-v2.onnx
  ccu-vision export --imagenet --out baseline.onnx     # un-fine-tuned backbone
  ccu-vision export --onnx m.onnx --dup-backbone imagenet --out m-dual.onnx  # + ImageNet near-dup branch
""")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def export(ctx: click.Context, args: tuple[str, ...]) -> None:
    """Export a trained checkpoint to a self-describing ONNX model (needs the [train] extra)."""
    _passthrough(ctx, "export", "ccu_vision.train.export", args)


@cli.command(context_settings=PASS, epilog="""\b
Examples:
  ccu-vision bench -- --help              # the benchmark's own options
  ccu-vision bench --smoke
""")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def bench(ctx: click.Context, args: tuple[str, ...]) -> None:
    """Accuracy and speed benchmarks against pHash/dHash/PDQ/ORB (needs the [bench] extra)."""
    _passthrough(ctx, "bench", "ccu_vision.bench", args)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    cli.main(args=argv, prog_name="ccu-vision")


if __name__ == "__main__":
    main()
