"""Fault tolerance: a fit stopped by SIGTERM or an error leaves a checkpoint to resume.

Lightning's signal connector turns SIGTERM into a ``SIGTERMException`` between two batches;
:class:`CheckpointOnException` saves on any exception, into the run's own checkpoint
directory, and ``lightning_mlsr.training.cli.main`` turns the exception into exit status 143.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, cast

import lightning as L
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.rank_zero import rank_zero_info

log = logging.getLogger("lightning_mlsr")

__all__ = ["CheckpointOnException"]


class CheckpointOnException(Callback):
    """Saves ``on_exception.ckpt`` next to the run's other checkpoints when a fit stops.

    A ``fit`` that stops on an exception — SIGTERM from a scheduler included, which
    Lightning turns into ``SIGTERMException`` between two batches — saves
    ``<checkpoint dir>/on_exception.ckpt`` (the run's ``ModelCheckpoint`` directory, else
    ``<default_root_dir>/checkpoints``). ``fit --ckpt_path`` on it resumes at the same global
    step, hence the same regularizer weight, with the optimizer, scheduler and the training
    order's position.

    Unlike Lightning's ``OnExceptionCheckpoint`` (which this replaces), its presence does not
    make ``fit(ckpt_path=None)`` resume from the newest checkpoint in the directory — a fit
    starts fresh unless ``--ckpt_path`` says otherwise — and a finished fit removes no file:
    another run's ``on_exception.ckpt`` in the same directory is its only resume point.
    ``fast_dev_run`` saves nothing.

    Args:
        dirpath: where to save (default: the run's checkpoint directory, see above).
        filename: the file name, without ``.ckpt``.
    """

    def __init__(self, dirpath: str | None = None, filename: str = "on_exception") -> None:
        self.dirpath = dirpath
        self.filename = filename
        self._dirpath_given = dirpath is not None

    @property
    def ckpt_path(self) -> str:
        return str(Path(self.dirpath or "") / f"{self.filename}.ckpt")

    def _resolve_dirpath(self, trainer: L.Trainer) -> None:
        if not self._dirpath_given:
            found = [c for c in trainer.checkpoint_callbacks if isinstance(c, ModelCheckpoint)]
            dirpath = found[0].dirpath if found else None
            self.dirpath = str(dirpath or Path(trainer.default_root_dir) / "checkpoints")

    def on_exception(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        if trainer.state.fn != TrainerFn.FITTING or cast(Any, trainer).fast_dev_run:
            return
        self._resolve_dirpath(trainer)
        try:
            # a full checkpoint (optimizer, schedulers, loops): what a resume needs
            trainer.save_checkpoint(self.ckpt_path, weights_only=False)
        except Exception as err:  # never hide the exception that stopped the run
            log.error("could not save %s after the run stopped: %r", self.ckpt_path, err)
            return
        rank_zero_info(
            f"fit stopped at step {trainer.global_step}; saved {self.ckpt_path} "
            f"(resume: fit ... --ckpt_path={self.ckpt_path})"
        )
