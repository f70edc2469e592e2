"""InvertedIndex against brute-force dense scoring, the scipy reference path, and by hand."""

from __future__ import annotations

import sys
import time

import numpy as np
import pytest
import scipy.sparse as sp

from lightning_mlsr.retrieval.index import (
    FORMAT_VERSION,
    InvertedIndex,
    SeismicIndex,
    inverted_scoring,
)
from lightning_mlsr.retrieval.index.inverted import tie_order


def brute_force_topk(docs: np.ndarray, queries: np.ndarray, k: int, ids=None):
    """Dense float64 scores; best first, ties by descending doc id as text (trec_eval's
    order; ids default to the row numbers), score 0 never returned."""
    scores = queries.astype(np.float64) @ docs.astype(np.float64).T  # (n_q, n_docs)
    out_s = np.full((len(queries), k), -np.inf)
    out_i = np.full((len(queries), k), -1, dtype=np.int64)
    for q, row in enumerate(scores):
        hits = np.flatnonzero(row > 0)
        key = (lambda d: str(d)) if ids is None else (lambda d: str(ids[d]))
        order = sorted(hits, key=key, reverse=True)  # ties: larger docno first
        order = sorted(order, key=lambda d: -row[d])[:k]  # stable: keeps that order on ties
        out_s[q, : len(order)] = row[order]
        out_i[q, : len(order)] = order
    return out_s, out_i


def dyadic_sparse(rng: np.random.Generator, n: int, v: int, density: float) -> np.ndarray:
    """Weights in {1/8, ..., 2}: every dot product here is exact in float32, so ties are exact."""
    mask = rng.random((n, v)) < density
    return np.where(mask, rng.integers(1, 17, size=(n, v)) / 8.0, 0.0).astype(np.float32)


@pytest.fixture(scope="module")
def exact_data():
    rng = np.random.default_rng(0)
    docs = dyadic_sparse(rng, 400, 60, 0.08)
    docs[10] = docs[3]  # exact duplicates: equal scores for every query
    docs[250] = docs[3]
    docs[7] = 0  # an empty document
    docs[:, 59] = 0  # a term no document has
    docs[:, 58] = 0
    docs[[5, 99, 300], 58] = [1.0, 2.0, 1.0]  # a rare term: fewer matches than k, and a tie
    queries = dyadic_sparse(rng, 40, 60, 0.1)
    queries[0] = 0  # an empty query
    queries[1] = 0
    queries[1, 59] = 1.0  # only the term no document has
    queries[2] = 0
    queries[2, 58] = 0.5  # only the rare term
    return docs, queries


@pytest.fixture(scope="module")
def exact_index(exact_data):
    return InvertedIndex.from_matrix(sp.csr_matrix(exact_data[0]))


@pytest.mark.parametrize("method", ["numba", "scipy"])
@pytest.mark.parametrize("k", [1, 10, 500])
def test_search_equals_brute_force_exactly(exact_data, exact_index, method, k):
    docs, queries = exact_data
    scores, indices = exact_index.search(sp.csr_matrix(queries), k, method=method)
    ref_s, ref_i = brute_force_topk(docs, queries, k)
    assert scores.dtype == np.float32 and indices.dtype == np.int64
    assert scores.shape == indices.shape == (len(queries), k)
    np.testing.assert_array_equal(indices, ref_i)
    np.testing.assert_array_equal(scores, ref_s.astype(np.float32))
    # the cases the fixture was built for
    assert np.all(indices[:2] == -1) and np.all(scores[:2] == -np.inf)
    assert indices[2, :3].tolist() == [99, 5, 300][:k]
    assert scores[2, :3].tolist() == [1.0, 0.5, 0.5][:k]
    assert np.all(indices[2, 3:] == -1) and np.all(scores[2, 3:] == -np.inf)


