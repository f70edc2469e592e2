"""Shard files of the frozen-feature store: atomic writes, validated reads, checksums.

A shard ``<stem>`` is two files in the store's folder: ``<stem>.npy`` (``(n, D)`` float32
features, read memory-mapped) and ``<stem>.index.npz`` (``keys`` ``(n,)``: the images'
content digests, ``ok`` ``(n,)``: whether each image decoded, ``sha1``: the checksum of the
``.npy``). Both are written to a temporary name and renamed, the index last, so the index
is the shard's done-marker: a shard without one was interrupted and does not exist.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import time
import uuid
import zipfile
from pathlib import Path

import numpy as np

from lightning_mlsr.data.content_keys import KEY_DTYPE

log = logging.getLogger("lightning_mlsr.data")

__all__ = [
    "KEY_DTYPE",
    "FeatureCacheError",
    "ShardError",
    "check_writable",
    "discard",
    "open_features",
    "read_index",
    "remove_stale_temporaries",
    "shard_stems",
    "verify",
    "write_shard",
]

_INDEX = ".index.npz"
_STALE_SECONDS = 24 * 3600  # temporaries older than this belong to killed fills


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
            "environment variable LIGHTNING_MLSR_CACHE (or data.feature_cache_dir) to a "
            "writable directory."
        ) from err


def write_shard(
    root: Path, keys: np.ndarray, ok: np.ndarray, features: np.ndarray
) -> tuple[str, str]:
    """Write one shard atomically; returns its stem and the checksum of its features."""
    stem = f"{time.time_ns():x}-{os.getpid()}-{uuid.uuid4().hex[:8]}"  # unique per writer
    data = root / f"{stem}.npy"
    tmp = root / f".{stem}.npy.tmp"
    with tmp.open("wb") as fh:
        np.save(fh, np.ascontiguousarray(features, dtype=np.float32))
    os.replace(tmp, data)
    checksum = file_sha1(data)
    tmp = root / f".{stem}.index.tmp"
    with tmp.open("wb") as fh:
        np.savez(fh, keys=keys.astype(KEY_DTYPE), ok=ok.astype(bool), sha1=np.array(checksum))
    os.replace(tmp, root / f"{stem}{_INDEX}")  # the done-marker, written last
    return stem, checksum


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
    for path in root.glob(".*.tmp"):
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
