"""Speed rows, measured as ratios in one run on the same files (these machines are noisy).

* a *dump* of listing JPEGs (640-1600 px long side) made from the evaluation set's photos;
* decode-only throughput (full decode: the floor any scanner pays; draft decode: what the scan
  does), and pHash throughput (``imagehash.phash(Image.open(path))``, as a user writes it, on one
  thread and on a thread pool as wide as the scan's);
* end-to-end ``scan`` (``ccu_vision.scan.run_scan`` against a real catalog home built with
  ``ccu_vision.references``) in a fresh subprocess: images/s, per-stage times, peak RSS;
* the embedder alone on one batch: torch eager vs ONNX Runtime fp32 vs ONNX Runtime int8 (dynamic
  quantisation), plus the cosine drift of int8 against fp32;
* cost growth: scan time and peak RSS against dump size and catalog size (extra references are
  real reference embeddings replicated with noise, under distinct tiny images).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

log = logging.getLogger(__name__)

DUMP_FORMAT = "ccu-bench-dump/1"


# ----------------------------------------------------------------------------- dump


def make_dump(eval_root: Path, out: Path, n: int, min_side: int = 640, max_side: int = 1600,
              seed: int = 1234) -> list[Path]:
    """Write ``n`` listing JPEGs made from the evaluation set's photos (reused when already there)."""
    eval_root, out = Path(eval_root), Path(out)
    sources = sorted((eval_root / "queries" / "logo").glob("*.jpg")) + sorted((eval_root / "queries" / "dup").glob("*.jpg"))
    sources += sorted((eval_root / "products").glob("*.jpg"))
    if not sources:
        raise FileNotFoundError(f"{eval_root}: no photos to build a listing dump from")
    spec = {"format": DUMP_FORMAT, "n": n, "min_side": min_side, "max_side": max_side, "seed": seed,
            "eval_root": str(os.path.abspath(eval_root)), "sources": len(sources)}
    files = [out / f"l{i:05d}.jpg" for i in range(n)]
    meta = out / "dump.json"
    if meta.exists() and json.loads(meta.read_text()).get("spec") == spec and all(f.exists() for f in files):
        return files
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(sources))
    total = 0
    for i, f in enumerate(files):
        with Image.open(sources[order[i % len(sources)]]) as im:
            im = im.convert("RGB")
            side = int(rng.integers(min_side, max_side + 1))
            s = side / max(im.size)
            im = im.resize((max(1, round(im.width * s)), max(1, round(im.height * s))), Image.Resampling.BICUBIC)
            im.save(f, quality=int(rng.integers(80, 96)))
        total += f.stat().st_size
    meta.write_text(json.dumps({"spec": spec, "bytes": total}, indent=1))
    return files


def dump_stats(files: Sequence[Path]) -> dict:
    """Count, size and pixel statistics of a dump."""
    sizes = []
    for f in files:
        with Image.open(f) as im:
            sizes.append(im.size)
    mp = np.array([w * h / 1e6 for w, h in sizes]) if sizes else np.zeros(1)
    return {"images": len(files), "bytes": int(sum(f.stat().st_size for f in files)),
            "megapixels_mean": round(float(mp.mean()), 3),
            "long_side_min": min((max(s) for s in sizes), default=0), "long_side_max": max((max(s) for s in sizes), default=0)}


# ----------------------------------------------------------------------------- throughput


def throughput(files: Sequence[Path], fn: Callable[[Path], object], threads: int = 1) -> dict:
    """Wall-clock images/s of ``fn`` over ``files`` on ``threads`` threads."""
    t0 = time.perf_counter()
    if threads <= 1:
        for f in files:
            fn(f)
    else:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            for _ in pool.map(fn, files):
                pass
    dt = time.perf_counter() - t0
    return {"images": len(files), "seconds": round(dt, 4), "threads": threads,
            "images_per_s": round(len(files) / dt, 2) if dt > 0 else None}


def decode_full(path: Path) -> Image.Image:
    """Full-resolution decode through ``ccu_vision.imageio`` (EXIF, colour conversion included)."""
    from ..imageio import load_image

    return load_image(path)


def phash_file(path: Path) -> object:
    """pHash of a file the way a user writes it."""
    import imagehash

    return imagehash.phash(Image.open(path))


def floor_rows(files: Sequence[Path], threads: int, query_size: int | None) -> dict:
    """Decode and pHash throughput on the dump (files are read once first so all start warm)."""
    from ..imageio import load_image

    for f in files:
        f.read_bytes()
    out: dict = {"decode_full": throughput(files, decode_full, threads)}
    if query_size:
        def decode_draft(p: Path) -> Image.Image:
            return load_image(p, draft_size=query_size)

        out["decode_draft"] = throughput(files, decode_draft, threads)
    from .baselines import unavailable

    why = unavailable("phash")
    if why:
        out["phash_1t"] = out["phash"] = {"status": f"not run: {why}"}
    else:
        out["phash_1t"] = throughput(files, phash_file, 1)
        out["phash"] = throughput(files, phash_file, threads)
    return out


