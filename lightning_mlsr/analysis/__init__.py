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

Files: ``frequency`` (activation frequency, sparsity), ``coactivation``, ``interpretability``
(top terms, caption overlap), ``comparison`` (models side by side), ``inputs`` (validation).
"""

from lightning_mlsr.analysis.coactivation import (
    EXACT_MAX_DOCS,
    coactivation_matrix,
    coactivation_score,
)
from lightning_mlsr.analysis.comparison import compare_models, format_comparison_table
from lightning_mlsr.analysis.frequency import (
    activation_frequency_summary,
    nonzeros_per_row,
    sparsity_stats,
    term_activation_frequency,
)
from lightning_mlsr.analysis.interpretability import TokenizerLike, caption_overlap, top_terms

__all__ = [
    "EXACT_MAX_DOCS",
    "TokenizerLike",
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
