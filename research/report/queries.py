"""Groups of evaluation queries the report breaks results down by: the unseen ones (text
that no training signal of any run held, ``results/unseen_queries.tsv``), those whose
wordpieces all occur in training queries, and each query's image category or type."""

from __future__ import annotations

from pathlib import Path

from research.report.registry import Registry

__all__ = [
    "compute_unseen_queries",
    "majority_category",
    "query_categories",
    "seen_query_ids",
    "unseen_query_ids",
    "write_unseen_queries",
]

UNSEEN_FILE = "unseen_queries.tsv"


def unseen_query_ids(registry: Registry, split: str) -> list[str]:
    """The queries of ``split`` that no training signal has shown any run by their text
    (``results/unseen_queries.tsv``, written by :func:`write_unseen_queries`)."""
    path = registry.results_dir / UNSEEN_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: python -m research.report unseen-queries writes it"
        )
    rows = (line.split("\t") for line in path.read_text("utf-8").splitlines()[1:] if line)
    return [row[1] for row in rows if row[0] == split]


def compute_unseen_queries(registry: Registry) -> list[tuple[str, str, str]]:
    """``(split, text_id, query)`` of every validation and test query whose text is neither
    a training query nor a pseudo-query candidate of any run (the teacher tokenizer's whole
    words and wordfreq's top English words, the candidates of the transductive runs; the
    other runs leave every evaluation query out of theirs)."""
    from lightning_mlsr.baselines.common import split_texts
    from lightning_mlsr.data import load_collection
    from lightning_mlsr.generate.candidates import candidate_words, unseen_queries
    from lightning_mlsr.io.pretrained import load_tokenizer

    collection = load_collection(registry.collection)
    train = split_texts(collection, "train")[1]
    tokenizer = load_tokenizer(registry.candidate_backbone)
    candidates = candidate_words(tokenizer, None, registry.candidate_english)
    out = []
    for split in ("validation", "test"):
        ids, texts = split_texts(collection, split)
        text_of = dict(zip(ids, texts, strict=True))
        out += [(split, q, text_of[q]) for q in unseen_queries(ids, texts, train, candidates)]
    return out


def write_unseen_queries(registry: Registry) -> Path:
    """Write :func:`compute_unseen_queries` as a TSV (committed: the report reads it)."""
    path = registry.results_dir / UNSEEN_FILE
    rows = "".join(f"{s}\t{q}\t{text}\n" for s, q, text in compute_unseen_queries(registry))
    path.write_text("split\ttext_id\tquery\n" + rows, "utf-8")
    return path


def seen_query_ids(registry: Registry, split: str = "test") -> tuple[set[str], set[str]]:
    """Queries of ``split`` whose wordpieces all occur in some training query, and the rest."""
    from lightning_mlsr.baselines.common import split_texts
    from lightning_mlsr.data import load_collection
    from lightning_mlsr.io.pretrained import load_tokenizer

    collection = load_collection(registry.collection)
    tokenizer = load_tokenizer(registry.wordpiece_tokenizer)
    train = set().union(*(tokenizer.tokenize(t) for t in split_texts(collection, "train")[1]))
    ids, texts = split_texts(collection, split)
    seen = {q for q, t in zip(ids, texts, strict=True) if set(tokenizer.tokenize(t)) <= train}
    return seen, set(ids) - seen


def majority_category(
    qrels: dict[str, dict[str, int]], category_of: dict[str, str]
) -> dict[str, str]:
    """Each query's image type: the category most of its relevant images (rel > 0) belong to,
    ties to the alphabetically first; queries with no categorised relevant image are left out."""
    out = {}
    for qid, docs in qrels.items():
        counts: dict[str, int] = {}
        for doc, rel in docs.items():
            if rel > 0 and doc in category_of:
                counts[category_of[doc]] = counts.get(category_of[doc], 0) + 1
        if counts:
            out[qid] = min(counts, key=lambda c: (-counts[c], c))
    return out


def query_categories(
    registry: Registry, split: str = "test", column: str = "category"
) -> dict[str, str]:
    """Each query of ``split`` grouped by :func:`majority_category` over an image column of
    the collection: ``category`` (emoji: the Unicode group, Smileys & Emotion, ...; stamps:
    the Tux Paint folder, animals, food, ...) or ``image_type`` (stamps: photo, clipart,
    letter, sign, symbol). Empty when the collection's images do not record ``column``."""
    import pyarrow.parquet as pq

    from lightning_mlsr.data import load_collection
    from lightning_mlsr.data.collection.layout import find_layout

    collection = load_collection(registry.collection)
    category_of: dict[str, str] = {}
    for path in find_layout(collection.root).image_files:
        if column not in pq.read_schema(path).names:
            return {}
        table = pq.read_table(path, columns=["image_id", column])
        category_of.update(
            zip(table.column("image_id").to_pylist(), table.column(column).to_pylist())
        )
    return majority_category(collection.qrels[split], category_of)
