"""The evaluator's input: an evaluation split encoded under a Trainer.

:func:`encode_split` encodes the evaluation corpus and a split's judged queries, sharded
across DDP ranks and gathered back as fixed-shape padded rows
(:mod:`~lightning_mlsr.training.callbacks.gather`), so every rank holds the same matrices in
the collection's table order. A limited evaluation (``fast_dev_run=n``; with
``follow_batch_limits``, also ``limit_val_batches`` / ``limit_test_batches``,
:func:`batch_limit`) encodes only that many batches of each side, as Lightning does for its
own loops, and is scored on the judgments of the queries it encoded (:func:`limited_qrels`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, cast

import lightning as L
import numpy as np
import scipy.sparse as sp
from lightning.pytorch.utilities.rank_zero import rank_zero_warn

from lightning_mlsr.models import is_dense_model
from lightning_mlsr.retrieval.batch_encoding import encode_loader
from lightning_mlsr.training.callbacks.gather import gather_dense_rows, gather_sparse_rows

__all__ = ["EncodedSplit", "batch_limit", "encode_split", "limited_qrels"]


def _encode_side(
    pl_module: L.LightningModule, loader: Any, side: str, trainer: L.Trainer | None, dense: bool
) -> tuple[np.ndarray, Any]:
    """Row indices and vectors of one side (``"doc"`` or ``"query"``) on this process."""
    model = cast(Any, pl_module)
    return encode_loader(
        model.encode_docs if side == "doc" else model.encode_queries,
        loader,
        width=model.doc_encoder.width,
        dense=dense,
        side=side,
        device=pl_module.device,
        module=pl_module,
        context=trainer.precision_plugin.forward_context() if trainer is not None else None,
    )


def batch_limit(trainer: L.Trainer | None, split: str, follow_limits: bool) -> int | float | None:
    """How much of each evaluation loader a run encodes: ``None`` (all of it), a number of
    batches (int) or a fraction of them (float).

    ``fast_dev_run=n`` always gives ``n``; ``limit_val_batches`` (split ``"validation"``)
    or ``limit_test_batches`` (``"test"``) only with ``follow_limits``.
    """
    if trainer is None:
        return None
    fast = int(cast(Any, trainer).fast_dev_run)
    if fast:
        return fast
    if not follow_limits:
        return None
    limit = trainer.limit_test_batches if split == "test" else trainer.limit_val_batches
    if limit is None or (isinstance(limit, float) and limit >= 1.0):
        return None
    return limit


def _limited(loader: Any, limit: int | float | None) -> Any:
    """``loader`` itself, or its first batches under ``limit`` (a float keeps that fraction
    of its batches, rounded down as Lightning does, but at least one)."""
    if limit is None:
        return loader
    if isinstance(limit, float):
        limit = max(1, int(len(loader) * limit))
    return _first_batches(loader, int(limit))


def _first_batches(loader: Iterable[Any], n: int) -> list[Any]:
    """The first ``n`` batches of ``loader`` (the loader is closed after them)."""
    batches = []
    iterator = iter(loader)
    try:
        for _ in range(n):
            batches.append(next(iterator))
    except StopIteration:
        pass
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:
            close()  # a generator-based loader reports its skipped images here
    return batches


class EncodedSplit:
    """Encoded corpus and queries of one split, rows in the collection's table order."""

    def __init__(
        self,
        doc_ids: list[str],
        docs: sp.csr_matrix,
        query_ids: list[str],
        queries: sp.csr_matrix,
    ) -> None:
        self.doc_ids = doc_ids
        self.docs = docs
        self.query_ids = query_ids
        self.queries = queries


def encode_split(
    pl_module: L.LightningModule,
    datamodule: Any,
    split: str,
    trainer: L.Trainer | None = None,
    limit: int | float | None = None,
) -> EncodedSplit:
    """Encode the evaluation corpus and a split's judged queries (sharded under DDP).

    With ``limit`` (see :func:`batch_limit`) only the first batches of each side's loader
    are encoded, on every rank: a smoke run checks the whole path without encoding (or
    computing image features for) the whole corpus.
    """
    rank = trainer.global_rank if trainer is not None else 0
    world = trainer.world_size if trainer is not None else 1
    dense = is_dense_model(pl_module)
    doc_loader = _limited(datamodule.corpus_dataloader(rank, world, split=split), limit)
    query_loader = _limited(datamodule.query_dataloader(split, rank, world), limit)
    d_rows, docs = _encode_side(pl_module, doc_loader, "doc", trainer, dense)
    q_rows, queries = _encode_side(pl_module, query_loader, "query", trainer, dense)
    if world > 1:
        gather = gather_dense_rows if dense else gather_sparse_rows
        d_rows, docs = gather(pl_module, d_rows, docs)
        q_rows, queries = gather(pl_module, q_rows, queries)
    d_order, q_order = np.argsort(d_rows, kind="stable"), np.argsort(q_rows, kind="stable")
    images, texts = datamodule.collection.images, datamodule.collection.texts
    return EncodedSplit(
        doc_ids=[images.ids[i] for i in d_rows[d_order]],
        docs=docs[d_order],
        query_ids=[texts.ids[i] for i in q_rows[q_order]],
        queries=queries[q_order],
    )


def limited_qrels(
    trainer: L.Trainer,
    datamodule: Any,
    split: str,
    qrels: dict[str, dict[str, int]],
    encoded: EncodedSplit,
    limit: int | float,
) -> dict[str, dict[str, int]]:
    """The judgments of the encoded queries only: a limited evaluation's figures are
    means over the queries it encoded, as a limited Lightning loop's are over its
    batches (said in a warning naming the counts)."""
    fast = int(cast(Any, trainer).fast_dev_run)
    loop = "val" if split == "validation" else split
    setting = f"fast_dev_run={fast}" if fast else f"limit_{loop}_batches={limit}"
    rank_zero_warn(
        f"{split} retrieval is limited ({setting}): {len(encoded.query_ids)} of "
        f"{len(qrels)} judged queries ranked against {len(encoded.doc_ids)} of "
        f"{len(datamodule.corpus_rows(split))} documents; its figures are not comparable "
        "with a full evaluation"
    )
    return {q: qrels[q] for q in encoded.query_ids if q in qrels}