def test_ties_are_broken_by_descending_document_id_like_trec_eval(exact_data, exact_index):
    docs, _ = exact_data
    query = np.zeros((1, docs.shape[1]), np.float32)
    query[0, np.flatnonzero(docs[3])] = 1.0
    for method in ("numba", "scipy"):
        scores, indices = exact_index.search(query, 3, method=method)
        # documents 3, 10 and 250 are identical, so they share the best score (with any other
        # document of the same sum); trec_eval ranks tied documents by docno descending,
        # compared as text ("3" > "250" > "10"), not by row
        best = query[0] @ docs.T
        tied = np.flatnonzero(best == best.max())
        assert {3, 10, 250} <= set(tied.tolist())
        assert indices[0].tolist() == sorted(tied, key=str, reverse=True)[:3], method
        assert indices[0].tolist() != sorted(tied)[:3]  # row order would differ here
        assert scores[0, 0] == scores[0, 1] == scores[0, 2]


def test_ties_when_documents_are_met_out_of_order():
    """Term at a time meets doc 5 (term 0) before doc 2 (term 1); ids "2" and "5" tie and
    trec_eval ranks "5" first, whichever the kernel met first. String ids, to rule out the
    row order: row 2 is "z", row 5 is "a"."""
    docs = np.zeros((20, 3), np.float32)
    docs[5, 0] = 1.0
    docs[2, 1] = 1.0
    docs[9, 2] = 0.5
    index = InvertedIndex.from_matrix(docs)
    query = np.array([[1.0, 1.0, 1.0]], np.float32)
    assert 4 * index.expected_flops(query)[0] < len(index)  # the sparse ('touched') path
    for method in ("numba", "scipy"):
        assert index.search(query, 1, method=method)[1].tolist() == [[5]], method
        assert index.search(query, 2, method=method)[1].tolist() == [[5, 2]], method
    ids = [f"d{i}" for i in range(20)]
    ids[2], ids[5] = "z", "a"
    named = InvertedIndex.from_matrix(docs, doc_ids=ids)
    for method in ("numba", "scipy"):
        assert named.search(query, 1, method=method)[1].tolist() == [[2]], method
        assert named.search(query, 2, method=method)[1].tolist() == [[2, 5]], method


def test_numba_equals_scipy_on_random_floats():
    rng = np.random.default_rng(1)
    docs = sp.random(3000, 800, density=0.02, random_state=rng, dtype=np.float32, format="csr")
    queries = sp.random(200, 800, density=0.01, random_state=rng, dtype=np.float32)
    index = InvertedIndex.from_matrix(docs)
    fast = index.search(queries, 20)
    reference = index.search(queries, 20, method="scipy", batch_size=37)
    # the same float32 additions in the same (term) order: bit-identical
    np.testing.assert_array_equal(fast[0], reference[0])
    np.testing.assert_array_equal(fast[1], reference[1])
    ref_s, _ = brute_force_topk(docs.toarray(), queries.toarray(), 20)
    np.testing.assert_allclose(fast[0], ref_s, rtol=1e-5)


def test_dense_and_sparse_mode_of_the_kernel_agree():
    """A query touching few documents takes the 'touched list' path, a heavy one the dense scan."""
    rng = np.random.default_rng(2)
    docs = dyadic_sparse(rng, 2000, 50, 0.05)
    docs[:, 0] = 0.5  # term 0 is in every document: queries using it take the dense path
    queries = dyadic_sparse(rng, 30, 50, 0.04)
    queries[:15, 0] = 0
    queries[15:, 0] = 1.0
    index = InvertedIndex.from_matrix(docs)
    flops = index.expected_flops(queries)
    assert (4 * flops[:15] < len(index)).any() and (4 * flops[15:] >= len(index)).all()
    scores, indices = index.search(queries, 25)
    ref_s, ref_i = brute_force_topk(docs, queries, 25)
    np.testing.assert_array_equal(indices, ref_i)
    np.testing.assert_array_equal(scores, ref_s.astype(np.float32))


