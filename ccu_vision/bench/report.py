"""results.json -> targets (PASS/MISS), a human table, BENCHMARKS.md and PR-curve PNGs.

Everything here reads only the results dictionary, so ``ccu-vision bench --results R --write-md
BENCHMARKS.md`` regenerates the document from a saved run without measuring anything.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

TARGETS = {
    "logo_recall@1": 0.70,
    "logo_tpr@1%fpr": 0.60,
    "dup_muap": 0.85,
    "scan_vs_phash": 0.5,
    "onnx_vs_torch": 2.0,
    "faiss_1m_ms": 5.0,
    "faiss_1m_recall": 0.95,
    "faiss_1m_mb": 2048.0,
}
TPR_KEY = "tpr@0.01fpr"


# ----------------------------------------------------------------------------- small helpers


def _f(v, digits: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if v != v:  # NaN
            return "-"
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        return f"{v:.{digits}f}"
    return str(v)


def _ok(d) -> bool:
    return isinstance(d, dict) and not str(d.get("status", "ok")).startswith(("not run", "failed"))


@dataclass
class Table:
    """A titled table rendered as aligned text or as Markdown."""

    title: str
    headers: list[str]
    rows: list[list[str]] = field(default_factory=list)
    note: str = ""

    def text(self) -> str:
        cells = [self.headers] + self.rows
        widths = [max(len(str(r[i])) for r in cells) for i in range(len(self.headers))]
        line = "  ".join("-" * w for w in widths)
        out = [self.title, line]
        for j, r in enumerate(cells):
            out.append("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip())
            if j == 0:
                out.append(line)
        if self.note:
            out.append(self.note)
        return "\n".join(out)

    def markdown(self) -> str:
        esc = [[str(c).replace("|", "\\|") for c in r] for r in [self.headers] + self.rows]
        out = [f"### {self.title}", "", "| " + " | ".join(esc[0]) + " |", "|" + "|".join("---" for _ in self.headers) + "|"]
        out += ["| " + " | ".join(r) + " |" for r in esc[1:]]
        if self.note:
            out += ["", self.note]
        return "\n".join(out)


# ----------------------------------------------------------------------------- targets


def _methods(results: dict) -> list[dict]:
    acc = results.get("accuracy") or {}
    return acc.get("methods", []) if _ok(acc) else []


def compute_targets(results: dict) -> list[dict]:
    """Each target of the issue with the measured value and PASS / MISS / not measured."""
    out = []

    def add(name: str, target: str, value, passed: bool | None, detail: str = "") -> None:
        status = "not measured" if passed is None else ("PASS" if passed else "MISS")
        out.append({"name": name, "target": target, "value": value, "status": status, "detail": detail})

    rows = [m for m in _methods(results) if m.get("status") == "ok"]
    primary = next((m for m in rows if m["role"] == "model"), None)
    others = [m for m in rows if m["role"] != "model"]
    if primary:
        r1, tpr, muap = primary["logo"]["recall@1"], primary["logo"][TPR_KEY], primary["dup"]["muap"]
        add("logo recall@1", f">= {TARGETS['logo_recall@1']}", r1, r1 >= TARGETS["logo_recall@1"], primary["name"])
        add("logo TPR@1%FPR", f">= {TARGETS['logo_tpr@1%fpr']}", tpr, tpr >= TARGETS["logo_tpr@1%fpr"], primary["name"])
        add("near-dup muAP", f">= {TARGETS['dup_muap']}", muap, muap >= TARGETS["dup_muap"], primary["name"])
        if others:
            metrics = [("logo", "recall@1"), ("logo", TPR_KEY), ("logo", "ap"), ("dup", "muap"), ("dup", "recall@p90")]
            behind = [f"{t}.{k}: {o['name']} {o[t][k]:.3f} >= {primary[t][k]:.3f}"
                      for t, k in metrics for o in others if o[t][k] >= primary[t][k]]
            add("ahead of every baseline", "best on every accuracy metric", "yes" if not behind else "no",
                not behind, "; ".join(behind[:4]) or f"{len(others)} baselines")
        else:
            add("ahead of every baseline", "best on every accuracy metric", None, None, "no baseline ran")
    else:
        for name in ("logo recall@1", "logo TPR@1%FPR", "near-dup muAP", "ahead of every baseline"):
            add(name, "", None, None, "no ccu-vision model row ran")

    speed = results.get("speed") or {}
    scan, floor = speed.get("scan"), speed.get("floor") or {}
    ph = floor.get("phash")
    if _ok(scan) and _ok(ph) and ph.get("images_per_s"):
        ratio = scan["images_per_s"] / ph["images_per_s"]
        ph1 = floor.get("phash_1t") or {}
        det = f"scan {scan['images_per_s']:.1f} img/s vs pHash {ph['images_per_s']:.1f} img/s ({ph['threads']} threads)"
        if _ok(ph1) and ph1.get("images_per_s"):
            det += f"; vs 1-thread pHash {scan['images_per_s'] / ph1['images_per_s']:.2f}x"
        add("scan vs pHash throughput", f">= {TARGETS['scan_vs_phash']}x", round(ratio, 3), ratio >= TARGETS["scan_vs_phash"], det)
    else:
        add("scan vs pHash throughput", f">= {TARGETS['scan_vs_phash']}x", None, None, "scan or pHash not run")
    emb = speed.get("embedder") or {}
    if emb.get("onnx_vs_torch") is not None:
        v = emb["onnx_vs_torch"]
        add("ONNX Runtime vs torch eager", f">= {TARGETS['onnx_vs_torch']}x", v, v >= TARGETS["onnx_vs_torch"],
            f"{emb.get('model_id')}, batch {emb.get('batch')}")
    else:
        add("ONNX Runtime vs torch eager", f">= {TARGETS['onnx_vs_torch']}x", None, None,
            (emb.get("torch_eager") or {}).get("status", emb.get("status", "not run")))

    fz = results.get("faiss") or {}
    big = [r for r in fz.get("rows", []) if r["n"] == 1_000_000] if _ok(fz) else []
    tgt = f"< {TARGETS['faiss_1m_ms']:g} ms/query, recall@10 >= {TARGETS['faiss_1m_recall']}, < 2 GB"
    if big:
        def meets(r: dict) -> bool:
            return (r["single_p50_ms"] < TARGETS["faiss_1m_ms"] and r["recall@10"] >= TARGETS["faiss_1m_recall"]
                    and (r["mem_mb"] or 0) < TARGETS["faiss_1m_mb"])
        prod = next((r for r in big if r.get("product_choice")), None)
        good = [r for r in big if meets(r)]
        if prod:
            add("1M refs (product's index)", tgt, f"{prod['kind']}: {prod['single_p50_ms']:.2f} ms, "
                f"R@10 {prod['recall@10']:.3f}, {_f(prod['mem_mb'], 0)} MB", meets(prod),
                "meeting it: " + (", ".join(f"{r['kind']} {r['params']}" for r in good) or "none"))
    else:
        add("1M refs (product's index)", tgt, None, None, "1M not run (use --scale full)")
    return out


# ----------------------------------------------------------------------------- tables


def accuracy_tables(results: dict) -> list[Table]:
    acc = results.get("accuracy") or {}
    if not _ok(acc):
        return [Table("Accuracy", ["status"], [[acc.get("status", "not run")]])]
    ms = acc["methods"]
    t = Table("Accuracy (same evaluation set, same run)",
              ["method", "kind", "logo R@1", "R@5", "AP", "TPR@1%FPR", "dup muAP", "R@P90", "R@P99", "queries/s"])
    for m in ms:
        if m["status"] != "ok":
            t.rows.append([m["name"], m["kind"], m["status"]] + [""] * 7)
            continue
        lg, dp = m["logo"], m["dup"]
        t.rows.append([m["name"], m["kind"], _f(lg["recall@1"]), _f(lg["recall@5"]), _f(lg["ap"]), _f(lg[TPR_KEY]),
                       _f(dp["muap"]), _f(dp["recall@p90"]), _f(dp["recall@p99"]), _f(m.get("queries_per_s"), 1)])
    es = acc.get("eval_set") or {}
    t.note = (f"logo: {es.get('logo_queries', '?')} listing photos ({es.get('registered', '?')} registered held-out brands; "
              f"negatives = unregistered marks + no mark); near-dup: {es.get('dup_queries', '?')} queries, "
              f"{es.get('products', '?')} official photos, look-alikes as distractors. Hash scores = -Hamming distance.")
    tables = [t]
    ok = [m for m in ms if m["status"] == "ok"]
    with_ci = [m for m in ok if "ci95" in m["logo"] or "ci95" in m["dup"]]
    if with_ci:
        def iv(block: dict, key: str) -> str:
            lo_hi = block.get("ci95", {}).get(key)
            return f"{_f(lo_hi[0])}-{_f(lo_hi[1])}" if lo_hi else "-"

        ct = Table("95 % bootstrap intervals (queries resampled 500x, positives and negatives separately, seeded)",
                   ["method", "logo R@1", "AP", "TPR@1%FPR", "dup muAP"])
        for m in with_ci:
            ct.rows.append([m["name"], iv(m["logo"], "recall@1"), iv(m["logo"], "ap"), iv(m["logo"], TPR_KEY),
                            iv(m["dup"], "muap")])
        ct.note = ("Two methods whose intervals overlap widely are not separated by this set; TPR at 1 % FPR "
                   "rests on the few highest-scoring negatives and is the noisiest.")
        tables.append(ct)
    if ok:
        sizes = sorted({s for m in ok for s in m["logo"]["by_size"]}, key=lambda s: [b[2] for b in _size_bins()].index(s)
                       if s in [b[2] for b in _size_bins()] else 99)
        styles = sorted({s for m in ok for s in m["logo"]["by_style"]})
        bt = Table("Logo recall@1 by mark size (long side / photo short side) and print style",
                   ["method"] + [f"size {s}" for s in sizes] + styles)
        for m in ok:
            bs, st = m["logo"]["by_size"], m["logo"]["by_style"]
            bt.rows.append([m["name"]] + [_f(bs[s]["recall@1"]) if s in bs else "-" for s in sizes]
                           + [_f(st[s]["recall@1"]) if s in st else "-" for s in styles])
        n_size = {s: next((m["logo"]["by_size"][s]["n"] for m in ok if s in m["logo"]["by_size"]), 0) for s in sizes}
        n_style = {s: next((m["logo"]["by_style"][s]["n"] for m in ok if s in m["logo"]["by_style"]), 0) for s in styles}
        bt.note = "positives per column: " + ", ".join(f"{k}={v}" for k, v in {**n_size, **n_style}.items())
        tables.append(bt)
        edits = sorted({e for m in ok for e in m["dup"]["per_edit_recall@p95"]})
        et = Table("Near-duplicate recall per edit (top-1 correct and over the method's own P95 threshold)",
                   ["method"] + edits)
        for m in ok:
            pe = m["dup"]["per_edit_recall@p95"]
            et.rows.append([m["name"]] + [_f(pe.get(e)) for e in edits])
        tables.append(et)
        th = [m for m in ok if m.get("at_model_thresholds")]
        if th:
            tt = Table("Flags at the model's stored thresholds (what a scan raises)",
                       ["method", "task", "threshold", "flagged", "precision", "recall", "FPR"])
            for m in th:
                for task, d in m["at_model_thresholds"].items():
                    tt.rows.append([m["name"], task, _f(d["threshold"]), _f(d["flagged"]), _f(d["precision"]),
                                    _f(d["recall"]), _f(d["fpr"])])
            tables.append(tt)
    return tables


def _size_bins():
    from ..evaluate import SIZE_BINS

    return SIZE_BINS


def speed_tables(results: dict) -> list[Table]:
    sp = results.get("speed") or {}
    if not _ok(sp):
        return [Table("Speed", ["status"], [[sp.get("status", "not run")]])]
    tables = []
    d = sp.get("dump", {})
    floor = sp.get("floor", {})
    scan = sp.get("scan") or {}
    ph = floor.get("phash") or {}
    base = ph.get("images_per_s") if _ok(ph) else None
    t = Table(f"Throughput on the same {d.get('images', '?')} listing JPEGs "
              f"({d.get('long_side_min', '?')}-{d.get('long_side_max', '?')} px, {_f(d.get('megapixels_mean'), 2)} Mpx mean)",
              ["what", "threads", "images/s", "vs pHash"])
    labels = [("decode_full", "decode only (full resolution)"), ("decode_draft", "decode only (JPEG draft, as the scan)"),
              ("phash_1t", "pHash (imagehash, one thread)"), ("phash", "pHash (imagehash, thread pool)")]
    for key, label in labels:
        r = floor.get(key)
        if r is None:
            continue
        if not _ok(r):
            t.rows.append([label, "", r.get("status"), ""])
            continue
        t.rows.append([label, _f(r["threads"]), _f(r["images_per_s"], 1),
                       _f(r["images_per_s"] / base, 2) + "x" if base else "-"])
    if _ok(scan):
        t.rows.append(["ccu-vision scan (end to end)", _f(scan["summary"]["workers"]) + " decode + ORT",
                       _f(scan["images_per_s"], 1), _f(scan["images_per_s"] / base, 2) + "x" if base else "-"])
    else:
        t.rows.append(["ccu-vision scan (end to end)", "", scan.get("status", "not run"), ""])
    tables.append(t)
    if _ok(scan):
        s = scan["summary"]
        st = Table(f"Scan stages ({scan['images']} images, {scan['refs']['logo']} logo + {scan['refs']['product']} product refs, "
                   f"peak RSS {_f(scan.get('peak_rss_mb'), 0)} MB)", ["stage", "seconds", "images/s"])
        for name, v in s["stages"].items():
            st.rows.append([name, _f(v["seconds"]), _f(v["images_per_s"], 1)])
        st.rows.append(["wall", _f(scan["wall_s"]), _f(scan["images_per_s"], 1)])
        st.note = "read/decode are busy time summed over decode threads (they overlap the embedder); decode_wait is the embedder waiting."
        tables.append(st)
    emb = sp.get("embedder") or {}
    if emb:
        et = Table(f"Embedder alone: {emb.get('model_id', '?')}, batch {emb.get('batch', '?')} x {emb.get('input', ['?'])[-1]} px, "
                   f"{emb.get('threads', '?')} threads", ["runtime", "images/s", "vs torch eager", "note"])
        tv = (emb.get("torch_eager") or {}).get("images_per_s")
        for key, label in (("torch_eager", "torch eager"), ("onnx_fp32", "ONNX Runtime fp32"), ("onnx_int8", "ONNX Runtime int8 (dynamic)")):
            r = emb.get(key) or {"status": emb.get("status", "not run")}
            if not _ok(r):
                et.rows.append([label, r.get("status"), "", ""])
                continue
            note = ""
            if key == "torch_eager":
                note = f"cos(torch, ORT) min {_f(r.get('torch_vs_onnx_cos_min'), 5)}"
            if key == "onnx_int8" and emb.get("int8_drift"):
                dr = emb["int8_drift"]
                note = f"cos vs fp32: global mean {_f(dr['global_cos_mean'], 4)} min {_f(dr['global_cos_min'], 4)}; regions mean {_f(dr['region_cos_mean'], 4)}"
            et.rows.append([label, _f(r["images_per_s"], 1), _f(r["images_per_s"] / tv, 2) + "x" if tv else "-", note])
        tables.append(et)
    return tables


def faiss_tables(results: dict) -> list[Table]:
    fz = results.get("faiss") or {}
    if not _ok(fz):
        return [Table("FAISS scale", ["status"], [[fz.get("status", "not run")]])]
    t = Table(f"FAISS as the catalog grows (dim {fz['dim']}, {fz['queries']} queries, k=10, {fz['omp_threads']} threads; "
              f"{fz['vectors']})",
              ["refs", "index", "params", "build s", "add 1k ms", "mem MB", "1 query p50 ms", "p99 ms",
               "batch p50 ms", "per query ms", "recall@10", "product"])
    for r in fz["rows"]:
        params = ", ".join(f"{k}={v}" for k, v in r["params"].items())
        t.rows.append([f"{r['n']:,}", r["kind"], params, _f(r["build_s"], 2), _f(r.get("add_1k_ms"), 1), _f(r["mem_mb"], 0),
                       _f(r["single_p50_ms"]), _f(r["single_p99_ms"]), _f(r["batch_p50_ms"], 2),
                       _f(r["batch_per_query_ms"]), _f(r["recall@10"]), "<-" if r.get("product_choice") else ""])
    pk = fz.get("product_kind", {})
    t.note = ("The catalog picks its index with ccu_vision.index.choose_kind: " + ", ".join(f"{int(n):,} -> {k}" for n, k in pk.items())
              + f" (flat below {fz['thresholds']['flat_below']:,}, HNSW below {fz['thresholds']['hnsw_below']:,}); "
              "override at creation with Catalog.open(index_kind=...), tune with CCU_EF_SEARCH / CCU_NPROBE. "
              "mem MB = RSS growth while building; batch = " + str(fz["rows"][0]["batch"] if fz["rows"] else "?") + " queries.")
    return [t]


def growth_tables(results: dict) -> list[Table]:
    g = results.get("growth") or {}
    if not _ok(g):
        return [Table("Cost growth", ["status"], [[g.get("status", "not run")]])]
    t = Table("Scan cost growth with dump size and catalog size",
              ["images", "logo refs", "product refs", "wall s", "images/s", "embed s", "search s", "peak RSS MB"])
    for r in g["rows"]:
        if not _ok(r):
            t.rows.append([_f(r.get("images")), _f(r.get("extra")), "", r.get("status"), "", "", "", ""])
            continue
        st = r["summary"]["stages"]
        t.rows.append([_f(r["images"]), _f(r["refs"]["logo"]), _f(r["refs"]["product"]), _f(r["wall_s"], 2),
                       _f(r["images_per_s"], 1), _f(st["embed"]["seconds"], 2), _f(st["search"]["seconds"], 3),
                       _f(r.get("peak_rss_mb"), 0)])
    t.note = "Extra references are real reference embeddings replicated with noise (half logos, half products)."
    return [t]


def target_table(results: dict) -> Table:
    t = Table("Targets", ["target", "goal", "measured", "status", "detail"])
    for x in results.get("targets") or compute_targets(results):
        t.rows.append([x["name"], x["target"], _f(x["value"]), x["status"], x["detail"]])
    return t


def all_tables(results: dict) -> list[Table]:
    return [target_table(results), *accuracy_tables(results), *speed_tables(results), *faiss_tables(results),
            *growth_tables(results)]


def format_text(results: dict) -> str:
    """The human table printed at the end of a run."""
    head = _header_lines(results)
    return "\n".join(head) + "\n\n" + "\n\n".join(t.text() for t in all_tables(results)) + "\n"


def _header_lines(results: dict) -> list[str]:
    m = results.get("machine", {})
    g = results.get("git", {})
    c = results.get("config", {})
    return [
        f"ccu-vision bench: config {c.get('name', '?')}, {results.get('created', '?')}",
        f"machine: {m.get('cpu', '?')}, {m.get('cpus', '?')} CPUs, {_f(m.get('mem_gb'), 1)} GB RAM, "
        f"load {m.get('loadavg_start', '?')} at start, {m.get('platform', '?')}",
        f"git: {g.get('commit', '?')}{' (dirty)' if g.get('dirty') else ''}",
    ]


# ----------------------------------------------------------------------------- markdown / plots


def write_markdown(results: dict, path: str | Path) -> Path:
    """Regenerate BENCHMARKS.md from results (never edit that file by hand)."""
    path = Path(path)
    m = results.get("machine", {})
    c = results.get("config", {})
    lines = [
        "# ccu-vision benchmarks",
        "",
        "<!-- generated by `ccu-vision bench --write-md` from results.json; do not edit numbers by hand -->",
        "",
        f"Generated from a `{c.get('name', '?')}` run on {results.get('created', '?')} "
        f"(git `{results.get('git', {}).get('commit', '?')}`{', dirty tree' if results.get('git', {}).get('dirty') else ''}).",
        f"Command: `{results.get('command', 'ccu-vision bench')}`",
        "",
        f"Machine: {m.get('cpu', '?')}, {m.get('cpus', '?')} logical CPUs ({m.get('affinity', '?')} usable), "
        f"{_f(m.get('mem_gb'), 1)} GB RAM, {m.get('platform', '?')}, Python {m.get('python', '?')}; "
        f"load average {m.get('loadavg_start', '?')} at start, {m.get('loadavg_end', '?')} at end "
        "(throughputs on a loaded machine are low in absolute terms; compare the ratios, measured in the same run).",
        "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in (m.get("versions") or {}).items()),
        "",
        "How to reproduce: `ccu-vision bench --out bench-out --write-md BENCHMARKS.md` (add `--scale full` for "
        "the 1M-reference FAISS rows, `--torch-run RUN_DIR` for the torch-eager row of a fine-tuned model); "
        "`ccu-vision bench --smoke` is the seconds-long configuration CI runs. "
        "`notebooks/bench.ipynb` plots the PR curves and the hardest misses from results.json.",
        "",
    ]
    merged = results.get("merged_from") or {}
    if merged:  # sections measured by separate runs: say which, and what differs between them
        lines += ["Sections merged from separate runs:", ""]
        lines += [f"- {k}: `{v.get('command', '?')}` (commit {str(v.get('commit', '?'))[:7]})"
                  + (f" — {v['note']}" if v.get("note") else "") for k, v in merged.items()]
        lines.append("")
    lines += _caveats(results)
    for t in all_tables(results):
        lines += [t.markdown(), ""]
    plots = results.get("plots") or {}
    if plots:
        lines += ["### PR curves", ""]
        for k, v in plots.items():
            lines.append(f"- {k}: `{v}` (in the run's output folder)")
        lines.append("")
    lines += ["### Configuration", "", "```json", json.dumps(c, indent=1), "```", ""]
    path.write_text("\n".join(lines))
    return path


def _caveats(results: dict) -> list[str]:
    """Warnings that belong above the numbers: smoke/partial configuration, which models, a busy machine."""
    from .config import BenchConfig

    c = results.get("config", {})
    m = results.get("machine", {})
    out = []
    if c.get("name") == "smoke":
        out.append("> **Smoke configuration**: tiny evaluation set and dump, tiny test model allowed. These numbers only "
                   "show that the bench runs; they say nothing about the product.")
    else:
        ref = json.loads(json.dumps(BenchConfig().to_dict()))
        diff = [k for k in ref if k in c and c[k] != ref[k]]
        if diff:
            out.append(f"> **Not the published configuration**: differs from the default in {', '.join(diff)} "
                       "(see Configuration below).")
    models = [x for x in _methods(results) if x.get("role") in ("model", "baseline-model")]
    if models:
        desc = "; ".join(f"{x['name']} ({x['role']}" + (f", `{Path(x['path']).name}`, sha256 {x['sha256'][:12]}" if x.get("path") else "")
                         + (")" if x.get("status") == "ok" else f": {x['status']})") for x in models)
        out.append(f"> Models: {desc}.")
    load = (m.get("loadavg_start") or [0])[0]
    cpus = m.get("affinity") or m.get("cpus") or 1
    if load > 0.5 * cpus or (m.get("nice") or 0) > 0:
        out.append(f"> **Busy machine**: load average {load} on {cpus} CPUs at start, bench niced by {m.get('nice')}. "
                   "Absolute throughputs and latencies are depressed and noisy; ratios measured in the same run are "
                   "more meaningful, but still approximate.")
    return [x for line in out for x in (line, "")]


def plot_pr(results: dict, out_dir: str | Path) -> dict[str, str]:
    """PR curves per task as PNG files in ``out_dir`` (matplotlib, Agg); returns {task: file name}."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib is not installed: no PR curve plots")
        return {}
    out_dir = Path(out_dir)
    files = {}
    ok = [m for m in _methods(results) if m.get("status") == "ok" and m.get("pr")]
    for task, title in (("logo", "Logo in listing (top-1 brand, open set)"), ("dup", "Near-duplicate of official photo (muAP)")):
        fig, ax = plt.subplots(figsize=(6, 4.5), dpi=100)
        for m in ok:
            c = m["pr"][task]
            if c["recall"]:
                ax.plot(c["recall"], c["precision"], label=m["name"], lw=2 if m["role"] == "model" else 1)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        if ok:
            ax.legend(fontsize=8, loc="lower left")
        fig.tight_layout()
        name = f"pr_{task}.png"
        fig.savefig(out_dir / name)
        plt.close(fig)
        files[task] = name
    return files
