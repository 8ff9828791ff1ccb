"""FAISS as the reference catalog grows: build/add time, memory, latency and recall@10.

Vectors are synthetic but shaped like embeddings (seeded): unit vectors of the model's dimension
around ``n / 200`` cluster centres (real reference embeddings when given, else random), spread
along a shared low-rank basis plus a little isotropic noise, so neighbourhoods have the low
intrinsic dimension real descriptors have. Queries come from the same distribution and are not in
the index. Every index is built with :func:`ccu_vision.index.build_index` (the catalog's own
``make_index`` + training path) and searched with :func:`ccu_vision.index.search`; recall@10 is
measured against the exact (flat) search of the same queries.
"""

from __future__ import annotations

import gc
import logging
import os
import time

import numpy as np

from .. import index as ix

log = logging.getLogger(__name__)

K = 10
RANK = 32
CHUNK = 100_000
EXTRA_ADD = 1000


def current_rss_mb() -> float | None:
    """Resident set size of this process now (Linux /proc, else psutil, else None)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        pass
    try:
        import psutil

        return psutil.Process().memory_info().rss / 2**20
    except ImportError:
        return None


class VectorSource:
    """Seeded generator of embedding-like unit vectors (see the module docstring)."""

    def __init__(self, dim: int, n_centers: int, seed: int = 0, base: np.ndarray | None = None) -> None:
        rng = np.random.default_rng(seed)
        self.dim = dim
        if base is not None and len(base):
            b = np.asarray(base, np.float32)
            c = b[rng.integers(0, len(b), n_centers)] + 0.3 * rng.standard_normal((n_centers, dim)).astype(np.float32) / np.sqrt(dim)
        else:
            c = rng.standard_normal((n_centers, dim)).astype(np.float32)
        self.centers = c / np.linalg.norm(c, axis=1, keepdims=True)
        r = min(RANK, dim)
        q, _ = np.linalg.qr(rng.standard_normal((dim, r)))
        self.basis = q.T.astype(np.float32)  # [r, dim]
        self.seed = seed

    def sample(self, n: int, stream: int) -> np.ndarray:
        """``n`` unit vectors from stream ``stream`` (different streams never repeat each other)."""
        rng = np.random.default_rng([self.seed, stream])
        out = np.empty((n, self.dim), np.float32)
        r = self.basis.shape[0]
        for s in range(0, n, CHUNK):
            m = min(CHUNK, n - s)
            lab = rng.integers(0, len(self.centers), m)
            z = rng.standard_normal((m, r)).astype(np.float32) * (0.6 / np.sqrt(r))
            x = self.centers[lab] + z @ self.basis
            x += rng.standard_normal((m, self.dim)).astype(np.float32) * (0.15 / np.sqrt(self.dim))
            x /= np.linalg.norm(x, axis=1, keepdims=True)
            out[s : s + m] = x
        return out


def _latency(index, q: np.ndarray, batch: int, rerank=None) -> tuple[dict, np.ndarray]:
    single = []
    for i in range(len(q)):
        t0 = time.perf_counter()
        ix.search(index, q[i : i + 1], K, rerank=rerank)
        single.append(time.perf_counter() - t0)
    batched = []
    found = []
    for s in range(0, len(q), batch):
        t0 = time.perf_counter()
        _, ids = ix.search(index, q[s : s + batch], K, rerank=rerank)
        batched.append(time.perf_counter() - t0)
        found.append(ids)
    ms = np.array(single) * 1e3
    bms = np.array(batched) * 1e3
    return {
        "single_p50_ms": round(float(np.percentile(ms, 50)), 4),
        "single_p99_ms": round(float(np.percentile(ms, 99)), 4),
        "batch": batch,
        "batch_p50_ms": round(float(np.percentile(bms, 50)), 4),
        "batch_p99_ms": round(float(np.percentile(bms, 99)), 4),
        "batch_per_query_ms": round(float(bms.sum() / len(q)), 4),
    }, np.concatenate(found)


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean share of the exact top-k ids found in the approximate top-k."""
    hits = [len(set(f[f >= 0].tolist()) & set(t[t >= 0].tolist())) / max(1, (t >= 0).sum()) for f, t in zip(found, truth)]
    return float(np.mean(hits)) if hits else 0.0


