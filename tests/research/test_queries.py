"""The queries the report splits its results by: unseen by any training signal, and by
the image type of their relevant images."""

from __future__ import annotations

from lightning_mlsr.data import load_collection
from research.report.queries import (
    compute_unseen_queries,
    majority_category,
    query_categories,
    unseen_query_ids,
)
from tests.research.helpers import (
    REGISTRY,
    REPO,
)


def test_committed_unseen_queries_are_those_no_run_could_have_seen() -> None:
    """results/unseen_queries.tsv is what compute_unseen_queries gives today, and every listed
    query is neither a training query nor a candidate of the transductive runs."""
    from lightning_mlsr.baselines.common import split_texts
    from lightning_mlsr.generate.candidates import vocabulary_words
    from lightning_mlsr.io.pretrained import load_tokenizer

    rows = compute_unseen_queries(REGISTRY)
    committed = (REPO / "results" / "unseen_queries.tsv").read_text("utf-8").splitlines()
    assert committed == ["split\ttext_id\tquery", *("\t".join(r) for r in rows)]
    collection = load_collection("emoji")
    train = {t.lower() for t in split_texts(collection, "train")[1]}
    vocab = set(vocabulary_words(load_tokenizer(REGISTRY.candidate_backbone)))
    for split in ("validation", "test"):
        ids, texts = split_texts(collection, split)
        text_of = dict(zip(ids, texts, strict=True))
        listed = unseen_query_ids(REGISTRY, split)
        assert 0 < len(listed) < len(ids) and set(listed) <= set(ids)
        assert not any(text_of[q].lower() in train | vocab for q in listed)


def test_a_querys_image_type_is_the_category_of_most_of_its_relevant_images() -> None:
    category_of = {"a": "Flags", "b": "Flags", "c": "Objects", "d": "Animals", "e": "Objects"}
    qrels = {
        "q1": {"a": 1, "b": 2, "c": 1},  # two flags, one object
        "q2": {"c": 1, "d": 1},  # a tie: alphabetically first
        "q3": {"a": 0, "e": 1},  # a non-relevant judgment does not count
        "q4": {"zz": 1},  # no categorised image: left out
    }
    assert majority_category(qrels, category_of) == {
        "q1": "Flags",
        "q2": "Animals",
        "q3": "Objects",
    }
    test = query_categories(REGISTRY, "test")
    assert len(test) == 359 and "Smileys & Emotion" in set(test.values())
