"""Caption preprocessing: which words of a caption become the document text.

One of the paper's open questions is how the captions should be preprocessed before they are
encoded. ``load_collection(caption_preprocessing=...)`` (``data.reading.caption_preprocessing``)
offers three treatments, applied to every caption after its fields and languages are joined:

- ``raw``: the caption as the collection gives it (the default).
A caption is split at whitespace into tokens; a token's *word* is the token without the
punctuation around it (``keycap:`` → ``keycap``), looked up in lower case. Kept tokens are
joined by single spaces, as they were written.

- ``no_stopwords``: tokens whose word is on the English stop-word list that BM25 (``bm25s``,
  Lucene's list of 33 words) also removes are dropped; every other token is kept, symbols
  included (``keycap: #`` stays ``keycap: #``).
- ``nouns``: stop words and tokens with no word (``#``, ``&``) are dropped, and of the other
  tokens only those whose word can be a noun are kept: a word LemmInflect's English
  dictionary lists with the part of speech ``NOUN`` (``face``, ``tears``, ``red``), or a word
  it does not know at all (names, compounds such as ``see-no-evil``, digits, words in other
  scripts). A word it knows only as a verb, adjective or adverb (``grinning``, ``smiling``,
  ``foggy``) is dropped. This is a dictionary rule without context, so a word that can be
  both stays.

A caption that would lose every word keeps its original text, so that no image loses its
document; how many did is logged (with the first ids) and returned.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable, Sequence
from typing import Literal

__all__ = ["CAPTION_PREPROCESSING", "CaptionPreprocessing", "preprocess_captions"]

logger = logging.getLogger(__name__)

CaptionPreprocessing = Literal["raw", "no_stopwords", "nouns"]
CAPTION_PREPROCESSING: tuple[str, ...] = ("raw", "no_stopwords", "nouns")

# the punctuation around a token's word
_EDGES = re.compile(r"^\W+|\W+$")


@functools.cache
def _stopwords() -> frozenset[str]:
    from bm25s.stopwords import STOPWORDS_EN

    return frozenset(STOPWORDS_EN)


@functools.cache
def _noun_dictionary() -> Callable[[str], dict[str, tuple[str, ...]]]:
    import lemminflect

    return lemminflect.getAllLemmas  # type: ignore[no-any-return]


def _can_be_noun(word: str) -> bool:
    parts = _noun_dictionary()(word)
    return not parts or "NOUN" in parts


def _keeps(mode: str) -> Callable[[str], bool]:
    """Whether a token's word (lower case, maybe empty) is kept under ``mode``."""
    stop = _stopwords()
    if mode == "no_stopwords":
        return lambda word: word not in stop
    return lambda word: bool(word) and word not in stop and _can_be_noun(word)


def _filter(text: str, keep: Callable[[str], bool]) -> str:
    return " ".join(tok for tok in text.split() if keep(_EDGES.sub("", tok).lower()))


def preprocess_captions(
    captions: Sequence[str],
    mode: str,
    ids: Sequence[str] | None = None,
) -> tuple[list[str], list[str]]:
    """The captions under ``mode`` and the ids (or row numbers) of those kept unchanged
    because the treatment would have left them empty.

    Under ``no_stopwords`` and ``nouns`` a caption is rewritten as its kept tokens joined by
    single spaces.
    """
    if mode not in CAPTION_PREPROCESSING:
        raise ValueError(
            f"caption_preprocessing must be one of {list(CAPTION_PREPROCESSING)}, got {mode!r}"
        )
    if mode == "raw":
        return list(captions), []
    keep = _keeps(mode)
    out: list[str] = []
    unchanged: list[str] = []
    for row, text in enumerate(captions):
        kept = _filter(text, keep)
        if kept or not text.strip():
            out.append(kept)
        else:
            out.append(text)
            unchanged.append(ids[row] if ids is not None else str(row))
    if unchanged:
        shown = ", ".join(unchanged[:5]) + (" ..." if len(unchanged) > 5 else "")
        logger.warning(
            "caption_preprocessing=%s would empty %d caption(s); they keep their original text: %s",
            mode,
            len(unchanged),
            shown,
        )
    return out, unchanged
