"""ccu_vision.index: every kind against brute force on seeded clustered data, ids, shapes."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from ccu_vision import index as ix

DIM = 32
N = 12_000  # >= IVFPQ_MIN_TRAIN so the ivfpq kind really is an IVF-PQ


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """FAISS's OpenMP threads spin against other jobs on a small shared machine."""
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(7)
    centers = rng.standard_normal((40, DIM))
    x = _unit(centers[rng.integers(0, 40, N)] + 0.35 * rng.standard_normal((N, DIM)))
    ids = rng.choice(10**12, size=N, replace=False).astype(np.int64)  # sparse, not row order
    q = _unit(x[rng.integers(0, N, 150)] + 0.1 * rng.standard_normal((150, DIM)))
    exact = faiss.IndexFlatIP(DIM)
    exact.add(x)
    gt_scores, gt_rows = exact.search(q, 10)
    order = np.argsort(ids)

    def lookup(u: np.ndarray) -> np.ndarray:
        return x[order[np.searchsorted(ids[order], u)]]

    return {"x": x, "ids": ids, "q": q, "gt": ids[gt_rows], "gt_scores": gt_scores, "lookup": lookup}


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / truth.shape[1] for a, b in zip(found, truth, strict=True)]))


@pytest.fixture(scope="module")
def built(data):
    return {kind: ix.build_index(data["x"], data["ids"], kind) for kind in ix.KINDS}


def test_kinds_are_what_they_say(built):
    for kind, index in built.items():
        assert ix.index_kind(index) == kind
        assert index.ntotal == N


def test_flat_is_exact(built, data):
    scores, found = ix.search(built["flat"], data["q"], 10)
    assert recall(found, data["gt"]) >= 0.999
    np.testing.assert_allclose(scores, data["gt_scores"], atol=1e-5)


def test_hnsw_recall(built, data):
    index = built["hnsw"]
    _, found = ix.search(index, data["q"], 10)
    assert recall(found, data["gt"]) >= 0.95
    ix.set_search_params(index, ef_search=1)  # the knob is real: a starved search loses recall
    try:
        _, starved = ix.search(index, data["q"], 10)
        assert recall(starved, data["gt"]) < 0.9
    finally:
        ix.set_search_params(index, ef_search=ix.DEFAULT_EF_SEARCH)


def test_ivfpq_recall_with_exact_rerank(built, data):
    index = built["ivfpq"]
    ivf = faiss.downcast_index(index)
    nlist, m = ix.ivf_params(N, DIM)
    assert (ivf.nlist, ivf.pq.M) == (nlist, m)
    assert 4 * np.sqrt(N) * 0.5 <= nlist <= 4 * np.sqrt(N) and DIM % m == 0
    _, raw = ix.search(index, data["q"], 10)
    scores, found = ix.search(index, data["q"], 10, rerank=data["lookup"])
    r_raw, r_exact = recall(raw, data["gt"]), recall(found, data["gt"])
    assert r_exact >= 0.9
    assert r_exact > r_raw + 0.1  # PQ codes alone are approximate; re-ranking is what buys recall
    # re-ranked scores are the exact inner products
    np.testing.assert_allclose(scores[:, 0], np.einsum("nd,nd->n", data["q"], data["lookup"](found[:, 0])), atol=1e-5)


@pytest.mark.parametrize("kind", ix.KINDS)
def test_ids_survive_remove_and_readd(built, data, kind):
    index = ix.deserialize(ix.serialize(built[kind]))  # a private copy; also checks the round trip
    assert ix.index_kind(index) == kind
    pick = np.arange(0, N, N // 20)[:20]
    ids, vecs = data["ids"][pick], data["x"][pick]
    # ids are under test here, not PQ recall (test above): IVF-PQ re-ranks a candidate pool wide enough
    # that a stored vector always reaches exact scoring (10 candidates missed one in a dense cluster
    # when faiss's multithreaded k-means came out slightly differently)
    kw = {"rerank": data["lookup"], "rerank_factor": 200} if kind == "ivfpq" else {}
    _, found = ix.search(index, vecs, 1, **kw)
    assert (found[:, 0] == ids).all()
    index = ix.remove_ids(index, ids)
    assert index.ntotal == N - len(ids)
    _, found = ix.search(index, vecs, 5, **kw)
    assert not np.isin(found, ids).any()
    ix.add(index, vecs, ids)
    assert index.ntotal == N
    scores, found = ix.search(index, vecs, 1, **kw)
    assert (found[:, 0] == ids).all()
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-4)


def test_stored_vectors_roundtrip(built, data):
    for kind in ("flat", "hnsw"):
        vecs, ids = ix.stored_vectors(built[kind])
        order = np.argsort(ids)
        np.testing.assert_array_equal(vecs[order], data["lookup"](ids[order]))


def test_shape_and_type_checks():
    index = ix.make_index(8, "flat")
    good = np.eye(8, dtype=np.float32)[:3]
    ix.add(index, good, np.array([5, 9, 11]))
    with pytest.raises(ValueError, match=r"\[n, 8\]"):
        ix.search(index, np.zeros((2, 7), np.float32), 1)
    with pytest.raises(ValueError, match=r"\[n, 8\]"):
        ix.search(index, np.zeros(8, np.float32), 1)
    with pytest.raises(ValueError, match="float32"):
        ix.search(index, np.zeros((1, 8)), 1)
    with pytest.raises(ValueError, match="ids"):
        ix.add(index, good, np.array([1, 2]))
    with pytest.raises(ValueError, match="non-negative"):
        ix.add(index, good, np.array([1, 2, -3]))
    with pytest.raises(ValueError, match="unknown index kind"):
        ix.make_index(8, "annoy")
    scores, found = ix.search(index, good[:2], 5)
    assert scores.shape == found.shape == (2, 5) and found.dtype == np.int64
    assert found[0, 0] == 5 and found[1, 0] == 9
    assert (found[:, 3:] == -1).all() and np.isneginf(scores[:, 3:]).all()


def test_empty_index_and_small_ivfpq_fallback():
    scores, found = ix.search(ix.make_index(4, "hnsw"), np.ones((3, 4), np.float32), 2)
    assert (found == -1).all() and found.shape == (3, 2)
    small = ix.build_index(np.eye(4, dtype=np.float32), np.arange(4), "ivfpq")
    assert ix.index_kind(small) == "flat"  # too few vectors to train PQ: exact instead


def test_choose_kind():
    assert ix.choose_kind(0) == "flat"
    assert ix.choose_kind(ix.FLAT_MAX - 1) == "flat"
    assert ix.choose_kind(ix.FLAT_MAX) == "hnsw"
    assert ix.choose_kind(ix.HNSW_MAX - 1) == "hnsw"
    assert ix.choose_kind(ix.HNSW_MAX) == "ivfpq"


def test_index_ids(built, data):
    for kind, index in built.items():
        np.testing.assert_array_equal(ix.index_ids(index), np.sort(data["ids"]), err_msg=kind)
    assert len(ix.index_ids(ix.make_index(4, "flat"))) == 0
