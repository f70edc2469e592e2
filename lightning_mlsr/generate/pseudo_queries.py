"""Pseudo-queries labelled by a dense teacher: a training collection whose train split
holds, beside the real judgments, one judgment per pseudo-query — the caption the teacher
ranks first.

Why: on the bundled collection most validation and test tags share no wordpiece with any
training tag (DATA.md), so in-batch distillation on training queries never shows the
student the words it is tested on. A frozen dense teacher can judge any text, so the
student can be distilled on queries the qrels never had. Here a pseudo-query is a whole
word of the teacher's WordPiece vocabulary (or a line of a file you give), optionally
joined by the most frequent English words of ``wordfreq`` (:func:`~lightning_mlsr.generate.candidates.english_words`; most words a
WordPiece vocabulary splits into pieces — "calculator", "chopsticks" — are there); the teacher
scores it against every caption, and words whose best caption scores at least
``min_score`` become training queries, judged relevant to their top ``positives``
captions. No validation or test judgment is read, and by default no validation or test
query either: a candidate equal to the query text of any split but ``train`` is left out
before the teacher sees it, so neither the training queries nor the expanded captions hold
an evaluation string, and the evaluation queries stay unseen by every training signal
(:func:`~lightning_mlsr.generate.candidates.unseen_queries`). ``include_evaluation_queries=True`` (``--transductive``) keeps
them: a transductive variant whose results must say so.

Every word is scored against every caption (exactly, in blocks of 1024 words): meant for
collections of up to ~10^5 images, not for AToMiC's 10M (that would need an ANN index).

The output is an ordinary collection directory (AToMiC layout) that any experiment reads
with ``data.collection: DIR``: images and texts are symlinks to the source's parquet files,
the pseudo-queries are one more texts file, the qrels are the source's, with the pseudo
judgments added to ``train``; ``collection.json`` keeps the source's defaults and records
how the pseudo-queries were made; ``pseudo_queries.tsv`` lists each word with the
teacher's top captions and scores, to read.

    python -m lightning_mlsr.generate.pseudo_queries emoji --teacher teacher.pt --out DIR
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from lightning_mlsr.data.collection.layout import find_layout
from lightning_mlsr.data.collection.load import load_collection
from lightning_mlsr.data.errors import DataError
from lightning_mlsr.generate.candidates import candidate_words, evaluation_query_texts
from lightning_mlsr.generate.output_collection import empty_output, write_defaults

if TYPE_CHECKING:
    from lightning_mlsr.models.teacher import DenseTeacher

__all__ = ["build_pseudo_query_collection", "teacher_embeddings"]

#: text ids of pseudo-queries: this prefix and a running number
ID_PREFIX = "pseudo-"


def teacher_parser(prog: str, description: str, out_help: str) -> argparse.ArgumentParser:
    """The command line shared by the tools that run a dense teacher over a collection."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("source", help="collection directory or bundled name (emoji)")
    parser.add_argument("--teacher", required=True, help="dense caption checkpoint (.ckpt/.pt)")
    parser.add_argument("--out", required=True, help=out_help)
    return parser


@torch.no_grad()
def teacher_embeddings(
    teacher: DenseTeacher,
    tokenizer: Any,
    side: str,
    texts: Sequence[str],
    max_length: int,
    batch_size: int = 256,
    desc: str = "",
) -> torch.Tensor:
    """The teacher's embeddings of ``texts`` (``side`` = ``"query"`` or ``"doc"``).

    Shape: ``(N,)`` texts -> ``(N, H)`` fp32.
    """
    from lightning_mlsr.baselines.common import text_batches

    out = [
        teacher.embed(side, batch)
        for batch in text_batches(texts, tokenizer, batch_size, max_length, desc, progress=True)
    ]
    return torch.cat(out) if out else torch.zeros(0, 0)


