"""``ccu-vision bench``: accuracy and speed side by side with what users would otherwise use.

    ccu-vision bench --out bench-out                       # default config (minutes to an hour on 2 cores)
    ccu-vision bench --out bench-out --scale full          # + 1M-reference FAISS rows
    ccu-vision bench --smoke --model tiny.onnx             # seconds: what CI runs
    ccu-vision bench --results bench-out/results.json --write-md BENCHMARKS.md   # regenerate the doc only

Sections (``--only``): ``accuracy`` (ccu-vision model(s), the ImageNet backbone, pHash, dHash, PDQ,
PDQ+dihedral, ORB on one evaluation set), ``speed`` (decode / pHash / scan / embedder runtimes on
one listing dump), ``faiss`` (index kinds as the catalog grows), ``growth`` (scan cost vs dump and
catalog size). Writes ``results.json``, ``pr_logo.png``, ``pr_dup.png`` to ``--out`` and prints
the tables with the targets marked PASS / MISS.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

from .config import FAISS_SCALES, BenchConfig

log = logging.getLogger(__name__)

SECTIONS = ("accuracy", "speed", "faiss", "growth")
SCHEMA = "ccu-vision-bench/1"
BASELINE_ARCH = "tf_efficientnet_lite0"

__all__ = ["main", "run_bench", "BenchConfig", "SECTIONS"]


# ----------------------------------------------------------------------------- environment


def default_cache() -> Path:
    """Where eval sets, exported baselines and int8 copies are cached: ``$CCU_BENCH_CACHE`` or ~/.cache."""
    env = os.environ.get("CCU_BENCH_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "ccu-vision" / "bench"


def machine_info() -> dict:
    """CPU, memory, load and library versions (the numbers only mean something with these)."""
    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gb = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    versions = {}
    for mod in ("numpy", "PIL", "onnxruntime", "faiss", "torch", "cv2", "imagehash", "pdqhash"):
        if importlib.util.find_spec(mod) is None:
            versions[mod] = "missing"
            continue
        try:
            m = __import__(mod)
            versions[mod] = str(getattr(m, "__version__", "?"))
        except Exception as e:  # noqa: BLE001 - a broken optional module is reported, not fatal
            versions[mod] = f"broken: {type(e).__name__}"
    return {
        "platform": platform.platform(), "python": platform.python_version(), "cpu": cpu,
        "cpus": os.cpu_count(), "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "mem_gb": mem_gb, "loadavg_start": _loadavg(), "nice": os.nice(0) if hasattr(os, "nice") else None,
        "versions": versions,
    }


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def git_info() -> dict:
    """Commit of the checkout the package runs from (when it is one)."""
    repo = Path(__file__).resolve().parents[2]
    if not (repo / ".git").exists():
        return {"commit": None}
    try:
        commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return {"commit": commit or None, "dirty": bool(dirty)}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None}


# ----------------------------------------------------------------------------- inputs


def ensure_eval_set(cfg: BenchConfig, eval_dir: Path | None, photos: Path | None, cache: Path) -> Path:
    """An evaluation set: ``eval_dir`` as is when it holds one, else built (once) from ``cfg.eval``."""
    from ..evalset import build_eval_set
    from ..photos import find_photo_dir

    if eval_dir is not None and (eval_dir / "set.json").exists():
        return eval_dir
    if eval_dir is None:
        src = find_photo_dir(photos)
        key = json.dumps({"eval": asdict(cfg.eval), "photos": str(src)}, sort_keys=True)
        eval_dir = cache / f"eval-{cfg.name}-{hashlib.sha256(key.encode()).hexdigest()[:10]}"
    log.info("building evaluation set in %s", eval_dir)
    return build_eval_set(eval_dir, cfg.eval, photos_dir=photos)


def resolve_baseline(arg: str, cache: Path):
    """``(path, reason)`` of the un-fine-tuned ImageNet backbone ONNX: a file, ``none``, or ``auto``
    (cached export, made on the fly when torch is available)."""
    if arg == "none":
        return None, "disabled (--baseline-model none)"
    if arg != "auto":
        p = Path(arg)
        return (p, None) if p.is_file() else (None, f"model file not found: {p}")
    p = cache / f"imagenet-{BASELINE_ARCH}.onnx"
    if p.is_file():
        return p, None
    missing = [m for m in ("torch", "timm") if importlib.util.find_spec(m) is None]
    if missing:
        return None, (f"{', '.join(missing)} not installed: cannot export the ImageNet backbone "
                      "(pip install 'ccu-vision[train]', or pass --baseline-model PATH)")
    p.parent.mkdir(parents=True, exist_ok=True)
    log.info("exporting the ImageNet backbone to %s", p)
    r = subprocess.run([sys.executable, "-m", "ccu_vision.train.export", "--imagenet", "--out", str(p)],
                       capture_output=True, text=True)
    if r.returncode != 0 or not p.is_file():
        tail = (r.stderr or r.stdout or "").strip().splitlines()[-1:] or ["?"]
        return None, f"export of the ImageNet backbone failed: {tail[0]}"
    return p, None


# ----------------------------------------------------------------------------- sections


def _skipped(why: str) -> dict:
    return {"status": f"not run: {why}"}


def _section(name: str, fn):
    t0 = time.perf_counter()
    try:
        res = fn()
    except Exception as e:  # noqa: BLE001 - one broken section must not lose the others
        log.exception("bench section %s failed", name)
        res = {"status": f"failed: {type(e).__name__}: {e}"}
    res.setdefault("seconds", round(time.perf_counter() - t0, 2))
    log.info("section %s done in %.1fs", name, time.perf_counter() - t0)
    return res


def run_bench(
    cfg: BenchConfig,
    *,
    models: list[Path],
    baseline: str = "auto",
    methods: list[str] | None = None,
    sections: tuple[str, ...] = SECTIONS,
    eval_dir: Path | None = None,
    photos: Path | None = None,
    work: Path,
    cache: Path | None = None,
    threads: int | None = None,
    torch_run: Path | None = None,
) -> dict:
    """Run the selected sections and return the results dictionary (see results.json)."""
    from . import accuracy, speed
    from .baselines import BASELINES

    cache = cache or default_cache()
    methods = list(BASELINES) if methods is None else methods
    results: dict = {
        "schema": SCHEMA, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(), "git": git_info(), "config": cfg.to_dict(),
        "options": {"models": [str(m) for m in models], "baseline": baseline, "methods": methods,
                    "sections": list(sections), "threads": threads, "torch_run": str(torch_run) if torch_run else None},
    }
    root = ensure_eval_set(cfg, eval_dir, photos, cache)
    set_info = json.loads((root / "set.json").read_text())
    results["eval_set"] = {"root": str(os.path.abspath(root)), **set_info}

    specs = [accuracy.ModelSpec("model", p if p.is_file() else None, None if p.is_file() else f"model file not found: {p}")
             for p in models]
    runnable = [s.path for s in specs if s.path is not None]
    primary = runnable[0] if runnable else None

    if "accuracy" in sections:
        bpath, bwhy = resolve_baseline(baseline, cache)

        def acc() -> dict:
            spec_b = accuracy.ModelSpec("baseline-model", bpath, bwhy, label=None if bpath else f"imagenet-{BASELINE_ARCH}")
            out = accuracy.run_accuracy(root, specs + [spec_b], methods, k=cfg.k, threads=threads)
            out["eval_set"] = set_info
            return out

        results["accuracy"] = _section("accuracy", acc)
    else:
        results["accuracy"] = _skipped("section not selected")

    dump_files: list[Path] = []
    small_home: Path | None = None
    base_scan: dict | None = None
    if "speed" in sections or "growth" in sections:
        dump_files = speed.make_dump(root, work / "dump", cfg.dump_n, cfg.dump_min_side, cfg.dump_max_side, cfg.seed)

    if "speed" in sections:
        def spd() -> dict:
            nonlocal small_home, base_scan
            out: dict = {"dump": speed.dump_stats(dump_files)}
            qsize = None
            if primary is not None:
                from ..embedder import Embedder

                qsize = Embedder(primary, threads=threads).query_size
            from ..scan import default_workers

            out["floor"] = speed.floor_rows(dump_files, default_workers(), qsize)
            if primary is None:
                out["scan"] = _skipped("no model file (pass --model)")
                out["embedder"] = _skipped("no model file (pass --model)")
                return out
            small_home, build = speed.build_home(primary, root, work, threads)
            out["catalog_build"] = build
            base_scan = speed.scan_once(primary, small_home, work / "dump", work / "scan.jsonl", threads, cfg.embed_batch)
            out["scan"] = base_scan
            out["embedder"] = _section("embedder", lambda: speed.embed_speed(
                primary, dump_files, cfg.embed_batch, cfg.embed_repeats, threads, cache, torch_run))
            return out

        results["speed"] = _section("speed", spd)
    else:
        results["speed"] = _skipped("section not selected")

    if "faiss" in sections:
        def fz() -> dict:
            from .faiss_scale import run_faiss

            dim = 256
            if primary is not None:
                from ..embedder import Embedder

                dim = Embedder(primary).dim
            return run_faiss(dim, cfg.faiss_sizes, cfg.faiss_queries, cfg.faiss_batch, cfg.seed)

        results["faiss"] = _section("faiss", fz)
    else:
        results["faiss"] = _skipped("section not selected")

    if "growth" in sections:
        def grow() -> dict:
            nonlocal small_home
            if primary is None:
                return _skipped("no model file (pass --model)")
            if small_home is None:
                small_home, _ = speed.build_home(primary, root, work, threads)
            rows = []
            done: dict[int, dict] = {}
            if base_scan is not None and _is_ok(base_scan):
                done[len(dump_files)] = base_scan
            sizes = sorted({min(n, len(dump_files)) for n in (*cfg.growth_dumps, cfg.growth_extra_dump)})
            for n in sizes:
                if n not in done:
                    man = speed.subset_manifest(dump_files[:n], work / f"dump-{n}.jsonl")
                    done[n] = speed.scan_once(primary, small_home, man, work / f"scan-{n}.jsonl", threads, cfg.embed_batch)
                if n in cfg.growth_dumps or n == len(dump_files):
                    rows.append({"images": n, "extra": 0, **done[n]})
            n = min(cfg.growth_extra_dump, len(dump_files))
            if done.get(n) and not any(r["images"] == n and r["extra"] == 0 for r in rows):
                rows.append({"images": n, "extra": 0, **done[n]})
            man = speed.subset_manifest(dump_files[:n], work / f"dump-{n}.jsonl")
            for extra in cfg.growth_extra_refs:
                home, build = speed.grow_home(small_home, extra, work, primary, threads, cfg.seed)
                r = speed.scan_once(primary, home, man, work / f"scan-{n}-plus{extra}.jsonl", threads, cfg.embed_batch)
                rows.append({"images": n, "extra": extra, "catalog_build": build, **r})
                shutil.rmtree(home, ignore_errors=True)
            return {"rows": rows}

        results["growth"] = _section("growth", grow)
    else:
        results["growth"] = _skipped("section not selected")

    results["machine"]["loadavg_end"] = _loadavg()
    from .report import compute_targets

    results["targets"] = compute_targets(results)
    return results


def _is_ok(d: dict) -> bool:
    return not str(d.get("status", "ok")).startswith(("not run", "failed"))


def _failures(results: dict) -> list[str]:
    """Every ``failed: ...`` status anywhere in the results (bugs, not missing dependencies)."""
    out = []

    def walk(x, where: str) -> None:
        if isinstance(x, dict):
            st = x.get("status")
            if isinstance(st, str) and st.startswith("failed"):
                out.append(f"{where}: {st}")
            for k, v in x.items():
                walk(v, f"{where}.{k}" if where else str(k))
        elif isinstance(x, list):
            for i, v in enumerate(x):
                walk(v, f"{where}[{i}]")

    walk(results, "")
    return out


# ----------------------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    from .baselines import BASELINES

    ap = argparse.ArgumentParser(prog="ccu-vision bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="seconds-long configuration (CI): tiny eval set, 20-image dump, 10k FAISS")
    ap.add_argument("--out", type=Path, help="output folder for results.json and PR curves (default bench-out or bench-smoke)")
    ap.add_argument("--model", type=Path, action="append",
                    help="ccu-vision ONNX model to benchmark (repeatable; default: $CCU_MODEL or the shipped model)")
    ap.add_argument("--baseline-model", default=None,
                    help="the un-fine-tuned ImageNet backbone ONNX: a path, 'auto' (export into the cache when missing; "
                         "default) or 'none' (default with --smoke)")
    ap.add_argument("--methods", default=",".join(BASELINES),
                    help=f"comma-separated baselines to run (default: {','.join(BASELINES)}; 'none' for none)")
    ap.add_argument("--only", default=",".join(SECTIONS), help=f"sections to run (default: {','.join(SECTIONS)})")
    ap.add_argument("--eval", type=Path, help="evaluation set folder (used as is when it holds set.json, else built there)")
    ap.add_argument("--eval-size", choices=("tiny", "small", "default"),
                    help="size of the evaluation set built when --eval holds none (default: tiny with --smoke, else default)")
    ap.add_argument("--photos", type=Path, help="photo folder for building the evaluation set (default: $CCU_PHOTOS or the clothing dataset)")
    ap.add_argument("--dump", type=int, help="number of listing JPEGs in the speed dump")
    ap.add_argument("--growth-refs", help="comma-separated numbers of extra references for the catalog-growth rows "
                    "(default 2000,10000; smoke 40)")
    ap.add_argument("--scale", choices=tuple(FAISS_SCALES), help="FAISS sizes: smoke=10k, default=10k+100k, full=+1M")
    ap.add_argument("--threads", type=int, help="threads for ONNX Runtime / torch (default: all cores)")
    ap.add_argument("--torch-run", type=Path, help="training run folder (config.json + last.pt) for the torch-eager row")
    ap.add_argument("--work", type=Path, help="scratch folder for the dump and catalogs (default: a temp folder, removed)")
    ap.add_argument("--cache", type=Path, help="cache for eval sets and exported models (default: $CCU_BENCH_CACHE or ~/.cache/ccu-vision/bench)")
    ap.add_argument("--results", type=Path, help="with --write-md and no measurement: an existing results.json to render")
    ap.add_argument("--write-md", type=Path, help="(re)generate this Markdown file (BENCHMARKS.md) from the results")
    ap.add_argument("--nice", type=int, default=0, help="lower this process's CPU priority by N first (e.g. 15 on a shared machine)")
    ap.add_argument("-q", "--quiet", action="store_true", help="only warnings on stderr")
    return ap


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``ccu-vision bench`` and ``scripts/bench.py``; returns the exit code."""
    from . import report

    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    if args.nice:
        os.nice(args.nice)
    if args.results is not None:
        if not args.results.is_file():
            print(f"error: {args.results}: no such results file", file=sys.stderr)
            return 2
        results = json.loads(args.results.read_text())
        results["targets"] = report.compute_targets(results)
        print(report.format_text(results))
        if args.write_md:
            report.write_markdown(results, args.write_md)
            print(f"wrote {args.write_md}")
        return 0

    cfg = BenchConfig.smoke() if args.smoke else BenchConfig()
    if args.dump is not None:
        if args.dump < 1:
            print("error: --dump must be at least 1", file=sys.stderr)
            return 2
        cfg.dump_n = args.dump
        cfg.growth_dumps = tuple(sorted({max(1, args.dump // 4), max(1, args.dump // 2), args.dump}))
        cfg.growth_extra_dump = max(1, args.dump // 4)
    if args.scale:
        cfg.faiss_scale = args.scale
    if args.growth_refs:
        try:
            cfg.growth_extra_refs = tuple(int(x) for x in args.growth_refs.split(",") if x.strip())
        except ValueError:
            print(f"error: --growth-refs takes comma-separated integers, got {args.growth_refs!r}", file=sys.stderr)
            return 2
    if args.eval_size:
        cfg.eval = BenchConfig.eval_preset(args.eval_size)
    sections = tuple(s.strip() for s in args.only.split(",") if s.strip())
    bad = [s for s in sections if s not in SECTIONS]
    from .baselines import BASELINES

    methods = [] if args.methods.strip() == "none" else [m.strip() for m in args.methods.split(",") if m.strip()]
    bad += [m for m in methods if m not in BASELINES]
    if bad:
        print(f"error: unknown section/method: {', '.join(bad)} (sections: {', '.join(SECTIONS)}; "
              f"methods: {', '.join(BASELINES)})", file=sys.stderr)
        return 2
    from ..embedder import default_model_path

    models = args.model or [default_model_path()]
    baseline = args.baseline_model or ("none" if args.smoke else "auto")
    out = args.out or Path("bench-smoke" if args.smoke else "bench-out")
    out.mkdir(parents=True, exist_ok=True)
    cache = args.cache or default_cache()
    work = args.work or Path(tempfile.mkdtemp(prefix="ccu-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        results = run_bench(cfg, models=models, baseline=baseline, methods=methods, sections=sections,
                            eval_dir=args.eval, photos=args.photos, work=work, cache=cache, threads=args.threads,
                            torch_run=args.torch_run)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    results["command"] = "ccu-vision bench " + " ".join(argv if argv is not None else sys.argv[1:])
    results["plots"] = report.plot_pr(results, out)
    tmp = out / "results.json.tmp"
    results = clean_json(results)
    tmp.write_text(json.dumps(results, indent=1, allow_nan=False))
    tmp.replace(out / "results.json")
    print(report.format_text(results))
    print(f"results: {out / 'results.json'}")
    if args.write_md:
        report.write_markdown(results, args.write_md)
        print(f"wrote {args.write_md}")
    fails = _failures(results)
    for f in fails:
        print(f"FAILED {f}", file=sys.stderr)
    return 1 if fails else 0


def clean_json(o):
    """A JSON-safe copy: numpy scalars/arrays to Python, Paths to str, +-inf to "inf"/"-inf", NaN to None."""
    import math

    import numpy as np

    if isinstance(o, dict):
        return {str(k): clean_json(v) for k, v in o.items()}
    if isinstance(o, list | tuple):
        return [clean_json(v) for v in o]
    if isinstance(o, np.ndarray):
        return clean_json(o.tolist())
    if isinstance(o, np.integer | np.bool_):
        return o.item()
    if isinstance(o, float | np.floating):
        f = float(o)
        if math.isnan(f):
            return None
        if math.isinf(f):
            return "inf" if f > 0 else "-inf"
        return f
    if isinstance(o, Path):
        return str(o)
    return o
