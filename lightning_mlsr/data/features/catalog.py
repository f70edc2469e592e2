"""The shards of one feature-store folder that this process knows, and their features.

Shards are numbered in the order this process learnt of them (from disk, or by writing
them). A shard's features are checked against its checksum the first time this process
reads them, then memory-mapped; a shard that fails the check is deleted and reported to
the caller as :class:`ShardLost`, whose rows are then recomputed.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lightning_mlsr.data.features import shards

__all__ = ["FoundShard", "ShardCatalog", "ShardLost"]

_OPEN_SHARDS = 64  # memory maps kept open at once (each holds a file descriptor)


class ShardLost(Exception):
    """A shard failed its checksum and was deleted; the caller recomputes its rows."""

    def __init__(self, shard: int) -> None:
        super().__init__(f"shard {shard} failed its checksum")
        self.shard = shard


@dataclass(frozen=True)
class FoundShard:
    """A shard found on disk: its number here, and its ``(n,)`` keys and ok flags."""

    shard: int
    keys: np.ndarray
    ok: np.ndarray


class ShardCatalog:
    """Stems and checksums of the known shards of ``root``, and their open memory maps."""

    def __init__(self, root: Path, dim: int) -> None:
        self.root, self.dim = root, dim
        self.stems: list[str] = []  # shard number -> file stem
        self.checksums: list[str] = []
        self._verified: set[int] = set()  # checked (or written) by this process
        self._open: collections.OrderedDict[int, np.ndarray] = collections.OrderedDict()

    def add(self, stem: str, checksum: str, verified: bool) -> int:
        """Number a shard (``verified``: written by this process, so not checked again)."""
        shard = len(self.stems)
        self.stems.append(stem)
        self.checksums.append(checksum)
        if verified:
            self._verified.add(shard)
        return shard

    def refresh(self) -> list[FoundShard]:
        """The shards on disk not known yet (now numbered); damaged ones are named in a
        warning and deleted."""
        known = set(self.stems)
        found = []
        for stem in shards.shard_stems(self.root):
            if stem in known:
                continue
            try:
                keys, ok, checksum = shards.read_index(self.root, stem, self.dim)
            except shards.ShardError as err:
                shards.discard(self.root, stem, str(err))
                continue
            found.append(FoundShard(self.add(stem, checksum, verified=False), keys, ok))
        return found

    def features(self, shard: int) -> np.ndarray:
        """The memory-mapped features of ``shard``, checksum-verified once per process;
        :class:`ShardLost` (after deleting it) when the check fails. Shape: ``(n, D)``."""
        if shard in self._open:
            self._open.move_to_end(shard)
            return self._open[shard]
        stem = self.stems[shard]
        if shard not in self._verified:
            try:
                shards.verify(self.root, stem, self.checksums[shard])
            except shards.ShardError as err:
                shards.discard(self.root, stem, str(err))
                raise ShardLost(shard) from err
            self._verified.add(shard)
        array = shards.open_features(self.root, stem)
        self._open[shard] = array
        if len(self._open) > _OPEN_SHARDS:
            self._open.popitem(last=False)
        return array

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_open"] = collections.OrderedDict()  # memory maps stay in their process
        return state
