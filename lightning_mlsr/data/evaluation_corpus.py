"""Which images an evaluation ranks, and which of them this DDP rank reads.

Lightning-free, so that reading can be sharded and tested without a Trainer.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pyarrow.compute as pc

from lightning_mlsr.data.collection.tables import Collection
from lightning_mlsr.data.errors import DataError
from lightning_mlsr.data.training.pairs import split_qrels

__all__ = ["EvalCorpus", "eval_corpus_rows", "judged_query_rows", "shard_indices"]

EvalCorpus = Literal["all", "judged", "judged+sampled"]


def eval_corpus_rows(
    collection: Collection,
    split: str | None,
    mode: EvalCorpus = "all",
    distractors: int = 0,
    seed: int = 0,
) -> np.ndarray:
    """Image rows (sorted) of the evaluation corpus of ``split``.

    ``all``: every image. ``judged``: the images judged in the split (any relevance; what
    the AToMiC "small" setting ranks). ``judged+sampled``: those plus ``distractors``
    other images drawn without replacement with ``seed`` (all others if fewer remain).
    """
    n = len(collection.images)
    if mode == "all" or split is None:
        return np.arange(n, dtype=np.int64)
    if mode not in ("judged", "judged+sampled"):
        raise ValueError(f"eval_corpus must be 'all', 'judged' or 'judged+sampled', got {mode!r}")
    if split not in collection.qrels:
        raise DataError(f"collection {collection.name!r} has no {split!r} qrels")
    judged_ids = pc.unique(collection.qrels_table.table(split)["image_id"])
    judged = np.unique(collection.images.ids.positions(judged_ids))
    judged = judged[judged >= 0]  # judged images skipped at load cannot be ranked
    if mode == "judged":
        return judged
    if distractors < 0:
        raise ValueError(f"eval_distractors must be >= 0, got {distractors}")
    rest = np.setdiff1d(np.arange(n, dtype=np.int64), judged)
    rng = np.random.default_rng(seed)
    sampled = rng.choice(rest, size=min(distractors, len(rest)), replace=False)
    return np.sort(np.concatenate([judged, sampled]))


def judged_query_rows(collection: Collection, split: str) -> np.ndarray:
    """Text rows of the split's judged queries, sorted by text id."""
    split_qrels(collection, split)
    ids = pc.unique(collection.qrels_table.table(split)["text_id"]).sort()
    return collection.texts.ids.positions(ids)


def shard_indices(n: int, rank: int, world_size: int) -> np.ndarray:
    """This rank's contiguous block of ``range(n)``: disjoint, covering, no padding.

    Contiguous (not strided) so that each rank reads its own parquet row groups.
    """
    return np.array_split(np.arange(n, dtype=np.int64), world_size)[rank]
