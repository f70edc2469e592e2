"""Exact dense inner-product top-k search (the dense baseline's "index").

faiss ``IndexFlatIP`` scores every document; it is imported lazily, so importing this module
stays cheap. Imports neither torch nor lightning.
"""

from __future__ import annotations

import numpy as np

from lightning_mlsr.retrieval.index.inputs import check_k

__all__ = ["dense_search"]


def dense_search(docs: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product top-k of every query with faiss ``IndexFlatIP``.

    Unlike :meth:`InvertedIndex.search` every document is a candidate (scores may be <= 0);
    rows are best first, and faiss pads with index ``-1`` when fewer than ``k`` exist.

    Shape: docs ``(N, d)``, queries ``(Q, d)`` -> scores, indices ``(Q, min(k, N))``.
    """
    import faiss

    n = min(check_k(k), len(docs))
    if n == 0 or len(queries) == 0:
        return np.zeros((len(queries), n), np.float32), np.zeros((len(queries), n), np.int64)
    index = faiss.IndexFlatIP(docs.shape[1])
    index.add(np.ascontiguousarray(docs, dtype=np.float32))
    scores, indices = index.search(np.ascontiguousarray(queries, dtype=np.float32), n)
    return scores, indices.astype(np.int64)
