"""How often each term fires, and how many terms each row holds."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from lightning_mlsr.analysis.inputs import as_csr, require_rows

__all__ = [
    "activation_frequency_summary",
    "nonzeros_per_row",
    "sparsity_stats",
    "term_activation_frequency",
]


def nonzeros_per_row(matrix: Any) -> np.ndarray:
    """Number of active terms in each row (document or query).

    Shape: (n_rows, V) -> (n_rows,) int64.
    """
    return np.diff(as_csr(matrix, "matrix").indptr).astype(np.int64)


def term_activation_frequency(docs: Any) -> np.ndarray:
    """Fraction of documents in which each term is active (document frequency / n_docs).

    Terms close to 1.0 fire for almost every image: they carry no information for
    retrieval and are the co-activation the MLP-vs-MLM comparison is about.

    Shape: (n_docs, V) -> (V,) float64 in [0, 1].
    """
    csr = as_csr(docs)
    require_rows(csr)
    counts = np.bincount(csr.indices, minlength=csr.shape[1])
    return counts / csr.shape[0]


def _gini(values: np.ndarray) -> float:
    """Gini coefficient of non-negative values: 0 = all equal, -> 1 = one value holds all."""
    x = np.sort(values.astype(np.float64))
    n, total = x.size, x.sum()
    if n == 0 or total == 0:
        return math.nan
    ranks = np.arange(1, n + 1)
    return float(2.0 * np.dot(ranks, x) / (n * total) - (n + 1) / n)


def activation_frequency_summary(
    freq: np.ndarray, thresholds: Sequence[float] = (0.5, 0.9)
) -> dict[str, float | int]:
    """Scalar summary of a term activation-frequency vector, for tables and W&B.

    Keys: ``n_terms``; ``n_active_terms`` (active in at least one document);
    ``n_terms_over_{p}pct`` (active in more than p% of documents, one key per threshold);
    ``max_frequency``; ``mean_terms_per_doc`` (= sum of frequencies = mean non-zeros per
    document); and, over the *active* terms only (inactive terms would dominate, and every
    model would score about 1): ``gini`` of the frequencies, ``entropy_bits`` of the
    frequency distribution normalised to sum to 1, ``effective_terms`` = 2**entropy (how
    many equally frequent terms would give the same entropy), and frequency quantiles
    ``freq_q50``, ``freq_q90``, ``freq_q99``. Undefined values (no active term) are NaN.
    """
    freq = np.asarray(freq, dtype=np.float64)
    if freq.ndim != 1:
        raise ValueError(f"freq must be a 1-D (V,) vector, got shape {freq.shape}.")
    if freq.size and (np.isnan(freq).any() or freq.min() < 0 or freq.max() > 1):
        raise ValueError("freq must hold fractions in [0, 1]; use term_activation_frequency.")
    active = freq[freq > 0]
    summary: dict[str, float | int] = {
        "n_terms": int(freq.size),
        "n_active_terms": int(active.size),
    }
    for t in thresholds:
        summary[f"n_terms_over_{round(100 * t)}pct"] = int((freq > t).sum())
    summary["max_frequency"] = float(freq.max()) if freq.size else math.nan
    summary["mean_terms_per_doc"] = float(freq.sum())
    if active.size:
        p = active / active.sum()
        entropy = float(-(p * np.log2(p)).sum())
        q50, q90, q99 = np.quantile(active, [0.5, 0.9, 0.99])
    else:
        entropy = q50 = q90 = q99 = math.nan
    summary["gini"] = _gini(active)
    summary["entropy_bits"] = entropy
    summary["effective_terms"] = 2.0**entropy
    summary["freq_q50"] = float(q50)
    summary["freq_q90"] = float(q90)
    summary["freq_q99"] = float(q99)
    return summary


def sparsity_stats(matrix: Any) -> dict[str, float | int]:
    """Non-zeros per row of a document or query matrix, and how many rows are empty.

    Keys: ``n_rows``, ``mean_nnz``, ``median_nnz``, ``max_nnz``, ``n_empty``,
    ``frac_empty``. An empty row can never be retrieved (or retrieve anything), so it is
    reported rather than averaged away.
    """
    csr = as_csr(matrix, "matrix")
    require_rows(csr, "matrix")
    nnz = np.diff(csr.indptr)
    return {
        "n_rows": int(nnz.size),
        "mean_nnz": float(nnz.mean()),
        "median_nnz": float(np.median(nnz)),
        "max_nnz": int(nnz.max()),
        "n_empty": int((nnz == 0).sum()),
        "frac_empty": float((nnz == 0).mean()),
    }