# ----------------------------------------------------------------------------- subprocess children


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MB.

    ``VmHWM`` from /proc is used where it exists: Linux carries ``ru_maxrss`` across ``exec``, so
    in a freshly spawned child it would still include the parent's size.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError, IndexError):
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _child_main(arg: str) -> None:
    """Entry point of the bench's subprocesses: ``{"op": "build"|"scan", ...}`` -> one JSON line."""
    a = json.loads(arg)
    logging.basicConfig(level=logging.WARNING)
    t0 = time.perf_counter()
    res = _child_build(a) if a["op"] == "build" else _child_scan(a)
    res["child_wall_s"] = round(time.perf_counter() - t0, 4)
    res["peak_rss_mb"] = peak_rss_mb()
    sys.stdout.write("\n" + json.dumps(res) + "\n")


def _child_build(a: dict) -> dict:
    from ..catalog import Catalog
    from ..embedder import Embedder
    from ..references import import_manifest

    emb = Embedder(a["model"], threads=a.get("threads"))
    home = Path(a["home"])
    out: dict = {}
    t0 = time.perf_counter()
    with Catalog.open(home, model=emb.info) as cat:
        if a.get("manifest"):
            events = list(import_manifest(cat, emb, a["manifest"]))
            bad = [e for e in events if not e.ok]
            if bad:
                raise RuntimeError(f"{len(bad)} references failed, first: {bad[0].path}: {bad[0].error}")
            out["import_s"] = round(time.perf_counter() - t0, 3)
            out["imported"] = len(events)
        from ..scan import warm_text_keys

        t1 = time.perf_counter()
        warm_text_keys(emb, cat)  # the logos' lettering is read at add time, not in the timed scans
        out["text_keys_s"] = round(time.perf_counter() - t1, 3)
        extra = int(a.get("extra", 0))
        if extra:
            t1 = time.perf_counter()
            _add_synthetic(cat, extra, int(a.get("seed", 0)))
            out["extra_add_s"] = round(time.perf_counter() - t1, 3)
        out["logo_refs"] = cat.count("logo")
        out["product_refs"] = cat.count("product")
    out["build_s"] = round(time.perf_counter() - t0, 3)
    return out


def _add_synthetic(cat, n: int, seed: int, noise: float = 0.75) -> None:
    """``n`` extra references (half logos, half products) through the catalog's ``add_reference``:
    the catalog's real vectors of that kind replicated with noise (cosine ~0.8 to their source),
    each under a distinct tiny PNG so every one is a separate reference."""
    rng = np.random.default_rng(seed)
    dim = cat.dim
    base = {}
    for kind in ("logo", "product"):
        vecs = cat.vectors(kind)[0] if hasattr(cat, "vectors") else np.zeros((0, dim), np.float32)
        base[kind] = vecs if len(vecs) else rng.standard_normal((64, dim)).astype(np.float32)
    for i in range(n):
        kind = "logo" if i % 2 == 0 else "product"
        src = base[kind][int(rng.integers(len(base[kind])))]
        src = src / (np.linalg.norm(src) + 1e-12)
        v = src + noise * rng.standard_normal(dim).astype(np.float32) / np.sqrt(dim)
        v = (v / np.linalg.norm(v)).astype(np.float32)
        px = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        buf = io.BytesIO()
        Image.fromarray(px).save(buf, format="PNG")
        cat.add_reference(buf.getvalue(), f"synthetic/{i:06d}.png", f"synthetic-{i:06d}", kind, v[None, :], 8, 8)


def _child_scan(a: dict) -> dict:
    from ..catalog import Catalog
    from ..embedder import Embedder
    from ..scan import collect_inputs, run_scan

    emb = Embedder(a["model"], threads=a.get("threads"), batch_size=int(a.get("batch_size", 16)))
    rss0 = peak_rss_mb()
    with Catalog.open(a["home"], model=emb.info, readonly=True) as cat:
        t0 = time.perf_counter()
        inputs = collect_inputs(a["input"])
        summary = run_scan(inputs, a["out"], emb, cat, progress=False)
        wall = time.perf_counter() - t0
        refs = {"logo": cat.count("logo"), "product": cat.count("product")}
    d = summary.to_dict()
    d.pop("out", None)
    return {"summary": d, "wall_s": round(wall, 4), "images": len(inputs),
            "images_per_s": round(len(inputs) / wall, 2) if wall > 0 else None,
            "refs": refs, "rss_after_model_mb": rss0}


