"""Input checks shared by the exact and the Seismic index: weights, document ids, ``k``.

Errors name the offending row, term or id, so a bad encoder output is found at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

__all__ = ["check_k", "check_weights", "normalise_doc_ids", "to_csr"]


def to_csr(matrix: Any, what: str, row_offset: int = 0) -> sp.csr_matrix:
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
        check_weights(csr, what, row_offset)
        csr.eliminate_zeros()
    else:
        check_weights(csr, what, row_offset)
    return csr


def check_weights(csr: sp.csr_matrix, what: str, row_offset: int = 0) -> None:
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


def normalise_doc_ids(doc_ids: Sequence[Any] | np.ndarray | None, n_docs: int) -> np.ndarray:
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


def check_k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    return int(k)
