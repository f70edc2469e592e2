"""Caption preprocessing (data.reading.caption_preprocessing): the rules by hand, and what the
loader and the DataModule do with them."""

from __future__ import annotations

import logging

import lemminflect
import pytest
from bm25s.stopwords import STOPWORDS_EN

from lightning_mlsr.data.collection import load_collection
from lightning_mlsr.data.collection.caption_text import preprocess_captions
from lightning_mlsr.data.datamodule import RetrievalDataModule
from lightning_mlsr.data.errors import DataError

CAPTIONS = [
    "face with tears of joy",
    "grinning face",
    "keycap: #",
    "Flag: United States",
    "see-no-evil monkey",
    "foggy",
    "",
]


def test_raw_keeps_every_caption_as_it_is():
    assert preprocess_captions(CAPTIONS, "raw") == (CAPTIONS, [])


def test_no_stopwords_drops_only_the_stop_words():
    out, unchanged = preprocess_captions(CAPTIONS, "no_stopwords")
    assert out == [
        "face tears joy",  # "with" and "of" are stop words
        "grinning face",
        "keycap: #",  # symbols and punctuation stay
        "Flag: United States",
        "see-no-evil monkey",
        "foggy",
        "",
    ]
    assert unchanged == []


def test_nouns_keeps_the_words_the_dictionary_allows_as_nouns():
    out, unchanged = preprocess_captions(CAPTIONS, "nouns", ids=[str(i) for i in CAPTIONS])
    assert out == [
        "face tears joy",
        "face",  # "grinning" is only a verb
        "keycap:",  # "#" has no word
        "Flag: States",  # "United" is an adjective or a verb
        "see-no-evil monkey",  # a compound the dictionary does not know is kept
        "foggy",  # would be emptied: keeps its text
        "",
    ]
    assert unchanged == ["foggy"]


def _word(token: str) -> str:
    """The token without the non-word characters at its ends, lower case."""
    chars = list(token)
    while chars and not (chars[0].isalnum() or chars[0] == "_"):
        chars.pop(0)
    while chars and not (chars[-1].isalnum() or chars[-1] == "_"):
        chars.pop()
    return "".join(chars).lower()


def test_the_noun_rule_is_the_dictionary_rule():
    """On the bundled captions: a token is kept exactly when its word is no stop word and
    LemmInflect lists it as a noun or does not know it."""
    raw = load_collection("emoji").images.captions()
    out, unchanged = preprocess_captions(raw, "nouns")
    stop = set(STOPWORDS_EN)

    def allowed(token: str) -> bool:
        word = _word(token)
        parts = lemminflect.getAllLemmas(word) if word else {}
        return bool(word) and word not in stop and (not parts or "NOUN" in parts)

    emptied = 0
    for before, after in zip(raw, out, strict=True):
        expected = " ".join(t for t in before.split() if allowed(t))
        if expected:
            assert after == expected, before
        else:
            assert after == before
            emptied += bool(before.strip())
    assert emptied == len(unchanged) > 0
    assert sum(a != b for a, b in zip(raw, out, strict=True)) > len(raw) // 10


def test_loader_applies_it_and_counts_the_captions_it_would_empty(caplog):
    raw = load_collection("emoji")
    with caplog.at_level(logging.WARNING):
        nouns = load_collection("emoji", caption_preprocessing="nouns")
    assert nouns.caption_preprocessing == "nouns"
    assert len(nouns.images) == len(raw.images)
    assert nouns.unpreprocessed_captions, "some emoji captions are adjectives or verbs only"
    assert f"would empty {len(nouns.unpreprocessed_captions)} caption(s)" in caplog.text
    by_id = dict(zip(raw.images.ids, raw.images.captions(), strict=True))
    for image_id, caption in zip(nouns.images.ids, nouns.images.captions(), strict=True):
        if image_id in nouns.unpreprocessed_captions:
            assert caption == by_id[image_id]
        else:
            assert caption == preprocess_captions([by_id[image_id]], "nouns")[0][0]
            assert caption.strip()
    stop = set(STOPWORDS_EN)
    no_stop = load_collection("emoji", caption_preprocessing="no_stopwords")
    assert all(w.lower() not in stop for c in no_stop.images.captions() for w in c.split()), (
        "no stop word survives"
    )
    assert no_stop.images.captions() != raw.images.captions()


def test_unknown_treatment_is_an_error_that_names_the_choices():
    with pytest.raises(DataError, match=r"caption_preprocessing must be one of \['raw'"):
        load_collection("emoji", caption_preprocessing="stemmed")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="caption_preprocessing"):
        preprocess_captions(["a"], "lemmas")


def test_datamodule_reads_it_from_the_reading_settings():
    dm = RetrievalDataModule(collection="emoji", reading={"caption_preprocessing": "no_stopwords"})
    assert dm.collection.caption_preprocessing == "no_stopwords"
    assert dm.reading.caption_preprocessing == "no_stopwords"


def test_a_plain_string_field_has_no_language_and_is_kept_in_any():
    """The emoji subcategory (one string per image, no language list) joins the caption after
    the label, whichever languages are chosen; checked against the parquet file itself."""
    import pyarrow.parquet as pq

    from lightning_mlsr.data.collection.layout import find_layout

    raw = load_collection("emoji")
    table = pq.read_table(find_layout(raw.root).image_files[0], columns=["image_id", "subcategory"])
    sub = dict(zip(table["image_id"].to_pylist(), table["subcategory"].to_pylist(), strict=True))
    both = load_collection("emoji", caption_fields=["caption_reference_description", "subcategory"])
    label = dict(zip(raw.images.ids, raw.images.captions(), strict=True))
    for image_id, caption in zip(both.images.ids, both.images.captions(), strict=True):
        # a repeated entry is kept once ("person" is a label and a subcategory)
        want = label[image_id] if sub[image_id] == label[image_id] else None
        assert caption == (want or f"{label[image_id]} ; {sub[image_id]}"), image_id
    german = load_collection("emoji", caption_fields=["subcategory"], caption_languages=["de"])
    assert german.images.captions() == [sub[i] for i in german.images.ids]
