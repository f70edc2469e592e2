"""Exact inverted index over sparse non-negative term-weight vectors, with top-k search.

Documents and queries are rows of a scipy sparse matrix whose columns are vocabulary terms
(the output of a sparse head). The index keeps the document matrix in CSC form, which *is*
an inverted index: column ``t`` lists the documents containing term ``t`` and their weights.

Search is exact dot-product scoring, term at a time (the compiled kernel in
:mod:`lightning_mlsr.retrieval.index.topk_kernel`). Only documents with a score > 0 (at least one shared
term with positive weights) are returned; missing slots are padded with score ``-inf`` and
index ``-1``. Ordering is by descending score, ties by descending document id (as strings,
the order in which ``trec_eval`` ranks tied documents), identical for the compiled
(``method="numba"``) and the reference (``method="scipy"``) paths, so the top ``k`` kept at the
cut-off are the ones ``trec_eval`` would rank there. Internally the documents are stored in
that tie order, and results are mapped back to the rows they were given in.

This module imports neither torch nor lightning: it is used from notebooks and tested alone.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numba
import numpy as np
import scipy.sparse as sp

from lightning_mlsr.retrieval.index import topk_kernel
from lightning_mlsr.retrieval.index.inputs import check_k, normalise_doc_ids, to_csr
from lightning_mlsr.retrieval.index.topk_kernel import (
    BLOCK,
    CHUNK,
    chunk_offsets,
    query_status,
    taat_topk,
    taat_topk_one,
    unsigned,
)

__all__ = ["FORMAT_VERSION", "InvertedIndex", "tie_order"]

#: Version of the on-disk layout written by :meth:`InvertedIndex.save`.
FORMAT_VERSION = 2
_INDEX_FILE = "index.npz"  # file name used when saving into a directory
_METHODS = ("numba", "scipy")
_SPLIT_POSTINGS = 2**19  # postings per thread below which one query is not split (~0.3 ms)
_SCIPY_BLOCK = 2**25  # entries of the (queries x documents) score block of method="scipy"


def tie_order(doc_ids: np.ndarray) -> np.ndarray:
    """Rows in ``trec_eval``'s order of tied documents: descending id, compared as strings
    (``strcmp`` on the run file's docno; integer ids are written as their decimal text).

    Shape: (n_docs,) ids -> (n_docs,) int64 row indices.
    """
    keys = np.asarray(doc_ids)
    if keys.dtype.kind != "U":
        keys = keys.astype(str)
    return np.argsort(keys, kind="stable")[::-1].astype(np.int64)


def _rows_to_tie_order(csc: sp.csc_matrix, order: np.ndarray, chunk: int = 2**18) -> sp.csc_matrix:
    """Renumber the rows of ``csc`` in place so that new row ``j`` is old row ``order[j]``,
    then re-sort each column: the same matrix as ``csc[order]`` without a second copy of
    the postings (the extra memory is one ``(n_docs,)`` array and ``chunk`` indices).

    Shape: csc (n_docs, n_terms), order (n_docs,) -> csc (n_docs, n_terms)
    """
    new_row = np.empty(len(order), dtype=csc.indices.dtype)  # (n_docs,) old row -> new row
    new_row[order] = np.arange(len(order), dtype=csc.indices.dtype)
    indices = csc.indices
    for start in range(0, len(indices), chunk):
        part = indices[start : start + chunk]
        part[:] = new_row[part]
    csc.has_sorted_indices = False
    csc.sort_indices()  # in place, column by column
    return csc


def _check_threads(num_threads: int | None) -> int:
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


class InvertedIndex:
    """Exact inverted index over sparse non-negative document vectors.

    Build it with :meth:`from_matrix` (or :meth:`load`). The postings are a scipy CSC matrix of
    shape ``(n_docs, n_terms)``: column ``t`` is term ``t``'s posting list (document indices in
    ascending order and their float32 weights). Its rows are the documents in tie order
    (descending id); ``search`` returns indices of the rows as given.
    """

    def __init__(
        self,
        postings: sp.csc_matrix,
        doc_ids: np.ndarray,
        order: np.ndarray | None = None,
        block_size: int = BLOCK,
    ) -> None:
        """Wrap already validated CSC postings whose rows are in ``order`` (internal row ``j``
        is input row ``order[j]``; by default computed, and the rows permuted, here);
        prefer :meth:`from_matrix`. ``block_size``: documents scored at a time per thread
        (rounded down to a multiple of :data:`CHUNK` when larger)."""
        if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
            raise ValueError(f"block_size must be a positive integer, got {block_size!r}")
        if not sp.isspmatrix_csc(postings) or postings.dtype != np.float32:
            raise TypeError("postings must be a float32 scipy.sparse.csc_matrix")
        if order is None:
            order = tie_order(doc_ids)
            postings = _rows_to_tie_order(postings.copy(), order)
        self._postings = postings
        self._order = np.asarray(order, dtype=np.int64)  # (n_docs,) internal row -> input row
        self._doc_ids = doc_ids
        self._p_indptr = postings.indptr.astype(np.int64)  # (n_terms + 1,), tiny
        # (n_terms, n_chunks + 1) uint32: where each posting list enters each chunk of documents
        self._chunk = min(CHUNK, block_size)  # offsets' granularity, where threads split
        self._chunks_per_block = max(1, block_size // self._chunk)
        self._block = self._chunk * self._chunks_per_block
        self._offsets = chunk_offsets(
            self._p_indptr, postings.indices, postings.shape[0], self._chunk
        )
        # Per-worker scratch of the kernel, kept between calls (the kernel leaves it zeroed):
        # allocating and page-faulting it on every call cost more than a short query.
        self._scratch: tuple[np.ndarray, np.ndarray] | None = None
        self._scratch_lock = threading.Lock()

    @classmethod
    def from_matrix(
        cls,
        docs: Any,
        doc_ids: Sequence[Any] | np.ndarray | None = None,
        block_size: int = BLOCK,
    ) -> InvertedIndex:
        """Index the rows of ``docs`` (any scipy sparse format, or a dense 2-D array).

        Args:
            docs: ``(n_docs, n_terms)`` non-negative finite term weights, one row per document.
            doc_ids: one unique id (int or str) per row; defaults to ``0..n_docs-1``.
            block_size: documents each thread scores at a time (default :data:`BLOCK`: a
                4 MiB accumulator that stays in cache); results do not depend on it.

        Raises:
            ValueError: a negative/NaN/infinite weight (the message names the row), wrong
                ``doc_ids`` length, or duplicate ``doc_ids``.
        """
        csr = to_csr(docs, "docs")
        ids = normalise_doc_ids(doc_ids, csr.shape[0])
        order = tie_order(ids)
        csc = csr.tocsc()  # the only copy of the postings; relabelled in place below
        del csr
        return cls(_rows_to_tie_order(csc, order), ids, order, block_size)

    # ---- properties ----------------------------------------------------------------------

    def __len__(self) -> int:
        return self._postings.shape[0]

    def __repr__(self) -> str:
        return (
            f"InvertedIndex(n_docs={len(self)}, num_terms={self.num_terms}, nnz={self.nnz}, "
            f"size={self.size_bytes / 2**20:.1f} MiB)"
        )

    @property
    def doc_ids(self) -> np.ndarray:
        """Document ids, in row order (``search`` returns indices into this array)."""
        return self._doc_ids

    @property
    def num_terms(self) -> int:
        """Vocabulary size (number of columns)."""
        return self._postings.shape[1]

    @property
    def nnz(self) -> int:
        """Number of stored (document, term) weights."""
        return int(self._postings.nnz)

    @property
    def postings(self) -> sp.csc_matrix:
        """The ``(n_docs, n_terms)`` CSC matrix, rows as given to :meth:`from_matrix` (a copy
        put back in that order; the index keeps its rows in tie order)."""
        inverse = np.empty_like(self._order)
        inverse[self._order] = np.arange(len(self._order))
        out = self._postings[inverse]
        out.sort_indices()
        return out

    @property
    def posting_lengths(self) -> np.ndarray:
        """Number of documents containing each term. Shape: (num_terms,) int64."""
        return np.diff(self._p_indptr)

    @property
    def size_bytes(self) -> int:
        """Bytes held by the postings arrays, the doc ids and the block offsets."""
        p = self._postings
        arrays = (p.data, p.indices, p.indptr, self._doc_ids, self._order, self._offsets)
        return int(sum(a.nbytes for a in arrays))

    def expected_flops(self, queries: Any) -> np.ndarray:
        """Multiply-adds exact term-at-a-time scoring spends on each query.

        For every query, the sum of the posting-list lengths of its terms with weight > 0.

        Shape: queries (n_queries, num_terms) -> (n_queries,) int64
        """
        q = self._prepare_queries(queries)
        per_entry = self.posting_lengths[q.indices]
        cum = np.concatenate([[0], np.cumsum(per_entry, dtype=np.int64)])
        return cum[q.indptr[1:]] - cum[q.indptr[:-1]]

    # ---- search --------------------------------------------------------------------------

    def search(
        self,
        queries: Any,
        k: int,
        batch_size: int | None = None,
        method: str = "numba",
        num_threads: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k documents by dot product for every query.

        Args:
            queries: ``(n_queries, num_terms)`` scipy sparse matrix or dense array, weights >= 0.
            k: results per query.
            batch_size: queries converted and scored at a time. Default: 1024 for numba; for
                scipy, which holds a ``(batch_size, n_docs)`` sparse score block, as many as
                keep that block under 2**25 entries (32 queries at 1M documents).
            method: ``"numba"`` (compiled, parallel over queries) or ``"scipy"`` (reference,
                ``Q @ D.T`` per batch and a partial sort).
            num_threads: numba threads (default: ``numba.get_num_threads()``).

        Returns:
            ``(scores, indices)``: float32 and int64, best first, ties by descending document
            id (``trec_eval``'s order); indices are rows of the matrix given to
            :meth:`from_matrix`; documents with score 0 are never returned and missing slots
            are ``(-inf, -1)``.

        Shape: queries (n_queries, num_terms) -> scores, indices (n_queries, k)
        """
        k = check_k(k)
        if method not in _METHODS:
            raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
        if batch_size is None:
            batch_size = 1024 if method == "numba" else max(1, _SCIPY_BLOCK // max(len(self), 1))
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        n_workers = _check_threads(num_threads)
        n_queries = self._num_rows(queries)
        if sp.issparse(queries) and queries.format != "csr":
            queries = queries.tocsr()  # COO and friends cannot be sliced into batches
        scores = np.full((n_queries, k), -np.inf, dtype=np.float32)
        indices = np.full((n_queries, k), -1, dtype=np.int64)
        if n_queries == 0 or len(self) == 0:
            return scores, indices

        for start in range(0, n_queries, batch_size):
            stop = min(start + batch_size, n_queries)
            block = queries if stop - start == n_queries else queries[start:stop]
            q = self._prepare_queries(block, row_offset=start)
            if method == "numba":
                self._score(
                    q.indptr,
                    q.indices,
                    q.data,
                    k,
                    n_workers,
                    scores[start:stop],
                    indices[start:stop],
                )
            else:
                self._search_scipy_block(q, k, scores[start:stop], indices[start:stop])
        found = indices >= 0
        indices[found] = self._order[indices[found]]  # internal (tie-order) rows -> input rows
        return scores, indices

    def search_one(
        self, terms: Any, weights: Any, k: int, num_threads: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k of one query given as its term ids and weights: what a server holds
        per request, without building a matrix. Same results as :meth:`search` on that
        query's row, at the cost of a batched query.

        Args:
            terms: column numbers of the query's terms (any order; repeats are summed).
            weights: the matching weights, finite and >= 0 (zeros are dropped).
            k: results.
            num_threads: numba threads (default: ``numba.get_num_threads()``).

        Shape: terms, weights (n_terms_in_query,) -> scores, indices (k,)
        """
        k = check_k(k)
        n_workers = _check_threads(num_threads)
        t = np.asarray(terms)
        w = np.asarray(weights, dtype=np.float32)
        if t.ndim != 1 or w.shape != t.shape or (t.size and t.dtype.kind not in "iu"):
            raise ValueError(
                f"terms and weights must be 1-D arrays of equal length, term ids integers; "
                f"got shapes {t.shape} and {np.shape(weights)}, terms dtype {t.dtype}"
            )
        if t.size == 0:
            return np.full(k, -np.inf, dtype=np.float32), np.full(k, -1, dtype=np.int64)
        status = query_status(t, w, self.num_terms)
        if status == topk_kernel.OUT_OF_RANGE:
            raise ValueError(f"term ids must be in [0, {self.num_terms}); got {t.min()}..{t.max()}")
        if (
            status != topk_kernel.CANONICAL
        ):  # unsorted, repeated, zero or invalid weights: as a matrix row
            row = sp.csr_matrix((w, t, [0, len(t)]), shape=(1, self.num_terms))
            q = to_csr(row, "query")
            t, w = q.indices, q.data
        scores = np.full((1, k), -np.inf, dtype=np.float32)
        indices = np.full((1, k), -1, dtype=np.int64)
        if len(self) and len(t):
            self._score(np.array([0, len(t)]), t, w, k, n_workers, scores, indices)
        found = indices[0] >= 0
        indices[0, found] = self._order[indices[0, found]]
        return scores[0], indices[0]

    def _score(
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
        """
        n_q = len(q_indptr) - 1
        n_docs = len(self)
        n_chunks = self._offsets.shape[1] - 1
        parts = max(1, min(n_workers // n_q, n_chunks))
        if parts > 1:  # a parallel launch per call pays only for long posting lists
            p = self._p_indptr
            work = int((p[q_indices + 1] - p[q_indices]).sum())
            parts = min(parts, max(1, work // (n_q * _SPLIT_POSTINGS)))
        workers = min(n_workers, n_q * parts)
        postings = (self._p_indptr, unsigned(self._postings.indices), self._postings.data)
        with self._kernel_scratch(workers) as (acc, touched):
            if workers == 1 and n_q == 1:
                taat_topk_one(
                    *postings, self._offsets, unsigned(q_indices), q_data, k, n_docs,
                    self._chunk, self._chunks_per_block, acc[0], touched[0], out_s[0], out_i[0],
                )  # fmt: skip
                return
            bounds = np.linspace(0, n_chunks, parts + 1).astype(np.int64)  # (parts + 1,)
            task_query = np.repeat(np.arange(n_q, dtype=np.int64), parts)  # (n_q * parts,)
            task_first = np.tile(bounds[:-1], n_q)
            task_last = np.tile(bounds[1:], n_q)
            if parts == 1:
                task_s, task_i = out_s, out_i
            else:
                task_s = np.empty((n_q * parts, k), np.float32)
                task_i = np.empty((n_q * parts, k), np.int64)
            previous = numba.get_num_threads()
            if workers != previous:
                numba.set_num_threads(workers)
            try:
                taat_topk(
                    *postings, self._offsets, q_indptr.astype(np.int64, copy=False),
                    unsigned(q_indices), q_data, k, task_query, task_first, task_last, n_docs,
                    self._chunk, self._chunks_per_block, acc[:workers], touched[:workers],
                    task_s, task_i,
                )  # fmt: skip
            finally:
                if workers != previous:
                    numba.set_num_threads(previous)
        if parts > 1:  # the parts hold disjoint documents: best k by (score desc, row asc)
            cand_s = task_s.reshape(n_q, parts * k)
            cand_i = task_i.reshape(n_q, parts * k)
            best = np.lexsort((np.where(cand_i < 0, len(self), cand_i), -cand_s))[:, :k]
            out_s[:] = np.take_along_axis(cand_s, best, axis=1)
            out_i[:] = np.take_along_axis(cand_i, best, axis=1)

    @contextlib.contextmanager
    def _kernel_scratch(self, workers: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """The kept per-worker accumulators (all zero), or fresh ones while another thread
        of this process is searching the same index."""
        if not self._scratch_lock.acquire(blocking=False):
            yield _new_scratch(workers, min(len(self), self._block))
            return
        try:
            if self._scratch is None or self._scratch[0].shape[0] < workers:
                self._scratch = _new_scratch(workers, min(len(self), self._block))
            yield self._scratch
        finally:
            self._scratch_lock.release()

    def _search_scipy_block(
        self, q: sp.csr_matrix, k: int, out_s: np.ndarray, out_i: np.ndarray
    ) -> None:
        """Reference path: sparse ``Q @ D.T`` and a partial sort of each row's matches."""
        block = (q @ self._postings.T).tocsr()  # (batch, n_docs), only matching documents
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

    def _num_rows(self, queries: Any) -> int:
        shape = queries.shape if hasattr(queries, "shape") else np.shape(queries)
        if len(shape) != 2:
            raise ValueError(
                f"queries must be a 2-D matrix (n_queries x {self.num_terms}), got shape {shape}"
            )
        return int(shape[0])

    def _prepare_queries(self, queries: Any, row_offset: int = 0) -> sp.csr_matrix:
        """Validate a block of queries and return it as canonical float32 CSR."""
        if not sp.issparse(queries):
            queries = np.asarray(queries)
        if queries.ndim != 2:
            raise ValueError(
                f"queries must be a 2-D matrix (n_queries x {self.num_terms}), "
                f"got shape {queries.shape}"
            )
        if queries.shape[1] != self.num_terms:
            raise ValueError(
                f"queries have {queries.shape[1]} terms (columns) but the index has "
                f"{self.num_terms}; encode queries and documents with the same vocabulary"
            )
        return to_csr(queries, "queries", row_offset)

    # ---- persistence ---------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the index to ``path``: a ``.npz`` file, or a directory holding ``index.npz``.

        Returns the path of the written ``.npz`` file.
        """
        target = Path(path)
        if target.suffix != ".npz":
            target.mkdir(parents=True, exist_ok=True)
            target = target / _INDEX_FILE
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
        p = self._postings
        meta = {"format_version": FORMAT_VERSION, "shape": list(p.shape)}
        with open(target, "wb") as fh:
            np.savez(
                fh,
                meta=np.array(json.dumps(meta)),
                indptr=p.indptr,
                indices=p.indices,
                data=p.data,
                doc_ids=self._doc_ids,
                order=self._order,
            )
        return target

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> InvertedIndex:
        """Read an index written by :meth:`save` (the ``.npz`` file or its directory)."""
        source = Path(path)
        if source.is_dir():
            source = source / _INDEX_FILE
        if not source.is_file():
            raise FileNotFoundError(
                f"no saved index at {source}; pass the .npz file or the directory given to save()"
            )
        try:
            with np.load(source, allow_pickle=False) as npz:
                arrays = {name: npz[name] for name in npz.files}
        except (zipfile.BadZipFile, ValueError, OSError) as err:
            raise ValueError(f"{source} is not a readable index file: {err}") from err
        missing = {"meta", "indptr", "indices", "data", "doc_ids"} - set(arrays)
        if missing:
            raise ValueError(f"{source} is not an InvertedIndex file (missing {sorted(missing)})")
        meta = json.loads(str(arrays["meta"]))
        version = meta.get("format_version")
        if version not in (1, FORMAT_VERSION):
            raise ValueError(
                f"{source} has index format version {version}; this code reads version "
                f"{FORMAT_VERSION}. Rebuild the index with this version of lightning_mlsr."
            )
        if version == FORMAT_VERSION and "order" not in arrays:
            raise ValueError(f"{source} is not an InvertedIndex file (missing ['order'])")
        try:
            csc = sp.csc_matrix(
                (arrays["data"], arrays["indices"], arrays["indptr"]), shape=tuple(meta["shape"])
            )
            csc.check_format(full_check=True)  # out-of-range postings would crash the kernel
            if csc.dtype != np.float32:
                raise ValueError(f"weights are {csc.dtype}, expected float32")
            doc_ids = normalise_doc_ids(arrays["doc_ids"], csc.shape[0])
            order = arrays.get("order")  # version 1: rows as given, permuted on load
            if order is not None and not np.array_equal(np.sort(order), np.arange(csc.shape[0])):
                raise ValueError("its row order is not a permutation of the documents")
        except (ValueError, TypeError, KeyError) as err:
            raise ValueError(f"{source} holds a corrupt index: {err}") from err
        return cls(csc, doc_ids, order)
