"""Exact inverted index over sparse non-negative term-weight vectors, with top-k search.

Documents and queries are rows of a scipy sparse matrix whose columns are vocabulary terms
(the output of a sparse head). The index keeps the document matrix in CSC form, which *is*
an inverted index: column ``t`` lists the documents containing term ``t`` and their weights.

Search is exact dot-product scoring, term at a time: for every query term, walk its posting
list and add ``w_query * w_doc`` into a dense per-thread accumulator, then keep the top ``k``
documents with a bounded heap. Only documents with a score > 0 (at least one shared term with
positive weights) are returned; missing slots are padded with score ``-inf`` and index ``-1``.
Ordering is by descending score, ties by ascending document index, identical for the compiled
(``method="numba"``) and the reference (``method="scipy"``) paths.

This module imports neither torch nor lightning: it is used from notebooks and tested alone.
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numba
import numpy as np
import scipy.sparse as sp
from numba import njit, prange

__all__ = [
    "FORMAT_VERSION",
    "InvertedIndex",
    "SeismicIndex",
    "read_trec_run",
    "run_from_topk",
    "write_trec_run",
]

#: Version of the on-disk layout written by :meth:`InvertedIndex.save`.
FORMAT_VERSION = 1
_INDEX_FILE = "index.npz"  # file name used when saving into a directory
_METHODS = ("numba", "scipy")
_SCIPY_BLOCK = 2**25  # entries of the (queries x documents) score block of method="scipy"

Run = dict[str, dict[str, float]]


# --------------------------------------------------------------------------------------------
# Compiled term-at-a-time scorer
# --------------------------------------------------------------------------------------------


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
def _taat_topk(
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


def _unsigned(indices: np.ndarray) -> np.ndarray:
    """Same bytes as unsigned integers (scipy indices are never negative), without a copy."""
    return indices.view(np.uint32 if indices.dtype == np.int32 else np.uint64)


# --------------------------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------------------------


def _to_csr(matrix: Any, what: str, row_offset: int = 0) -> sp.csr_matrix:
    """Coerce a scipy sparse matrix or dense 2-D array to canonical float32 CSR, validated.

    A float32 CSR input that is already canonical (sorted, no duplicates, no stored zeros) is
    returned as it is, without a copy; anything else is converted into new arrays, so the
    caller's matrix is never modified. ``row_offset`` is added to row numbers in error
    messages (for batches of a larger matrix).
    """
    if sp.issparse(matrix):
        with np.errstate(over="ignore"):  # values too large for float32 are reported below
            csr = sp.csr_matrix(matrix, dtype=np.float32)
        shared = any(
            np.shares_memory(getattr(csr, name), getattr(matrix, name))
            for name in ("data", "indices", "indptr")
            if hasattr(matrix, name)
        )
    else:
        dense = np.asarray(matrix)
        if dense.ndim != 2:
            raise ValueError(
                f"{what} must be a 2-D matrix (rows x vocabulary terms), got shape {dense.shape}"
            )
        if dense.dtype.kind not in "biuf":
            raise ValueError(f"{what} must hold real numbers, got dtype {dense.dtype}")
        with np.errstate(over="ignore"):
            csr = sp.csr_matrix(dense.astype(np.float32, copy=False))
        shared = False
    if not csr.has_canonical_format or not csr.data.all():
        if shared:
            csr = csr.copy()
        csr.sum_duplicates()  # also sorts the indices of each row
        _check_weights(csr, what, row_offset)
        csr.eliminate_zeros()
    else:
        _check_weights(csr, what, row_offset)
    return csr


def _check_weights(csr: sp.csr_matrix, what: str, row_offset: int = 0) -> None:
    """Raise ValueError naming the first row with a non-finite or negative weight."""
    bad_finite = ~np.isfinite(csr.data)
    for mask, problem in (
        (bad_finite, "a NaN or infinite weight (or one too large for float32)"),
        (csr.data < 0, "a negative weight"),
    ):
        if mask.any():
            pos = int(np.argmax(mask))
            row = int(np.searchsorted(csr.indptr, pos, side="right")) - 1
            col = int(csr.indices[pos])
            raise ValueError(
                f"{what} row {row + row_offset} has {problem} at term {col}: "
                f"{csr.data[pos]!r}. Sparse term weights must be finite and >= 0."
            )


def _normalise_doc_ids(doc_ids: Sequence[Any] | np.ndarray | None, n_docs: int) -> np.ndarray:
    if doc_ids is None:
        return np.arange(n_docs, dtype=np.int64)
    ids = np.asarray(doc_ids)
    if ids.dtype == object:
        ids = ids.astype(str)
    if ids.ndim != 1:
        raise ValueError(f"doc_ids must be one-dimensional, got shape {ids.shape}")
    if len(ids) != n_docs:
        raise ValueError(
            f"doc_ids has {len(ids)} entries but the document matrix has {n_docs} rows"
        )
    if ids.dtype.kind not in "iuU":
        raise ValueError(f"doc_ids must be integers or strings, got dtype {ids.dtype}")
    unique, counts = np.unique(ids, return_counts=True)
    if len(unique) != n_docs:
        dup = unique[counts > 1]
        raise ValueError(
            f"doc_ids must be unique; {len(dup)} ids occur more than once, e.g. {dup[0]!r}"
        )
    return ids


def _check_k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    return int(k)


# --------------------------------------------------------------------------------------------
# The index
# --------------------------------------------------------------------------------------------


class InvertedIndex:
    """Exact inverted index over sparse non-negative document vectors.

    Build it with :meth:`from_matrix` (or :meth:`load`). The postings are a scipy CSC matrix of
    shape ``(n_docs, n_terms)``: column ``t`` is term ``t``'s posting list (document indices in
    ascending order and their float32 weights).
    """

    def __init__(self, postings: sp.csc_matrix, doc_ids: np.ndarray) -> None:
        """Wrap already validated CSC postings; prefer :meth:`from_matrix`."""
        if not sp.isspmatrix_csc(postings) or postings.dtype != np.float32:
            raise TypeError("postings must be a float32 scipy.sparse.csc_matrix")
        self._postings = postings
        self._doc_ids = doc_ids
        self._p_indptr = postings.indptr.astype(np.int64)  # (n_terms + 1,), tiny

    @classmethod
    def from_matrix(
        cls, docs: Any, doc_ids: Sequence[Any] | np.ndarray | None = None
    ) -> InvertedIndex:
        """Index the rows of ``docs`` (any scipy sparse format, or a dense 2-D array).

        Args:
            docs: ``(n_docs, n_terms)`` non-negative finite term weights, one row per document.
            doc_ids: one unique id (int or str) per row; defaults to ``0..n_docs-1``.

        Raises:
            ValueError: a negative/NaN/infinite weight (the message names the row), wrong
                ``doc_ids`` length, or duplicate ``doc_ids``.
        """
        csr = _to_csr(docs, "docs")
        ids = _normalise_doc_ids(doc_ids, csr.shape[0])
        csc = csr.tocsc()
        del csr
        csc.sort_indices()
        return cls(csc, ids)

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
        """The ``(n_docs, n_terms)`` CSC matrix; do not modify it in place."""
        return self._postings

    @property
    def posting_lengths(self) -> np.ndarray:
        """Number of documents containing each term. Shape: (num_terms,) int64."""
        return np.diff(self._p_indptr)

    @property
    def size_bytes(self) -> int:
        """Bytes held by the postings arrays and the doc ids."""
        p = self._postings
        return int(p.data.nbytes + p.indices.nbytes + p.indptr.nbytes + self._doc_ids.nbytes)

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
            ``(scores, indices)``: float32 and int64, best first, ties by ascending document
            index; documents with score 0 are never returned and missing slots are
            ``(-inf, -1)``.

        Shape: queries (n_queries, num_terms) -> scores, indices (n_queries, k)
        """
        k = _check_k(k)
        if method not in _METHODS:
            raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
        if batch_size is None:
            batch_size = 1024 if method == "numba" else max(1, _SCIPY_BLOCK // max(len(self), 1))
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        max_threads = numba.config.NUMBA_NUM_THREADS  # type: ignore[attr-defined]
        n_workers = numba.get_num_threads() if num_threads is None else num_threads
        if isinstance(n_workers, bool) or not isinstance(n_workers, int):
            raise ValueError(f"num_threads must be an integer, got {num_threads!r}")
        if not 1 <= n_workers <= max_threads:
            raise ValueError(f"num_threads must be in [1, {max_threads}], got {num_threads!r}")
        n_queries = self._num_rows(queries)
        if sp.issparse(queries) and queries.format != "csr":
            queries = queries.tocsr()  # COO and friends cannot be sliced into batches
        scores = np.full((n_queries, k), -np.inf, dtype=np.float32)
        indices = np.full((n_queries, k), -1, dtype=np.int64)
        if n_queries == 0 or len(self) == 0:
            return scores, indices

        if method == "numba":
            n_workers = min(n_workers, n_queries)
            acc = np.zeros((n_workers, len(self)), dtype=np.float32)
            touched = np.empty((n_workers, len(self)), dtype=np.int32)

        for start in range(0, n_queries, batch_size):
            stop = min(start + batch_size, n_queries)
            q = self._prepare_queries(queries[start:stop], row_offset=start)
            if method == "numba":
                workers = min(n_workers, stop - start)
                previous = numba.get_num_threads()
                numba.set_num_threads(workers)
                try:
                    _taat_topk(
                        self._p_indptr,
                        _unsigned(self._postings.indices),
                        self._postings.data,
                        q.indptr.astype(np.int64, copy=False),
                        _unsigned(q.indices),
                        q.data,
                        k,
                        acc[:workers],
                        touched[:workers],
                        scores[start:stop],
                        indices[start:stop],
                    )
                finally:
                    numba.set_num_threads(previous)
            else:
                self._search_scipy_block(q, k, scores[start:stop], indices[start:stop])
        return scores, indices

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
        return _to_csr(queries, "queries", row_offset)

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
        if version != FORMAT_VERSION:
            raise ValueError(
                f"{source} has index format version {version}; this code reads version "
                f"{FORMAT_VERSION}. Rebuild the index with this version of lightning_mlsr."
            )
        try:
            csc = sp.csc_matrix(
                (arrays["data"], arrays["indices"], arrays["indptr"]), shape=tuple(meta["shape"])
            )
            csc.check_format(full_check=True)  # out-of-range postings would crash the kernel
            if csc.dtype != np.float32:
                raise ValueError(f"weights are {csc.dtype}, expected float32")
            doc_ids = _normalise_doc_ids(arrays["doc_ids"], csc.shape[0])
        except (ValueError, TypeError, KeyError) as err:
            raise ValueError(f"{source} holds a corrupt index: {err}") from err
        return cls(csc, doc_ids)


# --------------------------------------------------------------------------------------------
# Approximate search with Seismic (optional dependency)
# --------------------------------------------------------------------------------------------


class SeismicIndex:
    """Approximate top-k search with `pyseismic-lsr` behind the :class:`InvertedIndex` API.

    Terms are addressed by column number. Scores are Seismic's (float32 dot products of its
    possibly pruned postings); results are best first, padded with ``(-inf, -1)``.
    """

    def __init__(self, index: Any, n_docs: int, num_terms: int, doc_ids: np.ndarray) -> None:
        self._index = index
        self._n_docs = n_docs
        self._num_terms = num_terms
        self._doc_ids = doc_ids

    @staticmethod
    def _seismic() -> Any:
        try:
            import seismic
        except ImportError as err:
            raise ImportError(
                "SeismicIndex needs the optional package pyseismic-lsr: "
                "pip install 'pyseismic-lsr>=0.5' (or the project's [seismic] extra)"
            ) from err
        return seismic

    @classmethod
    def from_matrix(
        cls,
        docs: Any,
        doc_ids: Sequence[Any] | np.ndarray | None = None,
        n_postings: int = 3500,
        centroid_fraction: float = 0.1,
        summary_energy: float = 0.4,
        num_threads: int = 0,
        **build_kwargs: Any,
    ) -> SeismicIndex:
        """Build a Seismic index over the rows of ``docs`` (validated like InvertedIndex)."""
        seismic = cls._seismic()
        csr = _to_csr(docs, "docs")
        ids = _normalise_doc_ids(doc_ids, csr.shape[0])
        dataset = seismic.SeismicDataset()
        # Seismic skips empty rows; it reports our row number back as the document id.
        dataset.add_documents_by_id(
            [str(i) for i in range(csr.shape[0])],
            csr.indices.astype(np.int64),
            csr.data,
            csr.indptr.astype(np.int64),
        )
        index = seismic.SeismicIndex.build_from_dataset(
            dataset,
            n_postings=n_postings,
            centroid_fraction=centroid_fraction,
            summary_energy=summary_energy,
            num_threads=num_threads,
            **build_kwargs,
        )
        return cls(index, csr.shape[0], csr.shape[1], ids)

    def __len__(self) -> int:
        return self._n_docs

    @property
    def doc_ids(self) -> np.ndarray:
        return self._doc_ids

    @property
    def num_terms(self) -> int:
        return self._num_terms

    def search(
        self,
        queries: Any,
        k: int,
        batch_size: int = 1024,
        query_cut: int = 20,
        heap_factor: float = 0.9,
        num_threads: int = 0,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Approximate top-k; same inputs and outputs as :meth:`InvertedIndex.search`.

        Shape: queries (n_queries, num_terms) -> scores, indices (n_queries, k)
        """
        seismic = self._seismic()
        k = _check_k(k)
        string_dtype = seismic.get_seismic_string()
        if not sp.issparse(queries):
            queries = np.asarray(queries)
        if queries.ndim != 2 or queries.shape[1] != self._num_terms:
            raise ValueError(
                f"queries must have shape (n_queries, {self._num_terms}), got {queries.shape}"
            )
        if sp.issparse(queries) and queries.format != "csr":
            queries = queries.tocsr()  # COO and friends cannot be sliced into batches
        n_queries = queries.shape[0]
        scores = np.full((n_queries, k), -np.inf, dtype=np.float32)
        indices = np.full((n_queries, k), -1, dtype=np.int64)
        for start in range(0, n_queries, batch_size):
            q = _to_csr(queries[start : start + batch_size], "queries")
            rows = [r for r in range(q.shape[0]) if q.indptr[r + 1] > q.indptr[r]]
            if not rows:
                continue
            results = self._index.batch_search(
                np.array([str(r) for r in rows], dtype=string_dtype),
                [q.indices[q.indptr[r] : q.indptr[r + 1]].astype(string_dtype) for r in rows],
                [q.data[q.indptr[r] : q.indptr[r + 1]] for r in rows],
                k=k,
                query_cut=query_cut,
                heap_factor=heap_factor,
                num_threads=num_threads,
            )
            # batch_search may return queries out of order: match them by query id.
            for hits in results:
                if not hits:
                    continue
                row = start + int(hits[0][0])
                hits = sorted(((-float(s), int(d)) for _, s, d in hits))[:k]
                hits = [(-s, d) for s, d in hits if -s > 0]
                scores[row, : len(hits)] = [s for s, _ in hits]
                indices[row, : len(hits)] = [d for _, d in hits]
        return scores, indices


# --------------------------------------------------------------------------------------------
# Runs: top-k arrays <-> {qid: {docid: score}} <-> TREC run files
# --------------------------------------------------------------------------------------------


def run_from_topk(
    scores: np.ndarray,
    indices: np.ndarray,
    query_ids: Sequence[Any] | np.ndarray,
    doc_ids: Sequence[Any] | np.ndarray,
) -> Run:
    """Turn ``search`` output into a run ``{qid: {docid: score}}`` with string ids.

    Padding (index ``-1``) is skipped; a query without results maps to ``{}``.

    Shape: scores, indices (n_queries, k); query_ids (n_queries,)
    """
    scores = np.asarray(scores)
    indices = np.asarray(indices)
    if scores.shape != indices.shape or scores.ndim != 2:
        raise ValueError(
            f"scores and indices must be 2-D and of one shape, got {scores.shape} and "
            f"{indices.shape}"
        )
    if len(query_ids) != scores.shape[0]:
        raise ValueError(f"{len(query_ids)} query_ids for {scores.shape[0]} rows of results")
    doc_ids = np.asarray(doc_ids)
    if indices.size and indices.max() >= len(doc_ids):
        raise ValueError(
            f"result index {int(indices.max())} is out of range for {len(doc_ids)} doc_ids"
        )
    run: Run = {}
    for qid, row_s, row_i in zip(query_ids, scores, indices):
        qid = str(qid)
        if qid in run:
            raise ValueError(f"query id {qid!r} occurs more than once")
        valid = row_i >= 0
        run[qid] = {
            str(d): float(s) for d, s in zip(doc_ids[row_i[valid]].tolist(), row_s[valid].tolist())
        }
    return run


def _trec_order(docs: Mapping[str, float]) -> list[tuple[str, float]]:
    """trec_eval's ranking: score descending, ties by docid descending."""
    return sorted(docs.items(), key=lambda item: (item[1], item[0]), reverse=True)


def write_trec_run(
    path: str | os.PathLike[str],
    run: Mapping[Any, Mapping[Any, float]],
    tag: str = "lightning_mlsr",
) -> None:
    """Write ``qid Q0 docid rank score tag`` lines, best first (rank from 1).

    Ties are written in trec_eval's order (docid descending) so the rank column is the rank
    trec_eval will use. Scores are written with ``repr`` so :func:`read_trec_run` round-trips.
    """
    if not tag or any(c.isspace() for c in tag):
        raise ValueError(f"tag must be a non-empty string without whitespace, got {tag!r}")
    lines = []
    for qid, docs in run.items():
        qid = str(qid)
        _check_trec_id(qid, "query id")
        for rank, (docid, score) in enumerate(
            _trec_order({str(d): float(s) for d, s in docs.items()}), start=1
        ):
            _check_trec_id(docid, "document id")
            lines.append(f"{qid} Q0 {docid} {rank} {score!r} {tag}\n")
    Path(path).write_text("".join(lines), encoding="utf-8")


def _check_trec_id(value: str, what: str) -> None:
    if not value or any(c.isspace() for c in value):
        raise ValueError(f"{what} {value!r} cannot be written to a TREC run (empty or whitespace)")


def read_trec_run(path: str | os.PathLike[str]) -> Run:
    """Read a TREC run file into ``{qid: {docid: score}}``."""
    run: Run = {}
    with open(path, encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, start=1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 6:
                raise ValueError(
                    f"{path}:{line_no}: expected 'qid Q0 docid rank score tag', got {line.rstrip()!r}"
                )
            qid, _, docid, _, score, _ = fields
            try:
                value = float(score)
            except ValueError:
                raise ValueError(f"{path}:{line_no}: score {score!r} is not a number") from None
            docs = run.setdefault(qid, {})
            if docid in docs:
                raise ValueError(f"{path}:{line_no}: document {docid!r} repeated for query {qid!r}")
            docs[docid] = value
    return run
