"""Teacher-mined hard negatives: for every training query, the captions a frozen dense
teacher ranks highest among those not judged relevant, written as the TSV that
:class:`~lightning_mlsr.data.training.negatives.HardNegatives` reads.

Why: in-batch negatives are random images, nearly all easy; the student then only learns
to tell a query's image from unrelated ones, and the teacher's in-batch distribution it
distils (``model.distillation``) is almost one-hot.

    python -m lightning_mlsr.generate.hard_negatives emoji --teacher teacher.pt --out negatives.tsv

Every training query is scored against every caption exactly (in blocks of 1024 queries):
meant for collections of up to ~10^5 images, not for AToMiC's 10M (that would need an ANN
index). No validation or test judgment is read.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

from lightning_mlsr.data.errors import DataError, format_ids
from lightning_mlsr.io.atomic import atomic_write_text

log = logging.getLogger("lightning_mlsr.generate")

__all__ = ["mine_hard_negatives"]


def mine_hard_negatives(
    source: str | os.PathLike[str],
    out: str | os.PathLike[str],
    teacher_checkpoint: str | os.PathLike[str],
    *,
    split: str = "train",
    depth: int = 30,
    backbone: str = "minilm-l6",
    pooling: str = "mean",
    query_max_length: int = 16,
    doc_max_length: int = 32,
) -> dict[str, Any]:
    """Write the teacher's top ``depth`` non-relevant images of every query of ``split``.

    Args:
        source: a collection directory or bundled name.
        out: the TSV to write (written aside and renamed, so a reader never sees half).
        teacher_checkpoint: a trained dense bi-encoder (``experiments/baselines/dense_caption.yaml``).
        depth: negatives kept per query, best first.
        backbone, pooling: the teacher's text encoder, as in that experiment.

    Returns:
        a summary: queries, images, depth.
    """
    import torch

    from lightning_mlsr.baselines.common import split_texts
    from lightning_mlsr.data.collection.load import load_collection
    from lightning_mlsr.generate.pseudo_queries import teacher_embeddings
    from lightning_mlsr.io.pretrained import load_tokenizer
    from lightning_mlsr.models.teacher import load_dense_text_teacher

    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    collection = load_collection(source)
    ids, texts = split_texts(collection, split)
    qrels = collection.qrels[split]
    captions = collection.images.captions()
    image_ids = list(collection.images.ids)
    bad = [i for i in image_ids if "\t" in i or "\n" in i]
    if bad:
        raise DataError(f"image ids with a tab or newline cannot be written: {format_ids(bad)}")

    tokenizer = load_tokenizer(backbone)
    teacher = load_dense_text_teacher(teacher_checkpoint, backbone, pooling)
    docs = teacher_embeddings(teacher, tokenizer, "doc", captions, doc_max_length, desc="captions")
    queries = teacher_embeddings(
        teacher, tokenizer, "query", texts, query_max_length, desc=f"{split} queries"
    )
    most_relevant = max((len(qrels[q]) for q in ids), default=0)
    k = min(depth + most_relevant, len(captions))
    with torch.no_grad():
        top = torch.cat([(b @ docs.T).topk(k, dim=1).indices for b in queries.split(1024)])
    short, lines = 0, []
    for qid, ranked in zip(ids, top.tolist(), strict=True):
        relevant = qrels[qid]
        negs = [image_ids[j] for j in ranked if relevant.get(image_ids[j], 0) <= 0][:depth]
        short += len(negs) < depth
        lines.append("\t".join([qid, *negs]) + "\n")
    atomic_write_text(out, "".join(lines))
    if short:
        log.warning("%d queries have fewer than %d negatives (small collection)", short, depth)
    return {"queries": len(ids), "images": len(image_ids), "depth": depth, "split": split}


def main(argv: Sequence[str] | None = None) -> int:
    from lightning_mlsr.generate.pseudo_queries import teacher_parser

    parser = teacher_parser(
        "python -m lightning_mlsr.generate.hard_negatives",
        "Mine each training query's hard negatives with a dense teacher.",
        "TSV to write",
    )
    parser.add_argument("--depth", type=int, default=30, help="negatives per query")
    parser.add_argument("--split", default="train")
    args = parser.parse_args(argv)
    info = mine_hard_negatives(
        args.source, args.out, args.teacher, split=args.split, depth=args.depth
    )
    print(f"{info['queries']} {info['split']} queries x {info['depth']} negatives -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