@pytest.mark.parametrize("block_size", [1, 7, 64, 333, 2**16, 2**20])
def test_blocked_scoring_equals_brute_force_exactly(block_size, monkeypatch):
    """Documents scored a block at a time (both kernel modes per block: a common term makes
    some blocks dense; tied scores across block borders), batched and one query at a time
    on 1 and 2 threads (a single query's blocks split between threads, partial top-k lists
    merged): exactly the brute-force top-k, ties in trec_eval's order."""
    rng = np.random.default_rng(5)
    docs = dyadic_sparse(rng, 1000, 40, 0.06)
    docs[::3, 0] = 0.5  # term 0 in a third of the documents: dense blocks
    docs[[17, 64, 65, 400, 999]] = docs[5]  # duplicates on both sides of block borders
    docs[200:260] = 0  # a run of empty documents: blocks with no posting
    queries = dyadic_sparse(rng, 25, 40, 0.08)
    queries[:10, 0] = 0
    queries[10:, 0] = 1.0
    queries[3] = docs[5]  # scores tied between the duplicates
    ids = np.array([f"d{(i * 37) % 1000}" for i in range(1000)])  # tie order != row order
    monkeypatch.setattr(
        inverted_scoring, "CHUNK", 16
    )  # split a query between threads every 16 docs
    monkeypatch.setattr(inverted_scoring, "_SPLIT_POSTINGS", 1)  # however short its postings
    index = InvertedIndex.from_matrix(docs, doc_ids=ids, block_size=block_size)
    chunk = min(16, block_size)
    assert index._scorer.offsets.shape == (40, -(-1000 // chunk) + 1)
    for k in (1, 10, 1000):
        ref_s, ref_i = brute_force_topk(docs, queries, k, ids)
        for threads in (1, 2):
            s, i = index.search(queries, k, num_threads=threads)
            np.testing.assert_array_equal(i, ref_i)
            np.testing.assert_array_equal(s, ref_s.astype(np.float32))
            for r in (0, 3, 10, 24):
                terms = np.flatnonzero(queries[r])
                one_s, one_i = index.search_one(terms, queries[r, terms], k, num_threads=threads)
                np.testing.assert_array_equal(one_i, ref_i[r])
                np.testing.assert_array_equal(one_s, ref_s[r].astype(np.float32))
    assert not index._scorer.scratch[0].any()


@pytest.mark.parametrize("batch_size", [1, 3, 1000])
@pytest.mark.parametrize("num_threads", [1, 2])
def test_batching_and_threads_do_not_change_results(
    exact_data, exact_index, batch_size, num_threads
):
    _, queries = exact_data
    expected = exact_index.search(queries, 10)
    got = exact_index.search(queries, 10, batch_size=batch_size, num_threads=num_threads)
    np.testing.assert_array_equal(got[0], expected[0])
    np.testing.assert_array_equal(got[1], expected[1])


@pytest.mark.parametrize("fmt", ["coo", "csc", "csr", "dok", "lil"])
def test_any_scipy_format_and_dense_input(exact_data, exact_index, fmt):
    docs, queries = exact_data
    expected = exact_index.search(queries, 5)  # dense numpy queries
    index = InvertedIndex.from_matrix(sp.csr_matrix(docs).asformat(fmt))
    got = index.search(sp.csr_matrix(queries).asformat(fmt), 5)
    np.testing.assert_array_equal(got[1], expected[1])
    np.testing.assert_array_equal(got[0], expected[0])
    got = InvertedIndex.from_matrix(docs.astype(np.float64)).search(sp.csr_array(queries), 5)
    np.testing.assert_array_equal(got[1], expected[1])


def test_explicit_zeros_and_duplicate_entries():
    # duplicates are summed (scipy semantics), explicit zeros are not postings
    docs = sp.coo_matrix(
        (np.array([1.0, 2.0, 0.0, 4.0]), (np.array([0, 0, 1, 2]), np.array([1, 1, 0, 3]))),
        shape=(3, 4),
    )
    index = InvertedIndex.from_matrix(docs)
    assert index.nnz == 2
    assert index.posting_lengths.tolist() == [0, 1, 0, 1]
    scores, indices = index.search(np.array([[1.0, 1.0, 1.0, 0.0]]), 3)
    assert indices.tolist() == [[0, -1, -1]]
    assert scores[0, 0] == 3.0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_callers_matrix_is_never_modified(dtype):
    # unsorted indices, a duplicate and a stored zero in row 0
    data = np.array([2.0, 1.0, 0.5, 0.0, 3.0], dtype=dtype)
    indices = np.array([3, 1, 3, 2, 0], dtype=np.int32)
    indptr = np.array([0, 4, 5], dtype=np.int32)
    docs = sp.csr_matrix((data, indices, indptr), shape=(2, 4))
    before = [docs.data.copy(), docs.indices.copy(), docs.indptr.copy()]
    index = InvertedIndex.from_matrix(docs)
    for array, saved in zip((docs.data, docs.indices, docs.indptr), before):
        np.testing.assert_array_equal(array, saved)
    assert index.nnz == 3  # 1.0 at term 1, 2.5 at term 3, 3.0 at term 0
    np.testing.assert_array_equal(index.postings.toarray(), [[0, 1, 0, 2.5], [3, 0, 0, 0]])


def test_properties_and_expected_flops_by_hand():
    docs = np.array(
        [
            [1, 0, 2, 0],  # doc 0
            [0, 3, 1, 0],  # doc 1
            [1, 1, 1, 0],  # doc 2
        ],
        dtype=np.float32,
    )
    index = InvertedIndex.from_matrix(docs, doc_ids=["a", "b", "c"])
    assert len(index) == 3 and index.num_terms == 4 and index.nnz == 7
    assert index.posting_lengths.tolist() == [2, 2, 3, 0]
    assert index.doc_ids.tolist() == ["a", "b", "c"]
    assert index.size_bytes >= 7 * (4 + 4)
    queries = np.array(
        [
            [1, 0, 0, 0],  # term 0: 2 postings
            [0.5, 2, 1, 0],  # terms 0, 1, 2: 2 + 2 + 3
            [0, 0, 0, 9],  # term 3: no postings
            [0, 0, 0, 0],  # nothing
        ],
        dtype=np.float32,
    )
    assert index.expected_flops(queries).tolist() == [2, 7, 0, 0]
    assert index.expected_flops(sp.csr_matrix(queries)).dtype == np.int64
    # query 1 by hand: doc0 0.5 + 2 = 2.5, doc1 6 + 1 = 7, doc2 0.5 + 2 + 1 = 3.5
    scores, indices = index.search(queries, 4)
    assert indices[1].tolist() == [1, 2, 0, -1]
    assert scores[1].tolist() == [7.0, 3.5, 2.5, -np.inf]
    assert indices[2].tolist() == indices[3].tolist() == [-1, -1, -1, -1]


@pytest.mark.parametrize(
    "ids", [None, "strings", "shuffled ints"], ids=["default", "strings", "shuffled"]
)
def test_build_in_place_equals_permuting_rows_then_converting(ids):
    """The postings ``from_matrix`` relabels in place are, array for array, those of
    ``csr[tie order].tocsc()`` (the build that held two copies of the postings)."""
    rng = np.random.default_rng(3)
    docs = sp.random(3000, 200, density=0.03, random_state=4, dtype=np.float32, format="csr")
    n = docs.shape[0]
    doc_ids = {
        None: None,
        "strings": np.array([f"img_{i}" for i in rng.permutation(n)]),
        "shuffled ints": rng.permutation(n) * 7,
    }[ids]
    index = InvertedIndex.from_matrix(docs, doc_ids=doc_ids)
    order = tie_order(index.doc_ids)
    reference = docs[order].tocsc()
    reference.sort_indices()
    built = index._postings
    for name in ("indptr", "indices", "data"):
        np.testing.assert_array_equal(getattr(built, name), getattr(reference, name))
    np.testing.assert_array_equal(index._order, order)
    assert (index.postings != docs).nnz == 0  # and the rows as given come back


@pytest.mark.parametrize("num_threads", [1, 2])
def test_one_query_at_a_time_equals_the_batch_exactly(exact_data, exact_index, num_threads):
    """``search_one`` and one-row ``search`` calls give the batch's results bit for bit,
    ties in trec_eval's order, and leave the kept accumulators zeroed."""
    docs, queries = exact_data
    ref_s, ref_i = brute_force_topk(docs, queries, 10)
    batch_s, batch_i = exact_index.search(queries, 10, num_threads=num_threads)
    np.testing.assert_array_equal(batch_i, ref_i)
    np.testing.assert_array_equal(batch_s, ref_s.astype(np.float32))
    for r, row in enumerate(queries):
        terms = np.flatnonzero(row)
        for s, i in (
            exact_index.search_one(terms, row[terms], 10, num_threads=num_threads),
            exact_index.search_one(terms[::-1], row[terms][::-1], 10, num_threads=num_threads),
            tuple(a[0] for a in exact_index.search(row[None], 10, num_threads=num_threads)),
        ):
            np.testing.assert_array_equal(s, batch_s[r])
            np.testing.assert_array_equal(i, batch_i[r])
    assert not exact_index._scorer.scratch[0].any()
    # a repeated term is summed and a zero weight dropped, as in a matrix row
    s, i = exact_index.search_one([3, 9, 3, 20], [0.25, 0.5, 0.25, 0.0], 10)
    row = np.zeros((1, docs.shape[1]), np.float32)
    row[0, [3, 9]] = [0.5, 0.5]
    np.testing.assert_array_equal(i, exact_index.search(row, 10)[1][0])
    with pytest.raises(ValueError, match=r"negative weight"):
        exact_index.search_one([1, 2], [1.0, -1.0], 5)
    with pytest.raises(ValueError, match=r"term ids must be in \[0, 60\)"):
        exact_index.search_one([1, 60], [1.0, 1.0], 5)
    with pytest.raises(ValueError, match="equal length"):
        exact_index.search_one([1, 2], [1.0], 5)
    assert exact_index.search_one([], [], 3)[1].tolist() == [-1, -1, -1]


def test_searches_from_several_python_threads_do_not_share_accumulators(exact_data):
    """A second caller while the kept accumulators are in use gets fresh ones."""
    from concurrent.futures import ThreadPoolExecutor

    docs, queries = exact_data
    index = InvertedIndex.from_matrix(docs)
    expected = index.search(queries, 7)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: index.search(queries, 7, batch_size=3), range(16)))
    for scores, indices in results:
        np.testing.assert_array_equal(scores, expected[0])
        np.testing.assert_array_equal(indices, expected[1])

    def one_at_a_time(_: int) -> tuple[np.ndarray, np.ndarray]:  # the single-query path
        rows = [
            index.search_one(np.flatnonzero(q), q[np.flatnonzero(q)], 7, num_threads=1)
            for q in queries
        ]
        return np.stack([s for s, _ in rows]), np.stack([i for _, i in rows])

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(one_at_a_time, range(16)))
    for scores, indices in results:
        np.testing.assert_array_equal(scores, expected[0])
        np.testing.assert_array_equal(indices, expected[1])
    assert not index._scorer.scratch[0].any()


