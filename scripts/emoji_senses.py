"""Which WordNet senses an emoji's CLDR label and tags name (``emoji-describe``'s queries):
word forms for matching, a sense's signature, and the selection rules DATA.md describes."""

from __future__ import annotations

import re
from dataclasses import dataclass

from emoji_wordnet import WordNet

#: Most-frequent-sense fallback for a label with no disambiguating evidence: the first
#: sense's SemCor count must be at least this and this many times the second's.
MFS_MIN_COUNT = 3
MFS_RATIO = 3.0
#: A tag with several senses needs this many of the emoji's other words in the best one.
TAG_MIN_EVIDENCE = 2

STOP_WORDS = frozenset(
    [
        "a",
        "an",
        "the",
        "of",
        "in",
        "on",
        "at",
        "to",
        "for",
        "from",
        "with",
        "without",
        "by",
        "and",
        "or",
        "but",
        "not",
        "no",
        "as",
        "is",
        "are",
        "be",
        "it",
        "its",
        "into",
        "onto",
        "off",
        "up",
        "down",
        "out",
        "over",
        "under",
        "one",
        "two",
    ]
)
WORD = re.compile(r"[a-z0-9]+")


class Forms:
    """Word forms for matching: a word's lowercase spelling and its base forms."""

    def __init__(self, wn: WordNet) -> None:
        self.wn = wn
        self._cache: dict[str, frozenset[str]] = {}

    def of(self, word: str) -> frozenset[str]:
        if word not in self._cache:
            self._cache[word] = frozenset(self.wn.base_forms(word))
        return self._cache[word]

    def words(self, text: str) -> list[str]:
        return WORD.findall(text.lower().replace("_", " ").replace("-", " "))

    def content(self, text: str) -> set[str]:
        """All forms of the non-stop words of ``text``."""
        return {f for w in self.words(text) if w not in STOP_WORDS for f in self.of(w)}

    def loose(self, word: str) -> frozenset[str]:
        """:meth:`of` plus the word with any regular suffix cut, word or not
        (``billiards`` -> ``billiard``): matching for exclusion errs on the side of a match."""
        cut = {word[: -len(x)] for x in ("s", "es", "ies", "d", "ed", "ing") if word.endswith(x)}
        return self.of(word) | {c for c in cut if len(c) >= 3}

    def contains(self, text: str, phrase: str) -> bool:
        """Whether ``phrase`` occurs in ``text`` as consecutive words, any inflection."""
        tokens = [self.loose(w) for w in self.words(text)]
        needle = [self.loose(w) for w in self.words(phrase)]
        if not needle:
            return False
        return any(
            all(tokens[i + j] & needle[j] for j in range(len(needle)))
            for i in range(len(tokens) - len(needle) + 1)
        )


def signature(wn: WordNet, forms: Forms, key: str) -> set[str]:
    """Words that characterise a sense: its lemmas and gloss, its hypernyms' (two levels),
    and the lemmas of its hyponyms, holonyms, meronyms, domains, similar and derived words."""
    syn = wn.synsets[key]
    text = [syn.gloss, *syn.lemmas]
    frontier = [key]
    for _ in range(2):
        frontier = [t for k in frontier for s, t in wn.synsets[k].pointers if s in ("@", "@i")]
        for k in frontier:
            text += [wn.synsets[k].gloss, *wn.synsets[k].lemmas]
    for sym, target in syn.pointers:
        if sym in ("~", "~i", "#m", "#s", "#p", "%m", "%s", "%p", ";c", "-c", "&", "+", "=", "^"):
            text += wn.synsets[target].lemmas
    return forms.content(" ".join(text))


@dataclass(frozen=True)
class Emoji:
    image_id: str
    label: str
    tags: tuple[str, ...]


def phrases_of(e: Emoji) -> list[tuple[str, str]]:
    """``(phrase, origin)`` pairs naming an emoji: its label (and the part after ``:``,
    as in ``flag: Germany``), then its tags."""
    out = [(e.label.lower(), "label")]
    if ":" in e.label:
        out.append((e.label.split(":", 1)[1].strip().lower(), "label"))
    out += [(t, "tag") for t in e.tags]
    seen: set[str] = set()
    return [(p, o) for p, o in out if p and not (p in seen or seen.add(p))]  # type: ignore[func-returns-value]


def select_senses(
    wn: WordNet, forms: Forms, e: Emoji, sigs: dict[str, set[str]], stats: dict[str, int]
) -> dict[str, str]:
    """The WordNet senses an emoji's label and tags name: ``synset key -> origin``.

    For each phrase (the label, the label after ``:``, each tag) that is a WordNet lemma (or
    whose base form is): a phrase with one sense takes it. Otherwise each sense scores the
    number of the emoji's *other* words (label and tag words, any inflection, stop words
    left out) in its :func:`signature`; the unique best sense with a score of at least 1 is
    taken. With no evidence, a label (not a tag) takes its most frequent sense when SemCor
    counts make it dominant (>= 3 and >= 3x the next); anything else is ambiguous and
    dropped.
    """
    everything = forms.content(" ".join([e.label, *e.tags]))
    chosen: dict[str, str] = {}
    for phrase, origin in phrases_of(e):
        keys = [k for k in wn.senses(phrase) if wn.synsets[k].pos != "r"]
        if not keys:
            stats["phrases_not_in_wordnet"] += 1
            continue
        context = everything - forms.content(phrase)
        scores = [len(sigs_of(wn, forms, k, sigs) & context) for k in keys]
        best = max(scores)
        if len(keys) == 1 and (origin == "label" or best >= 1):
            pick = keys[0]
            stats[f"{origin}_single_sense"] += 1
        elif len(keys) == 1:
            stats["tag_single_sense_without_evidence_dropped"] += 1
            continue
        else:
            lemma = phrase.replace(" ", "_")
            counts = sorted((wn.count(lemma, k) for k in keys), reverse=True)
            if best >= (1 if origin == "label" else TAG_MIN_EVIDENCE) and scores.count(best) == 1:
                pick = keys[scores.index(best)]
                stats[f"{origin}_by_evidence"] += 1
            elif (
                origin == "label"
                and counts[0] >= MFS_MIN_COUNT
                and counts[0] >= MFS_RATIO * counts[1]
            ):
                pick = keys[0]
                stats["label_most_frequent_sense"] += 1
            else:
                stats[f"{origin}_ambiguous_dropped"] += 1
                continue
        chosen.setdefault(pick, origin)
    return chosen


def sigs_of(wn: WordNet, forms: Forms, key: str, cache: dict[str, set[str]]) -> set[str]:
    if key not in cache:
        cache[key] = signature(wn, forms, key)
    return cache[key]
