"""Retrieval evaluation as a Callback: encode (+ gather) → retrieve → score → log / write.

At the end of every validation epoch (and in ``validate`` / ``test``) the evaluation corpus
and the split's judged queries are encoded on every rank and gathered
(:func:`~lightning_mlsr.training.callbacks.split_encoding.encode_split`), ranked and scored
with the Trainer-free functions of :mod:`lightning_mlsr.retrieval.evaluation` (exact inverted
index, trec_eval semantics). Every rank holds the same matrices and logs the same values, so
``ModelCheckpoint(monitor="val/nDCG@10")`` works under DDP. ``validate`` and ``test`` (not
the validation epochs of ``fit``) also write what they evaluated into the run's directory,
the evaluator's public output (:func:`~lightning_mlsr.retrieval.evaluation.write_evaluation`):
``runs/<split>.trec`` and ``runs/<split>.metrics.json``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.rank_zero import rank_zero_info

from lightning_mlsr.models import is_dense_model
from lightning_mlsr.retrieval.evaluation import (
    Run,
    Scores,
    retrieve,
    score,
    sparse_efficiency,
    write_evaluation,
)
from lightning_mlsr.retrieval.index import InvertedIndex
from lightning_mlsr.retrieval.index.inputs import check_k
from lightning_mlsr.retrieval.metrics import DEFAULT_MEASURES
from lightning_mlsr.training.callbacks.split_encoding import (
    batch_limit,
    encode_split,
    limited_qrels,
)
from lightning_mlsr.training.callbacks.wandb_panels import log_sample_terms
from lightning_mlsr.training.runs import run_dir

__all__ = ["RetrievalEvaluator"]


class RetrievalEvaluator(Callback):
    """Exact inverted-index retrieval metrics at validation and test time.

    Args:
        k: documents retrieved per query (trec_eval's usual 1000).
        measures: ir_measures-style names passed to :func:`lightning_mlsr.retrieval.metrics.evaluate`.
        every_n_epochs: evaluate on every n-th validation epoch during ``fit``.
        run_dir: where ``validate`` and ``test`` write their run files (default: the run's
            own directory, :func:`lightning_mlsr.training.runs.run_dir`).
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
            A limited evaluation logs how much it encoded (``eval_docs``, ``eval_queries``)
            and warns that it was limited.

    Outputs: the figures are logged as ``<val|test>/<name>`` and returned by :meth:`evaluate`.
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
            qrels = limited_qrels(trainer, datamodule, split, qrels, encoded, limit)
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

    def _write_run(
        self, trainer: L.Trainer, run: Run, split: str, scores: Scores, figures: dict[str, float]
    ) -> Path:
        """Write ``runs/<split>.trec`` and ``runs/<split>.metrics.json`` under the run's
        directory (on the global-zero rank) and say where; returns the run file's path."""
        base = Path(self.run_dir) if self.run_dir else run_dir(trainer)
        name = trainer.logger.name if trainer.logger is not None else None
        tag = "".join((self.run_tag or name or "lightning_mlsr").split()) or "lightning_mlsr"
        path = base / "runs" / f"{split}.trec"
        if trainer.is_global_zero:
            report = write_evaluation(path, run, scores, self.measures, figures, tag=tag)
            shown = " ".join(f"{m}={scores.means[m]:.4f}" for m in self.measures)
            rank_zero_info(
                f"{split}: {shown} — `{report['trec_eval_command']}` over all "
                f"{report['judged_queries']} judged queries "
                f"({len(report['queries_without_results'])} retrieved nothing: absent from the "
                f"run file, counted as 0). Run file: {path}; per-query values: "
                f"{path.with_suffix('.metrics.json')}"
            )
        trainer.strategy.barrier()
        return path
