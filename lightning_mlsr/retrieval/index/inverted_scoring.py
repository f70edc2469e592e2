"""Scoring the exact index's postings: the compiled blocked kernel and the scipy reference.

:class:`BlockedPostings` holds the postings as the compiled kernel
(:mod:`lightning_mlsr.retrieval.index.topk_kernel`) reads them: the CSC arrays, where each
posting list enters each chunk of documents, and the per-worker accumulators kept between
calls. It splits one query's documents between threads when there are fewer queries than
threads. It also runs the block-max pruned kernel
(:mod:`lightning_mlsr.retrieval.index.blockmax_kernel`), whose window bounds it builds on
first use. :func:`scipy_topk` is the reference path, ``Q @ D.T`` and a partial sort.

Both take canonical float32 CSR queries and write the top ``k`` (score descending, row
ascending; rows in tie order) into preallocated outputs. Imports neither torch nor lightning.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import numba
import numpy as np
import scipy.sparse as sp

from lightning_mlsr.retrieval.index import blockmax_kernel
from lightning_mlsr.retrieval.index.blockmax_bounds import WindowBounds, window_bounds
from lightning_mlsr.retrieval.index.blockmax_kernel import blockmax_topk, blockmax_topk_one
from lightning_mlsr.retrieval.index.topk_kernel import (
    CHUNK,
    chunk_offsets,
    taat_topk,
    taat_topk_one,
    unsigned,
)

__all__ = ["SCIPY_BLOCK", "BlockedPostings", "check_threads", "scipy_topk"]

_SPLIT_POSTINGS = 2**19  # postings per thread below which one query is not split (~0.3 ms)
SCIPY_BLOCK = 2**25  # entries of the (queries x documents) score block of method="scipy"


def check_threads(num_threads: int | None) -> int:
    """The number of numba threads to use: ``num_threads``, or numba's current setting."""
    max_threads = numba.config.NUMBA_NUM_THREADS  # type: ignore[attr-defined]
    n_workers = numba.get_num_threads() if num_threads is None else num_threads
    if isinstance(n_workers, bool) or not isinstance(n_workers, int):
        raise ValueError(f"num_threads must be an integer, got {num_threads!r}")
    if not 1 <= n_workers <= max_threads:
        raise ValueError(f"num_threads must be in [1, {max_threads}], got {num_threads!r}")
    return n_workers


