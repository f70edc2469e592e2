"""Block-max pruned search (``pruning="blockmax"``) against exhaustive scoring and brute force:
the same top k bit for bit, ties in trec_eval's order, on small windows and superblocks so
that every path of the kernel runs (seeds, skipped groups and windows, long and short
posting lists, batches, superblock borders)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from lightning_mlsr.retrieval.index import InvertedIndex, blockmax_bounds, blockmax_kernel
from lightning_mlsr.retrieval.index.topk_kernel import unsigned

from .test_index import brute_force_topk, dyadic_sparse


@pytest.fixture
def small_windows(monkeypatch):
    """Windows of 4 rows, superblocks of 16, long lists from n_docs / 8 postings, 2 seeds,
    groups of 2 windows, batches of 3: a 1,000-row index has 250 windows in 63 superblocks."""
    for name, value in (("WINDOW", 4), ("SUPER", 16), ("LONG_DIV", 8)):
        monkeypatch.setattr(blockmax_bounds, name, value)  # read by window_bounds
    for name, value in (("SEEDS", 2), ("GROUP", 2), ("BATCH", 3)):
        monkeypatch.setattr(blockmax_kernel, name, value)


def tied_collection(seed: int, n_docs: int = 1000, n_terms: int = 40):
    """Dyadic weights (exact float sums: many exact ties), a common term, duplicate rows
    across windows and superblocks, a run of empty rows, one query a copy of a document."""
    rng = np.random.default_rng(seed)
    docs = dyadic_sparse(rng, n_docs, n_terms, 0.06)
    docs[::3, 0] = 0.5  # a long list in every window
    docs[[17, 64, 65, 400, 999]] = docs[5]
    docs[200:260] = 0
    queries = dyadic_sparse(rng, 30, n_terms, 0.08)
    queries[:10, 0] = 0
    queries[3] = docs[5]
    queries[4] = 0  # empty
    queries[5] = 0
    queries[5, 7] = 1.0  # one term
    queries[6] = 0
    queries[6, 39] = 1.0
    docs[:, 39] = 0
    docs[[3, 700], 39] = [0.25, 0.25]  # fewer matches than k, tied
    return docs, queries


@pytest.mark.parametrize("seed", [0, 1])
def test_pruned_search_equals_exhaustive_and_brute_force(small_windows, seed):
    docs, queries = tied_collection(seed)
    ids = np.array([f"d{(i * 37) % 1000}" for i in range(1000)])  # tie order != row order
    index = InvertedIndex.from_matrix(docs, doc_ids=ids)
    bounds = index._scorer.bounds
    assert (bounds.window_shift, bounds.super_shift) == (2, 4)
    assert 0 < (bounds.long_row >= 0).sum() < 40  # long and short lists
    for k in (1, 3, 10, 1000):
        ref_s, ref_i = brute_force_topk(docs, queries, k, ids)
        full = index.search(queries, k, num_threads=1)
        np.testing.assert_array_equal(full[1], ref_i)
        for threads in (1, 2):
            s, i = index.search(queries, k, num_threads=threads, pruning="blockmax")
            np.testing.assert_array_equal(i, full[1])
            np.testing.assert_array_equal(s, full[0])  # bit for bit
            np.testing.assert_array_equal(s, ref_s.astype(np.float32))
        for r in (0, 3, 4, 5, 6, 12, 29):
            terms = np.flatnonzero(queries[r])
            one = index.search_one(terms, queries[r, terms], k, pruning="blockmax")
            np.testing.assert_array_equal(one[1], full[1][r])
            np.testing.assert_array_equal(one[0], full[0][r])
    assert np.all(full[1][4] == -1)  # the empty query
    assert full[1][6, :2].tolist() == sorted([3, 700], key=lambda d: ids[d], reverse=True)


def test_a_window_whose_bound_equals_the_threshold_is_still_scored(small_windows, monkeypatch):
    """Two seeds (one + k // 2) score the windows of rows 3000 (4.0) and 2500 (2.0, bound 2.125 with its
    neighbour): at k=2 the threshold is 2.0. Row 10's window has bound exactly 2.0 and row
    10 ties row 2500 with a lower row, so it must be scored and must win the tie; at k=1
    every other window is skipped."""
    monkeypatch.setattr(blockmax_kernel, "SEEDS", 1)
    n = 4096
    docs = np.zeros((n, 8), np.float32)
    docs[:, 1] = np.random.default_rng(3).integers(1, 5, n) / 8  # a long list everywhere
    docs[3000, 0] = 4.0
    docs[[10, 2500, 2501], 2] = [2.0, 2.0, 0.125]
    ids = [f"{n - i:05d}" for i in range(n)]  # descending: rows stay in order
    index = InvertedIndex.from_matrix(docs, doc_ids=ids)
    assert index._order.tolist() == list(range(n))
    query = np.zeros((1, 8), np.float32)
    query[0, [0, 2]] = 1.0
    s, i = index.search(query, 2, pruning="blockmax")
    assert i[0].tolist() == [3000, 10] and s[0].tolist() == [4.0, 2.0]
    assert index._scorer.last_pruning_stats.tolist() == [2, 1]
    s, i = index.search(query, 1, pruning="blockmax")
    assert i[0].tolist() == [3000] and index._scorer.last_pruning_stats.tolist() == [1, 0]
    query[0, 1] = 1.0  # every window has a bound now: below the threshold up to k=3, and
    for k in (1, 2, 3, 5):  # at k=5 the threshold is 0.5, tied with a quarter of the rows
        ref_s, ref_i = brute_force_topk(docs, query, k, ids)
        s, i = index.search(query, k, pruning="blockmax")
        np.testing.assert_array_equal(i, ref_i)
        np.testing.assert_array_equal(s, ref_s.astype(np.float32))
        if k <= 3:
            assert index._scorer.last_pruning_stats.sum() < 16  # of 1,024 windows


def test_pruned_search_on_random_floats_is_bit_identical(small_windows):
    """Floats whose sums round: the pruned kernel must add in the exhaustive order."""
    rng = np.random.default_rng(7)
    docs = sp.random(3000, 300, density=0.03, random_state=rng, dtype=np.float32, format="csr")
    docs.data = (docs.data * 10.0 ** rng.integers(-3, 3, docs.nnz)).astype(np.float32)
    queries = sp.random(100, 300, density=0.05, random_state=rng, dtype=np.float32)
    index = InvertedIndex.from_matrix(docs)
    for k in (1, 10, 50):
        full = index.search(queries, k)
        pruned = index.search(queries, k, pruning="blockmax")
        np.testing.assert_array_equal(pruned[0], full[0])
        np.testing.assert_array_equal(pruned[1], full[1])
    assert index._scorer.last_pruning_stats.sum() < 100 * 750  # some windows were skipped


def test_window_bounds_cover_every_weight_and_point_at_the_windows(small_windows):
    rng = np.random.default_rng(11)
    docs = sp.random(999, 50, density=0.2, random_state=rng, dtype=np.float32, format="csc")
    docs.data = (docs.data * 10.0 ** rng.integers(-30, 30, docs.nnz)).astype(np.float32)
    docs.sort_indices()
    indptr = docs.indptr.astype(np.int64)
    b = blockmax_bounds.window_bounds(indptr, unsigned(docs.indices), docs.data, 999)
    step = b.super_shift - b.window_shift
    n_windows = b.q8.shape[1]
    assert n_windows == 250 and b.off16.shape[1] == 251 and b.sup.shape[1] == 64
    long_terms = np.flatnonzero(b.long_row >= 0)
    assert len(long_terms) == (np.diff(indptr) >= 999 // 8).sum() > 0
    for t in long_terms:
        r = b.long_row[t]
        rows = docs.indices[indptr[t] : indptr[t + 1]]
        weights = docs.data[indptr[t] : indptr[t + 1]]
        for w in range(n_windows + 1):
            start = int(b.sup[r, w >> step]) + int(b.off16[r, w])
            assert start == np.searchsorted(rows, w << b.window_shift)
            if w == n_windows:
                continue
            here = weights[(rows >> b.window_shift) == w]
            bound = np.float32(b.q8[r, w]) * b.scale[r]  # float32, as the kernel computes it
            if len(here) == 0:
                assert b.q8[r, w] == 0
            else:
                assert bound >= here.max()
                assert np.float32(b.q8[r, w] - 1) * b.scale[r] < here.max()  # the least q


def test_pruning_arguments(small_windows):
    index = InvertedIndex.from_matrix(np.eye(4, dtype=np.float32))
    with pytest.raises(ValueError, match="pruning must be one of"):
        index.search(np.eye(4), 2, pruning="maxscore")
    with pytest.raises(ValueError, match="needs method='numba'"):
        index.search(np.eye(4), 2, method="scipy", pruning="blockmax")
    with pytest.raises(ValueError, match="pruning must be one of"):
        index.search_one([1], [1.0], 2, pruning="wand")
    assert index.prepare_pruning() == index._scorer.bounds.nbytes > 0
    s, i = index.search(np.eye(4), 2, pruning="blockmax")
    assert i[:, 0].tolist() == [0, 1, 2, 3] and np.all(i[:, 1] == -1)
    empty = InvertedIndex.from_matrix(sp.csr_matrix((0, 4), dtype=np.float32))
    assert np.all(empty.search(np.eye(4), 2, pruning="blockmax")[1] == -1)
    with pytest.raises(ValueError, match="power of two"):
        blockmax_bounds.window_bounds(np.zeros(2, np.int64), np.zeros(0, np.uint32),
                                      np.zeros(0, np.float32), 4, window=3)  # fmt: skip
