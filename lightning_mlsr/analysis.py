"""Vocabulary-level analysis of learned sparse representations.

Every function here takes a document matrix ``docs`` of shape ``(n_docs, V)`` holding
non-negative term weights (a scipy sparse matrix, or anything ``np.asarray`` turns into a
2-D array) and, where words are shown, a vocabulary ``vocab`` mapping term id -> token
string (e.g. ``tokenizer.convert_ids_to_tokens(range(V))``). A term is *active* in a
document when its weight is strictly positive.

The questions they answer (BRIEF.md, finding 3): which terms fire for almost every image,
how much unrelated images overlap in their active terms, and whether an image's top terms
are the words of its caption. Pure numpy/scipy: no torch, no Lightning, so notebooks and
W&B callbacks can import it cheaply.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
import scipy.sparse as sp

__all__ = [
    "activation_frequency_summary",
    "caption_overlap",
    "coactivation_matrix",
    "coactivation_score",
    "compare_models",
    "format_comparison_table",
    "nonzeros_per_row",
    "sparsity_stats",
    "term_activation_frequency",
    "top_terms",
]

Measure = Literal["jaccard", "pmi", "npmi", "count"]
Scalar = float | int | str

#: Above this many (non-empty) documents ``coactivation_score`` samples pairs instead of
#: computing all of them; all pairs of 2000 documents is a 2000 x 2000 sparse product.
EXACT_MAX_DOCS = 2000


@runtime_checkable
class TokenizerLike(Protocol):
    """The part of a Hugging Face tokenizer that ``caption_overlap`` uses."""

    def tokenize(self, text: str) -> list[str]: ...

    def convert_tokens_to_ids(self, tokens: list[str]) -> list[int]: ...


TokenizeFn = Callable[[str], Sequence[str] | Sequence[int]]


# --------------------------------------------------------------------------- helpers


def _as_csr(matrix: Any, name: str = "docs") -> sp.csr_matrix:
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


def _binary(csr: sp.csr_matrix) -> sp.csr_matrix:
    """(n, V) 0/1 float matrix of active terms, same sparsity pattern as ``csr``."""
    return sp.csr_matrix(
        (np.ones_like(csr.data, dtype=np.float64), csr.indices, csr.indptr), shape=csr.shape
    )


def _require_rows(csr: sp.csr_matrix, name: str = "docs") -> None:
    if csr.shape[0] == 0:
        raise ValueError(f"{name} has no rows; every statistic over documents is undefined.")


def _check_vocab(vocab: Sequence[str], n_terms: int) -> None:
    if len(vocab) < n_terms:
        raise ValueError(
            f"vocab has {len(vocab)} tokens but the matrix has {n_terms} term columns; pass "
            "the vocabulary of the model that produced it, e.g. "
            "tokenizer.convert_ids_to_tokens(range(V))."
        )


def _row_top_ids(csr: sp.csr_matrix, row: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Ids and weights of the ``k`` largest weights in one row, ties broken by lower id."""
    start, end = csr.indptr[row], csr.indptr[row + 1]
    ids, weights = csr.indices[start:end], csr.data[start:end]
    order = np.lexsort((ids, -weights))[:k]
    return ids[order], weights[order]


# ------------------------------------------------------------------ term frequency


def nonzeros_per_row(matrix: Any) -> np.ndarray:
    """Number of active terms in each row (document or query).

    Shape: (n_rows, V) -> (n_rows,) int64.
    """
    return np.diff(_as_csr(matrix, "matrix").indptr).astype(np.int64)


def term_activation_frequency(docs: Any) -> np.ndarray:
    """Fraction of documents in which each term is active (document frequency / n_docs).

    Terms close to 1.0 fire for almost every image: they carry no information for
    retrieval and are the co-activation the MLP-vs-MLM comparison is about.

    Shape: (n_docs, V) -> (V,) float64 in [0, 1].
    """
    csr = _as_csr(docs)
    _require_rows(csr)
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


# -------------------------------------------------------------------- co-activation


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
    csr = _as_csr(docs)
    _require_rows(csr)
    n_docs = csr.shape[0]
    binary = _binary(csr)
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
    csr = _as_csr(docs)
    binary = _binary(csr)
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


# ------------------------------------------------------------------ interpretability


