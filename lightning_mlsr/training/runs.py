"""Directories that belong to one run: config, run files, exports and checkpoints.

Two runs started in the same directory never share one, whatever the logger: a versioned
logger directory where there is one, else a new ``<default_root_dir>/lightning_mlsr/version_<N>``.
"""

from __future__ import annotations

import weakref
from pathlib import Path
from typing import cast

from lightning.pytorch import Trainer
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

__all__ = ["evaluate_into_checkpoint_run", "run_dir"]


def run_dir(trainer: Trainer) -> Path:
    """A directory that belongs to this run only (versioned), for config and run files.

    CSV/TensorBoard loggers have a versioned ``log_dir``; for others (W&B) the
    ``save_dir/name/version`` layout that ModelCheckpoint also uses. ``trainer.log_dir``
    would be W&B's shared ``save_dir``, where two runs clash. Without a logger: a new
    ``<default_root_dir>/lightning_mlsr/version_<N>`` per Trainer. A Trainer that evaluates
    a run's checkpoint (:func:`evaluate_into_checkpoint_run`) writes into that run's folder.
    """
    if trainer in _EVALUATION_DIRS:
        return _EVALUATION_DIRS[trainer]
    logger = trainer.logger
    if logger is None:
        return _unlogged_run_dir(trainer)
    if isinstance(logger, CSVLogger | TensorBoardLogger):
        return Path(logger.log_dir)
    save_dir = logger.save_dir or trainer.default_root_dir
    version = logger.version if isinstance(logger.version, str) else f"version_{logger.version}"
    return Path(save_dir) / str(logger.name) / version


_UNLOGGED_RUN_DIRS: weakref.WeakKeyDictionary[Trainer, Path] = weakref.WeakKeyDictionary()


def _unlogged_run_dir(trainer: Trainer) -> Path:
    """``<default_root_dir>/lightning_mlsr/version_<N>``, a new N per Trainer, for runs
    without a logger (``--trainer.logger=false``): their run files and exports never
    overwrite another run's. Rank 0 picks the directory; every rank gets the same one."""
    if trainer not in _UNLOGGED_RUN_DIRS:
        path = None
        if trainer.is_global_zero:
            root = Path(trainer.default_root_dir) / "lightning_mlsr"
            root.mkdir(parents=True, exist_ok=True)
            taken = [int(p.name[8:]) for p in root.glob("version_*") if p.name[8:].isdigit()]
            version = max(taken, default=-1) + 1
            while True:  # another process may take a number at the same time
                try:
                    (root / f"version_{version}").mkdir()
                    break
                except FileExistsError:
                    version += 1
            path = str(root / f"version_{version}")
        _UNLOGGED_RUN_DIRS[trainer] = Path(cast(str, trainer.strategy.broadcast(path)))
    return _UNLOGGED_RUN_DIRS[trainer]


_EVALUATION_DIRS: weakref.WeakKeyDictionary[Trainer, Path] = weakref.WeakKeyDictionary()


def evaluate_into_checkpoint_run(trainer: Trainer, ckpt_path: str | Path) -> Path | None:
    """Make ``trainer`` write its run files beside the checkpoint it evaluates.

    A checkpoint in a run's ``checkpoints/`` folder is evaluated into
    ``<that run>/evaluations/<checkpoint name>/`` (run files, metrics, exports), so the
    results of ``test --ckpt_path`` sit with the run that trained it, and evaluating its
    ``last`` and its best checkpoint never overwrite each other or the fit's own test run.
    Returns the directory, or None for a checkpoint outside a run folder.
    """
    path = Path(ckpt_path).resolve()
    if path.parent.name != "checkpoints":
        return None
    target = path.parent.parent / "evaluations" / path.stem
    _EVALUATION_DIRS[trainer] = target
    return target