def run_child(args: dict, timeout: float | None = None) -> dict:
    """Run a bench child process and return its JSON (raises RuntimeError with its stderr tail)."""
    cmd = [sys.executable, "-c", "import sys; from ccu_vision.bench.speed import _child_main; _child_main(sys.argv[1])",
           json.dumps(args)]
    env = dict(os.environ)
    env.setdefault("PYTHONWARNINGS", "ignore")
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if p.returncode != 0:
        tail = "\n".join((p.stderr or "").strip().splitlines()[-5:])
        raise RuntimeError(f"bench child {args.get('op')} failed (exit {p.returncode}): {tail}")
    return json.loads(p.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- catalog + scan


def write_ref_manifest(eval_root: Path, path: Path) -> Path:
    """A ``path,brand,kind`` JSONL manifest of the evaluation set's references."""
    eval_root = Path(eval_root)
    rows = [{"path": str(p.resolve()), "brand": p.stem, "kind": "logo"} for p in sorted((eval_root / "logos").glob("*.png"))]
    rows += [{"path": str(p.resolve()), "brand": f"product-{p.stem}", "kind": "product"}
             for p in sorted((eval_root / "products").glob("*.jpg"))]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def build_home(model: Path, eval_root: Path, work: Path, threads: int | None) -> tuple[Path, dict]:
    """The small catalog (the evaluation set's logos and product photos) used by the scan rows."""
    home = work / "home-small"
    if home.exists():
        shutil.rmtree(home)
    manifest = write_ref_manifest(eval_root, work / "refs.jsonl")
    info = run_child({"op": "build", "model": str(model), "home": str(home), "manifest": str(manifest),
                      "threads": threads})
    return home, info


def grow_home(small: Path, extra: int, work: Path, model: Path, threads: int | None, seed: int) -> tuple[Path, dict]:
    """A copy of the small catalog with ``extra`` synthetic references added."""
    home = work / f"home-plus{extra}"
    if home.exists():
        shutil.rmtree(home)
    shutil.copytree(small, home)
    info = run_child({"op": "build", "model": str(model), "home": str(home), "extra": extra, "seed": seed,
                      "threads": threads})
    return home, info


def scan_once(model: Path, home: Path, inputs: Path, out: Path, threads: int | None, batch_size: int) -> dict:
    """One end-to-end scan in a fresh process."""
    return run_child({"op": "scan", "model": str(model), "home": str(home), "input": str(inputs), "out": str(out),
                      "threads": threads, "batch_size": batch_size})


def subset_manifest(files: Sequence[Path], path: Path) -> Path:
    """A scan manifest (``image`` column) listing ``files``."""
    path.write_text("".join(json.dumps({"image": str(f.resolve())}) + "\n" for f in files))
    return path


# ----------------------------------------------------------------------------- embedder alone


def _sha12(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:12]


def int8_model(src: Path, cache: Path) -> Path:
    """Dynamic int8 copy of ``src`` (cached by content hash)."""
    dst = cache / f"{src.stem}-{_sha12(src)}-int8.onnx"
    if dst.exists():
        return dst
    cache.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_suffix(".tmp.onnx")
    try:
        from ..train.export import quantize_int8
    except ImportError:  # the export module needs torch; the quantiser itself does not
        quantize_int8 = _quantize_int8
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.WARNING))  # the quantiser logs one INFO line per tensor on the root logger
    try:
        quantize_int8(src, tmp)
    finally:
        root.setLevel(level)
    tmp.replace(dst)
    return dst


def _quantize_int8(src: Path, dst: Path) -> Path:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QUInt8)
    m = onnx.load(str(dst))
    meta = {p.key: p.value for p in onnx.load(str(src)).metadata_props}
    meta["ccu.model_id"] = meta.get("ccu.model_id", "model") + "-int8"
    del m.metadata_props[:]
    for k, v in meta.items():
        m.metadata_props.add(key=k, value=v)
    onnx.save(m, str(dst))
    return dst


