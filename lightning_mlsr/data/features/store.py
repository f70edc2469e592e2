"""On-disk store of frozen image-backbone features, filled only for the images asked for.

Frozen-encoder experiments (the image head's backbone is not trained) would otherwise run
the CNN over every image every epoch. :class:`FeatureStore` keeps the pooled features of
each image on disk, keyed by

- the backbone's :attr:`~lightning_mlsr.models.backbones.ImageBackbone.cache_key` (a hash of its
  weights and of its preprocessing; a new checkpoint never reuses old features), one
  directory per key under ``$LIGHTNING_MLSR_CACHE/features/v<FORMAT_VERSION>/``;
- each image's content hash, so a changed image is recomputed and an unchanged one is
  found whatever its row, table or collection.

On disk a store is a folder of immutable shards (:mod:`~lightning_mlsr.data.features.shards`),
each written atomically when ``shard_size`` new features are ready. Hence:

- **lazy**: :meth:`FeatureStore.features` computes the missing rows of a batch and caches
  them, so a short run only ever encodes the images it reads;
- **resumable**: an interrupted :meth:`FeatureStore.fill` keeps every finished shard, and
  the next fill computes only what is still missing;
- **safe to share**: processes (DataLoader workers, DDP ranks) never write the same file,
  and a truncated or corrupt shard is detected (checksum), named in a warning, deleted
  and recomputed.

Lazily, features are computed on the CPU, by a private copy of the backbone, in whichever
process asks for them: the main process with ``num_workers=0``, otherwise the DataLoader
workers (each worker computes the missing images of its own batches). A fill on an
accelerator, each DDP rank computing its share (:mod:`~lightning_mlsr.data.features.fill`),
goes through :meth:`FeatureStore.missing` and :meth:`FeatureStore.add`. Lazily computed features
are written in whole shards, or a partial one when the last write is a minute old, and at
:meth:`FeatureStore.flush` (the DataModule's ``teardown``, in the main process): a
worker's last partial shard may be lost when the run ends and is recomputed by the next.
"""

from __future__ import annotations

import collections
import copy
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from lightning_mlsr.data.collection.decode import CorruptImageError
from lightning_mlsr.data.errors import DataError, format_ids
from lightning_mlsr.data.features import shards
from lightning_mlsr.data.features.cache_dir import default_cache_dir
from lightning_mlsr.data.features.shards import FeatureCacheError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from lightning_mlsr.data.collection.tables import ImageTable
    from lightning_mlsr.models.backbones import ImageBackbone

log = logging.getLogger("lightning_mlsr.data")

__all__ = ["FORMAT_VERSION", "FeatureCacheError", "FeatureStore", "default_cache_dir"]

#: Bump when image decoding changes the pixels of the same bytes (old features then stale).
FORMAT_VERSION = 2
_UNKNOWN, _UNDECODABLE, _BUFFERED = -1, -2, -3  # row states besides a shard number
_FLUSH_SECONDS = 60.0  # lazy filling writes a partial shard at most this often
_OPEN_SHARDS = 64  # memory maps kept open at once (each holds a file descriptor)
_Part = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # rows, keys, ok, features