def top_terms(docs: Any, vocab: Sequence[str], k: int = 10) -> list[list[tuple[str, float]]]:
    """The ``k`` highest-weighted terms of each document, as ``(token, weight)`` pairs.

    What the model thinks each image is about. Sorted by weight, ties by lower term id;
    fewer than ``k`` when a document has fewer active terms, ``[]`` for an empty one.
    """
    csr = _as_csr(docs)
    _check_vocab(vocab, csr.shape[1])
    result = []
    for row in range(csr.shape[0]):
        ids, weights = _row_top_ids(csr, row, k)
        result.append([(vocab[t], float(w)) for t, w in zip(ids.tolist(), weights.tolist())])
    return result


def _caption_token_ids(
    caption: str | Sequence[str] | None,
    tokenize: TokenizerLike | TokenizeFn,
    token_to_id: Mapping[str, int] | None,
) -> set[int]:
    """Wordpiece ids of a caption (or the union over a list of captions)."""
    if caption is None or (isinstance(caption, float) and math.isnan(caption)):
        return set()
    texts = [caption] if isinstance(caption, str) else list(caption)
    ids: set[int] = set()
    for text in texts:
        if not text:
            continue
        if isinstance(tokenize, TokenizerLike):
            ids.update(int(t) for t in tokenize.convert_tokens_to_ids(tokenize.tokenize(text)))
            continue
        for token in tokenize(text):
            if isinstance(token, (int, np.integer)):
                ids.add(int(token))
            elif token_to_id is None:
                raise ValueError(
                    "the tokenize function returned token strings; pass vocab=... so they "
                    "can be matched to term ids, or return ids instead."
                )
            elif token in token_to_id:
                ids.add(token_to_id[token])
    return ids


def caption_overlap(
    docs: Any,
    captions: Sequence[str | Sequence[str] | None],
    tokenize: TokenizerLike | TokenizeFn,
    k: int = 10,
    vocab: Sequence[str] | None = None,
) -> dict[str, Any]:
    """How many of each image's top-``k`` terms are words of its caption.

    An interpretability proxy: per document, the fraction of its top-``k`` terms (fewer if
    it has fewer active terms) that appear among the wordpieces of its caption. A caption
    may be a string or a list of strings (their tokens are pooled). ``tokenize`` is a Hugging
    Face tokenizer, or a callable returning token strings (then ``vocab`` maps them to ids;
    strings not in it are ignored) or token ids, of the model's vocabulary.

    Empty documents and documents with an empty caption make the fraction undefined: they
    are NaN in ``per_doc``, left out of ``mean`` and counted.

    Returns ``{"mean": float, "per_doc": (n_docs,) float64, "n_docs": int,
    "n_empty_docs": int, "n_empty_captions": int, "k": int}``.
    """
    csr = _as_csr(docs)
    if len(captions) != csr.shape[0]:
        raise ValueError(
            f"got {len(captions)} captions for {csr.shape[0]} documents; pass one caption "
            "(or list of captions) per document row, in the same order."
        )
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}.")
    token_to_id = None
    if vocab is not None:
        _check_vocab(vocab, csr.shape[1])
        token_to_id = {token: i for i, token in enumerate(vocab)}
    per_doc = np.full(csr.shape[0], np.nan)
    n_empty_docs = n_empty_captions = 0
    for row, caption in enumerate(captions):
        top_ids, _ = _row_top_ids(csr, row, k)
        if top_ids.size == 0:
            n_empty_docs += 1
            continue
        caption_ids = _caption_token_ids(caption, tokenize, token_to_id)
        if not caption_ids:
            n_empty_captions += 1
            continue
        per_doc[row] = np.isin(top_ids, list(caption_ids)).mean()
    defined = per_doc[~np.isnan(per_doc)]
    return {
        "mean": float(defined.mean()) if defined.size else math.nan,
        "per_doc": per_doc,
        "n_docs": int(csr.shape[0]),
        "n_empty_docs": n_empty_docs,
        "n_empty_captions": n_empty_captions,
        "k": k,
    }


# ------------------------------------------------------------------------ sparsity


