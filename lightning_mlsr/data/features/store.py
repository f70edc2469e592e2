"""On-disk store of frozen image-backbone features, filled only for the images asked for.

Frozen-encoder experiments (the image head's backbone is not trained) would otherwise run
the CNN over every image every epoch. :class:`FeatureStore` keeps the pooled features of
each image on disk, keyed by

- the :class:`~lightning_mlsr.io.encoder_reads.FeatureSpec`'s ``cache_key`` (a hash of the
  backbone's weights and of its preprocessing; a new checkpoint never reuses old
  features), one directory per key under ``$LIGHTNING_MLSR_CACHE/features/v<FORMAT_VERSION>/``;
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

The store puts together where features are (:mod:`~lightning_mlsr.data.features.key_index`,
:mod:`~lightning_mlsr.data.features.catalog`), how computed ones reach disk
(:class:`~lightning_mlsr.data.features.shards.ShardWriter`) and how they are computed
(:mod:`~lightning_mlsr.data.features.computer`). Lazily, features are computed on the CPU,
by the spec's feature callable, in whichever process asks for them: the main process with
``num_workers=0``, otherwise the DataLoader workers (each worker computes the missing
images of its own batches). A fill on an accelerator, each DDP rank computing its share
(:mod:`~lightning_mlsr.data.features.fill`), goes through :meth:`FeatureStore.missing` and
:meth:`FeatureStore.add`. Lazily computed features are written in whole shards, or a partial one when the last write is a minute old, and at
:meth:`FeatureStore.flush` (the DataModule's ``teardown``, in the main process): a
worker's last partial shard may be lost when the run ends and is recomputed by the next.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from tqdm.auto import tqdm

from lightning_mlsr.data.collection.decode import CorruptImageError
from lightning_mlsr.data.errors import DataError, format_ids
from lightning_mlsr.data.features import shards
from lightning_mlsr.data.features.cache_dir import default_cache_dir
from lightning_mlsr.data.features.catalog import ShardCatalog, ShardLost
from lightning_mlsr.data.features.computer import FeatureComputer, SkippedImages
from lightning_mlsr.data.features.key_index import KeyIndex, RequestedKeys, RowLocations, RowState
from lightning_mlsr.data.features.shards import FeatureCacheError, ShardWriter, WrittenShard

if TYPE_CHECKING:
    from collections.abc import Sequence

    from lightning_mlsr.data.collection.tables import ImageTable
    from lightning_mlsr.io.encoder_reads import FeatureSpec

log = logging.getLogger("lightning_mlsr.data")

__all__ = ["FORMAT_VERSION", "FeatureCacheError", "FeatureStore", "default_cache_dir"]

#: Bump when image decoding changes the pixels of the same bytes (old features then stale).
FORMAT_VERSION = 2
_FLUSH_SECONDS = 60.0  # lazy filling writes a partial shard at most this often


class FeatureStore:
    """Frozen features of the images of one table, computed on demand and cached on disk.

    Args:
        spec: the frozen backbone's cache key, transform and feature callable.
        images: the image table; rows are its row numbers. Only ``len``,
            ``load_image(i)``, ``content_keys(rows)`` and ``ids`` are used.
        cache_dir: cache root (None: :func:`default_cache_dir`).
        batch_size: images per forward pass when computing.
        shard_size: images per shard file (what an interrupted fill can lose at most).
        on_corrupt_image: ``"skip"``: an image that cannot be decoded gets zero features
            and is counted, reported once at the end of the pass; ``"error"``: raise.
        read_only: never compute or write (a missing feature is an error).

    Shape: :meth:`features` returns ``(len(rows), spec.dim)`` float32.
    """

    def __init__(
        self,
        spec: FeatureSpec,
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
        self.spec, self.images, self.dim = spec, images, int(spec.dim)
        self.on_corrupt_image = on_corrupt_image
        self.read_only = read_only
        self.root = (
            Path(cache_dir or default_cache_dir()).expanduser()
            / "features"
            / f"v{FORMAT_VERSION}"
            / spec.cache_key
        )
        if not read_only:
            shards.check_writable(self.root)  # before any work, not after an hour of it
            shards.remove_stale_temporaries(self.root)
        self.computer = FeatureComputer(spec, images, batch_size)
        self.index = KeyIndex()  # every stored key, whatever table it came from
        self.locations = RowLocations(len(images))  # this table's rows
        self.catalog = ShardCatalog(self.root, self.dim)
        self.writer = ShardWriter(
            self.root,
            shard_size,
            self.dim,
            on_buffered=self.locations.buffered,
            on_written=self._written,
            on_lost=self.locations.forget,
        )
        self.requested = RequestedKeys()  # from missing(), for add()
        self.skipped = SkippedImages()  # this pass
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
            except ShardLost as lost:
                self.index.drop_shard(lost.shard)
                self.locations.forget_shard(lost.shard)
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
        self.writer.flush()

    def report_skipped(self) -> int:
        """Log (once) the undecodable images met since the last report; returns their count."""
        return self.skipped.report()

    def missing(self, rows: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
        """The sorted rows (of ``rows``; None: every image) whose features a fill must
        compute: not on disk (re-read now), not known undecodable, with image bytes.
        Their content keys are kept for :meth:`add`.

        Shape: ``(M,)`` int64.
        """
        rows = np.arange(len(self.images)) if rows is None else np.asarray(rows, dtype=np.int64)
        missing, keys = self._missing_keys(rows)
        self.requested.remember(missing, keys)
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
        keys = self.requested.keys_of(rows)
        ok = self._check_decoded(rows, errors)
        features = np.where(ok[:, None], features, 0).astype(np.float32, copy=False)
        self.writer.hold(rows, keys, ok, features, rows_to_come)

    def __len__(self) -> int:
        """Images stored on disk under this store's key (across all tables)."""
        return len(self.index)

    # ------------------------------------------------------------------ computing
    def _gather(self, rows: np.ndarray) -> np.ndarray:
        """Features of rows that are stored, buffered or undecodable (zeros)."""
        out = np.zeros((len(rows), self.dim), dtype=np.float32)  # (R, D)
        offset = self.locations.offset[rows]
        if (buffered := self.locations.where(rows, RowState.BUFFERED)).any():
            out[buffered] = self.writer.buffered(offset[buffered])
        stored = self.locations.where(rows, RowState.STORED)
        shard = self.locations.shard[rows]
        for number in np.unique(shard[stored]).tolist():
            where = np.flatnonzero(stored & (shard == number))
            out[where] = self.catalog.features(number)[offset[where]]
        return out

    def _compute_missing(self, rows: np.ndarray, progress: bool, whole_pass: bool = False) -> int:
        missing, keys = self._missing_keys(rows)
        if not len(missing):
            return 0
        bar = tqdm(
            total=len(missing),
            desc=f"image features ({self.spec.name})",
            unit="img",
            disable=not progress,
        )
        if whole_pass:  # fail now if it cannot fit, not after hours of work
            shards.check_space(self.root, len(missing), self.dim)
        start = time.perf_counter()
        done = 0
        try:
            for chunk in self.computer.batches(missing):
                features, errors = self.computer.encode(chunk)
                ok = self._check_decoded(chunk, errors)
                part = slice(done, done + len(chunk))
                done += len(chunk)
                self.writer.hold(chunk, keys[part], ok, features, len(missing) - done)
                bar.update(len(chunk))
        finally:
            bar.close()
            if self.writer.due(_FLUSH_SECONDS):
                self.flush()
        seconds = time.perf_counter() - start
        (log.info if progress else log.debug)(
            "computed %s features of %d images in %.1f s (%.1f images/s) into %s",
            self.spec.name,
            len(missing),
            seconds,
            len(missing) / max(seconds, 1e-9),
            self.root,
        )
        return len(missing)

    def _check_decoded(self, rows: np.ndarray, errors: Sequence[str | None]) -> np.ndarray:
        """Whether each row decoded; an undecodable one is recorded as skipped, or raises
        with ``on_corrupt_image="error"``. Shape: ``(R,)`` bool."""
        ok = np.ones(len(rows), dtype=bool)
        for i, reason in enumerate(errors):
            if reason is None:
                continue
            ok[i] = False
            image_id = str(self.images.ids[int(rows[i])])
            if self.on_corrupt_image == "error":
                raise DataError(
                    f"image {image_id!r} cannot be decoded while computing its features "
                    f"({reason}). Fix or remove it, or set on_corrupt_image='skip' to give "
                    "it zero features."
                )
            self.skipped.add(image_id, reason)
        return ok

    # ------------------------------------------------------------------ lookup
    def _missing_keys(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The sorted rows whose features are neither stored nor known undecodable, and
        their keys (rows without image bytes are recorded as skipped).

        Shape: ``(M,)`` int64 and ``(M,)`` keys.
        """
        missing, keys = self._resolve(rows)
        if not len(missing):
            return missing, keys
        if self.read_only:
            ids = [self.images.ids[r] for r in missing[:3].tolist()]
            raise FeatureCacheError(
                f"{len(missing)} image feature(s) are missing from the read-only feature cache "
                f"{self.root}, e.g. {format_ids(ids)}"
            )
        self._refresh()  # another process may have written them meanwhile
        return self._lookup(missing, keys)

    def _resolve(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Look the not yet known rows up by content; returns those not stored, sorted,
        with their keys."""
        unknown = np.unique(rows[self.locations.where(rows, RowState.UNKNOWN)])
        keys = self.images.content_keys(unknown)  # (U,) S16; b"" where a row has no bytes
        for row in unknown[keys == b""].tolist():  # nothing to key or to compute
            err = CorruptImageError(str(self.images.ids[row]), "no image bytes")
            if self.on_corrupt_image == "error":
                raise err
            self.skipped.add(err.image_id, str(err))
            self.locations.undecodable(row)
        has = keys != b""
        return self._lookup(unknown[has], keys[has])

    def _lookup(self, rows: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Point rows at stored features where their key is stored; returns the rest."""
        if not len(rows):
            return rows, keys
        found = self.index.lookup(keys)
        hit = rows[found.found]
        self.locations.stored(hit, found.shard, found.offset)
        for row in hit[~found.ok].tolist():
            self._undecodable_from_cache(row)
        return rows[~found.found], keys[~found.found]

    def _undecodable_from_cache(self, row: int) -> None:
        image_id = str(self.images.ids[row])
        if self.on_corrupt_image == "error":
            raise DataError(
                f"image {image_id!r} cannot be decoded (recorded in the feature cache "
                f"{self.root}). Fix or remove it, or set on_corrupt_image='skip'."
            )
        self.skipped.add(image_id, "undecodable (recorded in the feature cache)")

    # ------------------------------------------------------------------ disk
    def _written(self, written: WrittenShard) -> None:
        shard = self.catalog.add(written.stem, written.checksum, verified=True)
        self.locations.stored(written.rows, shard, np.arange(len(written.rows)))
        self.index.add_shard(shard, written.keys, written.ok)

    def _refresh(self) -> None:
        """Index the shards other processes wrote since the last look."""
        for found in self.catalog.refresh():
            self.index.add_shard(found.shard, found.keys, found.ok)