def build_pseudo_query_collection(
    source: str | os.PathLike[str],
    out: str | os.PathLike[str],
    teacher_checkpoint: str | os.PathLike[str],
    *,
    backbone: str = "minilm-l6",
    pooling: str = "mean",
    words: Sequence[str] | None = None,
    english: int = 0,
    include_evaluation_queries: bool = False,
    min_score: float = 0.5,
    max_queries: int | None = 4000,
    positives: int = 1,
    expand_captions: int = 0,
    query_max_length: int = 16,
    doc_max_length: int = 32,
    seed: int = 0,
) -> dict[str, Any]:
    """Write a copy of ``source`` whose train split also holds teacher-labelled
    pseudo-queries; returns the provenance written to ``collection.json``.

    Args:
        source: a collection directory or bundled name (``"emoji"``).
        out: the new collection's directory (created; files it already has are replaced).
        teacher_checkpoint: a trained dense bi-encoder (``experiments/baselines/dense_caption.yaml``).
        backbone, pooling: the teacher's text encoder, as in that experiment.
        words: the pseudo-queries to consider; None takes the teacher tokenizer's whole
            words (:func:`~lightning_mlsr.generate.candidates.vocabulary_words`). Words equal to a training query are left out.
        english: also consider this many of the most frequent English words
            (:func:`~lightning_mlsr.generate.candidates.english_words`; 0: none), after ``words``.
        include_evaluation_queries: keep candidates equal to a validation or test query
            (transductive: the student is then trained on, and the expanded captions hold,
            the teacher's answers to evaluation queries). False leaves them out.
        min_score: keep a word only if its best caption's cosine reaches this (a word the
            teacher matches to nothing is noise, not a query).
        max_queries: keep at most this many of the words that pass, drawn at random with
            ``seed`` (None keeps all).
        positives: how many of the teacher's top captions each pseudo-query is judged
            relevant to.
        expand_captions: also expand the documents (doc2query-style, with the teacher as
            the query generator): each pseudo-query is appended to the caption of the
            images the teacher ranks in its top ``expand_captions`` (0: captions as they
            are), a caption's words in order of the teacher's cosine. The image files are
            then rewritten copies (the caption list of the first caption field, at the
            first entry in a caption language), not links: meant for small collections.
        query_max_length, doc_max_length: token limits, as in training.
    """
    from lightning_mlsr.baselines.common import split_texts
    from lightning_mlsr.io.pretrained import load_tokenizer
    from lightning_mlsr.models.teacher import load_dense_text_teacher
    from lightning_mlsr.retrieval.trec import write_trec_qrels

    if positives < 1:
        raise ValueError(f"positives must be >= 1, got {positives}")
    if not 0 <= expand_captions <= 3:
        raise ValueError(f"expand_captions must be in 0..3, got {expand_captions}")
    if max_queries is not None and max_queries < 1:
        raise ValueError(f"max_queries must be >= 1 or None, got {max_queries}")
    collection = load_collection(source)
    layout = find_layout(collection.root)
    out = Path(out)
    if out.resolve() == collection.root.resolve():
        raise DataError(f"--out {out} is the source collection itself; pick a new directory")

    tokenizer = load_tokenizer(backbone)
    teacher = load_dense_text_teacher(teacher_checkpoint, backbone, pooling)
    candidates = candidate_words(tokenizer, words, english)
    train_queries = {q.strip().lower() for q in split_texts(collection, "train")[1]}
    candidates = [w for w in candidates if w.lower() not in train_queries]
    evaluation = set() if include_evaluation_queries else evaluation_query_texts(collection)
    excluded = sum(w.lower() in evaluation for w in candidates)
    candidates = [w for w in candidates if w.lower() not in evaluation]
    if not candidates:
        raise DataError(
            "no pseudo-query candidates left (all empty, training or evaluation queries)"
        )

    captions = collection.images.captions()
    docs = teacher_embeddings(teacher, tokenizer, "doc", captions, doc_max_length, desc="captions")
    queries = teacher_embeddings(
        teacher, tokenizer, "query", candidates, query_max_length, desc="pseudo-queries"
    )
    k = min(max(positives, 3), len(captions))
    blocks = [(block @ docs.T).topk(k, dim=1) for block in queries.split(1024)]  # (<=1024, k)
    top_values = torch.cat([b.values for b in blocks])  # (N, k)
    top_indices = torch.cat([b.indices for b in blocks])  # (N, k)
    best = top_values[:, 0].numpy()
    keep = np.flatnonzero(best >= min_score)
    passed = len(keep)
    if max_queries is not None and len(keep) > max_queries:
        keep = np.sort(np.random.default_rng(seed).choice(keep, max_queries, replace=False))
    if len(keep) == 0:
        raise DataError(
            f"no pseudo-query reaches min_score={min_score} (best teacher cosine "
            f"{float(best.max()):.3f}); lower min_score"
        )

    ids = [f"{ID_PREFIX}{i + 1:06d}" for i in range(len(keep))]
    clash = set(ids) & set(collection.texts.ids)
    if clash:
        raise DataError(f"source already has text ids like {sorted(clash)[:3]}; rename them")
    chosen = [candidates[i] for i in keep]
    image_ids = list(collection.images.ids)

    empty_output(out)
    for sub, files in (("images", layout.image_files), ("texts", layout.text_files)):
        for i, path in enumerate(files):
            if sub == "images" and expand_captions:
                continue
            os.symlink(path.resolve(), out / sub / f"{i:05d}-{path.name}")
    expanded = 0
    if expand_captions:
        additions: dict[str, list[tuple[float, str]]] = {}
        for row in keep:
            for score, j in zip(
                top_values[row, :expand_captions].tolist(),
                top_indices[row, :expand_captions].tolist(),
                strict=True,
            ):
                additions.setdefault(image_ids[j], []).append((score, candidates[row]))
        words_of = {
            image: [w for _, w in sorted(pairs, key=lambda p: -p[0])]
            for image, pairs in additions.items()
        }
        expanded = len(words_of)
        for i, path in enumerate(layout.image_files):
            table = _expand_captions(
                pq.read_table(path),
                words_of,
                collection.caption_fields[0],
                collection.caption_languages,
            )
            pq.write_table(table, out / "images" / f"{i:05d}-{path.name}")
    fields = collection.query_fields
    columns = {"text_id": ids, fields[0]: chosen}
    columns.update({f: [""] * len(chosen) for f in fields[1:]})
    pq.write_table(pa.table(columns), out / "texts" / "zz-pseudo_queries.parquet")

    for split in collection.splits:
        qrels = dict(collection.qrels[split])
        if split == "train":
            for qid, row in zip(ids, keep, strict=True):
                qrels[qid] = {image_ids[j]: 1 for j in top_indices[row, :positives].tolist()}
        write_trec_qrels(out / "qrels" / f"{split}.trec", qrels)
    unusable = collection.root / "unusable_images.tsv"
    if unusable.is_file():
        (out / "unusable_images.tsv").write_text(unusable.read_text("utf-8"), "utf-8")

    with (out / "pseudo_queries.tsv").open("w", encoding="utf-8") as f:
        f.write("text_id\tquery\tcosine@1..3\tcaptions@1..3\n")
        for qid, row in zip(ids, keep, strict=True):
            scores = " ".join(f"{v:.3f}" for v in top_values[row, :3].tolist())
            caps = " | ".join(captions[j] for j in top_indices[row, :3].tolist())
            f.write(f"{qid}\t{candidates[row]}\t{scores}\t{caps}\n")

    provenance = {
        "source": str(collection.root.resolve()),
        "teacher_checkpoint": str(Path(teacher_checkpoint).resolve()),
        "teacher_backbone": backbone,
        "words": ("given list" if words is not None else f"{backbone} vocabulary whole words")
        + (f" + wordfreq top {english} English words" if english else ""),
        "candidates": len(candidates),
        "evaluation_queries": "included (transductive)"
        if include_evaluation_queries
        else "excluded",
        "excluded_evaluation_queries": excluded,
        "min_score": min_score,
        "passed_min_score": passed,
        "max_queries": max_queries,
        "seed": seed,
        "pseudo_queries": len(keep),
        "positives": positives,
        "expand_captions": expand_captions,
        "expanded_images": expanded,
    }
    write_defaults(collection, out, "pseudo", query_fields=list(fields), pseudo_queries=provenance)
    return provenance


