"""Where each image's features are: content key -> shard and offset, and table row -> that.

:class:`KeyIndex` is the store-wide map (every key in every shard on disk, whatever table
it came from), sorted so that millions of keys are looked up with one ``searchsorted``.
:class:`RowLocations` is one table's view of it: what is known about each row (not looked
up yet, stored in a shard, held in the writer's buffer, or undecodable) and where its
features are. :class:`RequestedKeys` keeps the content keys of the rows a fill was told to
compute, so features computed elsewhere can be stored under them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np

from lightning_mlsr.data.features.content_keys import KEY_DTYPE

__all__ = ["KeyIndex", "Located", "RequestedKeys", "RowLocations", "RowState"]


@dataclass(frozen=True)
class Located:
    """Where looked-up keys are stored.

    Attributes:
        found: whether each key is stored. Shape: ``(K,)`` bool.
        shard / offset / ok: the shard number, the row inside it and whether the image
            decoded, of the found keys only. Shape: ``(found.sum(),)``.
    """

    found: np.ndarray
    shard: np.ndarray
    offset: np.ndarray
    ok: np.ndarray


class KeyIndex:
    """Sorted content keys of the stored features, with their shard, offset and ok flag.

    Keys added are queued and merged into the sorted arrays when a lookup needs them, so a
    long fill does not re-sort the index after every shard.
    """

    def __init__(self) -> None:
        self.keys = np.empty(0, dtype=KEY_DTYPE)  # (N,) sorted
        self.shard = np.empty(0, dtype=np.int32)  # (N,)
        self.offset = np.empty(0, dtype=np.int32)  # (N,)
        self.ok = np.empty(0, dtype=bool)  # (N,)
        self._queued: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []

    def add_shard(self, shard: int, keys: np.ndarray, ok: np.ndarray) -> None:
        """Index the ``(n,)`` keys of a shard (offsets ``0..n-1``) and their ok flags."""
        n = len(keys)
        self._queued.append(
            (
                keys.astype(KEY_DTYPE, copy=False),
                np.full(n, shard, dtype=np.int32),
                np.arange(n, dtype=np.int32),
                ok.astype(bool, copy=False),
            )
        )

    def lookup(self, keys: np.ndarray) -> Located:
        """Where the ``(K,)`` ``keys`` are stored (vectorised)."""
        self._merge()
        keys = np.asarray(keys, dtype=KEY_DTYPE)
        pos = np.searchsorted(self.keys, keys)
        found = pos < len(self.keys)
        found[found] = self.keys[pos[found]] == keys[found]
        at = pos[found]
        return Located(found, self.shard[at], self.offset[at], self.ok[at])

    def drop_shard(self, shard: int) -> None:
        """Forget every key of ``shard`` (deleted from disk)."""
        self._merge()
        keep = self.shard != shard
        self.keys, self.shard = self.keys[keep], self.shard[keep]
        self.offset, self.ok = self.offset[keep], self.ok[keep]

    def __len__(self) -> int:
        self._merge()
        return len(self.keys)

    def _merge(self) -> None:
        if not self._queued:
            return
        keys, shard, offset, ok = (np.concatenate(part) for part in zip(*self._queued))
        self._queued = []
        all_keys = np.concatenate([self.keys, keys])
        order = np.argsort(all_keys, kind="stable")
        self.keys = all_keys[order]
        self.shard = np.concatenate([self.shard, shard])[order]
        self.offset = np.concatenate([self.offset, offset])[order]
        self.ok = np.concatenate([self.ok, ok])[order]


class RowState(enum.IntEnum):
    """What one table row's features are known to be."""

    UNKNOWN = 0  # not looked up yet (or dropped with its shard)
    STORED = 1  # in shard ``shard[row]`` at ``offset[row]``
    BUFFERED = 2  # computed, in the writer's buffer at ``offset[row]``
    UNDECODABLE = 3  # no image to compute from: zero features


class RowLocations:
    """Per table row: its :class:`RowState`, and its shard and offset where it has them.

    ``shard`` is meaningful only for ``STORED`` rows and ``offset`` for ``STORED`` and
    ``BUFFERED`` ones.
    """

    def __init__(self, n: int) -> None:
        self.state = np.full(n, RowState.UNKNOWN, dtype=np.int8)  # (n,)
        self.shard = np.zeros(n, dtype=np.int32)  # (n,)
        self.offset = np.zeros(n, dtype=np.int32)  # (n,)

    def where(self, rows: np.ndarray, state: RowState) -> np.ndarray:
        """Mask of ``rows`` in ``state``. Shape: ``(R,)`` bool."""
        return self.state[rows] == state

    def stored(self, rows: np.ndarray, shard: np.ndarray | int, offset: np.ndarray) -> None:
        self.state[rows] = RowState.STORED
        self.shard[rows] = shard
        self.offset[rows] = offset

    def buffered(self, rows: np.ndarray, offset: np.ndarray) -> None:
        self.state[rows] = RowState.BUFFERED
        self.offset[rows] = offset

    def undecodable(self, rows: np.ndarray | int) -> None:
        self.state[rows] = RowState.UNDECODABLE

    def forget(self, rows: np.ndarray) -> None:
        """Back to ``UNKNOWN`` (looked up, or computed, again when asked for)."""
        self.state[rows] = RowState.UNKNOWN

    def forget_shard(self, shard: int) -> None:
        self.forget(np.flatnonzero((self.state == RowState.STORED) & (self.shard == shard)))


class RequestedKeys:
    """Content keys of the rows a fill must compute, for storing what it computes.

    Kept as sorted arrays, not a dict: a fill may ask for millions of rows.
    """

    def __init__(self) -> None:
        self.rows = np.empty(0, dtype=np.int64)  # (M,) sorted
        self.keys = np.empty(0, dtype=KEY_DTYPE)  # (M,)

    def remember(self, rows: np.ndarray, keys: np.ndarray) -> None:
        all_rows = np.concatenate([self.rows, rows.astype(np.int64)])
        order = np.argsort(all_rows, kind="stable")
        self.rows = all_rows[order]
        self.keys = np.concatenate([self.keys, keys.astype(KEY_DTYPE)])[order]

    def keys_of(self, rows: np.ndarray) -> np.ndarray:
        """The keys of ``rows``; :class:`ValueError` for rows never remembered."""
        at = np.searchsorted(self.rows, rows)
        known = at < len(self.rows)
        known[known] = self.rows[at[known]] == rows[known]
        if not known.all():
            raise ValueError(f"rows {rows[~known][:5].tolist()} were not returned by missing()")
        return self.keys[at]
