"""Validation and small helpers shared by the analysis functions."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

__all__ = ["active_mask", "as_csr", "check_vocab", "require_rows", "row_top_ids"]


def as_csr(matrix: Any, name: str = "docs") -> sp.csr_matrix:
    """Validate a term-weight matrix and return it as CSR without explicit zeros.

    Negative or NaN weights mean the matrix is not the output of a sparse head
    (``log(1 + relu(.))`` is non-negative), so every statistic would be wrong; fail loudly.
    """
    if sp.issparse(matrix):
        csr = sp.csr_matrix(matrix, copy=True)
    else:
        array = np.asarray(matrix)
        if array.ndim != 2:
            raise ValueError(
                f"{name} must be a 2-D (n_docs, V) matrix of term weights, got shape "
                f"{array.shape}; stack per-document vectors into one matrix first."
            )
        csr = sp.csr_matrix(array)
    if csr.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n_docs, V), got shape {csr.shape}.")
    if csr.nnz and np.isnan(csr.data).any():
        raise ValueError(f"{name} contains NaN weights; check the encoder output.")
    if csr.nnz and (csr.data < 0).any():
        raise ValueError(
            f"{name} contains negative weights (min {csr.data.min():.4g}); expected "
            "non-negative term weights such as log(1 + relu(logits))."
        )
    csr.eliminate_zeros()
    csr.sort_indices()
    return csr


def active_mask(csr: sp.csr_matrix) -> sp.csr_matrix:
    """(n, V) 0/1 float matrix of active terms, same sparsity pattern as ``csr``."""
    return sp.csr_matrix(
        (np.ones_like(csr.data, dtype=np.float64), csr.indices, csr.indptr), shape=csr.shape
    )


def require_rows(csr: sp.csr_matrix, name: str = "docs") -> None:
    if csr.shape[0] == 0:
        raise ValueError(f"{name} has no rows; every statistic over documents is undefined.")


def check_vocab(vocab: Sequence[str], n_terms: int) -> None:
    if len(vocab) < n_terms:
        raise ValueError(
            f"vocab has {len(vocab)} tokens but the matrix has {n_terms} term columns; pass "
            "the vocabulary of the model that produced it, e.g. "
            "tokenizer.convert_ids_to_tokens(range(V))."
        )


def row_top_ids(csr: sp.csr_matrix, row: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Ids and weights of the ``k`` largest weights in one row, ties broken by lower id."""
    start, end = csr.indptr[row], csr.indptr[row + 1]
    ids, weights = csr.indices[start:end], csr.data[start:end]
    order = np.lexsort((ids, -weights))[:k]
    return ids[order], weights[order]
