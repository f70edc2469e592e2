"""Integer impacts: the quantized weights that search engines index, and their checks.

Engines built for learned sparse retrieval (Anserini's impact search, PISA's ``quantized``
scorer) store one non-negative integer per (document, term) and score a document by
``sum(query impact * document impact)`` over shared terms. :func:`quantize` makes those
integers from float term weights exactly as :mod:`lightning_mlsr.training.callbacks.vector_writer` does for its JSONL
(``round(weight * scale)``, entries that round to 0 dropped), so the project's exact index
run on the quantized matrices gives the scores an engine must return.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

from lightning_mlsr.retrieval.index.inputs import to_csr

__all__ = [
    "MAX_EXACT_SCORE",
    "check_impacts",
    "check_ids",
    "max_score_bound",
    "quantize",
    "terms_for",
]

#: Integers up to 2**24 are exact in float32, the type both engines and our index score in.
MAX_EXACT_SCORE = 2**24


def quantize(matrix: Any, scale: float = 100.0) -> sp.csr_matrix:
    """``round(weight * scale)`` of every entry, zeros dropped, as float32 CSR of integers.

    Shape: (n_rows, n_terms) -> (n_rows, n_terms)
    """
    if not scale > 0:
        raise ValueError(f"scale must be positive, got {scale}")
    csr = to_csr(matrix, "weights")
    out = csr.copy()
    out.data = np.rint(csr.data.astype(np.float64) * scale).astype(np.float32)
    out.eliminate_zeros()
    return out


def check_impacts(matrix: Any, what: str) -> sp.csr_matrix:
    """Canonical float32 CSR of ``matrix`` after checking it holds non-negative integers no
    larger than :data:`MAX_EXACT_SCORE`.

    Raises:
        ValueError: naming the first row with a fractional weight (quantize it first), or
            with an impact above ``2**24``: float32, which the matrices and the engines'
            scores are held in, has no exact integers beyond it (Anserini fails on such a
            collection with a Java trace; PISA accepts it and returns inexact scores).
    """
    csr = to_csr(matrix, what)
    fractional = csr.data != np.rint(csr.data)
    if fractional.any():
        pos = int(np.argmax(fractional))
        raise ValueError(
            f"{what} row {_row_of(csr, pos)} has the fractional weight {float(csr.data[pos])!r} "
            f"at term {int(csr.indices[pos])}; engines index integer impacts: pass "
            "lightning_mlsr.retrieval.index.engines.quantize(weights, scale) instead."
        )
    if csr.nnz and float(csr.data.max()) > MAX_EXACT_SCORE:
        pos = int(np.argmax(csr.data))
        raise ValueError(
            f"{what} row {_row_of(csr, pos)} has the impact {float(csr.data[pos]):.0f} at term "
            f"{int(csr.indices[pos])}, above 2**24 = {MAX_EXACT_SCORE}, the largest integer "
            "float32 holds exactly (engines score in float32: Anserini fails on it, PISA "
            "returns inexact scores). Quantize with a smaller scale (impact = round(weight * "
            "scale); --scale on the command line)"
        )
    return csr


def _row_of(csr: sp.csr_matrix, pos: int) -> int:
    return int(np.searchsorted(csr.indptr, pos, side="right")) - 1


def max_score_bound(queries: sp.csr_matrix, docs: sp.csr_matrix) -> float:
    """An upper bound of any query-document score: sum over query terms of the largest
    document impact of the term, maximised over queries."""
    if queries.shape[0] == 0 or docs.nnz == 0:
        return 0.0
    col_max = np.zeros(docs.shape[1], dtype=np.float64)
    np.maximum.at(col_max, docs.indices, docs.data.astype(np.float64))
    q = sp.csr_matrix(queries, dtype=np.float64)
    return float((q @ col_max).max())


def check_ids(ids: Sequence[Any] | np.ndarray, n_rows: int, what: str) -> list[str]:
    """Ids as strings, one per row, unique and without whitespace (engines' files are
    whitespace- and line-delimited)."""
    out = [str(i) for i in ids]
    if len(out) != n_rows:
        raise ValueError(f"{what}: {len(out)} ids for {n_rows} rows")
    for i in out:
        if not i or any(c.isspace() for c in i):
            raise ValueError(
                f"{what}: id {i!r} is empty or holds whitespace, which the engines' "
                "line- and whitespace-delimited files cannot carry; rename it."
            )
    seen: set[str] = set()
    for i in out:
        if i in seen:
            raise ValueError(f"{what}: ids must be unique; {i!r} occurs more than once")
        seen.add(i)
    return out


def terms_for(n_terms: int, vocab: Sequence[str] | None = None) -> list[str]:
    """One engine term per column: the vocabulary's strings, or the column numbers.

    Raises:
        ValueError: the vocabulary's length differs from the matrix width, or a term is
            empty, holds whitespace or repeats (engines would merge or split it).
    """
    if vocab is None:
        return [str(t) for t in range(n_terms)]
    terms = list(vocab)
    if len(terms) != n_terms:
        raise ValueError(
            f"the vocabulary has {len(terms)} terms but the vectors have {n_terms} columns; "
            "name the vocabulary of the model that encoded them"
        )
    seen: set[str] = set()
    for col, term in enumerate(terms):
        if not term or any(c.isspace() for c in term) or term in seen:
            raise ValueError(
                f"vocabulary term {col} ({term!r}) is empty, holds whitespace or repeats an "
                "earlier term; engines index whitespace-separated, unique terms"
            )
        seen.add(term)
    return terms