def test_empty_collection_and_no_queries():
    index = InvertedIndex.from_matrix(sp.csr_matrix((0, 5), dtype=np.float32))
    scores, indices = index.search(np.ones((2, 5)), 3)
    assert np.all(indices == -1) and np.all(scores == -np.inf)
    scores, indices = index.search_one([1, 2], [1.0, 1.0], 3, num_threads=1)
    assert indices.tolist() == [-1, -1, -1] and np.all(scores == -np.inf)
    scores, indices = index.search(sp.csr_matrix((0, 5)), 3)
    assert scores.shape == indices.shape == (0, 3)


@pytest.mark.parametrize("suffix", ["index.npz", "saved_dir"])
def test_save_load_round_trip(tmp_path, exact_data, suffix):
    docs, queries = exact_data
    ids = np.array([f"img_{i:04d}" for i in range(len(docs))])
    index = InvertedIndex.from_matrix(docs, doc_ids=ids)
    written = index.save(tmp_path / suffix)
    assert written.is_file()
    loaded = InvertedIndex.load(tmp_path / suffix)
    assert loaded.doc_ids.tolist() == ids.tolist()
    assert (loaded.postings != index.postings).nnz == 0
    assert loaded.postings.dtype == np.float32
    np.testing.assert_array_equal(loaded.postings.indptr, index.postings.indptr)
    np.testing.assert_array_equal(loaded.postings.indices, index.postings.indices)
    np.testing.assert_array_equal(loaded.postings.data, index.postings.data)
    for a, b in zip(loaded.search(queries, 10), index.search(queries, 10)):
        np.testing.assert_array_equal(a, b)


