"""Training steps log only where the values reach the logger (and at the end of the fit).

A step that logs nothing does no per-value Python work in Lightning's result collection and
gives a progress bar nothing to read back from the device; the last values still end up in
``callback_metrics``.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch

import lightning_mlsr.training.module as module
from lightning_mlsr.data.datamodule import RetrievalDataModule
from lightning_mlsr.data.settings import BatchingSettings
from lightning_mlsr.models import MLPHead
from lightning_mlsr.objectives.ranking import InfoNCE
from lightning_mlsr.objectives.regularizers import FLOPS
from lightning_mlsr.training.module import SparseBiEncoder
from tests.helpers import quiet_trainer


class _Steps(L.Callback):
    """The names logged in each training step, and each step's returned loss."""

    def __init__(self) -> None:
        self.logged: dict[int, set[str]] = {}
        self.losses: list[float] = []
        self._step = 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._step = trainer.global_step
        self.logged[self._step] = set()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"]))


def _model(steps: _Steps) -> SparseBiEncoder:
    torch.manual_seed(0)
    model = SparseBiEncoder(
        MLPHead(pooling="sum"),
        MLPHead(pooling="max"),
        loss=InfoNCE(),
        doc_regularizer=FLOPS(weight=1.0, ramp_steps=4),
        optimizer=partial(torch.optim.AdamW, lr=1e-3),
    )
    log, log_dict = model.log, model.log_dict

    def record_log(name: str, *args: Any, **kwargs: Any) -> None:
        steps.logged[steps._step].add(name)
        log(name, *args, **kwargs)

    def record_log_dict(values: dict, *args: Any, **kwargs: Any) -> None:
        steps.logged[steps._step].update(values)
        log_dict(values, *args, **kwargs)

    model.log, model.log_dict = record_log, record_log_dict  # type: ignore[method-assign]
    return model


def test_only_logging_steps_log_and_count_non_zeros(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    nnz_calls: list[int] = []
    real_nnz = module._nnz
    monkeypatch.setattr(module, "_nnz", lambda w: nnz_calls.append(len(w)) or real_nnz(w))
    steps = _Steps()
    trainer = quiet_trainer(
        tmp_path, [steps], max_steps=7, log_every_n_steps=3, limit_val_batches=0,
        enable_checkpointing=False,
    )  # fmt: skip
    trainer.fit(_model(steps), RetrievalDataModule(batching=BatchingSettings(batch_size=4)))

    logging_steps = {s for s, names in steps.logged.items() if names}
    # (step + 1) % 3 == 0 -> steps 2 and 5, and the fit's last step, 6
    assert logging_steps == {2, 5, 6}
    for s in logging_steps:
        assert {
            "train/loss",
            "train/rank_loss",
            "train/d_reg",
            "train/d_reg_weight",
        } <= steps.logged[s]
        assert {"train/q_nnz", "train/d_nnz", "train/lr"} <= steps.logged[s]
    assert len(nnz_calls) == 2 * len(logging_steps)  # q and d, on logging steps only
    # callback_metrics end with the last step's values
    metrics = trainer.callback_metrics
    assert float(metrics["train/loss"]) == pytest.approx(steps.losses[-1], abs=1e-6)
    assert float(metrics["train/d_reg_weight"]) == pytest.approx(1.0 * min(1.0, 6 / 4) ** 2)


def test_a_fast_dev_run_logs_its_step(tmp_path: Path) -> None:
    steps = _Steps()
    trainer = quiet_trainer(tmp_path, [steps], fast_dev_run=1, log_every_n_steps=50)
    trainer.fit(_model(steps), RetrievalDataModule(batching=BatchingSettings(batch_size=4)))
    assert {"train/loss", "train/q_nnz", "train/d_reg_weight"} <= steps.logged[0]
