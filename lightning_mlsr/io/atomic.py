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

__all__ = ["atomic_write", "atomic_write_text", "disk_full_error", "is_disk_full"]

#: how libraries that do not raise ``OSError`` say ENOSPC (safetensors: Rust's ``StorageFull``)
_NO_SPACE_TEXTS = ("No space left on device", "StorageFull", "Disk quota exceeded")
#: how ``torch.save`` to a path reports a write that came up short (ENOSPC among the causes):
#: ``RuntimeError: [enforce fail at inline_container.cc:...] . unexpected pos 704 vs 598``
_TORCH_SHORT_WRITE = ("unexpected pos", "PytorchStreamWriter failed writing", "file write failed")
#: below this much free space, a short write is taken for a full disk
_NEARLY_FULL_BYTES = 64 * 2**20


def is_disk_full(err: BaseException, directory: str | os.PathLike[str]) -> bool:
    """Whether ``err`` (or what caused it) is a full disk where ``directory`` lives.

    An ``OSError`` with ENOSPC or EDQUOT; a library's error whose text says so; or torch's
    ``RuntimeError`` for a write that came up short while that disk has (almost) no space
    left. Call it before freeing the space the failed write took.
    """
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        text = str(seen)
        if any(marker in text for marker in _NO_SPACE_TEXTS):
            return True
        if isinstance(seen, RuntimeError) and any(m in text for m in _TORCH_SHORT_WRITE):
            try:
                return shutil.disk_usage(directory).free < _NEARLY_FULL_BYTES
            except OSError:
                return False
        seen = seen.__cause__
    return False


def disk_full_error(target: str | os.PathLike[str], written: int, fix: str) -> OSError:
    """The ENOSPC ``OSError`` that names what was being written, where, the space left and
    what to do (``fix``)."""
    target = Path(target)
    directory = target.parent
    while not directory.exists() and directory != directory.parent:
        directory = directory.parent
    free = shutil.disk_usage(directory).free
    return OSError(
        errno.ENOSPC,
        f"no space left to write {target}: {written / 1e6:.1f} MB were written before the "
        f"disk of {directory} filled up ({free / 1e6:.1f} MB free now); {fix}",
    )


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], object]) -> Path:
    """Write a file by ``write(handle)`` into a temporary file beside ``path``, fsync, rename.

    The temporary file lives in the target's own directory, so the rename is atomic on
    every POSIX filesystem (a temporary file elsewhere would be *copied* across
    filesystems, and a full disk would leave the target truncated). On any failure the
    temporary file is removed and the previous ``path``, if any, is left as it was; a full
    disk (:func:`is_disk_full`, torch's way of saying it included) raises an ENOSPC
    ``OSError`` that names the file, its directory and the space it has.
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
        full = is_disk_full(err, target.parent)
        with contextlib.suppress(OSError):
            tmp.unlink()
        if full:
            raise disk_full_error(
                target,
                written,
                f"the previous {target.name}, if any, is unchanged. Free space there, or put "
                "the run elsewhere (--trainer.default_root_dir, the logger's save_dir)",
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
