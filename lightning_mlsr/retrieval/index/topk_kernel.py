"""The compiled term-at-a-time top-k kernel behind :meth:`InvertedIndex.search`.

For every query term, walk its posting list and add ``w_query * w_doc`` into a dense
per-worker accumulator, then keep the top ``k`` documents with a bounded heap ordered by
descending score, ties by ascending document index. Only documents with a score > 0 are
kept; missing slots are padded with ``(-inf, -1)``.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

__all__ = ["CANONICAL", "NOT_CANONICAL", "OUT_OF_RANGE", "query_status", "taat_topk", "unsigned"]

#: :func:`query_status` codes
CANONICAL, NOT_CANONICAL, OUT_OF_RANGE = 0, 1, 2


@njit(cache=True, inline="always")
def _worse(s_a: float, i_a: int, s_b: float, i_b: int) -> bool:
    """True when (score a, doc a) ranks below (score b, doc b): lower score, or equal and later doc."""
    return s_a < s_b or (s_a == s_b and i_a > i_b)


@njit(cache=True)
def _sift_down(heap_s, heap_i, size, pos):  # pragma: no cover - compiled
    """Restore the min-heap (root = worst entry) below ``pos``."""
    while True:
        left = 2 * pos + 1
        if left >= size:
            return
        child = left
        right = left + 1
        if right < size and _worse(heap_s[right], heap_i[right], heap_s[left], heap_i[left]):
            child = right
        if _worse(heap_s[child], heap_i[child], heap_s[pos], heap_i[pos]):
            heap_s[pos], heap_s[child] = heap_s[child], heap_s[pos]
            heap_i[pos], heap_i[child] = heap_i[child], heap_i[pos]
            pos = child
        else:
            return


@njit(cache=True)
def _heap_offer(heap_s, heap_i, size, k, score, doc):  # pragma: no cover - compiled
    """Offer (score, doc) to a bounded heap of capacity k; return the new size."""
    if size < k:
        pos = size
        heap_s[pos] = score
        heap_i[pos] = doc
        while pos > 0:  # sift up
            parent = (pos - 1) // 2
            if _worse(heap_s[pos], heap_i[pos], heap_s[parent], heap_i[parent]):
                heap_s[pos], heap_s[parent] = heap_s[parent], heap_s[pos]
                heap_i[pos], heap_i[parent] = heap_i[parent], heap_i[pos]
                pos = parent
            else:
                break
        return size + 1
    if _worse(heap_s[0], heap_i[0], score, doc):
        heap_s[0] = score
        heap_i[0] = doc
        _sift_down(heap_s, heap_i, size, 0)
    return size


@njit(cache=True)
def _heap_drain(heap_s, heap_i, size, out_s, out_i):  # pragma: no cover - compiled
    """Write the heap best-first into out_s/out_i and pad the rest with (-inf, -1)."""
    for j in range(size, out_s.shape[0]):
        out_s[j] = -np.inf
        out_i[j] = -1
    while size > 0:
        size -= 1
        out_s[size] = heap_s[0]
        out_i[size] = heap_i[0]
        heap_s[0] = heap_s[size]
        heap_i[0] = heap_i[size]
        _sift_down(heap_s, heap_i, size, 0)


@njit(cache=True)
def _scan_dense(a, heap_s, heap_i, size, k):  # pragma: no cover - compiled
    """Offer every positive accumulator entry to the heap, zeroing the accumulator.

    One comparison against a register-held threshold per document (0 until the heap is
    full, then its worst score): the branch is almost never taken, so it predicts well.
    Documents come in ascending order, so one tying with the heap's worst never displaces it.
    """
    threshold = heap_s[0] if size == k else np.float32(0)
    for d in range(np.uint64(a.shape[0])):  # unsigned: no negative-index wraparound code
        s = a[d]
        a[d] = 0
        if s > threshold:
            size = _heap_offer(heap_s, heap_i, size, k, s, np.int64(d))
            if size == k:
                threshold = heap_s[0]
    return size


@njit(parallel=True, cache=True)
def taat_topk(
    p_indptr,
    p_indices,
    p_data,
    q_indptr,
    q_indices,
    q_data,
    k,
    acc,
    touched,
    out_s,
    out_i,
):  # pragma: no cover - compiled
    """Score a CSR block of queries against CSC postings and keep each query's top k.

    Worker ``w`` owns ``acc[w]`` (n_docs float32, all zero between queries) and ``touched[w]``
    and handles queries ``w, w + n_workers, ...``; one worker per thread.

    Shape: q_indptr (n_q + 1,), acc/touched (n_workers, n_docs), out_s/out_i (n_q, k)
    """
    n_q = q_indptr.shape[0] - 1
    n_docs = acc.shape[1]
    n_workers = acc.shape[0]
    for w in prange(n_workers):
        a = acc[w]
        t = touched[w]
        heap_s = np.empty(k, np.float32)
        heap_i = np.empty(k, np.int64)
        for q in range(w, n_q, n_workers):
            q_start = q_indptr[q]
            q_end = q_indptr[q + 1]
            work = 0
            for j in range(q_start, q_end):
                work += p_indptr[q_indices[j] + 1] - p_indptr[q_indices[j]]
            size = 0
            if 4 * work >= n_docs:
                # Long posting lists: plain scatter-add, then one dense pass over all documents.
                for j in range(q_start, q_end):
                    term = q_indices[j]
                    wq = q_data[j]
                    # unsigned p and p_indices: no negative-index wraparound code, ~1.7x faster
                    for p in range(np.uint64(p_indptr[term]), np.uint64(p_indptr[term + 1])):
                        a[p_indices[p]] += wq * p_data[p]
                size = _scan_dense(a, heap_s, heap_i, size, k)
            else:
                # Short posting lists: remember which documents became non-zero.
                n_t = 0
                for j in range(q_start, q_end):
                    term = q_indices[j]
                    wq = q_data[j]
                    for p in range(np.uint64(p_indptr[term]), np.uint64(p_indptr[term + 1])):
                        d = p_indices[p]
                        old = a[d]
                        new = old + wq * p_data[p]
                        a[d] = new
                        # Weights are >= 0, so a document turns positive exactly once.
                        if old == 0 and new > 0:
                            t[n_t] = d
                            n_t += 1
                threshold = np.float32(0)
                for j in range(n_t):
                    d = t[j]
                    s = a[d]
                    a[d] = 0
                    if s >= threshold:  # not in document order: a tie may still get in
                        size = _heap_offer(heap_s, heap_i, size, k, s, d)
                        if size == k:
                            threshold = heap_s[0]
            _heap_drain(heap_s, heap_i, size, out_s[q], out_i[q])


@njit(cache=True)
def query_status(terms, weights, num_terms):  # pragma: no cover - compiled
    """Whether one query's (terms, weights) is what the kernel takes as it is: term ids
    strictly increasing in ``[0, num_terms)``, weights finite and > 0 (``CANONICAL``);
    ``OUT_OF_RANGE`` for a term id outside it; otherwise ``NOT_CANONICAL``. One compiled
    pass instead of several numpy reductions, for the single-query path.
    """
    status = CANONICAL
    for j in range(terms.shape[0]):
        t = terms[j]
        if t < 0 or t >= num_terms:
            return OUT_OF_RANGE
        w = weights[j]
        if not (w > 0 and w < np.inf) or (j > 0 and t <= terms[j - 1]):
            status = NOT_CANONICAL
    return status


def unsigned(indices: np.ndarray) -> np.ndarray:
    """Same bytes as unsigned integers (scipy indices are never negative), without a copy."""
    return indices.view(np.uint32 if indices.dtype == np.int32 else np.uint64)