def test_load_errors(tmp_path, exact_index):
    with pytest.raises(FileNotFoundError, match="no saved index"):
        InvertedIndex.load(tmp_path / "missing.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a readable index"):
        InvertedIndex.load(tmp_path / "junk.npz")
    path = exact_index.save(tmp_path / "old.npz")
    with np.load(path) as npz:
        arrays = dict(npz)
    arrays["meta"] = np.array(str(arrays["meta"]).replace(f": {FORMAT_VERSION}", ": 999"))
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match="format version 999"):
        InvertedIndex.load(path)
    # a posting that points past the last document must not reach the compiled kernel
    arrays = dict(np.load(exact_index.save(tmp_path / "corrupt.npz")))
    arrays["indices"] = arrays["indices"].copy()
    arrays["indices"][0] = len(exact_index) + 5
    np.savez(tmp_path / "corrupt.npz", **arrays)
    with pytest.raises(ValueError, match="corrupt index"):
        InvertedIndex.load(tmp_path / "corrupt.npz")
    arrays = dict(np.load(exact_index.save(tmp_path / "short_ids.npz")))
    arrays["doc_ids"] = arrays["doc_ids"][:-1]
    np.savez(tmp_path / "short_ids.npz", **arrays)
    with pytest.raises(ValueError, match="corrupt index.*doc_ids"):
        InvertedIndex.load(tmp_path / "short_ids.npz")


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (-0.5, "negative"),
        (np.nan, "NaN or infinite"),
        (np.inf, "NaN or infinite"),
        (1e39, "float32"),
    ],
)
def test_bad_document_weights_name_the_row(value, problem):
    docs = np.ones((5, 3))
    docs[3, 1] = value
    with pytest.raises(ValueError, match=rf"docs row 3 has .*{problem}"):
        InvertedIndex.from_matrix(sp.csr_matrix(docs))