class FeatureStore:
    """Frozen features of the images of one table, computed on demand and cached on disk.

    Args:
        backbone: the frozen image backbone; the store keeps its own CPU copy in eval mode.
        images: the image table; rows are its row numbers. Only ``len``,
            ``load_image(i)``, ``content_keys(rows)`` and ``ids`` are used.
        cache_dir: cache root (None: :func:`default_cache_dir`).
        batch_size: images per forward pass when computing.
        shard_size: images per shard file (what an interrupted fill can lose at most).
        on_corrupt_image: ``"skip"``: an image that cannot be decoded gets zero features
            and is counted, reported once at the end of the pass; ``"error"``: raise.
        read_only: never compute or write (a missing feature is an error).

    Shape: :meth:`features` returns ``(len(rows), backbone.num_features)`` float32.
    """

    def __init__(
        self,
        backbone: ImageBackbone,
        images: ImageTable,
        cache_dir: str | Path | None = None,
        batch_size: int = 32,
        shard_size: int = 4096,
        on_corrupt_image: Literal["skip", "error"] = "skip",
        read_only: bool = False,
    ) -> None:
        if on_corrupt_image not in ("skip", "error"):
            raise ValueError(
                f"on_corrupt_image must be 'skip' or 'error', got {on_corrupt_image!r}"
            )
        self.images = images
        self.backbone = copy.deepcopy(backbone).cpu().eval().requires_grad_(False)
        self.transform = self.backbone.transform()
        self.dim = int(backbone.num_features)
        self.batch_size = batch_size
        self.shard_size = shard_size
        self.on_corrupt_image = on_corrupt_image
        self.read_only = read_only
        self.root = (
            Path(cache_dir or default_cache_dir()).expanduser()
            / "features"
            / f"v{FORMAT_VERSION}"
            / backbone.cache_key
        )
        if not read_only:
            shards.check_writable(self.root)  # before any work, not after an hour of it
            shards.remove_stale_temporaries(self.root)
        n = len(images)
        self._row_shard = np.full(n, _UNKNOWN, dtype=np.int32)  # shard number or a state
        self._row_offset = np.zeros(n, dtype=np.int32)
        self._shards: list[str] = []  # shard number -> file stem
        self._checksums: list[str] = []
        self._verified: set[int] = set()  # shards checked (or written) by this process
        self._open: collections.OrderedDict[int, np.ndarray] = collections.OrderedDict()
        self._index_keys = np.empty(0, dtype=shards.KEY_DTYPE)  # sorted
        self._index_shard = np.empty(0, dtype=np.int32)
        self._index_offset = np.empty(0, dtype=np.int32)
        self._index_ok = np.empty(0, dtype=bool)
        self._wanted_rows = np.empty(0, dtype=np.int64)  # sorted; from missing(), for add()
        self._wanted_keys = np.empty(0, dtype=shards.KEY_DTYPE)
        self._pending: list[_Part] = []  # (keys, shard, offset, ok) not yet in the index
        # computed features not yet written: up to shard_size rows (rows, keys, ok, features)
        self._buffer: _Part | None = None
        self._held = 0
        self._to_come = 0  # rows of the current pass not computed yet (for disk-full errors)
        self._last_write = time.monotonic()
        self._skipped: dict[str, str] = {}  # undecodable image id -> reason, this pass
        self._refresh()

    # ------------------------------------------------------------------ public
    def features(self, rows: Sequence[int] | np.ndarray) -> np.ndarray:
        """Features of ``rows`` (computing and caching the missing ones).

        Undecodable images (``on_corrupt_image="skip"``) get zeros. Missing features
        are computed without a progress bar and written in whole shards (see
        :meth:`flush`); skips are kept for :meth:`report_skipped`.

        Shape: ``(len(rows), D)`` float32.
        """
        rows = np.asarray(rows, dtype=np.int64)
        for _ in range(3):  # a shard failing its checksum is dropped, then recomputed
            self._compute_missing(rows, progress=False)
            try:
                return self._gather(rows)
            except _ShardLost:
                continue
        raise FeatureCacheError(f"the feature cache {self.root} keeps failing its checksums")

    def fill(self, rows: Sequence[int] | np.ndarray | None = None, progress: bool = True) -> int:
        """Compute and store the features of ``rows`` (None: every image) that are missing,
        with a progress bar in images/second; undecodable images are reported once at the
        end. Interrupted, it keeps every finished shard. Returns the images encoded.

        Raises :class:`FeatureCacheError` before computing anything when the cache's
        filesystem reports less free space than the missing features need, and when a
        write fails (a full disk: the failed shard's files are removed).
        """
        rows = np.arange(len(self.images)) if rows is None else np.asarray(rows, dtype=np.int64)
        try:
            encoded = self._compute_missing(rows, progress=progress, whole_pass=True)
        finally:  # also on Ctrl-C: keep what was computed
            self.flush()
        self.report_skipped()
        return encoded

    def flush(self) -> None:
        """Write the features computed but not yet written (a partial shard).

        Lazy filling writes a shard when ``shard_size`` features are ready, or when the
        last write is more than a minute old; call this (the DataModule does, at
        ``teardown``) so that a short run leaves its features for the next one.
        """
        if self._held and self._buffer is not None:
            rows, keys, ok, features = (a[: self._held].copy() for a in self._buffer)
            self._held = 0
            try:
                self._write_shard(rows, keys, ok, features)
            except FeatureCacheError:
                self._row_shard[rows] = _UNKNOWN  # not stored: computed again when asked for
                raise
        self._held = 0
        self._last_write = time.monotonic()

    def report_skipped(self) -> int:
        """Log (once) the undecodable images met since the last report; returns their count."""
        count = len(self._skipped)
        if count:
            log.warning(
                "%d image(s) could not be decoded and got zero features: %s (first: %s). "
                "Fix or remove them, or load the collection with on_corrupt_image='error' to "
                "stop at the first one.",
                count,
                format_ids(self._skipped),
                next(iter(self._skipped.values())),
            )
        self._skipped = {}
        return count

    def missing(self, rows: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
        """The sorted rows (of ``rows``; None: every image) whose features a fill must
        compute: not on disk (re-read now), not known undecodable, with image bytes.
        Their content keys are kept for :meth:`add`.

        Shape: ``(M,)`` int64.
        """
        rows = np.arange(len(self.images)) if rows is None else np.asarray(rows, dtype=np.int64)
        keys = self._missing_keys(rows)
        missing = np.fromiter(sorted(keys), dtype=np.int64, count=len(keys))
        wanted = np.array([keys[r] for r in missing.tolist()], dtype=shards.KEY_DTYPE)
        rows_all = np.concatenate([self._wanted_rows, missing])
        order = np.argsort(rows_all, kind="stable")
        self._wanted_rows = rows_all[order]
        self._wanted_keys = np.concatenate([self._wanted_keys, wanted])[order]
        return missing

    def add(
        self,
        rows: np.ndarray,
        features: np.ndarray,
        errors: Sequence[str | None] = (),
        rows_to_come: int = 0,
    ) -> None:
        """Store features computed elsewhere (a fill on an accelerator) for rows returned
        by :meth:`missing`; written in whole shards like lazily computed ones (call
        :meth:`flush` at the end). ``errors[i]`` is why row ``i`` could not be decoded
        (None: decoded); such rows get zeros, or raise with ``on_corrupt_image="error"``.
        ``rows_to_come``: rows still to be added in this pass (for a full-disk error).

        Shape: ``features`` ``(len(rows), D)``.
        """
        rows = np.asarray(rows, dtype=np.int64)
        at = np.searchsorted(self._wanted_rows, rows)
        known = at < len(self._wanted_rows)
        known[known] = self._wanted_rows[at[known]] == rows[known]
        if not known.all():
            raise ValueError(f"rows {rows[~known][:5].tolist()} were not returned by missing()")
        ok = np.ones(len(rows), dtype=bool)
        for i, reason in enumerate(errors):
            if reason is not None:
                ok[i] = False
                self._undecodable(int(rows[i]), reason)
        features = np.where(ok[:, None], features, 0).astype(np.float32, copy=False)
        self._to_come = rows_to_come
        try:
            self._hold(rows, self._wanted_keys[at], ok, features)
        finally:
            self._to_come = 0

    def __len__(self) -> int:
        """Images stored on disk under this store's key (across all tables)."""
        self._merge_pending()
        return len(self._index_keys)

    # ------------------------------------------------------------------ computing
    def _gather(self, rows: np.ndarray) -> np.ndarray:
        out = np.zeros((len(rows), self.dim), dtype=np.float32)  # (R, D)
        state = self._row_shard[rows]  # shard number, or _BUFFERED / _UNDECODABLE (zeros)
        if self._buffer is not None and (buffered := state == _BUFFERED).any():
            out[buffered] = self._buffer[3][self._row_offset[rows[buffered]]]
        for shard in np.unique(state[state >= 0]).tolist():
            where = np.flatnonzero(state == shard)
            out[where] = self._shard_array(shard)[self._row_offset[rows[where]]]
        return out

    def _missing_keys(self, rows: np.ndarray) -> dict[int, bytes]:
        """row -> key of the rows whose features are neither stored nor known undecodable
        (rows without image bytes are recorded as skipped)."""
        keys = self._resolve(rows)
        if not keys:
            return keys
        if self.read_only:
            raise FeatureCacheError(
                f"{len(keys)} image feature(s) are missing from the read-only feature cache "
                f"{self.root}, e.g. {format_ids([self.images.ids[r] for r in list(keys)[:3]])}"
            )
        self._refresh()  # another process may have written them meanwhile
        return self._lookup(keys)

    def _compute_missing(self, rows: np.ndarray, progress: bool, whole_pass: bool = False) -> int:
        keys = self._missing_keys(rows)
        if not keys:
            return 0
        missing = np.fromiter(sorted(keys), dtype=np.int64)
        bar = tqdm(
            total=len(missing),
            desc=f"image features ({self.backbone.name})",
            unit="img",
            disable=not progress,
        )
        if whole_pass:  # fail now if it cannot fit, not after hours of work
            shards.check_space(self.root, len(missing), self.dim)
        start = time.perf_counter()
        try:
            for begin in range(0, len(missing), self.batch_size):
                chunk = missing[begin : begin + self.batch_size]
                self._to_come = len(missing) - begin - len(chunk)
                self._hold(*self._encode(chunk, keys))
                bar.update(len(chunk))
        finally:
            self._to_come = 0
            bar.close()
            if time.monotonic() - self._last_write > _FLUSH_SECONDS:
                self.flush()
        seconds = time.perf_counter() - start
        (log.info if progress else log.debug)(
            "computed %s features of %d images in %.1f s (%.1f images/s) into %s",
            self.backbone.name,
            len(missing),
            seconds,
            len(missing) / max(seconds, 1e-9),
            self.root,
        )
        return len(missing)

    @torch.no_grad()
    def _encode(self, rows: np.ndarray, keys: dict[int, bytes]) -> _Part:
        """(rows, keys, ok, features) of one batch; undecodable images get zeros."""
        ok = np.ones(len(rows), dtype=bool)
        pixels = []
        for j, row in enumerate(rows.tolist()):
            try:
                pixels.append(self.transform(self.images.load_image(row)))
            except DataError as err:
                ok[j] = False
                self._undecodable(row, str(err))
        features = np.zeros((len(rows), self.dim), dtype=np.float32)
        if pixels:
            features[ok] = self.backbone(torch.stack(pixels)).float().numpy()  # (b, D)
        return (
            rows,
            np.array([keys[r] for r in rows.tolist()], dtype=shards.KEY_DTYPE),
            ok,
            features,
        )

    def _undecodable(self, row: int, reason: str) -> None:
        """Count an image that cannot be decoded, or raise (``on_corrupt_image="error"``)."""
        image_id = str(self.images.ids[row])
        if self.on_corrupt_image == "error":
            raise DataError(
                f"image {image_id!r} cannot be decoded while computing its features "
                f"({reason}). Fix or remove it, or set on_corrupt_image='skip' to give "
                "it zero features."
            )
        self._skipped[image_id] = reason

    def _hold(
        self, rows: np.ndarray, keys: np.ndarray, ok: np.ndarray, features: np.ndarray
    ) -> None:
        """Buffer computed features; write a shard each time ``shard_size`` are held."""
        if self._buffer is None:
            self._buffer = (
                np.empty(self.shard_size, dtype=np.int64),
                np.empty(self.shard_size, dtype=shards.KEY_DTYPE),
                np.empty(self.shard_size, dtype=bool),
                np.empty((self.shard_size, self.dim), dtype=np.float32),
            )
        begin = 0
        while begin < len(rows):
            take = min(self.shard_size - self._held, len(rows) - begin)
            into, part = slice(self._held, self._held + take), slice(begin, begin + take)
            for buffer, values in zip(self._buffer, (rows, keys, ok, features)):
                buffer[into] = values[part]
            self._row_shard[rows[part]] = _BUFFERED
            self._row_offset[rows[part]] = np.arange(into.start, into.stop)
            self._held += take
            begin += take
            if self._held == self.shard_size:
                self.flush()

    # ------------------------------------------------------------------ lookup
    def _resolve(self, rows: np.ndarray) -> dict[int, bytes]:
        """Look unknown rows up by content; returns row -> key of those not stored."""
        unknown = np.unique(rows[self._row_shard[rows] == _UNKNOWN])
        found = self.images.content_keys(unknown)  # (U,) S16; b"" where a row has no bytes
        for row in unknown[found == b""].tolist():  # nothing to key or to compute
            err = CorruptImageError(str(self.images.ids[row]), "no image bytes")
            if self.on_corrupt_image == "error":
                raise err
            self._skipped[err.image_id] = str(err)
            self._row_shard[row] = _UNDECODABLE
        has = found != b""
        return self._lookup(dict(zip(unknown[has].tolist(), found[has].tolist(), strict=True)))

    def _lookup(self, keys: dict[int, bytes]) -> dict[int, bytes]:
        """Point rows at stored features where their key is stored; returns the rest."""
        if not keys:
            return keys
        self._merge_pending()
        rows = np.fromiter(keys, dtype=np.int64, count=len(keys))
        wanted = np.array(list(keys.values()), dtype=shards.KEY_DTYPE)
        pos = np.searchsorted(self._index_keys, wanted)  # vectorised: millions of rows
        found = pos < len(self._index_keys)
        found[found] = self._index_keys[pos[found]] == wanted[found]
        hit, at = rows[found], pos[found]
        self._row_shard[hit] = self._index_shard[at]
        self._row_offset[hit] = self._index_offset[at]
        for row in hit[~self._index_ok[at]].tolist():
            self._undecodable_from_cache(row)
        return {row: keys[row] for row in rows[~found].tolist()}

    def _undecodable_from_cache(self, row: int) -> None:
        image_id = str(self.images.ids[row])
        if self.on_corrupt_image == "error":
            raise DataError(
                f"image {image_id!r} cannot be decoded (recorded in the feature cache "
                f"{self.root}). Fix or remove it, or set on_corrupt_image='skip'."
            )
        self._skipped[image_id] = "undecodable (recorded in the feature cache)"

    # ------------------------------------------------------------------ disk
    def _write_shard(
        self, rows: np.ndarray, keys: np.ndarray, ok: np.ndarray, features: np.ndarray
    ) -> None:
        stem, checksum = shards.write_shard(self.root, keys, ok, features, self._to_come)
        shard = len(self._shards)
        self._shards.append(stem)
        self._checksums.append(checksum)
        self._verified.add(shard)
        self._row_shard[rows] = shard
        self._row_offset[rows] = np.arange(len(rows))
        self._index_add(keys, np.full(len(keys), shard, np.int32), np.arange(len(keys)), ok)

    def _refresh(self) -> None:
        """Add the shards on disk that this process does not know yet; damaged ones are
        named in a warning and deleted."""
        known = set(self._shards)
        parts = []
        for stem in shards.shard_stems(self.root):
            if stem in known:
                continue
            try:
                keys, ok, checksum = shards.read_index(self.root, stem, self.dim)
            except shards.ShardError as err:
                shards.discard(self.root, stem, str(err))
                continue
            shard = len(self._shards)
            self._shards.append(stem)
            self._checksums.append(checksum)
            parts.append((keys, np.full(len(keys), shard, np.int32), np.arange(len(keys)), ok))
        if parts:
            self._index_add(*(np.concatenate(p) for p in zip(*parts)))

    def _index_add(
        self, keys: np.ndarray, shard: np.ndarray, offset: np.ndarray, ok: np.ndarray
    ) -> None:
        """Queue stored keys for the lookup index (merged when a lookup needs them, so a
        long fill does not re-sort the index after every shard)."""
        self._pending.append((keys, shard.astype(np.int32), offset.astype(np.int32), ok))

    def _merge_pending(self) -> None:
        if not self._pending:
            return
        keys, shard, offset, ok = (np.concatenate(p) for p in zip(*self._pending))
        self._pending = []
        all_keys = np.concatenate([self._index_keys, keys])
        order = np.argsort(all_keys, kind="stable")
        self._index_keys = all_keys[order]
        self._index_shard = np.concatenate([self._index_shard, shard])[order]
        self._index_offset = np.concatenate([self._index_offset, offset])[order]
        self._index_ok = np.concatenate([self._index_ok, ok])[order]

    def _shard_array(self, shard: int) -> np.ndarray:
        """The memory-mapped features of a shard, checksum-verified once per process."""
        if shard in self._open:
            self._open.move_to_end(shard)
            return self._open[shard]
        stem = self._shards[shard]
        if shard not in self._verified:
            try:
                shards.verify(self.root, stem, self._checksums[shard])
            except shards.ShardError as err:
                self._drop_shard(shard, str(err))
                raise _ShardLost from err
            self._verified.add(shard)
        array = shards.open_features(self.root, stem)
        self._open[shard] = array
        if len(self._open) > _OPEN_SHARDS:
            self._open.popitem(last=False)
        return array

    def _drop_shard(self, shard: int, reason: str) -> None:
        shards.discard(self.root, self._shards[shard], reason)
        self._row_shard[self._row_shard == shard] = _UNKNOWN
        self._merge_pending()
        keep = self._index_shard != shard
        self._index_keys, self._index_shard = self._index_keys[keep], self._index_shard[keep]
        self._index_offset, self._index_ok = self._index_offset[keep], self._index_ok[keep]

    # ------------------------------------------------------------------ pickling
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_open"] = collections.OrderedDict()  # memory maps stay in their process
        return state


class _ShardLost(Exception):
    """A shard failed its checksum and was dropped; the caller recomputes its rows."""
