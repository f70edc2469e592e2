"""Several models' document matrices side by side, as a dict and a markdown table."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from lightning_mlsr.analysis.coactivation import coactivation_matrix, coactivation_score
from lightning_mlsr.analysis.frequency import (
    activation_frequency_summary,
    sparsity_stats,
    term_activation_frequency,
)
from lightning_mlsr.analysis.inputs import as_csr, check_vocab, require_rows
from lightning_mlsr.analysis.interpretability import TokenizeFn, TokenizerLike, caption_overlap

__all__ = ["compare_models", "format_comparison_table"]

Scalar = float | int | str


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
        csr = as_csr(docs, f"docs of model {name!r}")
        require_rows(csr, f"docs of model {name!r}")
        check_vocab(vocab, csr.shape[1])
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