def test_bad_doc_ids():
    docs = np.eye(3)
    with pytest.raises(ValueError, match="2 entries but the document matrix has 3 rows"):
        InvertedIndex.from_matrix(docs, doc_ids=["a", "b"])
    with pytest.raises(ValueError, match="unique.*'a'"):
        InvertedIndex.from_matrix(docs, doc_ids=["a", "b", "a"])
    assert InvertedIndex.from_matrix(docs, doc_ids=[7, 8, 9]).doc_ids.tolist() == [7, 8, 9]


def test_bad_queries_and_arguments(exact_index):
    v = exact_index.num_terms
    good = np.ones((5, v), np.float32)
    bad = good.copy()
    bad[4, 2] = -1.0
    with pytest.raises(ValueError, match="queries row 4 has a negative weight"):
        exact_index.search(bad, 3, batch_size=2)  # row numbers count across batches
    with pytest.raises(ValueError, match="queries row 4 has a negative weight"):
        exact_index.expected_flops(bad)
    with pytest.raises(ValueError, match=f"index has {v}"):
        exact_index.search(np.ones((2, v + 1)), 3)
    with pytest.raises(ValueError, match="2-D"):
        exact_index.search(np.ones(v), 3)
    for k in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="k must be a positive integer"):
            exact_index.search(good, k)
    with pytest.raises(ValueError, match="method"):
        exact_index.search(good, 3, method="faiss")
    with pytest.raises(ValueError, match="batch_size"):
        exact_index.search(good, 3, batch_size=0)
    with pytest.raises(ValueError, match="num_threads"):
        exact_index.search(good, 3, num_threads=0)


# --------------------------------------------------------------------------------------------
# Seismic (optional)
# --------------------------------------------------------------------------------------------


def test_seismic_missing_package_message(monkeypatch, exact_data):
    monkeypatch.setitem(sys.modules, "seismic", None)  # makes `import seismic` fail
    with pytest.raises(ImportError, match="pip install 'pyseismic-lsr"):
        SeismicIndex.from_matrix(exact_data[0])


def test_seismic_matches_exact_search_on_a_small_collection(exact_data):
    pytest.importorskip("seismic")
    rng = np.random.default_rng(3)
    docs = sp.random(2000, 300, density=0.05, random_state=rng, dtype=np.float32, format="csr")
    queries = sp.random(50, 300, density=0.05, random_state=rng, dtype=np.float32).toarray()
    queries[7] = 0  # an empty query
    queries = sp.csr_matrix(queries)
    exact = InvertedIndex.from_matrix(docs).search(queries, 10)
    # keep every posting, so the approximation is small
    seismic = SeismicIndex.from_matrix(docs, n_postings=2000)
    started = time.perf_counter()
    approx = seismic.search(queries, 10, query_cut=300, heap_factor=1.0)
    # the engine's own call is part of the search, timed apart from the conversions
    assert 0 < seismic.last_engine_seconds <= time.perf_counter() - started
    assert approx[0].shape == approx[1].shape == (50, 10)
    assert np.all(approx[1][7] == -1)
    hits = sum(len(set(a) & set(e)) for a, e in zip(approx[1].tolist(), exact[1].tolist()))
    assert hits / (49 * 10) >= 0.95
    # Seismic's scores are dot products of the same vectors, with quantised weights
    found = approx[1] >= 0
    np.testing.assert_allclose(
        approx[0][found],
        (queries @ docs.T).toarray()[np.nonzero(found)[0], approx[1][found]],
        rtol=1e-2,
    )


