"""FAISS index helpers for the reference catalog (a small flat module, in the style of faiss.contrib).

Every index here is searched by inner product over unit-norm vectors (= cosine similarity) and
keyed by **explicit int64 ids** (the catalog's ``vec_id``), never by row order, so ids survive
removals and rebuilds.

Kinds:

* ``"flat"``  — ``IndexIDMap2(IndexFlatIP)``: exact brute force; removal supported.
* ``"hnsw"``  — ``IndexIDMap2(IndexHNSWFlat(M=32, inner product))``: graph search, ``efSearch``
  configurable; FAISS cannot delete from an HNSW graph, so :func:`remove_ids` rebuilds it from the
  vectors it stores (exact, just slower).
* ``"ivfpq"`` — ``IndexIVFPQ`` over an inner-product coarse quantizer with ids stored in the
  inverted lists; needs training (:func:`build_index` trains on the vectors it is given),
  ``nlist ~ 4*sqrt(n)``, ``m ~ dim/8`` sub-quantizers of 8 bits, ``nprobe`` configurable. PQ
  scores are approximate: pass ``rerank=`` to :func:`search` (a function returning the exact
  stored vectors for ids) to re-score ``rerank_factor * k`` candidates exactly.

>>> index = build_index(vectors, ids, choose_kind(len(ids)))
>>> scores, found = search(index, queries, k=10)        # found == -1 where there is no result
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import faiss
import numpy as np

log = logging.getLogger(__name__)

KINDS = ("flat", "hnsw", "ivfpq")
FLAT_MAX = 200_000
HNSW_MAX = 2_000_000
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 80
DEFAULT_EF_SEARCH = 64
DEFAULT_NPROBE = 16
IVFPQ_MIN_TRAIN = 10_000  # below this many vectors an IVF-PQ is not worth (or able) training


def choose_kind(n: int) -> str:
    """Index kind for a catalog of ``n`` vectors.

    * ``n < 200_000`` -> ``"flat"``: exact, no training, cheap incremental adds and removals;
      a brute-force inner-product scan of 200k x 256-d float32 is ~50M multiply-adds per query,
      a few ms on one laptop core, and memory is ``n * dim * 4`` bytes (~200 MB at the limit).
    * ``n < 2_000_000`` -> ``"hnsw"``: sub-linear search at recall ~0.95-0.99 (``efSearch=64``),
      memory ``n * (dim * 4 + ~2 * M * 4)`` bytes (~2.5 GB at 2M x 256-d), no training.
    * beyond -> ``"ivfpq"``: ``dim / 8`` bytes per vector plus ids, needs training; recall is
      recovered by exact re-ranking of the candidates against the stored float vectors.

    These cut-offs are conservative first guesses; a benchmark will refine them.
    """
    if n < FLAT_MAX:
        return "flat"
    if n < HNSW_MAX:
        return "hnsw"
    return "ivfpq"


def ivf_params(n: int, dim: int) -> tuple[int, int]:
    """``(nlist, m)`` for an IVF-PQ over ``n`` vectors of ``dim``: nlist ~ 4*sqrt(n) (at least
    39 training points per list), m = the largest divisor of ``dim`` that is <= max(1, dim // 8)."""
    nlist = int(round(4 * math.sqrt(max(n, 1))))
    nlist = max(1, min(nlist, n // 39 if n >= 39 else 1))
    target = max(1, dim // 8)
    m = max(d for d in range(1, target + 1) if dim % d == 0)
    return nlist, m


def pq_nbits(n: int) -> int:
    """Bits per PQ code: 8 (256 centroids per sub-quantizer) once there are >= 1024 training
    vectors, fewer for tiny training sets (k-means needs more points than centroids)."""
    return int(min(8, max(1, math.floor(math.log2(max(n, 2))) - 2)))


def make_index(
    dim: int,
    kind: str = "flat",
    *,
    n_hint: int | None = None,
    ef_search: int = DEFAULT_EF_SEARCH,
    nprobe: int = DEFAULT_NPROBE,
) -> faiss.Index:
    """An empty inner-product index of ``kind`` keyed by explicit int64 ids.

    ``n_hint`` sizes an ``"ivfpq"`` index (nlist); it must then be trained before adding
    (:func:`build_index` does both).
    """
    if dim <= 0:
        raise ValueError(f"dim must be positive, got {dim}")
    if kind == "flat":
        return faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
    if kind == "hnsw":
        inner = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        inner.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        inner.hnsw.efSearch = ef_search
        return faiss.IndexIDMap2(inner)
    if kind == "ivfpq":
        n = n_hint or IVFPQ_MIN_TRAIN
        nlist, m = ivf_params(n, dim)
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFPQ(quantizer, dim, nlist, m, pq_nbits(n), faiss.METRIC_INNER_PRODUCT)
        index.nprobe = min(nprobe, nlist)
        return index
    raise ValueError(f"unknown index kind {kind!r} (expected one of {', '.join(KINDS)})")


def index_kind(index: faiss.Index) -> str:
    """Which of :data:`KINDS` an index built here is."""
    index = faiss.downcast_index(index)
    if isinstance(index, faiss.IndexIVFPQ):
        return "ivfpq"
    if isinstance(index, faiss.IndexIDMap2):
        inner = faiss.downcast_index(index.index)
        if isinstance(inner, faiss.IndexHNSW):
            return "hnsw"
        if isinstance(inner, faiss.IndexFlat):
            return "flat"
    raise ValueError(f"not an index made by ccu_vision.index: {type(index).__name__}")


def set_search_params(index: faiss.Index, *, ef_search: int | None = None, nprobe: int | None = None) -> None:
    """Set HNSW ``efSearch`` / IVF ``nprobe`` (ignored for kinds that have no such knob)."""
    index = faiss.downcast_index(index)
    if isinstance(index, faiss.IndexIVF):
        if nprobe is not None:
            index.nprobe = max(1, min(nprobe, index.nlist))
        return
    if isinstance(index, faiss.IndexIDMap2):
        inner = faiss.downcast_index(index.index)
        if isinstance(inner, faiss.IndexHNSW) and ef_search is not None:
            inner.hnsw.efSearch = max(1, ef_search)


def _check_vectors(x: np.ndarray, dim: int, what: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[1] != dim:
        raise ValueError(f"{what} must have shape [n, {dim}], got {list(x.shape)}")
    if x.dtype != np.float32:
        raise ValueError(f"{what} must be float32, got {x.dtype}")
    return np.ascontiguousarray(x)


def _check_ids(ids: np.ndarray, n: int) -> np.ndarray:
    ids = np.asarray(ids)
    if ids.ndim != 1 or len(ids) != n:
        raise ValueError(f"ids must have shape [{n}], got {list(ids.shape)}")
    if ids.dtype.kind not in "iu":
        raise ValueError(f"ids must be integers, got {ids.dtype}")
    if n and ids.min() < 0:
        raise ValueError("ids must be non-negative")
    return np.ascontiguousarray(ids, dtype=np.int64)


def add(index: faiss.Index, vectors: np.ndarray, ids: np.ndarray) -> None:
    """Add ``vectors`` [n, D] float32 under explicit ``ids`` [n] int64."""
    x = _check_vectors(vectors, index.d, "vectors")
    i = _check_ids(ids, len(x))
    if len(x) == 0:
        return
    if not index.is_trained:
        raise ValueError("index is not trained; build it with build_index()")
    index.add_with_ids(x, i)


def build_index(
    vectors: np.ndarray,
    ids: np.ndarray,
    kind: str,
    *,
    ef_search: int = DEFAULT_EF_SEARCH,
    nprobe: int = DEFAULT_NPROBE,
    seed: int = 1234,
) -> faiss.Index:
    """A ``kind`` index holding ``vectors`` under ``ids`` (trained first when the kind needs it).

    An ``"ivfpq"`` request with fewer than :data:`IVFPQ_MIN_TRAIN` vectors cannot be trained
    meaningfully and falls back to ``"flat"`` (logged); check :func:`index_kind` on the result.
    """
    dim = np.asarray(vectors).shape[1] if np.asarray(vectors).ndim == 2 else -1
    x = _check_vectors(vectors, dim, "vectors")
    i = _check_ids(ids, len(x))
    if kind == "ivfpq" and len(x) < IVFPQ_MIN_TRAIN:
        log.info("ivfpq needs >= %d vectors to train, have %d: using a flat index", IVFPQ_MIN_TRAIN, len(x))
        kind = "flat"
    index = make_index(dim, kind, n_hint=len(x), ef_search=ef_search, nprobe=nprobe)
    if not index.is_trained:
        ivf = faiss.downcast_index(index)
        ivf.cp.seed = seed
        ivf.pq.cp.seed = seed
        rng = np.random.default_rng(seed)
        sample = x if len(x) <= 256 * ivf.nlist else x[rng.choice(len(x), 256 * ivf.nlist, replace=False)]
        index.train(sample)
    add(index, x, i)
    return index


def empty_like(dim: int, kind: str) -> faiss.Index:
    """An empty index ready for :func:`add` (an ``"ivfpq"`` can't be empty and trained: flat)."""
    return make_index(dim, "flat" if kind == "ivfpq" else kind)


def stored_vectors(index: faiss.Index) -> tuple[np.ndarray, np.ndarray]:
    """``(vectors [n, D] float32, ids [n] int64)`` held by a flat or HNSW index (exact copies)."""
    kind = index_kind(index)
    if kind == "ivfpq":
        raise ValueError("an IVF-PQ index keeps only compressed codes; use the catalog's stored vectors")
    idmap = faiss.downcast_index(index)
    ids = faiss.vector_to_array(idmap.id_map).astype(np.int64)
    inner = faiss.downcast_index(idmap.index)
    storage = inner if kind == "flat" else faiss.downcast_index(inner.storage)
    codes = faiss.vector_to_array(storage.codes)
    return codes.view(np.float32).reshape(-1, index.d).copy(), ids


def remove_ids(index: faiss.Index, ids: np.ndarray | list[int]) -> faiss.Index:
    """Remove ``ids`` and return the index to use from now on (the same object, or for HNSW,
    which cannot delete from its graph, a rebuilt one holding the remaining vectors)."""
    rm = np.unique(np.asarray(list(ids), dtype=np.int64))
    if len(rm) == 0 or index.ntotal == 0:
        return index
    if index_kind(index) == "hnsw":
        vecs, have = stored_vectors(index)
        keep = ~np.isin(have, rm)
        ef = faiss.downcast_index(faiss.downcast_index(index).index).hnsw.efSearch
        new = make_index(index.d, "hnsw", ef_search=ef)
        add(new, vecs[keep], have[keep])
        return new
    index.remove_ids(faiss.IDSelectorBatch(rm))
    return index


def search(
    index: faiss.Index,
    queries: np.ndarray,
    k: int,
    *,
    rerank: Callable[[np.ndarray], np.ndarray] | None = None,
    rerank_factor: int = 10,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` inner-product search: ``(scores [n, k] float32, ids [n, k] int64)``, best first;
    ids are -1 (score -inf) where fewer than ``k`` vectors exist.

    ``rerank(ids [m] int64) -> vectors [m, D] float32`` re-scores ``rerank_factor * k`` candidates
    with the exact vectors (used for IVF-PQ, whose scores are approximate).
    """
    q = _check_vectors(queries, index.d, "queries")
    if k <= 0:
        raise ValueError(f"k must be positive, got {k}")
    n = len(q)
    if n == 0 or index.ntotal == 0:
        return np.full((n, k), -np.inf, np.float32), np.full((n, k), -1, np.int64)
    kk = min(k * rerank_factor, index.ntotal) if rerank is not None else min(k, index.ntotal)
    scores, ids = index.search(q, kk)
    scores = scores.astype(np.float32)
    ids = ids.astype(np.int64)
    scores[ids < 0] = -np.inf
    if rerank is not None:
        scores, ids = _rerank(q, scores, ids, rerank, k)
    if ids.shape[1] < k:
        pad = k - ids.shape[1]
        scores = np.concatenate([scores, np.full((n, pad), -np.inf, np.float32)], axis=1)
        ids = np.concatenate([ids, np.full((n, pad), -1, np.int64)], axis=1)
    assert scores.shape == (n, k) and ids.shape == (n, k), (scores.shape, ids.shape)
    return scores[:, :k], ids[:, :k]


def _rerank(
    q: np.ndarray, scores: np.ndarray, ids: np.ndarray, lookup: Callable[[np.ndarray], np.ndarray], k: int
) -> tuple[np.ndarray, np.ndarray]:
    uniq = np.unique(ids[ids >= 0])
    if len(uniq) == 0:
        return scores[:, :k], ids[:, :k]
    vecs = np.asarray(lookup(uniq), dtype=np.float32)
    if vecs.shape != (len(uniq), q.shape[1]):
        raise ValueError(f"rerank lookup returned shape {list(vecs.shape)} for {len(uniq)} ids")
    pos = np.searchsorted(uniq, np.where(ids >= 0, ids, uniq[0]))
    exact = np.einsum("nd,nkd->nk", q, vecs[pos]).astype(np.float32)
    exact[ids < 0] = -np.inf
    order = np.argsort(-exact, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(exact, order, 1), np.take_along_axis(ids, order, 1)


def serialize(index: faiss.Index) -> bytes:
    """The index as bytes (FAISS's own format)."""
    return faiss.serialize_index(index).tobytes()


def deserialize(data: bytes) -> faiss.Index:
    """An index from :func:`serialize` bytes. Only call this on bytes whose checksum was verified:
    FAISS trusts its input."""
    return faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))


def index_ids(index: faiss.Index) -> np.ndarray:
    """All ids held by an index built here (sorted int64), whatever its kind."""
    if index_kind(index) != "ivfpq":
        return np.sort(faiss.vector_to_array(faiss.downcast_index(index).id_map).astype(np.int64))
    ivf = faiss.downcast_index(index)
    lists = ivf.invlists
    out = [
        faiss.rev_swig_ptr(lists.get_ids(i), lists.list_size(i)).astype(np.int64).copy()
        for i in range(ivf.nlist)
        if lists.list_size(i)
    ]
    return np.sort(np.concatenate(out)) if out else np.zeros(0, np.int64)
