"""Shard files of the frozen-feature store: atomic writes, validated reads, checksums,
and :class:`ShardWriter`, which buffers computed features into whole shards.

A shard ``<stem>`` is two files in the store's folder: ``<stem>.npy`` (``(n, D)`` float32
features, read memory-mapped) and ``<stem>.index.npz`` (``keys`` ``(n,)``: the images'
content digests, ``ok`` ``(n,)``: whether each image decoded, ``sha1``: the checksum of the
``.npy``). Both are written to a temporary name beside them, fsynced and renamed, the
index last, so the index is the shard's done-marker: a shard without one was interrupted
and does not exist. A write that fails (a full disk) removes what it created.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import shutil
import tempfile
import time
import uuid
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lightning_mlsr.data.features.content_keys import KEY_DTYPE
from lightning_mlsr.io.atomic import atomic_write

log = logging.getLogger("lightning_mlsr.data")

__all__ = [
    "KEY_DTYPE",
    "FeatureCacheError",
    "ShardError",
    "ShardWriter",
    "WrittenShard",
    "check_space",
    "check_writable",
    "discard",
    "open_features",
    "read_index",
    "remove_stale_temporaries",
    "shard_stems",
    "verify",
    "write_error",
    "write_shard",
]

_INDEX = ".index.npz"
_STALE_SECONDS = 24 * 3600  # temporaries older than this belong to killed fills
_DISK_FULL = {errno.ENOSPC, errno.EDQUOT}


class FeatureCacheError(RuntimeError):
    """The feature cache directory cannot be used (named in the message, with the fix)."""


class ShardError(Exception):
    """A shard on disk is truncated, corrupt or inconsistent (the message says how)."""


def check_writable(root: Path) -> None:
    """Create ``root`` and write a file in it, or fail naming the folder and the fix."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=root, prefix=".probe-"):
            pass
    except OSError as err:
        raise FeatureCacheError(
            f"the image feature cache {root} is not writable ({err}). Fix: set the "
            "environment variable LIGHTNING_MLSR_CACHE (or data.features.cache_dir) to a "
            "writable directory."
        ) from err


def write_shard(
    root: Path, keys: np.ndarray, ok: np.ndarray, features: np.ndarray, rows_to_come: int = 0
) -> tuple[str, str]:
    """Write one shard atomically; returns its stem and the checksum of its features.

    Each file is written to a temporary name beside its target, fsynced and renamed, the
    index last. On failure (a full disk) every file this call created is removed and a
    :class:`FeatureCacheError` names the folder, the space needed (this shard plus
    ``rows_to_come`` more rows like it) and how to move the cache.
    """
    stem = f"{time.time_ns():x}-{os.getpid()}-{uuid.uuid4().hex[:8]}"  # unique per writer
    features = np.ascontiguousarray(features, dtype=np.float32)
    data = root / f"{stem}.npy"
    written: list[Path] = []  # renamed into place (atomic_write removes its own temporaries)
    try:
        written.append(atomic_write(data, lambda fh: np.save(fh, features)))
        checksum = file_sha1(data)
        index = root / f"{stem}{_INDEX}"  # the done-marker, written last
        atomic_write(
            index,
            lambda fh: np.savez(
                fh, keys=keys.astype(KEY_DTYPE), ok=ok.astype(bool), sha1=np.array(checksum)
            ),
        )
    except OSError as err:
        for path in written:
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)
        # atomic_write says a full disk in its own words; the cache's message names its fix
        cause = err.__cause__ if isinstance(err.__cause__, OSError) else err
        row_bytes = features.itemsize * features.shape[1] + KEY_DTYPE.itemsize + 1
        raise write_error(root, cause, len(features) * row_bytes, rows_to_come * row_bytes) from err
    return stem, checksum