def test_top_k_at_a_tied_cut_off_is_the_one_trec_eval_ranks():
    """A run cut at k by the index scores like the whole run in trec_eval: among documents
    tied at the cut-off, the index keeps the ones trec_eval would rank above k."""
    import pytrec_eval

    rng = np.random.default_rng(3)
    n_docs, n_terms = 60, 12
    docs = rng.integers(0, 3, size=(n_docs, n_terms)) * (rng.random((n_docs, n_terms)) < 0.3)
    docs = docs.astype(np.float32)  # small integer weights: many exact ties
    queries = (rng.random((15, n_terms)) < 0.3).astype(np.float32)
    ids = [f"img{rng.integers(0, 10**6):06d}-{i}" for i in range(n_docs)]  # unordered ids
    index = InvertedIndex.from_matrix(docs, doc_ids=ids)
    full = queries @ docs.T  # (15, n_docs)
    qrels = {
        f"q{q}": {ids[d]: 1 for d in rng.choice(n_docs, size=8, replace=False)}
        for q in range(len(queries))
    }
    k = 5
    measures = {"ndcg_cut_5", "P_5", "recall_5"}
    whole = {
        f"q{q}": {ids[d]: float(s) for d, s in enumerate(row) if s > 0}
        for q, row in enumerate(full)
    }
    expected = pytrec_eval.RelevanceEvaluator(qrels, measures).evaluate(whole)
    ties_at_cut = 0
    for method in ("numba", "scipy"):
        scores, indices = index.search(queries, k, method=method)
        cut = {
            f"q{q}": {ids[d]: float(s) for d, s in zip(indices[q], scores[q]) if d >= 0}
            for q in range(len(queries))
        }
        got = pytrec_eval.RelevanceEvaluator(qrels, measures).evaluate(cut)
        for qid, values in expected.items():
            for m in measures:
                assert got[qid][m] == pytest.approx(values[m], abs=1e-12), (method, qid, m)
    for row in full:
        kth = np.sort(row)[::-1][k - 1]
        ties_at_cut += int(kth > 0 and (row == kth).sum() > 1)
    assert ties_at_cut >= 5  # the case is exercised, not avoided


def test_tie_order_of_integer_ids_is_the_order_of_their_decimal_text() -> None:
    """Integer ids are ordered as trec_eval compares their docnos (strcmp on the decimal
    text, descending) without being written as text: checked against sorting the strings."""
    rng = np.random.default_rng(5)
    cases = [
        np.arange(1000),
        np.array([0, 1, 9, 10, 19, 2, 20, 99, 100, 200, 1000]),  # prefixes and digit counts
        rng.choice(10**6, 5000, replace=False),
        rng.choice(2**62, 5000, replace=False),
        np.array([10**18, 10**18 - 1, 9 * 10**18, 1, 0], dtype=np.uint64),
        np.array([10**18, 10**18 - 1, 10**17, 10**17 - 1, 2**63 - 1]),  # int64 at the edges
        np.array([2**64 - 1, 10**19, 5], dtype=np.uint64),  # 20 digits: the string path
        np.array([-3, 12, -40, 7]),  # negative: the string path ("-" sorts before digits)
        np.arange(7, dtype=np.uint16),
    ]
    for ids in cases:
        ids = rng.permutation(ids)
        expected = np.argsort(ids.astype(str), kind="stable")[::-1]
        got = tie_order(ids)
        assert got.dtype == np.int64
        np.testing.assert_array_equal(got, expected)
    assert tie_order(np.array([], dtype=np.int64)).shape == (0,)
