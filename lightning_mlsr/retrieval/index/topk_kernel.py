"""The compiled term-at-a-time top-k kernel behind :meth:`InvertedIndex.search`.

Documents are scored in blocks of consecutive rows (:data:`BLOCK` by default): for every
query term, walk the part of its posting list that falls in the block (where it starts is
looked up in :func:`chunk_offsets`, computed once per index) and add ``w_query * w_doc`` into a
per-worker accumulator of one block, then offer the block's scores to a bounded heap
ordered by descending score, ties by ascending document index. The accumulator stays in
cache however large the collection, and a query's blocks can be split between threads
(the partial top-k lists are merged by the caller). Only documents with a score > 0 are
kept; missing slots are padded with ``(-inf, -1)``.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

__all__ = [
    "BLOCK",
    "CANONICAL",
    "CHUNK",
    "NOT_CANONICAL",
    "OUT_OF_RANGE",
    "chunk_offsets",
    "query_status",
    "taat_topk",
    "taat_topk_one",
    "unsigned",
]

#: Documents per accumulator block by default: 4 MiB of float32 scores per worker, so two
#: workers' accumulators and their posting streams share a 32 MiB L3 cache, where
#: collection-sized accumulators (12 MB each at 3M documents, 40 MB at 10M) do not.
#: Blocks small enough for L2 (2**16-2**18) measured 5-25% slower on one thread: every
#: block restarts every query term's posting list, and short lists cost a miss each time.
BLOCK = 2**20

#: Granularity of :func:`chunk_offsets` and of splitting one query between threads.
CHUNK = 2**16

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
def _scan_dense(a, n, first_doc, heap_s, heap_i, size, k):  # pragma: no cover - compiled
    """Offer the first ``n`` accumulator entries (documents ``first_doc + d``) to the heap,
    zeroing them.

    One comparison against a register-held threshold per document (0 until the heap is
    full, then its worst score): the branch is almost never taken, so it predicts well.
    Documents come in ascending order (blocks are scanned in order too), so one tying with
    the heap's worst never displaces it.
    """
    threshold = heap_s[0] if size == k else np.float32(0)
    for d in range(np.uint64(n)):  # unsigned: no negative-index wraparound code
        s = a[d]
        a[d] = 0
        if s > threshold:
            size = _heap_offer(heap_s, heap_i, size, k, s, np.int64(first_doc + d))
            if size == k:
                threshold = heap_s[0]
    return size


@njit(parallel=True, cache=True)
def chunk_offsets(p_indptr, p_indices, n_docs, chunk):  # pragma: no cover - compiled
    """Where each posting list enters each chunk of documents: ``offsets[t, c]`` is the
    position, from the start of term ``t``'s list, of its first posting with document >=
    ``c * chunk`` (``offsets[t, n_chunks]`` its length). Postings sorted within each list.

    Shape: p_indptr (n_terms + 1,) -> (n_terms, n_chunks + 1) uint32
    """
    n_terms = p_indptr.shape[0] - 1
    n_blocks = (n_docs + chunk - 1) // chunk
    out = np.empty((n_terms, n_blocks + 1), np.uint32)
    for term in prange(n_terms):
        start = p_indptr[term]
        end = p_indptr[term + 1]
        p = start
        for b in range(n_blocks):
            limit = b * chunk
            while p < end and p_indices[p] < limit:
                p += 1
            out[term, b] = p - start
        out[term, n_blocks] = end - start
    return out


@njit(cache=True)
def _score_task(
    p_indptr,
    p_indices,
    p_data,
    offsets,
    q_indices,
    q_data,
    k,
    first_chunk,
    last_chunk,
    n_docs,
    chunk,
    chunks_per_block,
    a,
    t,
    heap_s,
    heap_i,
    out_s,
    out_i,
):  # pragma: no cover - compiled
    """Top k of one query over document chunks ``[first_chunk, last_chunk)``, best first.

    Block by block (``chunks_per_block`` chunks of ``chunk`` documents): add ``w_query *
    w_doc`` of the block's postings of every query term into ``a`` (one block of float32
    scores, all zero between blocks, small enough to stay in cache), then offer the block's
    positive scores to the heap and zero them again. Long posting lists: one dense pass
    over the block; short ones: only the documents that became non-zero (listed in ``t``).
    """
    size = 0
    n_q = q_indices.shape[0]
    for b in range(first_chunk, last_chunk, chunks_per_block):
        e = min(b + chunks_per_block, last_chunk)
        lo = b * chunk
        n = min(e * chunk, n_docs) - lo
        work = 0
        for j in range(n_q):
            term = q_indices[j]
            work += np.int64(offsets[term, e]) - np.int64(offsets[term, b])
        if work == 0:
            continue
        base = np.uint64(lo)
        if 4 * work >= n:
            for j in range(n_q):
                term = q_indices[j]
                wq = q_data[j]
                start = np.uint64(p_indptr[term])
                # unsigned p and p_indices: no negative-index wraparound code, ~1.7x faster
                for p in range(start + offsets[term, b], start + offsets[term, e]):
                    a[p_indices[p] - base] += wq * p_data[p]
            size = _scan_dense(a, n, lo, heap_s, heap_i, size, k)
        else:
            n_t = 0
            for j in range(n_q):
                term = q_indices[j]
                wq = q_data[j]
                start = np.uint64(p_indptr[term])
                for p in range(start + offsets[term, b], start + offsets[term, e]):
                    d = p_indices[p] - base
                    old = a[d]
                    new = old + wq * p_data[p]
                    a[d] = new
                    # Weights are >= 0, so a document turns positive exactly once.
                    if old == 0 and new > 0:
                        t[n_t] = d
                        n_t += 1
            threshold = heap_s[0] if size == k else np.float32(0)
            for j in range(n_t):
                d = t[j]
                s = a[d]
                a[d] = 0
                if s >= threshold:  # not in document order: a tie may still get in
                    size = _heap_offer(heap_s, heap_i, size, k, s, np.int64(lo + d))
                    if size == k:
                        threshold = heap_s[0]
    _heap_drain(heap_s, heap_i, size, out_s, out_i)


@njit(parallel=True, cache=True)
def taat_topk(
    p_indptr,
    p_indices,
    p_data,
    offsets,
    q_indptr,
    q_indices,
    q_data,
    k,
    task_query,
    task_first,
    task_last,
    n_docs,
    chunk,
    chunks_per_block,
    acc,
    touched,
    out_s,
    out_i,
):  # pragma: no cover - compiled
    """Score CSR queries against CSC postings: task ``i`` is query ``task_query[i]`` over
    document chunks ``[task_first[i], task_last[i])``, its top k written to ``out_*[i]``.

    Worker ``w`` owns ``acc[w]`` (one block of float32 scores, all zero between calls) and
    ``touched[w]``, and runs tasks ``w, w + n_workers, ...``; one worker per thread.

    Shape: q_indptr (n_q + 1,), task_* (n_tasks,), acc (n_workers, >= block),
    touched (n_workers, >= block // 4 + 1) for block = chunk * chunks_per_block,
    out_s/out_i (n_tasks, k)
    """
    n_tasks = task_query.shape[0]
    n_workers = acc.shape[0]
    for w in prange(n_workers):
        heap_s = np.empty(k, np.float32)
        heap_i = np.empty(k, np.int64)
        for task in range(w, n_tasks, n_workers):
            q = task_query[task]
            q_start = q_indptr[q]
            q_end = q_indptr[q + 1]
            _score_task(
                p_indptr,
                p_indices,
                p_data,
                offsets,
                q_indices[q_start:q_end],
                q_data[q_start:q_end],
                k,
                task_first[task],
                task_last[task],
                n_docs,
                chunk,
                chunks_per_block,
                acc[w],
                touched[w],
                heap_s,
                heap_i,
                out_s[task],
                out_i[task],
            )


@njit(cache=True)
def taat_topk_one(
    p_indptr,
    p_indices,
    p_data,
    offsets,
    q_indices,
    q_data,
    k,
    n_docs,
    chunk,
    chunks_per_block,
    acc,
    touched,
    out_s,
    out_i,
):  # pragma: no cover - compiled
    """One query over every block, on the calling thread (no parallel launch): the
    single-query path on one thread. Shape: out_s/out_i (k,)"""
    heap_s = np.empty(k, np.float32)
    heap_i = np.empty(k, np.int64)
    n_chunks = offsets.shape[1] - 1
    _score_task(
        p_indptr,
        p_indices,
        p_data,
        offsets,
        q_indices,
        q_data,
        k,
        0,
        n_chunks,
        n_docs,
        chunk,
        chunks_per_block,
        acc,
        touched,
        heap_s,
        heap_i,
        out_s,
        out_i,
    )


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