def torch_counterpart(model_path: Path, info, torch_run: Path | None, cache: Path):
    """The torch module whose ONNX export is ``model_path`` (eval mode), or a reason string.

    Known counterparts: a training run folder (``--torch-run``: config.json + last.pt); the
    un-fine-tuned ImageNet backbone (model id ``imagenet-*``, rebuilt from the local weights); the
    tiny test model (a strided conv + ReLU, rebuilt from the ONNX initializers).
    """
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        return "torch is not installed (pip install 'ccu-vision[train]')"
    import torch

    if torch_run is not None:
        from ..train.train import build_model

        run = Path(torch_run)
        cfg = json.loads((run / "config.json").read_text())
        model = build_model({**cfg, "weights": "none"}, run)
        state = torch.load(run / "last.pt", map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        return model.eval()
    backbone = info.extra.get("backbone")
    if info.model_id.startswith("imagenet-") and backbone:
        from ..train.model import CcuNet, create_backbone

        return CcuNet(create_backbone(backbone, "pypi", cache.parent), project=False).eval()
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(model_path))
    ops = [n.op_type for n in m.graph.node]
    if ops == ["Conv", "Relu"]:
        init = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
        conv = m.graph.node[0]
        w = init[conv.input[1]]
        stride = [a.ints for a in conv.attribute if a.name == "strides"][0]
        mod = torch.nn.Sequential(torch.nn.Conv2d(w.shape[1], w.shape[0], tuple(w.shape[2:]), stride=tuple(stride)),
                                  torch.nn.ReLU())
        with torch.no_grad():
            mod[0].weight.copy_(torch.from_numpy(np.array(w)))
            mod[0].bias.copy_(torch.from_numpy(np.array(init[conv.input[2]])))
        return mod.eval()
    return f"no torch counterpart known for {info.model_id} (pass --torch-run RUN_DIR with config.json + last.pt)"


def _median_time(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up
    ts = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts))


def _cos_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a.reshape(len(a), -1).astype(np.float64)
    b = b.reshape(len(b), -1).astype(np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)


def embed_speed(model_path: Path, files: Sequence[Path], batch: int, repeats: int, threads: int | None,
                cache: Path, torch_run: Path | None = None) -> dict:
    """torch eager vs ONNX Runtime fp32 vs int8 on one batch of the dump (same inputs, same threads)."""
    from ..embedder import Embedder
    from ..imageio import load_image
    from ..preprocess import normalize

    emb = Embedder(model_path, threads=threads, batch_size=batch)
    n_threads = threads or os.cpu_count() or 1
    imgs = [load_image(f, draft_size=emb.query_size) for f in list(files)[:batch]]
    canvases, lbs = emb.photo_canvases(imgs)
    x = normalize(canvases, emb.mean, emb.std)
    name = emb.session.get_inputs()[0].name
    out: dict = {"model_id": emb.info.model_id, "batch": len(x), "input": list(x.shape), "threads": n_threads,
                 "repeats": repeats}

    def ort_row(e: Embedder) -> tuple[dict, np.ndarray]:
        y = e.session.run(["local"], {name: x})[0]
        t = _median_time(lambda: e.session.run(["local"], {name: x}), repeats)
        return {"seconds_per_batch": round(t, 4), "images_per_s": round(len(x) / t, 2)}, y

    out["onnx_fp32"], y32 = ort_row(emb)
    fp32_full = emb.embed_canvases(canvases, lbs)

    try:
        p8 = int8_model(Path(model_path), cache)
        e8 = Embedder(p8, threads=threads, batch_size=batch)
        out["onnx_int8"], _y8 = ort_row(e8)
        int8_full = e8.embed_canvases(canvases, lbs)
        g = _cos_rows(np.stack([p.global_vec for p in fp32_full]), np.stack([p.global_vec for p in int8_full]))
        r = _cos_rows(np.concatenate([p.regions for p in fp32_full]), np.concatenate([p.regions for p in int8_full]))
        out["int8_drift"] = {"global_cos_mean": round(float(g.mean()), 5), "global_cos_min": round(float(g.min()), 5),
                             "region_cos_mean": round(float(r.mean()), 5), "region_cos_min": round(float(r.min()), 5)}
        out["onnx_int8"]["path"] = str(p8)
    except Exception as e:  # noqa: BLE001 - quantisation support varies by model/runtime
        log.warning("int8 row failed", exc_info=True)
        out["onnx_int8"] = {"status": f"failed: {type(e).__name__}: {e}"}

    counterpart = torch_counterpart(Path(model_path), emb.info, torch_run, cache)
    if isinstance(counterpart, str):
        out["torch_eager"] = {"status": f"not run: {counterpart}"}
    else:
        import torch

        prev = torch.get_num_threads()
        torch.set_num_threads(n_threads)
        try:
            xt = torch.from_numpy(x)
            with torch.inference_mode():
                yt = counterpart(xt).numpy()
                t = _median_time(lambda: counterpart(xt), repeats)
        finally:
            torch.set_num_threads(prev)
        cos = _cos_rows(yt, y32) if yt.shape == y32.shape else np.array([np.nan])
        out["torch_eager"] = {"seconds_per_batch": round(t, 4), "images_per_s": round(len(x) / t, 2),
                              "torch_vs_onnx_cos_min": round(float(cos.min()), 6),
                              "torch_version": torch.__version__}
        out["onnx_vs_torch"] = round(out["onnx_fp32"]["images_per_s"] / out["torch_eager"]["images_per_s"], 3)
    if "images_per_s" in out.get("onnx_int8", {}):
        out["int8_vs_fp32"] = round(out["onnx_int8"]["images_per_s"] / out["onnx_fp32"]["images_per_s"], 3)
    return out
