"""Checkpoints that belong to one run: where they go, how they are written, how they load.

- :class:`RunCheckpoint` is Lightning's ``ModelCheckpoint`` with the run's own directory
  whatever the logger (without one, ``<default_root_dir>/lightning_mlsr/version_<N>/checkpoints``
  instead of a ``checkpoints/`` shared by every run in the directory), and nothing written
  under ``fast_dev_run``.
- :class:`AtomicCheckpointIO` writes a checkpoint next to its target, fsyncs and renames it,
  so a full disk or a killed process leaves the previous file intact, never a truncated one.

Reading checkpoints safely (:func:`~lightning_mlsr.io.checkpoints.load_checkpoint`) lives in
:mod:`lightning_mlsr.io.checkpoints`, which imports no Lightning; it is re-exported here.
"""

from __future__ import annotations

from typing import Any, cast

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint

from lightning_mlsr.io.atomic import atomic_write
from lightning_mlsr.io.checkpoints import (
    CheckpointError,
    is_intact,
    load_checkpoint,
    newest_resumable,
)
from lightning_mlsr.training.runs import run_dir

__all__ = [
    "AtomicCheckpointIO",
    "CheckpointError",
    "RunCheckpoint",
    "atomic_write",
    "is_intact",
    "load_checkpoint",
    "newest_resumable",
]


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose saves are atomic on the checkpoint's own filesystem.

    Lightning's default serialises into memory and moves a temporary file from the system
    temporary directory, which is a copy when that is another filesystem: a full disk then
    leaves a truncated ``last.ckpt``. This one streams into a temporary file beside the
    target (:func:`atomic_write`). Loading is Lightning's (``weights_only`` as passed).
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO takes no storage_options")
        atomic_write(path, lambda handle: torch.save(checkpoint, handle))


class RunCheckpoint(ModelCheckpoint):
    """Lightning's ``ModelCheckpoint`` in the run's own directory, with a ``last.ckpt`` that
    is always the newest state, silent under fast_dev_run.

    With a logger the directory is Lightning's (``<save_dir>/<name>/<version>/checkpoints``,
    versioned per run); without one it is ``<run dir>/checkpoints``
    (:func:`~lightning_mlsr.training.runs.run_dir`), not the ``<default_root_dir>/checkpoints`` that
    every logger-less run in the directory would share. ``fast_dev_run`` writes no
    checkpoint (Lightning's own ``save_last`` still writes one at the end of training).
    Takes every argument of ``ModelCheckpoint``.

    ``save_last=True``: Lightning (2.6) rewrites ``last.ckpt`` only where it also saves a
    top-k checkpoint, so after an epoch that does not improve the monitored value it still
    holds the last improving epoch, and a fit resumed from it after a hard kill silently
    repeats the epochs since. Here ``last.ckpt`` is also written at the end of every
    training epoch, and after a validation that Lightning saves at, where nothing was saved
    at that step (one file, overwritten: no extra disk). ``save_last="link"`` keeps
    Lightning's behaviour.
    """

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self.dirpath is None and trainer.logger is None:
            self.dirpath = str(run_dir(trainer) / "checkpoints")
        super().setup(trainer, pl_module, stage)

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):  # else Lightning saves there
            self._save_newest_last(trainer)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        self._save_newest_last(trainer)

    def _save_newest_last(self, trainer: Trainer) -> None:
        """``last.ckpt`` at this step, unless a fit is not running or this step is saved."""
        # Lightning's own guard: not fitting, sanity check, fast_dev_run, or saved already
        if self.save_last is True and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def _save_checkpoint(self, trainer: Trainer, filepath: str) -> None:
        if cast(Any, trainer).fast_dev_run:
            return
        super()._save_checkpoint(trainer, filepath)
