"""Approximate top-k search with Seismic (optional ``pyseismic-lsr``), behind the
:class:`~lightning_mlsr.retrieval.index.InvertedIndex` API."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

from lightning_mlsr.retrieval.index.inputs import check_k, normalise_doc_ids, to_csr

__all__ = ["SeismicIndex"]


class SeismicIndex:
    """Approximate top-k search with `pyseismic-lsr` behind the :class:`InvertedIndex` API.

    Terms are addressed by column number. Scores are Seismic's (float32 dot products of its
    possibly pruned postings); results are best first, padded with ``(-inf, -1)``.

    ``last_engine_seconds``: the wall time of the last :meth:`search` spent inside Seismic's
    own ``batch_search`` calls, without the conversion of queries and results around them
    (benchmarks report both).
    """

    def __init__(self, index: Any, n_docs: int, num_terms: int, doc_ids: np.ndarray) -> None:
        self._index = index
        self._n_docs = n_docs
        self._num_terms = num_terms
        self._doc_ids = doc_ids
        self.last_engine_seconds = 0.0

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
        csr = to_csr(docs, "docs")
        ids = normalise_doc_ids(doc_ids, csr.shape[0])
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
        k = check_k(k)
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
        engine_seconds = 0.0
        for start in range(0, n_queries, batch_size):
            q = to_csr(queries[start : start + batch_size], "queries")
            rows = [r for r in range(q.shape[0]) if q.indptr[r + 1] > q.indptr[r]]
            if not rows:
                continue
            ids = np.array([str(r) for r in rows], dtype=string_dtype)
            terms = [q.indices[q.indptr[r] : q.indptr[r + 1]].astype(string_dtype) for r in rows]
            values = [q.data[q.indptr[r] : q.indptr[r + 1]] for r in rows]
            started = time.perf_counter()
            results = self._index.batch_search(
                ids,
                terms,
                values,
                k=k,
                query_cut=query_cut,
                heap_factor=heap_factor,
                num_threads=num_threads,
            )
            engine_seconds += time.perf_counter() - started
            # batch_search may return queries out of order: match them by query id.
            for hits in results:
                if not hits:
                    continue
                row = start + int(hits[0][0])
                hits = sorted(((-float(s), int(d)) for _, s, d in hits))[:k]
                hits = [(-s, d) for s, d in hits if -s > 0]
                scores[row, : len(hits)] = [s for s, _ in hits]
                indices[row, : len(hits)] = [d for _, d in hits]
        self.last_engine_seconds = engine_seconds
        return scores, indices
