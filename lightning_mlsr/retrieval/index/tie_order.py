"""The order in which the exact index stores its documents: ``trec_eval``'s order of ties.

Scores are tied often (short queries, quantised weights), and ``trec_eval`` ranks tied
documents by descending document id compared as strings. Storing the rows in that order lets
the kernel break ties by row number alone and keep exactly the documents ``trec_eval`` would
rank at the cut-off.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

__all__ = ["rows_to_tie_order", "tie_order"]


def tie_order(doc_ids: np.ndarray) -> np.ndarray:
    """Rows in ``trec_eval``'s order of tied documents: descending id, compared as strings
    (``strcmp`` on the run file's docno; integer ids are written as their decimal text).

    Shape: (n_docs,) ids -> (n_docs,) int64 row indices.
    """
    keys = np.asarray(doc_ids)
    if keys.dtype.kind != "U":
        keys = keys.astype(str)
    return np.argsort(keys, kind="stable")[::-1].astype(np.int64)


def rows_to_tie_order(csc: sp.csc_matrix, order: np.ndarray, chunk: int = 2**18) -> sp.csc_matrix:
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
