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
from lightning.pytorch.loggers import Logger

import lightning_mlsr.training.system.module as module
from lightning_mlsr.data.datamodule import RetrievalDataModule
from lightning_mlsr.data.settings import BatchingSettings
from lightning_mlsr.models import MLPHead
from lightning_mlsr.objectives.ranking import InfoNCE
from lightning_mlsr.objectives.regularizers import FLOPS
from lightning_mlsr.training.system.module import SparseBiEncoder
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


class _Recorder(Logger):
    """A logger that keeps, per step, the names each ``log_metrics`` call sent."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[int | None, dict[str, float]]] = []

    @property
    def name(self) -> str:
        return "recorder"

    @property
    def version(self) -> int:
        return 0

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.calls.append((step, dict(metrics)))

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass


@pytest.mark.parametrize("every", [10, 2])
def test_the_last_training_step_of_each_epoch_reaches_the_logger_once(
    tmp_path: Path, every: int
) -> None:
    """A fit shorter than ``log_every_n_steps`` (the README's 4-step run) still sends its
    last step's ``train/*`` to W&B (Lightning alone sent none); a step Lightning sends
    itself is not sent twice."""
    steps, recorder = _Steps(), _Recorder()
    trainer = L.Trainer(
        logger=recorder,
        callbacks=[steps],
        max_epochs=2,
        limit_train_batches=4,
        limit_val_batches=0,
        log_every_n_steps=every,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(_model(steps), RetrievalDataModule(batching=BatchingSettings(batch_size=4)))
    sent = [(step, m) for step, m in recorder.calls if "train/loss" in m]
    # Lightning numbers a step's logs by the steps done before it: 3 and 7 end the epochs
    want = [3, 7] if every == 10 else [1, 3, 5, 7]
    assert [step for step, _ in sent] == want
    last_step, last = sent[-1]
    assert {"train/loss", "train/rank_loss", "train/d_reg_weight", "train/lr"} <= set(last)
    assert last["train/loss"] == pytest.approx(steps.losses[-1], abs=1e-6)
    assert last["epoch"] == 1
