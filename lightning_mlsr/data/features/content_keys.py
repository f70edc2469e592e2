"""Content keys of images: what the feature cache is keyed by, without re-reading bytes.

A frozen feature is found by the content of its image, so that a changed image is
recomputed and an unchanged one is found whatever its row, table or collection. The key is
16 bytes derived from the sha1 of the encoded bytes (:func:`content_key`). Hashing means
reading: at AToMiC scale (~180 GB of parquet) every process that looked up a 100k-image
evaluation corpus would read gigabytes of image bytes only to find features it already
has. So the keys of a parquet row group are computed once, the first time its bytes are
read for hashing (or by ``python -m lightning_mlsr.data check``, which reads every group
anyway), and kept as one small ``.npy`` per (file, row group), 16 bytes an image, under
``$LIGHTNING_MLSR_CACHE/content_keys/``. A parquet file is identified by its resolved path,
size and modification time, as ``make`` does: a rewritten file gets new key maps.

Keys of rows without bytes are ``b""`` (all-zero); the caller decides what that means.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import pyarrow as pa

from lightning_mlsr.data.features.cache_dir import default_cache_dir
from lightning_mlsr.io.atomic import atomic_write

__all__ = ["KEY_DTYPE", "GroupKeyCache", "content_key", "keys_of"]

log = logging.getLogger("lightning_mlsr.data")

KEY_DTYPE = np.dtype("S16")  # 16-byte digest of an image's content hash


def content_key(data: bytes) -> bytes:
    """The 16-byte cache key of encoded image bytes: blake2b-128 of their sha1 hex digest."""
    sha1 = hashlib.sha1(data).hexdigest()
    return hashlib.blake2b(sha1.encode(), digest_size=16).digest()


def keys_of(data: pa.Array) -> np.ndarray:
    """Keys of every row of a binary column; ``b""`` where a row is null or empty."""
    out = np.zeros(len(data), dtype=KEY_DTYPE)
    for i, value in enumerate(data):
        raw = value.as_py()
        if raw:
            out[i] = content_key(raw)
    return out


class GroupKeyCache:
    """Key maps of parquet row groups on disk (see the module docstring).

    Args:
        root: folder of the key maps (None: ``content_keys`` under the cache root,
            :func:`~lightning_mlsr.data.features.cache_dir.default_cache_dir`).
    """

    def __init__(self, root: str | Path | None = None) -> None:
        if root is None:
            root = default_cache_dir() / "content_keys"
        self.root = Path(root).expanduser()
        self._stems: dict[str, str] = {}  # parquet path -> fingerprint
        self._unwritable = False

    def _stem(self, path: str) -> str:
        if path not in self._stems:
            real = Path(path).resolve()
            stat = real.stat()
            ident = f"{real}\0{stat.st_size}\0{stat.st_mtime_ns}".encode()
            self._stems[path] = hashlib.sha1(ident).hexdigest()[:24]
        return self._stems[path]

    def _file(self, path: str, group: int) -> Path:
        return self.root / f"{self._stem(path)}-g{group}.npy"

    def load(self, path: str, group: int, rows: int) -> np.ndarray | None:
        """The stored keys of one row group, or None (not stored, or unreadable)."""
        file = self._file(path, group)
        try:
            keys = np.load(file, allow_pickle=False)
        except (OSError, ValueError):
            return None
        if keys.dtype != KEY_DTYPE or keys.shape != (rows,):
            log.warning("content key map %s does not fit its row group; recomputing", file)
            return None
        return keys

    def save(self, path: str, group: int, keys: np.ndarray) -> None:
        """Keep the keys of one row group (atomically; a read-only cache just skips)."""
        if self._unwritable:
            return
        file = self._file(path, group)
        try:
            atomic_write(
                file, lambda handle: np.save(handle, keys.astype(KEY_DTYPE), allow_pickle=False)
            )
        except OSError as err:  # atomic_write has removed its temporary file
            self._unwritable = True
            log.info("content keys are not kept (%s): %s", self.root, err)
