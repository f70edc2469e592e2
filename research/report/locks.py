"""Exclusive ``flock`` locks between ``report run`` lanes (processes) that share a runs
folder and a work folder: on the runs folder while the report is read and written, and on
one (experiment, seed) while it is trained, evaluated or refitted (:func:`run_lock`).

The kernel drops a ``flock`` when its process ends, however it ends (a killed lane never
leaves a run locked). Where ``fcntl`` is missing (Windows) nothing is locked.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

__all__ = ["exclusive", "lock_path", "run_lock"]


@contextmanager
def exclusive(
    path: Path, wait: bool = True, on_wait: Callable[[], None] | None = None
) -> Iterator[bool]:
    """Hold an exclusive ``flock`` on ``path`` until the block ends; yields whether it is held.

    ``path`` is a folder (locked itself: no file is left behind) or a lock file (made, with
    its folder, when missing; it stays, empty, afterwards). With ``wait`` the lock is waited
    for (``on_wait`` is called first when another process holds it); without, the block
    gets False at once when another process holds it, and must then leave alone what the
    lock guards.
    """
    if sys.platform == "win32":
        yield True
        return
    import fcntl

    if path.is_dir():
        fd = os.open(path, os.O_RDONLY)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not wait:
                yield False
                return
            if on_wait is not None:
                on_wait()
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield True
    finally:
        os.close(fd)


def lock_path(work: Path, name: str, seed: int) -> Path:
    """The lock file of (``name``, ``seed``) in the work folder, beside its run folder
    (which a fresh attempt removes, so the lock cannot live inside it)."""
    return work / name / f"seed{seed}.lock"


def run_lock(
    work: Path,
    name: str,
    seed: int,
    wait: bool = False,
    on_wait: Callable[[], None] | None = None,
) -> AbstractContextManager[bool]:
    """An exclusive lock on (``name``, ``seed``) in ``work`` for as long as one lane trains,
    evaluates or refits it (:func:`exclusive` on
    :func:`lock_path`); yields whether this lane holds it (without ``wait``: False at once
    when another lane does)."""
    return exclusive(lock_path(work, name, seed), wait=wait, on_wait=on_wait)
