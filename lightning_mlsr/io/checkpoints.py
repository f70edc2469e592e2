"""Reading checkpoint files without running code from them.

:func:`load_checkpoint` is ``torch.load(weights_only=True)`` with errors that name the file and
say what to do: an empty or truncated file (a full disk, a killed process), or a pickle that
would import or call arbitrary Python. Imports torch only (no Lightning), so losses, teachers
and scripts use it as well as the CLI.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch

__all__ = ["RESUMABLE_STEMS", "CheckpointError", "is_intact", "load_checkpoint", "newest_resumable"]

#: Checkpoint names a stopped fit leaves behind: ``last`` at each epoch's end (``last-v1``
#: when the name was taken), ``on_exception`` where SIGTERM or an error stopped it.
RESUMABLE_STEMS = ("last", "on_exception")


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used: damaged, empty, or not safe to load."""


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A checkpoint's contents, loaded without running code from the file.

    ``torch.load(weights_only=True)``: tensors, plain containers and the few types Lightning
    checkpoints hold; a pickle that would import or call anything else is refused. The file
    is memory-mapped, so checking a large checkpoint reads little of it.

    Raises:
        FileNotFoundError: no file at ``path``.
        CheckpointError: the file is empty, truncated or not a checkpoint, or it holds
            Python objects that loading would have to execute; the message names the file.
    """
    source = Path(path)
    if not source.is_file():
        raise FileNotFoundError(f"no checkpoint at {source}")
    if source.stat().st_size == 0:
        raise CheckpointError(
            f"{source} is empty (0 bytes): it was never written completely (a full disk or a "
            "killed process). Resume from another checkpoint of the run, or start afresh"
        )
    try:
        loaded = torch.load(source, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"refusing to load {source}: it holds Python objects other than tensors and plain "
            "values, which loading would execute (torch.load weights_only=True refused it: "
            f"{str(err).splitlines()[0]}). Only load files you trust; re-save the state_dict "
            "of a trusted copy"
        ) from err
    except (EOFError, RuntimeError, zipfile.BadZipFile, OSError, ValueError) as err:
        raise CheckpointError(
            f"{source} is damaged ({type(err).__name__}: {str(err).splitlines()[0]}): it was "
            "probably cut short by a full disk or a killed process. Resume from another "
            "checkpoint of the run, or start afresh"
        ) from err
    if not isinstance(loaded, dict):
        raise CheckpointError(f"{source} is not a checkpoint (it holds a {type(loaded).__name__})")
    return loaded


def is_intact(path: str | os.PathLike[str]) -> bool:
    """Whether :func:`load_checkpoint` reads ``path`` (used to skip damaged resume points)."""
    try:
        load_checkpoint(path)
    except (CheckpointError, FileNotFoundError):
        return False
    return True


def newest_resumable(
    roots: Iterable[str | os.PathLike[str]], on_damaged: Callable[[Path], None] | None = None
) -> Path | None:
    """The newest intact ``last*.ckpt`` or ``on_exception.ckpt`` in any ``checkpoints/``
    directory under ``roots``; damaged files newer than it are skipped, each passed to
    ``on_damaged`` (to report it). None when there is none."""
    found: set[Path] = set()
    for root in roots:
        for path in Path(root).glob("**/checkpoints/*.ckpt"):
            stem = path.stem.split("-v")[0]
            if stem in RESUMABLE_STEMS and path.is_file():
                found.add(path.resolve())
    for path in sorted(found, key=lambda p: p.stat().st_mtime, reverse=True):
        if is_intact(path):
            return path
        if on_damaged is not None:
            on_damaged(path)
    return None