def write_error(root: Path, err: OSError, shard_bytes: int, more_bytes: int) -> FeatureCacheError:
    """The error for a failed shard write: what is full, how much is needed, the fix."""
    fix = (
        "Fix: free space there, or move the cache to a disk with room by setting the "
        "environment variable LIGHTNING_MLSR_CACHE (or data.features.cache_dir) to a "
        "directory on it. Finished shards are kept: the next fill computes only what is "
        "missing."
    )
    if err.errno in _DISK_FULL:
        free = free_bytes(root)
        needed = f"a shard of {format_bytes(shard_bytes)}"
        if more_bytes:
            needed += f", and about {format_bytes(more_bytes)} more for the images still to come"
        return FeatureCacheError(
            f"the image feature cache {root} is out of space ({err.strerror or err}): "
            f"writing needs {needed}; "
            f"{'unknown' if free is None else format_bytes(free)} free there. {fix}"
        )
    return FeatureCacheError(f"cannot write to the image feature cache {root} ({err}). {fix}")


def check_space(root: Path, rows: int, dim: int) -> None:
    """:class:`FeatureCacheError` before a fill of ``rows`` features of width ``dim`` that
    cannot fit in the free space of ``root``'s filesystem (when it reports its size)."""
    needed = rows * (4 * dim + KEY_DTYPE.itemsize + 1)
    try:
        usage = shutil.disk_usage(root)
    except OSError:
        return
    if usage.total and usage.free < needed:
        raise FeatureCacheError(
            f"the image feature cache {root} has {format_bytes(usage.free)} free, and the "
            f"features of {rows} images need about {format_bytes(needed)}. Fix: free space "
            "there, or move the cache to a disk with room by setting the environment "
            "variable LIGHTNING_MLSR_CACHE (or data.features.cache_dir) to a directory on it."
        )


def free_bytes(root: Path) -> int | None:
    """Free bytes on ``root``'s filesystem, or None if it cannot say."""
    try:
        return shutil.disk_usage(root).free
    except OSError:
        return None


def format_bytes(n: float) -> str:
    """``1536`` -> ``'1.5 KiB'``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def shard_stems(root: Path) -> list[str]:
    """Stems of the finished shards in ``root`` (those with a done-marker), sorted."""
    if not root.is_dir():
        return []
    return sorted(p.name[: -len(_INDEX)] for p in root.glob(f"*{_INDEX}"))


def read_index(root: Path, stem: str, dim: int) -> tuple[np.ndarray, np.ndarray, str]:
    """A shard's keys, ok flags and checksum, after checking that its features file holds
    one ``dim``-wide row per key; :class:`ShardError` if not."""
    try:
        with np.load(root / f"{stem}{_INDEX}", allow_pickle=False) as npz:
            keys, ok, checksum = npz["keys"], npz["ok"], str(npz["sha1"])
        shape = np.load(root / f"{stem}.npy", mmap_mode="r").shape
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as err:
        raise ShardError(f"{type(err).__name__}: {err}") from err
    if keys.dtype != KEY_DTYPE or ok.shape != keys.shape or shape != (len(keys), dim):
        raise ShardError(f"holds {shape} features for {keys.shape} keys of width {dim}")
    return keys, ok, checksum


def verify(root: Path, stem: str, checksum: str) -> None:
    """:class:`ShardError` unless the features file has the recorded checksum."""
    try:
        actual = file_sha1(root / f"{stem}.npy")
    except OSError as err:
        raise ShardError(f"unreadable ({err})") from err
    if actual != checksum:
        raise ShardError(f"checksum {actual} differs from the recorded {checksum}")


def open_features(root: Path, stem: str) -> np.ndarray:
    """The shard's features, memory-mapped read-only. Shape: ``(n, D)``."""
    return np.load(root / f"{stem}.npy", mmap_mode="r")


def discard(root: Path, stem: str, reason: str) -> None:
    """Warn, naming the file, and delete an unusable shard (its images get recomputed)."""
    data = root / f"{stem}.npy"
    log.warning(
        "image feature cache file %s is corrupt or truncated (%s); deleting it, its "
        "features will be recomputed",
        data,
        reason,
    )
    for path in (data, root / f"{stem}{_INDEX}"):
        path.unlink(missing_ok=True)


def remove_stale_temporaries(root: Path, max_age_s: float = _STALE_SECONDS) -> None:
    """Delete temporaries left by fills killed more than ``max_age_s`` ago."""
    if not root.is_dir():
        return
    now = time.time()
    for path in [*root.glob(".*.tmp-*"), *root.glob(".*.tmp")]:  # atomic_write's, older ones
        try:
            if now - path.stat().st_mtime > max_age_s:
                path.unlink()
        except OSError:  # removed meanwhile by another process: nothing to do
            continue


