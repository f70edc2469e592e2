"""Co-activation: how much documents (or terms) share active terms."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp

from lightning_mlsr.analysis.inputs import active_mask, as_csr, require_rows

__all__ = ["EXACT_MAX_DOCS", "Measure", "coactivation_matrix", "coactivation_score"]

Measure = Literal["jaccard", "pmi", "npmi", "count"]

#: Above this many (non-empty) documents ``coactivation_score`` samples pairs instead of
#: computing all of them; all pairs of 2000 documents is a 2000 x 2000 sparse product.
EXACT_MAX_DOCS = 2000


def coactivation_matrix(
    docs: Any,
    terms: Sequence[int] | np.ndarray | None = None,
    top_n: int = 30,
    measure: Measure = "jaccard",
) -> tuple[np.ndarray, np.ndarray]:
    """Pairwise co-activation of terms across documents.

    ``terms`` picks the term ids; by default the ``top_n`` most frequently active terms
    (ties by lower id; never-active terms are left out, so fewer may come back). With
    ``N`` documents (empty ones included), ``c_i`` documents activating term i and
    ``c_ij`` activating both:

    - ``count``: ``c_ij`` (the diagonal is ``c_i``);
    - ``jaccard``: ``c_ij / (c_i + c_j - c_ij)`` (diagonal 1);
    - ``pmi``: ``ln(c_ij N / (c_i c_j))``, ``-inf`` for terms that never co-occur;
    - ``npmi``: ``pmi / -ln(c_ij / N)`` in [-1, 1], -1 for never, 1 for always together.

    Entries involving a never-active term (possible only with explicit ``terms``) are NaN.

    Shape: (n_docs, V) -> ((n, n) float64, (n,) int64 term ids).
    """
    csr = as_csr(docs)
    require_rows(csr)
    n_docs = csr.shape[0]
    binary = active_mask(csr)
    counts = np.asarray(binary.sum(axis=0)).ravel()  # (V,)
    if terms is None:
        if top_n < 0:
            raise ValueError(f"top_n must be >= 0, got {top_n}.")
        order = np.lexsort((np.arange(counts.size), -counts))
        term_ids = order[: min(top_n, int((counts > 0).sum()))]
    else:
        term_ids = np.asarray(terms, dtype=np.int64).reshape(-1)
        bad = term_ids[(term_ids < 0) | (term_ids >= csr.shape[1])]
        if bad.size:
            raise ValueError(
                f"term ids {bad.tolist()} are outside the vocabulary [0, {csr.shape[1]})."
            )
    term_ids = term_ids.astype(np.int64)
    sub = binary[:, term_ids]  # (n_docs, n)
    joint = np.asarray((sub.T @ sub).todense(), dtype=np.float64)  # (n, n) c_ij
    c = np.diag(joint).copy()  # (n,) c_i
    undefined = (c[:, None] == 0) | (c[None, :] == 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        if measure == "count":
            out = joint
        elif measure == "jaccard":
            out = joint / (c[:, None] + c[None, :] - joint)
        elif measure in ("pmi", "npmi"):
            out = np.log(joint * n_docs / np.outer(c, c))
            if measure == "npmi":
                p_joint = joint / n_docs
                out = np.where(joint == 0, -1.0, out / -np.log(p_joint))
                out = np.where(p_joint == 1.0, 1.0, out)  # both always active: 0/0 -> 1
        else:
            raise ValueError(
                f"unknown measure {measure!r}; use 'jaccard', 'pmi', 'npmi' or 'count'."
            )
    out = np.where(undefined & (measure != "count"), np.nan, out)
    return out.astype(np.float64), term_ids


def coactivation_score(
    docs: Any,
    n_pairs: int = 100_000,
    seed: int = 0,
    exact: bool | None = None,
) -> float:
    """Mean pairwise overlap of active terms between unrelated images.

    The mean Jaccard overlap ``|A_i & A_j| / |A_i | A_j|`` of the active-term sets of two
    distinct documents drawn at random: near 0 when each image activates its own words,
    high when the same terms fire for every image. One number per model.

    Exact over all pairs (a sparse binary product) when there are at most
    ``EXACT_MAX_DOCS`` documents or ``exact=True``; otherwise the mean over ``n_pairs``
    pairs sampled uniformly with ``seed``. Empty documents have no active-term set and are
    left out (count them with ``sparsity_stats``); NaN if fewer than two remain.

    Shape: (n_docs, V) -> scalar.
    """
    csr = as_csr(docs)
    binary = active_mask(csr)
    sizes = np.diff(binary.indptr)
    binary = binary[sizes > 0]
    sizes = sizes[sizes > 0].astype(np.float64)
    m = binary.shape[0]
    if m < 2:
        return math.nan
    if exact is None:
        exact = m <= EXACT_MAX_DOCS
    if exact:
        inter = sp.triu(binary @ binary.T, k=1).tocoo()  # (m, m), pairs i < j only
        union = sizes[inter.row] + sizes[inter.col] - inter.data
        return float((inter.data / union).sum() / (m * (m - 1) / 2))
    if n_pairs < 1:
        raise ValueError(f"n_pairs must be >= 1, got {n_pairs}.")
    rng = np.random.default_rng(seed)
    first = rng.integers(0, m, size=n_pairs)
    second = rng.integers(0, m - 1, size=n_pairs)
    second += second >= first  # uniform over j != i
    total = 0.0
    chunk = 16_384
    for start in range(0, n_pairs, chunk):
        i, j = first[start : start + chunk], second[start : start + chunk]
        inter = np.asarray(binary[i].multiply(binary[j]).sum(axis=1)).ravel()
        total += float((inter / (sizes[i] + sizes[j] - inter)).sum())
    return total / n_pairs
