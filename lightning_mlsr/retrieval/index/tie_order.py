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
    if keys.dtype.kind in "iu" and (keys.size == 0 or keys.min() >= 0):
        order = _decimal_text_order(keys)
        if order is not None:
            return order
    if keys.dtype.kind != "U":
        keys = keys.astype(str)
    return np.argsort(keys, kind="stable")[::-1].astype(np.int64)


_POW10 = 10 ** np.arange(20, dtype=np.uint64)  # 1 .. 10**19


def _decimal_text_order(ids: np.ndarray) -> np.ndarray | None:
    """:func:`tie_order` of non-negative integer ids without writing them as text (``str``
    of an int64 is 84 bytes per id, 8 MiB for 100k ids, and was the largest transient of an
    index build): the decimal strings of ``ids`` compare as their digits left-aligned to a
    common width (``"19" < "2"`` as 190 < 200), a shorter string first where one is a prefix
    of the other (``"1" < "10"``). Sorted descending directly (on the complements), so the
    extra memory is the aligned keys, the digit counts and the order. None for ids of 20
    digits (aligned, they would overflow uint64).

    Shape: (n,) non-negative integers -> (n,) int64 row indices
    """
    if ids.size == 0:
        return np.empty(0, dtype=np.int64)
    # exact unsigned comparisons and products (non-negative int64: the same bits)
    ids = ids.view(np.uint64) if ids.dtype == np.int64 else ids.astype(np.uint64)
    digits = np.ones(ids.shape, dtype=np.uint8)  # decimal digits of each id
    for power in _POW10[1:]:
        if power > ids.max():
            break
        digits += ids >= power
    width = int(digits.max())
    if width >= 20:
        return None
    aligned = ids * _POW10[width - digits]  # one (n,) uint64 array
    np.invert(aligned, out=aligned)  # descending = ascending of the complements
    np.invert(digits, out=digits)
    return np.lexsort((digits, aligned))


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