def file_sha1(path: Path) -> str:
    digest = hashlib.sha1()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class WrittenShard:
    """A shard :class:`ShardWriter` has written: its files and the table rows in it.

    Shape: ``rows``, ``keys``, ``ok`` ``(n,)``, in the shard's order.
    """

    stem: str
    checksum: str
    rows: np.ndarray
    keys: np.ndarray
    ok: np.ndarray


class ShardWriter:
    """Buffers computed features and writes them as shards of ``shard_size`` rows.

    The owner hears of every change through three callbacks: ``on_buffered(rows,
    offsets)`` (rows now held at these buffer offsets), ``on_written(shard)`` (a
    :class:`WrittenShard` is on disk) and ``on_lost(rows)`` (a write failed: these rows
    are stored nowhere; the :class:`FeatureCacheError` is raised after it).
    """

    def __init__(
        self,
        root: Path,
        shard_size: int,
        dim: int,
        on_buffered: Callable[[np.ndarray, np.ndarray], None],
        on_written: Callable[[WrittenShard], None],
        on_lost: Callable[[np.ndarray], None],
    ) -> None:
        self.root, self.shard_size, self.dim = root, shard_size, dim
        self.on_buffered, self.on_written, self.on_lost = on_buffered, on_written, on_lost
        self.held = 0  # rows in the buffer
        self.last_write = time.monotonic()
        self._rows = np.empty(0, dtype=np.int64)  # (S,) allocated at the first hold
        self._keys = np.empty(0, dtype=KEY_DTYPE)
        self._ok = np.empty(0, dtype=bool)
        self._features = np.empty((0, dim), dtype=np.float32)  # (S, D)

    def hold(
        self,
        rows: np.ndarray,
        keys: np.ndarray,
        ok: np.ndarray,
        features: np.ndarray,
        rows_to_come: int = 0,
    ) -> None:
        """Buffer computed features; write a shard each time ``shard_size`` are held.
        ``rows_to_come``: rows still to be computed in this pass (for a full-disk error).

        Shape: ``rows``, ``keys``, ``ok`` ``(n,)``; ``features`` ``(n, D)``.
        """
        if not len(self._rows):
            self._rows = np.empty(self.shard_size, dtype=np.int64)
            self._keys = np.empty(self.shard_size, dtype=KEY_DTYPE)
            self._ok = np.empty(self.shard_size, dtype=bool)
            self._features = np.empty((self.shard_size, self.dim), dtype=np.float32)
        begin = 0
        while begin < len(rows):
            take = min(self.shard_size - self.held, len(rows) - begin)
            into, part = slice(self.held, self.held + take), slice(begin, begin + take)
            self._rows[into], self._keys[into] = rows[part], keys[part]
            self._ok[into], self._features[into] = ok[part], features[part]
            self.on_buffered(rows[part], np.arange(into.start, into.stop))
            self.held += take
            begin += take
            if self.held == self.shard_size:
                self.flush(rows_to_come + len(rows) - begin)

    def buffered(self, offsets: np.ndarray) -> np.ndarray:
        """Features held at ``offsets``. Shape: ``(R,)`` -> ``(R, D)``."""
        return self._features[offsets]

    def due(self, seconds: float) -> bool:
        """Whether the last write is more than ``seconds`` old."""
        return time.monotonic() - self.last_write > seconds

    def flush(self, rows_to_come: int = 0) -> None:
        """Write the rows held (a partial shard) as one shard."""
        held, self.held = self.held, 0
        self.last_write = time.monotonic()
        if not held:
            return
        rows, keys, ok = (a[:held].copy() for a in (self._rows, self._keys, self._ok))
        try:
            stem, checksum = write_shard(self.root, keys, ok, self._features[:held], rows_to_come)
        except FeatureCacheError:
            self.on_lost(rows)
            raise
        self.on_written(WrittenShard(stem, checksum, rows, keys, ok))
