"""Files written atomically: a temporary file beside the target, fsync, rename.

Checkpoints, TREC run files and vector exports go through :func:`atomic_write`, so a full
disk, a killed process or a crash mid-write leaves the previous file (or none), never a
truncated one that a later step would read as complete. Imports nothing heavy.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import IO

__all__ = ["atomic_write", "atomic_write_text"]


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], object]) -> Path:
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


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """:func:`atomic_write` of UTF-8 text."""
    data = text.encode("utf-8")
    return atomic_write(path, lambda handle: handle.write(data))