def _new_scratch(workers: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Zeroed block accumulators and touched-document lists, one row per worker.

    Shape: (workers, width) float32, (workers, width // 4 + 1) int32
    """
    return np.zeros((workers, width), np.float32), np.empty((workers, width // 4 + 1), np.int32)


class BlockedPostings:
    """Float32 CSC postings ``(n_docs, n_terms)`` scored a block of documents at a time.

    ``block_size``: documents scored at a time per thread (rounded down to a multiple of
    :data:`CHUNK` when larger); ``CHUNK`` (or ``block_size`` when smaller) is the granularity
    of :attr:`offsets` and where threads split one query.
    """

    def __init__(self, postings: sp.csc_matrix, block_size: int) -> None:
        self.postings = postings
        self.p_indptr = postings.indptr.astype(np.int64)  # (n_terms + 1,), tiny
        self.chunk = min(CHUNK, block_size)
        self.chunks_per_block = max(1, block_size // self.chunk)
        self.block = self.chunk * self.chunks_per_block
        # (n_terms, n_chunks + 1) uint32: where each posting list enters each chunk of documents
        self.offsets = chunk_offsets(self.p_indptr, postings.indices, postings.shape[0], self.chunk)
        # what every kernel call reads, as the kernel takes it (unsigned ids: no wraparound code)
        self.kernel_postings = (self.p_indptr, unsigned(postings.indices), postings.data)
        # Per-worker scratch of the kernel, kept between calls (the kernel leaves it zeroed):
        # allocating and page-faulting it on every call cost more than a short query.
        self.scratch: tuple[np.ndarray, np.ndarray] | None = None
        self._scratch_lock = threading.Lock()
        self._bounds: WindowBounds | None = None  # for pruning="blockmax", built on first use
        self._bounds_lock = threading.Lock()
        #: windows the last pruned call scored: (as seeds, after them), summed over queries
        self.last_pruning_stats = np.zeros(2, np.int64)

    @property
    def n_docs(self) -> int:
        return self.postings.shape[0]

    def score(
        self,
        q_indptr: np.ndarray,
        q_indices: np.ndarray,
        q_data: np.ndarray,
        k: int,
        n_workers: int,
        out_s: np.ndarray,
        out_i: np.ndarray,
    ) -> None:
        """Run the compiled kernel on canonical CSR query arrays into ``out_s``/``out_i``.

        With fewer queries than threads, each query's document blocks are split between
        threads and the partial top-k lists merged (a single query uses every thread).

        Shape: q_indptr (n_q + 1,), q_indices, q_data (nnz,) -> out_s, out_i (n_q, k)
        """
        n_q = len(q_indptr) - 1
        n_docs = self.n_docs
        n_chunks = self.offsets.shape[1] - 1
        parts = max(1, min(n_workers // n_q, n_chunks))
        if parts > 1:  # a parallel launch per call pays only for long posting lists
            p = self.p_indptr
            work = int((p[q_indices + 1] - p[q_indices]).sum())
            parts = min(parts, max(1, work // (n_q * _SPLIT_POSTINGS)))
        workers = min(n_workers, n_q * parts)
        if workers == 1 and n_q == 1:
            self.score_one(q_indices, q_data, k, out_s[0], out_i[0])
            return
        postings = self.kernel_postings
        with self._kernel_scratch(workers) as (acc, touched):
            bounds = np.linspace(0, n_chunks, parts + 1).astype(np.int64)  # (parts + 1,)
            task_query = np.repeat(np.arange(n_q, dtype=np.int64), parts)  # (n_q * parts,)
            task_first = np.tile(bounds[:-1], n_q)
            task_last = np.tile(bounds[1:], n_q)
            if parts == 1:
                task_s, task_i = out_s, out_i
            else:
                task_s = np.empty((n_q * parts, k), np.float32)
                task_i = np.empty((n_q * parts, k), np.int64)
            with _numba_threads(workers):
                taat_topk(
                    *postings, self.offsets, q_indptr.astype(np.int64, copy=False),
                    unsigned(q_indices), q_data, k, task_query, task_first, task_last, n_docs,
                    self.chunk, self.chunks_per_block, acc[:workers], touched[:workers],
                    task_s, task_i,
                )  # fmt: skip
        if parts > 1:  # the parts hold disjoint documents: best k by (score desc, row asc)
            cand_s = task_s.reshape(n_q, parts * k)
            cand_i = task_i.reshape(n_q, parts * k)
            best = np.lexsort((np.where(cand_i < 0, n_docs, cand_i), -cand_s))[:, :k]
            out_s[:] = np.take_along_axis(cand_s, best, axis=1)
            out_i[:] = np.take_along_axis(cand_i, best, axis=1)

    def score_one(
        self,
        q_indices: np.ndarray,
        q_data: np.ndarray,
        k: int,
        out_s: np.ndarray,
        out_i: np.ndarray,
    ) -> None:
        """One canonical query on the calling thread, no parallel launch: the serving path,
        kept to one compiled call and a lock (its per-call cost was a fifth of a query's at
        100k documents). ``out_s``/``out_i`` need no initialisation: every slot is written.

        Shape: q_indices, q_data (nnz,) -> out_s, out_i (k,)
        """
        (acc, touched), kept = self._claim_scratch(1)  # no context manager: per-call cost
        try:
            taat_topk_one(
                *self.kernel_postings, self.offsets, unsigned(q_indices), q_data, k,
                self.n_docs, self.chunk, self.chunks_per_block, acc[0], touched[0], out_s, out_i,
            )  # fmt: skip
        finally:
            if kept:
                self._scratch_lock.release()

    @property
    def bounds(self) -> WindowBounds:
        """The window bounds of the long posting lists (built on first use, then kept)."""
        with self._bounds_lock:
            if self._bounds is None:
                self._bounds = window_bounds(*self.kernel_postings, self.n_docs)
            return self._bounds

    def score_pruned(
        self,
        q_indptr: np.ndarray,
        q_indices: np.ndarray,
        q_data: np.ndarray,
        k: int,
        n_workers: int,
        out_s: np.ndarray,
        out_i: np.ndarray,
    ) -> None:
        """The block-max pruned kernel on canonical CSR query arrays: the same top k as
        :meth:`score`, bit for bit. Queries are split between threads (one query is never
        split: it runs on one thread).

        Shape: q_indptr (n_q + 1,), q_indices, q_data (nnz,) -> out_s, out_i (n_q, k)
        """
        b = self.bounds
        n_q = len(q_indptr) - 1
        workers = max(1, min(n_workers, n_q))
        step = b.super_shift - b.window_shift
        arrays = (*self.kernel_postings, b.long_row, b.q8, b.off16, b.sup, b.scale,
                  b.window_shift, step)  # fmt: skip
        n_seed = blockmax_kernel.SEEDS + k // 2
        group, n_batch = blockmax_kernel.GROUP, blockmax_kernel.BATCH
        stats = np.zeros((workers, 2), np.int64)
        if n_q == 1:
            blockmax_topk_one(
                *arrays, unsigned(q_indices), q_data, k, n_seed, group, n_batch,
                out_s[0], out_i[0], stats[0],
            )  # fmt: skip
        else:
            with _numba_threads(workers):
                blockmax_topk(
                    *arrays, q_indptr.astype(np.int64, copy=False), unsigned(q_indices),
                    q_data, k, n_seed, group, n_batch, workers, out_s, out_i, stats,
                )  # fmt: skip
        self.last_pruning_stats = stats.sum(axis=0)

    @contextlib.contextmanager
    def _kernel_scratch(self, workers: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """:meth:`_claim_scratch` for a block, the lock given back after it."""
        scratch, kept = self._claim_scratch(workers)
        try:
            yield scratch
        finally:
            if kept:
                self._scratch_lock.release()

    def _claim_scratch(self, workers: int) -> tuple[tuple[np.ndarray, np.ndarray], bool]:
        """The kept per-worker accumulators (all zero) with the lock held (True: the caller
        releases it), or fresh ones while another thread of this process is searching the
        same index (False)."""
        if not self._scratch_lock.acquire(blocking=False):
            return _new_scratch(workers, min(self.n_docs, self.block)), False
        try:
            if self.scratch is None or self.scratch[0].shape[0] < workers:
                self.scratch = _new_scratch(workers, min(self.n_docs, self.block))
        except BaseException:
            self._scratch_lock.release()
            raise
        return self.scratch, True


@contextlib.contextmanager
def _numba_threads(workers: int) -> Iterator[None]:
    """numba's thread count set to ``workers`` for the block, and the previous one restored
    however the block ends."""
    previous = numba.get_num_threads()
    if workers != previous:
        numba.set_num_threads(workers)
    try:
        yield
    finally:
        if workers != previous:
            numba.set_num_threads(previous)


def scipy_topk(
    postings: sp.csc_matrix, q: sp.csr_matrix, k: int, out_s: np.ndarray, out_i: np.ndarray
) -> None:
    """Reference path: sparse ``Q @ D.T`` and a partial sort of each row's matches.

    Shape: postings (n_docs, n_terms), q (batch, n_terms) -> out_s, out_i (batch, k)
    """
    block = (q @ postings.T).tocsr()  # (batch, n_docs), only matching documents
    for r in range(block.shape[0]):
        row = slice(block.indptr[r], block.indptr[r + 1])
        data = block.data[row]
        docs = block.indices[row]
        keep = data > 0
        data, docs = data[keep], docs[keep]
        if len(data) > k:
            kth = np.partition(data, len(data) - k)[len(data) - k]  # k-th largest
            keep = data >= kth  # may keep more than k on ties, resolved below
            data, docs = data[keep], docs[keep]
        order = np.lexsort((docs, -data))[:k]
        out_s[r, : len(order)] = data[order]
        out_i[r, : len(order)] = docs[order]