def _expand_captions(
    table: pa.Table,
    words_of: dict[str, list[str]],
    field: str,
    languages: Sequence[str] | None,
) -> pa.Table:
    """``table`` with ``words_of[image_id]`` appended to the first entry of ``field`` in one
    of ``languages`` (None: the first entry). Shape: rows unchanged."""
    ids = table.column("image_id").to_pylist()
    lists = table.column(field).to_pylist()
    langs = table.column("language").to_pylist() if languages is not None else None
    wanted = set(languages or ())
    out = []
    for k, (image_id, caps) in enumerate(zip(ids, lists, strict=True)):
        words = words_of.get(image_id)
        if not words or not caps:
            out.append(caps)
            continue
        caps = list(caps)
        at = 0
        if langs is not None:
            at = next((i for i, lang in enumerate(langs[k] or []) if lang in wanted), -1)
        if at >= 0:
            caps[at] = f"{caps[at] or ''} {' '.join(words)}".strip()
        out.append(caps)
    column = pa.array(out, table.schema.field(field).type)
    return table.set_column(table.schema.get_field_index(field), field, column)


def main(argv: Sequence[str] | None = None) -> int:
    parser = teacher_parser(
        "python -m lightning_mlsr.generate.pseudo_queries",
        "Write a training collection with teacher-labelled pseudo-queries.",
        "directory of the new collection",
    )
    parser.add_argument("--words", help="file with one candidate pseudo-query per line")
    parser.add_argument(
        "--english",
        type=int,
        default=0,
        help="also the N most frequent English words (wordfreq; the pseudo extra)",
    )
    parser.add_argument(
        "--transductive",
        action="store_true",
        help="keep candidates equal to a validation or test query (left out by default)",
    )
    parser.add_argument("--min-score", type=float, default=0.5)
    parser.add_argument("--max-queries", type=int, default=4000, help="0 keeps all")
    parser.add_argument("--positives", type=int, default=1)
    parser.add_argument(
        "--expand-captions",
        type=int,
        default=0,
        help="append each pseudo-query to its top-K captions (doc2query-style; 0: off)",
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    words = None
    if args.words:
        path = Path(args.words)
        if not path.is_file():
            raise SystemExit(f"--words {path}: no such file")
        words = path.read_text(encoding="utf-8").splitlines()
    info = build_pseudo_query_collection(
        args.source,
        args.out,
        args.teacher,
        words=words,
        english=args.english,
        include_evaluation_queries=args.transductive,
        min_score=args.min_score,
        max_queries=args.max_queries or None,
        positives=args.positives,
        expand_captions=args.expand_captions,
        seed=args.seed,
    )
    print(
        f"{info['pseudo_queries']} pseudo-queries ({info['passed_min_score']} of "
        f"{info['candidates']} candidates reached cosine {info['min_score']}) -> {args.out}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