def _variants(kind: str) -> list[tuple[str, dict]]:
    if kind == "hnsw":
        return [("hnsw", {"ef_search": ix.DEFAULT_EF_SEARCH}), ("hnsw", {"ef_search": 2 * ix.DEFAULT_EF_SEARCH})]
    if kind == "ivfpq":
        return [("ivfpq", {"nprobe": ix.DEFAULT_NPROBE}), ("ivfpq+rerank", {"nprobe": ix.DEFAULT_NPROBE, "rerank": 10})]
    return [(kind, {})]


def bench_size(src: VectorSource, n: int, n_queries: int, batch: int, kinds=ix.KINDS) -> list[dict]:
    """All index rows for one catalog size."""
    data = src.sample(n, stream=1)
    ids = np.arange(n, dtype=np.int64)
    q = src.sample(n_queries, stream=2)
    extra = src.sample(EXTRA_ADD, stream=3)
    product = ix.choose_kind(n)
    rows = []
    truth = None
    for kind in ["flat"] + [k for k in kinds if k != "flat"]:
        gc.collect()
        rss0 = current_rss_mb()
        t0 = time.perf_counter()
        index = ix.build_index(data, ids, kind)
        build = time.perf_counter() - t0
        rss1 = current_rss_mb()
        built_kind = ix.index_kind(index)
        for name, params in _variants(kind):
            ix.set_search_params(index, ef_search=params.get("ef_search"), nprobe=params.get("nprobe"))
            rerank = (lambda i: data[i]) if params.get("rerank") else None
            lat, found = _latency(index, q, batch, rerank)
            if kind == "flat" and truth is None:
                truth = found
            row = {
                "n": n, "kind": name, "built_kind": built_kind, "params": params,
                "build_s": round(build, 3),
                "mem_mb": round(rss1 - rss0, 1) if rss0 is not None and rss1 is not None else None,
                "recall@10": round(recall_at_k(found, truth), 4),
                **lat,
                "product_choice": built_kind == product and name == kind,
            }
            if params.get("rerank"):
                row["note"] = "re-ranks 10x candidates with exact vectors (held by the catalog, not in mem_mb)"
            rows.append(row)
        t0 = time.perf_counter()
        ix.add(index, extra, np.arange(n, n + EXTRA_ADD, dtype=np.int64))
        add_s = time.perf_counter() - t0
        for r in rows:
            if r["n"] == n and r["built_kind"] == built_kind and "add_1k_ms" not in r:
                r["add_1k_ms"] = round(add_s * 1e3 * 1000 / EXTRA_ADD, 2)
        del index
        gc.collect()
        log.info("faiss n=%d %s: build %.1fs", n, kind, build)
    return rows


def run_faiss(dim: int, sizes, n_queries: int, batch: int, seed: int = 1234, base: np.ndarray | None = None) -> dict:
    """The ``faiss`` results section: rows per size and index kind, and what the product picks."""
    import faiss

    rows = []
    for n in sizes:
        src = VectorSource(dim, max(64, n // 200), seed=seed, base=base)
        rows += bench_size(src, n, n_queries, batch)
    return {
        "dim": dim, "queries": n_queries, "k": K, "faiss_version": getattr(faiss, "__version__", "?"),
        "omp_threads": faiss.omp_get_max_threads(),
        "vectors": "synthetic clustered (low-rank spread)" + (" around real embeddings" if base is not None else ""),
        "product_kind": {str(n): ix.choose_kind(n) for n in sorted({*sizes, 1_000_000})},
        "thresholds": {"flat_below": ix.FLAT_MAX, "hnsw_below": ix.HNSW_MAX},
        "rows": rows,
    }
