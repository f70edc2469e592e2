"""Fault tolerance: a fit stopped by SIGTERM or an error leaves a checkpoint to resume.

Lightning's own machinery does the work — its signal connector turns SIGTERM into a
``SIGTERMException`` between two batches, and ``OnExceptionCheckpoint`` saves on any
exception; this only puts the file where the run's other checkpoints are.
``lightning_mlsr.cli.main`` turns the exception into exit status 143.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint, OnExceptionCheckpoint
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.rank_zero import rank_zero_info

log = logging.getLogger("lightning_mlsr")

__all__ = ["CheckpointOnException"]


class CheckpointOnException(OnExceptionCheckpoint):
    """Lightning's ``OnExceptionCheckpoint``, written next to the run's other checkpoints.

    A ``fit`` that stops on an exception — SIGTERM from a scheduler included, which
    Lightning turns into ``SIGTERMException`` between two batches — saves
    ``<checkpoint dir>/on_exception.ckpt`` (the ``ModelCheckpoint`` directory, else
    ``<default_root_dir>/checkpoints``). ``fit --ckpt_path`` on it resumes at the same global
    step, hence the same regularizer weight, with the optimizer, scheduler and the training
    order's position. Lightning removes the file when a later fit in the same directory
    finishes.

    Args:
        dirpath: where to save (default: the run's checkpoint directory, see above).
        filename: the file name, without ``.ckpt``.
    """

    def __init__(self, dirpath: str | None = None, filename: str = "on_exception") -> None:
        super().__init__(dirpath or "", filename)
        self._dirpath_given = dirpath is not None

    def _resolve_dirpath(self, trainer: L.Trainer) -> None:
        if not self._dirpath_given:
            found = [c for c in trainer.checkpoint_callbacks if isinstance(c, ModelCheckpoint)]
            dirpath = found[0].dirpath if found else None
            self.dirpath = dirpath or str(Path(trainer.default_root_dir) / "checkpoints")

    def on_exception(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        if trainer.state.fn != TrainerFn.FITTING:
            return
        self._resolve_dirpath(trainer)
        try:
            super().on_exception(trainer)
        except Exception as err:  # never hide the exception that stopped the run
            log.error("could not save %s after the run stopped: %r", self.ckpt_path, err)
            return
        rank_zero_info(
            f"fit stopped at step {trainer.global_step}; saved {self.ckpt_path} "
            f"(resume: fit ... --ckpt_path={self.ckpt_path})"
        )

    def teardown(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        if trainer.state.fn == TrainerFn.FITTING:
            self._resolve_dirpath(trainer)
            super().teardown(trainer)
