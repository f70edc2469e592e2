"""Teacher-mined hard negatives: for every training query, the captions a frozen dense
teacher ranks highest among those not judged relevant.

Why: in-batch negatives are random images, nearly all easy; the student then only learns
to tell a query's image from unrelated ones, and the teacher's in-batch distribution it
distils (``model.distillation``) is almost one-hot. With hard negatives each training
batch also holds, for every pair, ``negatives_per_query`` images sampled from its query's
list (``RetrievalDataModule(hard_negatives=FILE)``): InfoNCE ranks them below the positive
and the teacher's scores over them — what SPLADE++ and D2S distil — say *how much* below.

The file is plain TSV, one training query per line, the teacher's ranking after the text id:

    text_id <TAB> image_id <TAB> image_id ...

    python -m lightning_mlsr.data.training.negatives emoji --teacher teacher.pt --out negatives.tsv

Every training query is scored against every caption exactly (in blocks of 1024 queries):
meant for collections of up to ~10^5 images, not for AToMiC's 10M (that would need an ANN
index). No validation or test judgment is read.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lightning_mlsr.data.collection.tables import Collection
from lightning_mlsr.data.errors import DataError, format_ids

log = logging.getLogger("lightning_mlsr.data")

__all__ = ["HardNegatives", "mine_hard_negatives"]


class HardNegatives:
    """Each text row's ranked negative image rows (CSR: ``offsets`` into ``rows``).

    Args:
        offsets: ``(T + 1,)`` int64; text row ``t``'s negatives are
            ``rows[offsets[t]:offsets[t + 1]]``, best first.
        rows: image rows.
    """

    def __init__(self, offsets: np.ndarray, rows: np.ndarray) -> None:
        self.offsets = np.asarray(offsets, np.int64)
        self.rows = np.asarray(rows, np.int64)

    @classmethod
    def read(cls, path: str | os.PathLike[str], collection: Collection) -> HardNegatives:
        """Read a negatives TSV against ``collection``'s text and image ids.

        An unknown text id is an error (the file belongs to another collection); an unknown
        image id (e.g. an image skipped as corrupt) is left out, counted and logged.
        """
        path = Path(path)
        if not path.is_file():
            raise DataError(
                f"hard negatives file {str(path)!r} does not exist; mine one with "
                "`python -m lightning_mlsr.data.training.negatives COLLECTION --teacher CKPT --out FILE`"
            )
        text_ids: list[str] = []
        image_ids: list[str] = []
        counts: list[int] = []
        with path.open(encoding="utf-8") as f:
            for line_no, line in enumerate(f, 1):
                fields = line.rstrip("\n").split("\t")
                if not fields[0]:
                    raise DataError(f"{path}:{line_no}: empty text id")
                text_ids.append(fields[0])
                negs = [x for x in fields[1:] if x]
                image_ids.extend(negs)
                counts.append(len(negs))
        t = np.asarray(collection.texts.ids.positions(text_ids), np.int64)
        if (t < 0).any():
            unknown = [text_ids[i] for i in np.flatnonzero(t < 0)]
            raise DataError(
                f"{path}: {len(unknown)} text id(s) not in collection {collection.name!r}: "
                f"{format_ids(unknown)}"
            )
        if len(np.unique(t)) != len(t):
            raise DataError(f"{path}: a text id is listed on more than one line")
        im = np.asarray(collection.images.ids.positions(image_ids), np.int64)
        owner = np.repeat(t, counts)  # (N,)
        missing = int((im < 0).sum())
        if missing:
            log.warning(
                "%s: %d negative image id(s) are not in collection %r (e.g. skipped as "
                "corrupt); left out",
                path,
                missing,
                collection.name,
            )
        owner, im = owner[im >= 0], im[im >= 0]
        order = np.argsort(owner, kind="stable")  # keep each query's ranking
        owner, im = owner[order], im[order]
        offsets = np.searchsorted(owner, np.arange(len(collection.texts) + 1))
        return cls(offsets, im)

    def count(self, text_rows: np.ndarray) -> np.ndarray:
        """How many negatives each text row has. Shape: ``(B,)``."""
        t = np.asarray(text_rows, np.int64)
        return self.offsets[t + 1] - self.offsets[t]

    def check_covers(self, text_rows: np.ndarray, collection: Collection) -> None:
        """Every text row must have a negative (a clear error naming those without)."""
        t = np.unique(np.asarray(text_rows, np.int64))
        empty = t[self.count(t) == 0]
        if len(empty):
            ids = [collection.texts.ids[int(r)] for r in empty[:20]]
            raise DataError(
                f"{len(empty)} training query(ies) have no hard negatives, e.g. "
                f"{format_ids(ids)}; mine the file for this collection's train split"
            )

    def sample(
        self, text_rows: Sequence[int], n: int, rng: np.random.Generator, depth: int | None = None
    ) -> np.ndarray:
        """``n`` negatives per text row, drawn uniformly without replacement from its first
        ``depth`` (None: all) — with replacement where it has fewer than ``n``.

        Shape: ``(B,)`` -> ``(B, n)`` image rows.
        """
        out = np.empty((len(text_rows), n), np.int64)
        for i, t in enumerate(text_rows):
            lo, hi = self.offsets[t], self.offsets[t + 1]
            if depth is not None:
                hi = min(hi, lo + depth)
            if hi <= lo:
                raise DataError(f"text row {t} has no hard negatives")
            pick = rng.choice(hi - lo, n, replace=hi - lo < n)
            out[i] = self.rows[lo + pick]
        return out


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
        teacher_checkpoint: a trained dense bi-encoder (``experiments/dense_caption.yaml``).
        depth: negatives kept per query, best first.
        backbone, pooling: the teacher's text encoder, as in that experiment.

    Returns:
        a summary: queries, images, depth.
    """
    import torch

    from lightning_mlsr.baselines.common import split_texts
    from lightning_mlsr.data.collection.load import load_collection
    from lightning_mlsr.generate.pseudo_queries import load_teacher, teacher_embeddings
    from lightning_mlsr.io.pretrained import load_tokenizer

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
    teacher = load_teacher(teacher_checkpoint, backbone, pooling)
    docs = teacher_embeddings(teacher, tokenizer, "doc", captions, doc_max_length, desc="captions")
    queries = teacher_embeddings(
        teacher, tokenizer, "query", texts, query_max_length, desc=f"{split} queries"
    )
    most_relevant = max((len(qrels[q]) for q in ids), default=0)
    k = min(depth + most_relevant, len(captions))
    with torch.no_grad():
        top = torch.cat([(b @ docs.T).topk(k, dim=1).indices for b in queries.split(1024)])
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f"{out.name}.tmp{os.getpid()}")
    short = 0
    with tmp.open("w", encoding="utf-8") as f:
        for qid, ranked in zip(ids, top.tolist(), strict=True):
            relevant = qrels[qid]
            negs = [image_ids[j] for j in ranked if relevant.get(image_ids[j], 0) <= 0][:depth]
            short += len(negs) < depth
            f.write("\t".join([qid, *negs]) + "\n")
    tmp.replace(out)
    if short:
        log.warning("%d queries have fewer than %d negatives (small collection)", short, depth)
    return {"queries": len(ids), "images": len(image_ids), "depth": depth, "split": split}


def main(argv: Sequence[str] | None = None) -> int:
    from lightning_mlsr.generate.pseudo_queries import teacher_parser

    parser = teacher_parser(
        "python -m lightning_mlsr.data.training.negatives",
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
