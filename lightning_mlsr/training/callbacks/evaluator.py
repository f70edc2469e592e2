"""Retrieval evaluation as a Callback: encode the corpus, build the inverted index, score.

At the end of every validation epoch (and in ``validate`` / ``test``) the whole corpus and
the split's judged queries are encoded — sharded across DDP ranks and gathered back as
fixed-shape padded rows, so every rank holds the same matrices — an exact
:class:`~lightning_mlsr.retrieval.index.InvertedIndex` is built, the top ``k`` images are retrieved
per query and scored with trec_eval semantics (:func:`lightning_mlsr.retrieval.metrics.evaluate`).
Every rank logs the same values, so ``ModelCheckpoint(monitor="val/nDCG@10")`` works
under DDP. ``validate`` and ``test`` (not the validation epochs of ``fit``) also write what
they evaluated into the run's directory, the evaluator's public output:
``runs/<split>.trec``, the run, and next to it ``runs/<split>.metrics.json``, the
per-query values the logged means are made of and every logged figure (``figures``).

A limited evaluation (``fast_dev_run=n``; with ``follow_batch_limits``, also
``limit_val_batches`` / ``limit_test_batches``) encodes only that many batches of the corpus
and of the queries, as Lightning does for its own loops, and its figures are those of what
was encoded: the encoded queries ranked against the encoded documents. The counts are
logged beside them (``val/eval_docs``, ``val/eval_queries``) and a warning says the
evaluation was limited.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, cast

import lightning as L
import numpy as np
import scipy.sparse as sp
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.rank_zero import rank_zero_info, rank_zero_warn

from lightning_mlsr.io.atomic import atomic_write_text
from lightning_mlsr.models import is_dense_model
from lightning_mlsr.retrieval.batch_encoding import encode_loader
from lightning_mlsr.retrieval.evaluation import Scores, retrieve, score, sparse_efficiency
from lightning_mlsr.retrieval.index import InvertedIndex
from lightning_mlsr.retrieval.index.inputs import check_k
from lightning_mlsr.retrieval.metrics import DEFAULT_MEASURES, trec_eval_command
from lightning_mlsr.retrieval.trec import write_trec_run
from lightning_mlsr.training.callbacks.gather import gather_dense_rows, gather_sparse_rows
from lightning_mlsr.training.callbacks.wandb_panels import log_sample_terms
from lightning_mlsr.training.runs import run_dir

log = logging.getLogger("lightning_mlsr")

__all__ = ["EncodedSplit", "RetrievalEvaluator", "batch_limit", "encode_split"]


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


class RetrievalEvaluator(Callback):
    """Exact inverted-index retrieval metrics at validation and test time.

    Args:
        k: documents retrieved per query (trec_eval's usual 1000).
        measures: ir_measures-style names passed to :func:`lightning_mlsr.retrieval.metrics.evaluate`.
        every_n_epochs: evaluate on every n-th validation epoch during ``fit``.
        run_dir: where ``test`` writes TREC run files (default: the logger's directory).
        run_tag: the run file's tag column (default: the experiment/logger name).
        log_samples: images shown with their top terms in a W&B table at each evaluation
            (0 disables; histograms of non-zeros per query and per document are logged
            alongside). Only with a ``WandbLogger``.
        sample_terms: top terms listed per sample image.
        follow_batch_limits: also limit the evaluation under the Trainer's
            ``limit_val_batches`` / ``limit_test_batches`` (``fast_dev_run`` always limits
            it). Off by default: those limits then shorten the held-out pair loss only, and
            retrieval ranks the whole corpus that ``data.evaluation.corpus`` chose — a figure
            over part of the corpus (fewer distractors, higher values) would be logged
            under the same name as full ones and compared with them by ``ModelCheckpoint``.

    Outputs: the figures are logged as ``<val|test>/<name>`` and returned by
    :meth:`evaluate`. ``validate`` and ``test`` also write, under ``run_dir`` (by default the
    run's own directory, :func:`lightning_mlsr.training.runs.run_dir`), ``runs/<split>.trec``
    (the run; scores written with ``repr``, so :func:`~lightning_mlsr.retrieval.trec.read_trec_run`
    reads back the exact run) and ``runs/<split>.metrics.json``: ``per_query`` and
    ``aggregate`` values of ``measures``, ``figures`` (every logged value, named without its
    ``val/`` or ``test/`` prefix), the trec_eval call that gives them and the judged queries
    that retrieved nothing.
    """

    def __init__(
        self,
        k: int = 1000,
        measures: Sequence[str] = DEFAULT_MEASURES,
        every_n_epochs: int = 1,
        run_dir: str | None = None,
        run_tag: str | None = None,
        log_samples: int = 16,
        sample_terms: int = 10,
        follow_batch_limits: bool = False,
    ) -> None:
        super().__init__()
        self.follow_batch_limits = follow_batch_limits
        self.k = check_k(k)
        self.measures = tuple(measures)
        self.every_n_epochs = every_n_epochs
        self.run_dir = run_dir
        self.run_tag = run_tag
        self.log_samples = log_samples
        self.sample_terms = sample_terms

    # ------------------------------------------------------------------ hooks
    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        if trainer.state.fn == "fit" and (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        # an explicit ``validate`` keeps what it evaluated, as ``test`` does
        write_run = trainer.state.fn == "validate"
        self.evaluate(trainer, pl_module, split="validation", prefix="val", write_run=write_run)

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.evaluate(trainer, pl_module, split="test", prefix="test", write_run=True)

    # ------------------------------------------------------------------ work
    def evaluate(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        split: str,
        prefix: str,
        write_run: bool = False,
    ) -> dict[str, float]:
        """Encode, retrieve and score ``split``, log the figures as ``<prefix>/<name>`` and
        return them; with ``write_run``, also write the split's run and metrics files."""
        datamodule = cast(Any, trainer).datamodule
        if datamodule is None or not hasattr(datamodule, "corpus_dataloader"):
            raise RuntimeError(
                "RetrievalEvaluator needs a RetrievalDataModule attached to the Trainer"
            )
        start = time.perf_counter()
        limit = batch_limit(trainer, split, self.follow_batch_limits)
        encoded = encode_split(pl_module, datamodule, split, trainer, limit)
        qrels = datamodule.qrels(split)
        if limit is not None:
            qrels = self._limited_qrels(trainer, datamodule, split, qrels, encoded, limit)
        index = None
        if not is_dense_model(pl_module):
            index = InvertedIndex.from_matrix(encoded.docs, encoded.doc_ids)
        run = retrieve(
            encoded.docs, encoded.doc_ids, encoded.queries, encoded.query_ids, self.k, index=index
        )
        scores = score(run, qrels, self.measures)
        results = dict(scores.means)
        if index is not None:
            results.update(sparse_efficiency(index, encoded.docs, encoded.queries))
        results["eval_seconds"] = time.perf_counter() - start
        results["eval_docs"] = float(len(encoded.doc_ids))
        results["eval_queries"] = float(len(encoded.query_ids))
        # every rank holds identical matrices, so every rank logs identical values
        for name, value in results.items():
            pl_module.log(f"{prefix}/{name}", value, sync_dist=False, batch_size=1)
        if write_run:
            self._write_run(trainer, run, split, scores, results)
        if trainer.is_global_zero and index is not None:
            log_sample_terms(
                trainer,
                pl_module,
                encoded.doc_ids,
                encoded.docs,
                encoded.queries,
                prefix,
                self.log_samples,
                self.sample_terms,
            )
        return results

    @staticmethod
    def _limited_qrels(
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

    def _write_run(
        self,
        trainer: L.Trainer,
        run: dict[str, dict[str, float]],
        split: str,
        scores: Scores,
        figures: dict[str, float],
    ) -> Path:
        """Write ``runs/<split>.trec`` and, next to it, ``runs/<split>.metrics.json``: the
        measures per query and aggregated, with the trec_eval call that gives them, and
        ``figures``, every value logged for this evaluation (measures, sparsity, sizes,
        seconds) under its name without the ``val/`` or ``test/`` prefix. Returns the path
        of the run file.

        A judged query that retrieves nothing has no line in a TREC run file, but it counts
        (as 0) in the logged means — ``trec_eval -c`` semantics — so scoring the file without
        ``-c`` gives higher numbers than the log; the JSON says which queries those are.
        """
        base = Path(self.run_dir) if self.run_dir else run_dir(trainer)
        name = trainer.logger.name if trainer.logger is not None else None
        tag = "".join((self.run_tag or name or "lightning_mlsr").split()) or "lightning_mlsr"
        path = base / "runs" / f"{split}.trec"
        if trainer.is_global_zero:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_trec_run(path, run, tag=tag)
            per_query, judged = scores.per_query, scores.judged
            empty = [q for q in judged if not run.get(q)]
            command = trec_eval_command(self.measures, path.name)
            metrics_path = path.with_suffix(".metrics.json")
            report = {
                "run_file": path.name,
                "semantics": (
                    f"`{command}`: the mean over all {len(judged)} judged queries; a judged "
                    "query with no line in the run file scores 0. RR@k is not a trec_eval "
                    "measure: it is computed on trec_eval's ordering (score desc, docid desc)."
                ),
                "trec_eval_command": command,
                "judged_queries": len(judged),
                "queries_without_results": empty,
                "aggregate": {m: scores.means[m] for m in self.measures},
                "per_query": {q: {m: per_query[m][q] for m in self.measures} for q in judged},
                "figures": figures,
            }
            atomic_write_text(metrics_path, json.dumps(report, indent=1) + "\n")
            shown = " ".join(f"{m}={scores.means[m]:.4f}" for m in self.measures)
            rank_zero_info(
                f"{split}: {shown} — `{command}` over all {len(judged)} judged queries "
                f"({len(empty)} retrieved nothing: absent from the run file, counted as 0). "
                f"Run file: {path}; per-query values: {metrics_path}"
            )
        trainer.strategy.barrier()
        return path
