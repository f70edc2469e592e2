"""Interpretability: an image's top terms, and whether they are its caption's words."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from lightning_mlsr.analysis.inputs import as_csr, check_vocab, row_top_ids

__all__ = ["TokenizeFn", "TokenizerLike", "caption_overlap", "top_terms"]


@runtime_checkable
class TokenizerLike(Protocol):
    """The part of a Hugging Face tokenizer that ``caption_overlap`` uses."""

    def tokenize(self, text: str) -> list[str]: ...

    def convert_tokens_to_ids(self, tokens: list[str]) -> list[int]: ...


TokenizeFn = Callable[[str], Sequence[str] | Sequence[int]]


def top_terms(docs: Any, vocab: Sequence[str], k: int = 10) -> list[list[tuple[str, float]]]:
    """The ``k`` highest-weighted terms of each document, as ``(token, weight)`` pairs.

    What the model thinks each image is about. Sorted by weight, ties by lower term id;
    fewer than ``k`` when a document has fewer active terms, ``[]`` for an empty one.
    """
    csr = as_csr(docs)
    check_vocab(vocab, csr.shape[1])
    result = []
    for row in range(csr.shape[0]):
        ids, weights = row_top_ids(csr, row, k)
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
    csr = as_csr(docs)
    if len(captions) != csr.shape[0]:
        raise ValueError(
            f"got {len(captions)} captions for {csr.shape[0]} documents; pass one caption "
            "(or list of captions) per document row, in the same order."
        )
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}.")
    token_to_id = None
    if vocab is not None:
        check_vocab(vocab, csr.shape[1])
        token_to_id = {token: i for i, token in enumerate(vocab)}
    per_doc = np.full(csr.shape[0], np.nan)
    n_empty_docs = n_empty_captions = 0
    for row, caption in enumerate(captions):
        top_ids, _ = row_top_ids(csr, row, k)
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
