"""The sparse bi-encoder system: encode, InfoNCE, FLOPS/L1 penalties, logging.

Everything interchangeable is injected (query/document encoders, loss, regularizers,
distillation teacher and loss, optimizer) and chosen in YAML with ``class_path``/
``init_args``. Index building and retrieval metrics live in
:mod:`lightning_mlsr.training.callbacks.evaluator`; precision and device placement belong to the Trainer.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, cast

import lightning as L
import torch
from lightning.pytorch.cli import OptimizerCallable
from torch import nn

from lightning_mlsr.data.datamodule import RetrievalDataModule
from lightning_mlsr.io.encoder_reads import BatchInputs
from lightning_mlsr.models import Encoder, check_encoder_pair, tie_text_backbones
from lightning_mlsr.models.encoder import DenseEncoder, SparseEncoder
from lightning_mlsr.models.static import StaticQueryHead
from lightning_mlsr.models.teacher import DenseTeacher
from lightning_mlsr.objectives.distillation import ScoreDistillation
from lightning_mlsr.objectives.ranking import InfoNCE, gathered_false_negatives
from lightning_mlsr.objectives.regularizers import Regularizer
from lightning_mlsr.training.system.optimization import GROUPS, Optimization, lr_schedule
from lightning_mlsr.training.system.teacher_checkpoint import leave_teacher_out, put_teacher_back

__all__ = ["SparseBiEncoder"]

_MODULE_ARGS = [
    "query_encoder",
    "doc_encoder",
    "loss",
    "query_regularizer",
    "doc_regularizer",
    "teacher",
    "distillation",
]


class SparseBiEncoder(L.LightningModule):
    """Query and document encoders trained with in-batch InfoNCE plus sparsity penalties.

    Args:
        query_encoder: a text head (queries are texts): a sparse head, or a dense one for
            the dense baselines.
        doc_encoder: a head of the same kind (caption, image, or both).
        loss: ranking loss over in-batch negatives (default ``InfoNCE()``): any
            ``nn.Module`` called as ``loss(q, d, false_negatives)`` -> scalar, with ``q``
            ``(B, V)``, ``d`` ``(N, V)`` (the B positives, then any hard negatives) and
            ``false_negatives`` ``(B, N)`` bool or None.
            A loss with ``gather_across_ranks = True`` gets the ``(B, N * world)`` mask of
            the documents of every DDP rank instead.
        query_regularizer / doc_regularizer: FLOPS or L1 penalty on each side (weights
            ramped from ``trainer.global_step``).
        share_text_backbone: use the query encoder's transformer for documents too
            (both must name the same text backbone).
        optimizer: e.g. ``torch.optim.AdamW`` with its ``lr`` in YAML (default: AdamW,
            lr 1e-4, weight decay 0.01).
        optimization: parameter groups and the learning-rate schedule
            (:class:`~lightning_mlsr.training.system.optimization.Optimization`).
        teacher: the frozen dense teacher whose in-batch scores the student distils
            (:class:`~lightning_mlsr.models.teacher.DenseTeacher`); needs ``distillation``.
        distillation: the loss between the student's in-batch scores and the teacher's
            (KL or MarginMSE), added to the ranking loss; needs ``teacher``.
    """

    def __init__(
        self,
        query_encoder: Encoder,
        doc_encoder: Encoder,
        loss: nn.Module | None = None,
        query_regularizer: Regularizer | None = None,
        doc_regularizer: Regularizer | None = None,
        share_text_backbone: bool = False,
        optimizer: OptimizerCallable | None = None,
        optimization: Optimization | None = None,
        teacher: DenseTeacher | None = None,
        distillation: ScoreDistillation | None = None,
    ) -> None:
        super().__init__()
        # built in Python, the injected modules are objects, not configuration: pass them
        # again to load_from_checkpoint
        if isinstance(optimization, dict):  # from a checkpoint's hyperparameters
            optimization = Optimization(**optimization)
        optimization = optimization or Optimization()
        self.save_hyperparameters(ignore=_MODULE_ARGS + ["optimizer", "optimization"])
        if "_instantiator" in self.hparams:
            # built by LightningCLI (which records its instantiator): the hparams are the
            # class_path config, so keep all of it and load_from_checkpoint rebuilds any
            # configuration
            self.save_hyperparameters()
        else:  # plain values in the checkpoint, which is read with weights_only=True
            self.hparams["optimization"] = asdict(optimization)
        self.query_encoder = query_encoder
        self.doc_encoder = doc_encoder
        self.loss = loss if loss is not None else InfoNCE()
        self.query_regularizer = query_regularizer
        self.doc_regularizer = doc_regularizer
        self.optimizer_factory = optimizer or _default_optimizer
        self.optimization = optimization
        if (teacher is None) != (distillation is None):
            missing = "teacher" if teacher is None else "distillation"
            raise ValueError(
                f"model.{missing} is not set: distillation needs both the "
                "frozen teacher (model.teacher: lightning_mlsr.models.teacher.DenseTeacher) and "
                "the loss over its scores (model.distillation, e.g. lightning_mlsr.objectives."
                "distillation.KLDistillation); see experiments/distillation/kl_mlp_query.yaml"
            )
        self.teacher = teacher
        self.distillation = distillation
        self._fit_total_steps: int | None = None
        # (global step before the batch, values) of a logging step, until on_train_batch_end
        self._step_values: tuple[int, dict[str, torch.Tensor]] | None = None
        _check_output_spaces(query_encoder, doc_encoder)
        if share_text_backbone:
            tie_text_backbones(query_encoder, doc_encoder)
        if teacher is not None:
            teacher.check_reads_tokens_of(query_encoder, doc_encoder)
        # from_pretrained returns modules in eval mode (dropout off); Lightning keeps the mode
        # a module had before fit, so start in train mode (frozen image backbones stay eval)
        self.train()

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Leave the frozen teacher's weights out, keeping their fingerprint
        (:mod:`lightning_mlsr.training.system.teacher_checkpoint`)."""
        if self.teacher is not None:
            leave_teacher_out(checkpoint, self.teacher)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Put the teacher this module was built with back into a checkpoint saved without
        it; a teacher other than the one the checkpoint was trained with stops a resumed
        fit and is warned about otherwise."""
        if self.teacher is not None:
            resuming = self._trainer is not None and self.trainer.state.fn == "fit"
            put_teacher_back(checkpoint, self.teacher, resuming)

    def setup(self, stage: str) -> None:
        """Hand the Trainer's :class:`RetrievalDataModule` what the encoders read
        (:meth:`batch_inputs`), through its one entry point ``set_batch_inputs`` (any
        other DataModule makes its own batches); at fit, start a static query table that asks
        for it from IDF over the training captions."""
        datamodule = getattr(self.trainer, "datamodule", None)
        if isinstance(datamodule, RetrievalDataModule):
            datamodule.set_batch_inputs(self.batch_inputs())
        if stage == "fit" and datamodule is not None:  # before a resume restores weights
            for encoder in (self.query_encoder, self.doc_encoder):
                if isinstance(encoder, StaticQueryHead) and encoder.wants_idf_start:
                    encoder.start_from_idf(datamodule.collection.images.captions())

    def batch_inputs(self) -> BatchInputs:
        """What the query and document batches must hold: what each encoder reads
        (:meth:`~lightning_mlsr.models.encoder.Encoder.reads`)."""
        return BatchInputs(self.query_encoder.reads(), self.doc_encoder.reads())

    # ------------------------------------------------------------------ forward
    def forward(self, queries: dict[str, torch.Tensor], docs: dict[str, torch.Tensor]):
        """Encode both sides. Shape: ``(B, V)`` and ``(B', V)``."""
        return self.query_encoder(queries), self.doc_encoder(docs)

    def encode_queries(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Shape: ``(B, V)`` non-negative term weights."""
        return self.query_encoder(inputs)

    def encode_docs(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Shape: ``(B, V)`` non-negative term weights."""
        return self.doc_encoder(inputs)

    def _false_negatives(self, batch: dict[str, Any]) -> torch.Tensor | None:
        """This rank's ``(B, N)`` mask, or for a loss that gathers the documents of every
        rank the ``(B, N * world)`` mask, recomputed from the gathered document ids."""
        mask = batch.get("false_negatives")
        world = self.trainer.world_size if self._trainer is not None else 1
        if not (getattr(self.loss, "gather_across_ranks", False) and world > 1):
            return mask
        doc_idx = cast(torch.Tensor, self.all_gather(batch["doc_idx"])).reshape(-1)  # (W * N,)
        offset = self.global_rank * batch["doc_idx"].shape[0]
        return gathered_false_negatives(batch["relevant_doc_idx"], doc_idx, offset)

    def _shared_step(
        self, batch: dict[str, Any], split: str, logs: bool = False
    ) -> dict[str, torch.Tensor]:
        """Encode, score and penalise one batch; with ``logs`` (a training step that logs)
        also the non-zeros per vector (full ``(B, V)`` passes, so only then)."""
        q, d = self(batch["query"], batch["doc"])  # (B, V), (N, V)
        rank_loss = self.loss(q, d, self._false_negatives(batch))
        out = {"rank_loss": rank_loss}
        if split == "train" and logs:
            out["q_nnz"], out["d_nnz"] = _nnz(q), _nnz(d)
        total = rank_loss
        if self.teacher is not None and self.distillation is not None:
            # local in-batch scores; batch["false_negatives"] is this rank's (B, N) mask
            teacher_scores = self.teacher.scores(batch["query"], batch["doc"])  # (B, N)
            kd = self.distillation(q, d, teacher_scores, batch.get("false_negatives"))
            out["distill_loss"] = kd
            total = total + kd
        step, total_steps = self.global_step, self._total_steps()
        for side, reg, w in (("q", self.query_regularizer, q), ("d", self.doc_regularizer, d)):
            if reg is None:
                continue
            penalty, weight = reg(w, step, total_steps)
            total = total + penalty
            out[f"{side}_reg"] = penalty
            # a fill kernel on w's device: torch.tensor(weight) would be a CPU scalar that
            # Lightning copies to the GPU, a blocking copy that stalls the step mid-way
            out[f"{side}_reg_weight"] = torch.full((), weight, device=w.device)
        out["loss"] = total
        return out

    def _total_steps(self) -> int:
        """All optimizer steps of the fit, for warm-ups given as a ratio (fixed when the
        optimizers are configured, at fit start and on resume). Outside a fit (validate/test
        of a loaded checkpoint) the warm-up is over: 0 steps, so the full weight."""
        return self._fit_total_steps or 0

    def _logs_this_step(self, batch_idx: int) -> bool:
        """Whether this training step logs its metrics: where its on-step values reach the
        logger (Lightning's rule: every ``log_every_n_steps`` optimizer steps, and when the
        fit stops), in a ``fast_dev_run``, and on the last batch of an epoch or of the fit,
        so that ``callback_metrics`` end with the final values.

        Other steps log nothing: ``self.log`` is Python work per value in every step (and a
        progress bar reads ``train/loss`` back to the host) that a plain loop does not do,
        for values Lightning would drop. ``callback_metrics["train/..."]`` therefore holds
        the latest logging step's values. The last step of an epoch or of the fit reaches
        the loggers even where Lightning's rule would drop it
        (:meth:`on_train_batch_end`).
        """
        if self._trainer is None:
            return True
        trainer = cast(Any, self.trainer)
        if trainer.fast_dev_run or trainer.should_stop:
            return True
        step, n = self.global_step + 1, trainer.log_every_n_steps  # the step this batch ends
        if n > 0 and step % n == 0:
            return True
        if trainer.max_steps is not None and 0 < trainer.max_steps <= step:
            return True
        return batch_idx + 1 == trainer.num_training_batches

    # ------------------------------------------------------------------ training
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        logs = self._logs_this_step(batch_idx)
        out = self._shared_step(batch, "train", logs)
        if not logs:
            return out["loss"]
        batch_size = batch["query_idx"].shape[0]
        values = {f"train/{k}": v.detach().float() for k, v in out.items() if k != "loss"}
        self.log_dict(values, on_step=True, on_epoch=False, batch_size=batch_size)
        values["train/loss"] = out["loss"].detach()
        self.log("train/loss", values["train/loss"], prog_bar=True, batch_size=batch_size)
        if self._trainer is not None and self.trainer.optimizers:
            for i, group in enumerate(self.trainer.optimizers[0].param_groups):
                name = "train/lr" if i == 0 else f"train/lr_{group.get('name', i)}"
                # made on the device (as the regularizer weights): a Python float would be copied there
                values[name] = torch.full((), float(group["lr"]), device=self.device)
                self.log(name, values[name], on_step=True, on_epoch=False, batch_size=batch_size)
        self._step_values = (self.global_step, values)
        return out["loss"]

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        """Hand a logging step's values to the loggers where Lightning's rule would not: the
        last step of an epoch or of the fit that is no multiple of ``log_every_n_steps``
        (without this, a fit shorter than ``log_every_n_steps`` logs no ``train/*`` at all).
        Under the same step number and with the ``epoch`` Lightning would log them with."""
        logged, self._step_values = self._step_values, None
        if logged is None or self._trainer is None:
            return
        trainer = cast(Any, self.trainer)
        step_before, values = logged
        n, step = trainer.log_every_n_steps, self.global_step
        if n <= 0 or step == step_before:  # step logging off; a micro-batch (accumulation)
            return
        if trainer.fast_dev_run or trainer.should_stop or step % n == 0:  # Lightning sends it
            return
        metrics = {name: float(value) for name, value in values.items()}
        metrics["epoch"] = self.current_epoch
        for logger in self.loggers:
            logger.log_metrics(metrics, step=step - 1)  # Lightning's: steps done before it

    # ------------------------------------------------------------------ validation / test
    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch, "validation", "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch, "test", "test")

    def _eval_step(self, batch: dict[str, Any], split: str, prefix: str) -> None:
        out = self._shared_step(batch, split)
        self.log_dict(
            {f"{prefix}/{k}": out[k].float() for k in ("loss", "rank_loss")},
            on_epoch=True,
            sync_dist=True,
            batch_size=batch["query_idx"].shape[0],
        )

    # ------------------------------------------------------------------ predict
    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, torch.Tensor]:
        """Sparse vectors (a COO tensor, so a large corpus fits in memory) of a corpus or
        query batch, with their row indices into the collection's table."""
        if "doc" in batch:
            rows, weights = batch["doc_idx"], self.encode_docs(batch["doc"])
        else:
            rows, weights = batch["query_idx"], self.encode_queries(batch["query"])
        return {"rows": rows.cpu(), "weights": weights.float().to_sparse().cpu()}

    # ------------------------------------------------------------------ optimizers
    def optimizer_parameters(self) -> Any:
        """Trainable parameters, split into the ``new``/``pretrained`` groups if configured.

        Frozen parameters (image backbones, a distillation teacher, skipped MLM layers) are
        left out, so they get no optimizer state.
        """
        trainable = [p for p in self.parameters() if p.requires_grad]  # unique, in order
        groups = self.optimization.param_groups
        if groups is None:
            return trainable
        new_ids = {
            id(p)
            for enc in (self.query_encoder, self.doc_encoder)
            for p in enc.new_parameters()
            if p.requires_grad
        }
        params = {
            "new": [p for p in trainable if id(p) in new_ids],
            "pretrained": [p for p in trainable if id(p) not in new_ids],
        }
        return [
            {"params": params[name], "name": name, **groups.get(name, {})}
            for name in GROUPS
            if params[name]
        ]

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(self.optimizer_parameters())
        total = max(1, int(self.trainer.estimated_stepping_batches))
        self._fit_total_steps = total
        opt = self.optimization
        scheduler = lr_schedule(optimizer, total, opt.lr_warmup_ratio, opt.lr_decay)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step", "name": "lr"},
        }


def _check_output_spaces(query_encoder: Encoder, doc_encoder: Encoder) -> None:
    """Both sparse over one vocabulary, or both dense of one size: else no dot product."""
    if check_encoder_pair(query_encoder, doc_encoder):
        q_dim, d_dim = cast(DenseEncoder, query_encoder).dim, cast(DenseEncoder, doc_encoder).dim
        if q_dim != d_dim:
            raise ValueError(
                f"query and document encoders embed into different sizes ({q_dim} vs {d_dim}); "
                "set the image head's dim to the text encoder's hidden size"
            )
        return
    q_vocab = cast(SparseEncoder, query_encoder).vocab_size
    d_vocab = cast(SparseEncoder, doc_encoder).vocab_size
    if q_vocab != d_vocab:
        raise ValueError(
            f"query and document encoders score different vocabularies "
            f"({q_vocab} vs {d_vocab} terms)"
        )


def _default_optimizer(params: Any) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=1e-4, weight_decay=0.01)


def _nnz(w: torch.Tensor) -> torch.Tensor:
    """Mean non-zeros per row. Shape: ``(B, V)`` -> scalar."""
    return (w.detach() > 0).sum(dim=1).float().mean()
