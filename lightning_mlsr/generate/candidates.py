"""The words a teacher may turn into pseudo-queries, and the evaluation queries no training
signal has seen: whole words of a WordPiece vocabulary, the most frequent English words of
``wordfreq``, the evaluation query strings that candidates leave out by default."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

__all__ = [
    "candidate_words",
    "english_words",
    "evaluation_query_texts",
    "unseen_queries",
    "vocabulary_words",
]


def vocabulary_words(tokenizer: Any, pattern: str = r"[a-z]{3,}") -> list[str]:
    """Whole words of a WordPiece vocabulary (no ``##`` continuation, no special or
    ``[unused]`` entries) that match ``pattern``, in vocabulary id order."""
    vocab = tokenizer.get_vocab()  # token -> id
    rx = re.compile(pattern)
    return [w for w, _ in sorted(vocab.items(), key=lambda kv: kv[1]) if rx.fullmatch(w)]


def english_words(n: int, pattern: str = r"[a-z]{3,}") -> list[str]:
    """Of the ``n`` most frequent English words of ``wordfreq`` (``top_n_list("en", n)``: a
    blend of Wikipedia, subtitles, news, books, web and social text), those that match
    ``pattern``, most frequent first. Needs the ``pseudo`` extra (``wordfreq``)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    try:
        from wordfreq import top_n_list
    except ImportError as e:  # not a runtime dependency of training
        raise ImportError(
            "English word candidates come from wordfreq: pip install -e '.[pseudo]'"
        ) from e
    rx = re.compile(pattern)
    return [w for w in top_n_list("en", n) if rx.fullmatch(w)]


def candidate_words(
    tokenizer: Any, words: Sequence[str] | None = None, english: int = 0
) -> list[str]:
    """The pseudo-query candidates before any split's queries are left out: ``words`` (None:
    the tokenizer's whole words, :func:`vocabulary_words`), then the ``english`` most
    frequent English words (:func:`english_words`; 0: none), stripped, each once, in order."""
    candidates = list(words) if words is not None else vocabulary_words(tokenizer)
    if english:
        candidates += english_words(english)
    return [w for w in dict.fromkeys(c.strip() for c in candidates) if w]


def evaluation_query_texts(collection: Any) -> set[str]:
    """Lower-cased, stripped query strings of every split but ``train``."""
    from lightning_mlsr.baselines.common import split_texts

    return {
        text.strip().lower()
        for split in collection.splits
        if split != "train"
        for text in split_texts(collection, split)[1]
    }


def unseen_queries(
    ids: Sequence[str], texts: Sequence[str], *seen: Sequence[str] | set[str]
) -> list[str]:
    """The ids of the queries whose text (stripped, case-insensitive) is in none of the
    ``seen`` string collections (training queries, pseudo-query candidates), in input
    order: the queries no training signal can have shown the model by their text."""
    if len(ids) != len(texts):
        raise ValueError(f"{len(ids)} query ids but {len(texts)} texts")
    known = {s.strip().lower() for strings in seen for s in strings}
    return [q for q, text in zip(ids, texts, strict=True) if text.strip().lower() not in known]
