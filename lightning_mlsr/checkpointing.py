"""Checkpoints that belong to one run: where they go, how they are written, how they load.

- :class:`RunCheckpoint` is Lightning's ``ModelCheckpoint`` with the run's own directory
  whatever the logger (without one, ``<default_root_dir>/lightning_mlsr/version_<N>/checkpoints``
  instead of a ``checkpoints/`` shared by every run in the directory), and nothing written
  under ``fast_dev_run``.
- :class:`AtomicCheckpointIO` writes a checkpoint next to its target, fsyncs and renames it,
  so a full disk or a killed process leaves the previous file intact, never a truncated one.

Reading checkpoints safely (:func:`~lightning_mlsr.checkpoint_files.load_checkpoint`) lives in
:mod:`lightning_mlsr.checkpoint_files`, which imports no Lightning; it is re-exported here.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, cast

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint

from lightning_mlsr.checkpoint_files import (
    CheckpointError,
    is_intact,
    load_checkpoint,
    newest_resumable,
)
from lightning_mlsr.runs import run_dir

__all__ = [
    "AtomicCheckpointIO",
    "CheckpointError",
    "RunCheckpoint",
    "atomic_write",
    "is_intact",
    "load_checkpoint",
    "newest_resumable",
]


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], None]) -> Path:
    """Write a file by ``write(handle)`` into a temporary file beside ``path``, fsync, rename.

    The temporary file lives in the target's own directory, so the rename is atomic on
    every POSIX filesystem (a temporary file elsewhere would be *copied* across
    filesystems, and a full disk would leave the target truncated). On any failure the
    temporary file is removed and the previous ``path``, if any, is left as it was; a full
    disk raises an ``OSError`` that names the file, its directory and the space it has.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException as err:
        written = tmp.stat().st_size if tmp.exists() else 0
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
            free = shutil.disk_usage(target.parent).free
            raise OSError(
                err.errno,
                f"no space left to write {target}: {written / 1e6:.1f} MB were written before "
                f"the disk of {target.parent} filled up ({free / 1e6:.1f} MB free now); the "
                f"previous {target.name}, if any, is unchanged. Free space there, or put the "
                "run elsewhere (--trainer.default_root_dir, the logger's save_dir)",
            ) from err
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable
        fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    return target


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
    """Lightning's ``ModelCheckpoint`` in the run's own directory, silent under fast_dev_run.

    With a logger the directory is Lightning's (``<save_dir>/<name>/<version>/checkpoints``,
    versioned per run); without one it is ``<run dir>/checkpoints``
    (:func:`~lightning_mlsr.runs.run_dir`), not the ``<default_root_dir>/checkpoints`` that
    every logger-less run in the directory would share. ``fast_dev_run`` writes no
    checkpoint (Lightning's own ``save_last`` still writes one at the end of training).
    Takes every argument of ``ModelCheckpoint``.
    """

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self.dirpath is None and trainer.logger is None:
            self.dirpath = str(run_dir(trainer) / "checkpoints")
        super().setup(trainer, pl_module, stage)

    def _save_checkpoint(self, trainer: Trainer, filepath: str) -> None:
        if cast(Any, trainer).fast_dev_run:
            return
        super()._save_checkpoint(trainer, filepath)
