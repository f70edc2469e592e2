"""Tie-insensitive comparison of a top-k result with exact scoring.

Engines order documents of equal score differently (Lucene by its internal doc id, PISA
as its heap leaves them, the project's index by row), so two exact engines may return
different documents at the cut-off. These checks do not depend on that order: a result is
an exact top-k when its scores equal the exact top-k scores rank by rank and every
returned document really has the score reported for it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from lightning_mlsr.retrieval.index.inputs import to_csr

__all__ = ["exact_topk_problems", "rescore", "tie_aware_recall"]


def rescore(queries: Any, docs: Any, indices: np.ndarray) -> np.ndarray:
    """Exact float64 scores of the returned documents (NaN where an index is ``-1``).

    Shape: queries (n_queries, V), docs (n_docs, V), indices (n_queries, k) -> (n_queries, k)
    """
    q = sp.csr_matrix(to_csr(queries, "queries"), dtype=np.float64)
    d = sp.csr_matrix(to_csr(docs, "docs"), dtype=np.float64)
    out = np.full(indices.shape, np.nan)
    for r in range(indices.shape[0]):
        hit = indices[r] >= 0
        if hit.any():
            out[r, hit] = (d[indices[r, hit]] @ q[r].T).toarray().ravel()
    return out


def exact_topk_problems(
    exact_scores: np.ndarray,
    scores: np.ndarray,
    indices: np.ndarray,
    queries: Any,
    docs: Any,
    limit: int = 5,
) -> list[str]:
    """Why ``(scores, indices)`` is not an exact top-k (empty when it is).

    ``exact_scores`` are the exact top-k scores (best first, ``-inf`` padded). Checked per
    query: the scores equal them at every rank; every returned document's exact score equals
    the score reported; no document twice; padding only after the last hit.
    """
    problems: list[str] = []
    true = rescore(queries, docs, indices)
    for r in range(scores.shape[0]):
        hit = indices[r] >= 0
        if not np.array_equal(scores[r], exact_scores[r]):
            rank = int(np.argmax(scores[r] != exact_scores[r]))
            problems.append(
                f"query row {r}, rank {rank + 1}: score {scores[r, rank]} where exact "
                f"scoring gives {exact_scores[r, rank]}"
            )
        elif not np.array_equal(true[r, hit], scores[r, hit].astype(np.float64)):
            rank = int(np.argmax(true[r, hit] != scores[r, hit]))
            problems.append(
                f"query row {r}, rank {rank + 1}: document row {indices[r, rank]} reported "
                f"with {scores[r, rank]} but scores {true[r, rank]}"
            )
        elif len(set(indices[r, hit].tolist())) != int(hit.sum()) or hit[int(hit.sum()) :].any():
            problems.append(f"query row {r}: a document twice, or a hit after padding")
        if len(problems) >= limit:
            break
    return problems


def tie_aware_recall(
    exact_scores: np.ndarray, indices: np.ndarray, queries: Any, docs: Any, rtol: float = 1e-5
) -> float:
    """Share of the exact top-k slots filled with a document that belongs in some exact
    top-k: its exact score is at least the exact k-th score (documents tied at the cut-off
    count whichever of them is returned). 1.0 for an exact engine. A float32 engine's sums
    differ from the float64 rescoring in the last bits, so "at least" allows a relative
    ``rtol`` below the k-th score.

    Shape: exact_scores, indices (n_queries, k)
    """
    true = rescore(queries, docs, indices)
    hits, total = 0, 0
    for r in range(exact_scores.shape[0]):
        valid = exact_scores[r] > -np.inf
        n = int(valid.sum())
        if n == 0:
            continue
        kth = float(exact_scores[r, n - 1]) * (1 - rtol)
        returned = {int(i) for i, s in zip(indices[r], true[r]) if i >= 0 and s >= kth and s > 0}
        hits += min(len(returned), n)
        total += n
    return hits / total if total else 1.0