def sparsity_stats(matrix: Any) -> dict[str, float | int]:
    """Non-zeros per row of a document or query matrix, and how many rows are empty.

    Keys: ``n_rows``, ``mean_nnz``, ``median_nnz``, ``max_nnz``, ``n_empty``,
    ``frac_empty``. An empty row can never be retrieved (or retrieve anything), so it is
    reported rather than averaged away.
    """
    csr = _as_csr(matrix, "matrix")
    _require_rows(csr, "matrix")
    nnz = np.diff(csr.indptr)
    return {
        "n_rows": int(nnz.size),
        "mean_nnz": float(nnz.mean()),
        "median_nnz": float(np.median(nnz)),
        "max_nnz": int(nnz.max()),
        "n_empty": int((nnz == 0).sum()),
        "frac_empty": float((nnz == 0).mean()),
    }


# ---------------------------------------------------------------------- comparison


def compare_models(
    named: Mapping[str, Any],
    vocab: Sequence[str],
    captions: Sequence[str | Sequence[str] | None] | None = None,
    tokenize: TokenizerLike | TokenizeFn | None = None,
    top_n: int = 30,
    k: int = 10,
    n_pairs: int = 100_000,
    seed: int = 0,
    n_frequent: int = 5,
) -> dict[str, dict[str, Scalar]]:
    """The statistics of this module side by side for several models' document matrices.

    Returns ``{model_name: {statistic: scalar}}``, flat and ready for
    ``format_comparison_table`` or ``wandb.log``. Per model: ``sparsity_stats`` (``n_rows``
    reported as ``n_docs``), ``activation_frequency_summary``, ``coactivation``
    (``coactivation_score``), ``top{top_n}_mean_jaccard`` (mean off-diagonal Jaccard among
    the ``top_n`` most frequent terms), ``frequent_terms`` (the ``n_frequent`` most frequent
    terms with their activation frequency, a string) and, given ``captions`` and
    ``tokenize``, ``caption_overlap@{k}``.
    """
    if not named:
        raise ValueError("compare_models needs at least one named document matrix.")
    if (captions is None) != (tokenize is None):
        raise ValueError("pass both captions and tokenize to measure caption overlap, or neither.")
    result: dict[str, dict[str, Scalar]] = {}
    for name, docs in named.items():
        csr = _as_csr(docs, f"docs of model {name!r}")
        _require_rows(csr, f"docs of model {name!r}")
        _check_vocab(vocab, csr.shape[1])
        stats: dict[str, Scalar] = {}
        sparsity = sparsity_stats(csr)
        stats["n_docs"] = sparsity.pop("n_rows")
        stats.update(sparsity)
        freq = term_activation_frequency(csr)
        stats.update(activation_frequency_summary(freq))
        stats["coactivation"] = coactivation_score(csr, n_pairs=n_pairs, seed=seed)
        jaccard, _ = coactivation_matrix(csr, top_n=top_n, measure="jaccard")
        off_diagonal = jaccard[~np.eye(jaccard.shape[0], dtype=bool)]
        stats[f"top{top_n}_mean_jaccard"] = (
            float(np.nanmean(off_diagonal)) if off_diagonal.size else math.nan
        )
        frequent = np.lexsort((np.arange(freq.size), -freq))[:n_frequent]
        stats["frequent_terms"] = ", ".join(
            f"{vocab[t]} ({freq[t]:.2f})" for t in frequent.tolist() if freq[t] > 0
        )
        if captions is not None and tokenize is not None:
            overlap = caption_overlap(csr, captions, tokenize, k=k, vocab=vocab)
            stats[f"caption_overlap@{k}"] = overlap["mean"]
        result[name] = stats
    return result


def _format_cell(value: Any, float_format: str) -> str:
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return float_format.format(float(value))
    return str(value).replace("|", "\\|")


def format_comparison_table(
    result: Mapping[str, Mapping[str, Any]],
    keys: Sequence[str] | None = None,
    float_format: str = "{:.4g}",
) -> str:
    """Markdown table of ``compare_models`` output: one row per statistic, one column per model.

    ``keys`` selects and orders the statistics (default: every key, in first-seen order);
    a statistic a model lacks shows as ``-``.
    """
    if not result:
        raise ValueError("nothing to format: the comparison has no models.")
    if keys is None:
        keys = list(dict.fromkeys(key for stats in result.values() for key in stats))
    names = list(result)
    lines = [
        "| statistic | " + " | ".join(_format_cell(n, float_format) for n in names) + " |",
        "|---|" + "---:|" * len(names),
    ]
    for key in keys:
        cells = [
            _format_cell(result[n][key], float_format) if key in result[n] else "-" for n in names
        ]
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
