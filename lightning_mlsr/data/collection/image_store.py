"""Where the encoded image bytes of an :class:`~lightning_mlsr.data.collection.tables.ImageTable` live.

Image bytes are ~95% of an AToMiC collection (~180 GB), so a loaded collection does not
hold them: :class:`ParquetImageStore` keeps three small integer arrays per image (file,
row group, row within the group, 12 bytes an image) and reads a row group's image column
from the parquet file only when a batch asks for one of its images. A few row groups
stay cached per process, so reading a corpus in order decodes each row group once.
(Parquet column chunks are decoded into Arrow buffers anyway, so memory-mapping the
files would save no copy; it would only leave every page touched counted in the RSS.) The store pickles without its cache and file handles, so every DataLoader worker
reads for itself.

:class:`ArrowImageStore` holds bytes in memory, for tables built from Python lists.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from lightning_mlsr.data.errors import DataError
from lightning_mlsr.data.features.content_keys import KEY_DTYPE, GroupKeyCache, keys_of

__all__ = ["ArrowImageStore", "ImageStore", "ParquetImageStore", "binary_column"]


def binary_column(col: pa.Array | pa.ChunkedArray, where: str) -> pa.Array:
    """A ``binary`` or struct ``{bytes, path}`` image column as ``large_binary``."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks() if col.num_chunks else pa.array([], col.type)
    if pa.types.is_struct(col.type):
        if col.type.get_field_index("bytes") < 0:
            raise DataError(
                f"{where}: image column is a struct without a 'bytes' field ({col.type}); "
                f"images must be stored in the file, not referenced by path"
            )
        col = pc.struct_field(col, "bytes")
    if not (pa.types.is_binary(col.type) or pa.types.is_large_binary(col.type)):
        raise DataError(
            f"{where}: image column has type {col.type}; expected binary or a struct "
            f"{{bytes, path}}"
        )
    return col.cast(pa.large_binary())


class ImageStore:
    """Encoded image bytes by row; ``None`` where a row has none."""

    def __len__(self) -> int:
        raise NotImplementedError

    def get(self, i: int) -> bytes | None:
        raise NotImplementedError

    def take(self, rows: Sequence[int] | np.ndarray) -> ImageStore:
        raise NotImplementedError

    @property
    def resident_bytes(self) -> int:
        """Image bytes this process holds in memory now."""
        raise NotImplementedError

    def content_keys(self, rows: Sequence[int] | np.ndarray) -> np.ndarray:
        """Content keys (:func:`~lightning_mlsr.data.features.content_keys.content_key`) of ``rows``;
        ``b""`` where a row has no bytes. Shape ``(len(rows),)``, dtype ``S16``."""
        raise NotImplementedError


class ArrowImageStore(ImageStore):
    """Bytes held in one in-memory Arrow array."""

    def __init__(self, data: Sequence[bytes | None] | pa.Array | pa.ChunkedArray) -> None:
        if not isinstance(data, pa.Array | pa.ChunkedArray):
            data = pa.array(list(data), pa.large_binary())
        self._data = binary_column(data, "image bytes")

    def __len__(self) -> int:
        return len(self._data)

    def get(self, i: int) -> bytes | None:
        return self._data[i].as_py()

    def take(self, rows: Sequence[int] | np.ndarray) -> ArrowImageStore:
        return ArrowImageStore(self._data.take(pa.array(np.asarray(rows, dtype=np.int64))))

    @property
    def resident_bytes(self) -> int:
        return self._data.nbytes

    def content_keys(self, rows: Sequence[int] | np.ndarray) -> np.ndarray:
        return keys_of(self._data.take(pa.array(np.asarray(rows, dtype=np.int64))))


class ParquetImageStore(ImageStore):
    """Bytes read on demand from parquet row groups, a few groups cached per process.

    Args:
        files: the parquet files.
        column: name of the image column (binary, or a struct with a ``bytes`` field).
        file_of / group_of / row_of: per image, its file, row group and row in the group.
        cache_groups: row groups kept decoded per process.
        key_cache: where the content keys of row groups are kept (None: the default
            :class:`~lightning_mlsr.data.features.content_keys.GroupKeyCache`), so that finding an
            image's cached features does not read its bytes again.
    """

    def __init__(
        self,
        files: Sequence[str | Path],
        column: str,
        file_of: np.ndarray,
        group_of: np.ndarray,
        row_of: np.ndarray,
        cache_groups: int = 4,
        key_cache: GroupKeyCache | None = None,
    ) -> None:
        self.files = [str(f) for f in files]
        self.column = column
        self.file_of = np.asarray(file_of, dtype=np.int32)
        self.group_of = np.asarray(group_of, dtype=np.int32)
        self.row_of = np.asarray(row_of, dtype=np.int32)
        self.cache_groups = cache_groups
        self._handles: dict[int, pq.ParquetFile] = {}
        self._cache: OrderedDict[tuple[int, int], pa.Array] = OrderedDict()
        self.key_cache = key_cache
        self._keys: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()

    @classmethod
    def scan(cls, files: Sequence[Path], column: str = "image") -> ParquetImageStore:
        """Every row of ``files`` in order, from the parquet footers alone (no bytes read)."""
        file_of, group_of, row_of = [], [], []
        for f, path in enumerate(files):
            meta = pq.ParquetFile(path).metadata
            for g in range(meta.num_row_groups):
                n = meta.row_group(g).num_rows
                file_of.append(np.full(n, f, np.int32))
                group_of.append(np.full(n, g, np.int32))
                row_of.append(np.arange(n, dtype=np.int32))
        cat = lambda xs: np.concatenate(xs) if xs else np.zeros(0, np.int32)  # noqa: E731
        return cls(files, column, cat(file_of), cat(group_of), cat(row_of))

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_handles"], state["_cache"], state["_keys"] = {}, OrderedDict(), OrderedDict()
        return state

    def __len__(self) -> int:
        return len(self.file_of)

    def _handle(self, f: int) -> pq.ParquetFile:
        if f not in self._handles:
            try:
                self._handles[f] = pq.ParquetFile(self.files[f])
            except (pa.ArrowException, OSError) as err:
                raise DataError(f"{self.files[f]} cannot be opened ({err})") from err
        return self._handles[f]

    def _group(self, f: int, g: int) -> pa.Array:
        key = (f, g)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        try:
            table = self._handle(f).read_row_group(g, columns=[self.column])
        except (pa.ArrowException, OSError) as err:
            raise DataError(
                f"{self.files[f]}: row group {g} cannot be read ({err}); the file may be truncated"
            ) from err
        data = binary_column(table[self.column], self.files[f])
        self._cache[key] = data
        while len(self._cache) > self.cache_groups:
            self._cache.popitem(last=False)
        return data

    def get(self, i: int) -> bytes | None:
        return self._group(int(self.file_of[i]), int(self.group_of[i]))[int(self.row_of[i])].as_py()

    def take(self, rows: Sequence[int] | np.ndarray) -> ParquetImageStore:
        rows = np.asarray(rows, dtype=np.int64)
        return ParquetImageStore(
            self.files,
            self.column,
            self.file_of[rows],
            self.group_of[rows],
            self.row_of[rows],
            self.cache_groups,
            self.key_cache,
        )

    def content_keys(self, rows: Sequence[int] | np.ndarray) -> np.ndarray:
        """Keys from the row groups' stored key maps; a group without one is read (once,
        for all its rows) and its map stored."""
        rows = np.asarray(rows, dtype=np.int64)
        out = np.zeros(len(rows), dtype=KEY_DTYPE)
        codes = (self.file_of[rows].astype(np.int64) << 32) | self.group_of[rows]
        for code in np.unique(codes).tolist():
            where = np.flatnonzero(codes == code)
            group_keys = self._group_keys(code >> 32, code & 0xFFFFFFFF)
            out[where] = group_keys[self.row_of[rows[where]]]
        return out

    def _group_keys(self, f: int, g: int) -> np.ndarray:
        if (f, g) in self._keys:
            self._keys.move_to_end((f, g))
            return self._keys[(f, g)]
        if self.key_cache is None:
            self.key_cache = GroupKeyCache()
        path = self.files[f]
        keys = self.key_cache.load(path, g, self._handle(f).metadata.row_group(g).num_rows)
        if keys is None:
            keys = keys_of(self._group(f, g))
            self.key_cache.save(path, g, keys)
        self._keys[(f, g)] = keys
        while len(self._keys) > 256:  # 16 bytes an image: a few MB at most
            self._keys.popitem(last=False)
        return keys

    @property
    def resident_bytes(self) -> int:
        return sum(a.nbytes for a in self._cache.values())

    def missing_rows(self) -> np.ndarray:
        """Rows with null (or empty) bytes, found from column statistics where possible.

        A row group is read only when its statistics do not rule out nulls (one row
        group in memory at a time).
        """
        bad: dict[tuple[int, int], set[int]] = {}
        for f, path in enumerate(self.files):
            meta = pq.ParquetFile(path).metadata
            leaf = _leaf_index(meta, self.column)
            for g in range(meta.num_row_groups):
                stats = meta.row_group(g).column(leaf).statistics if leaf is not None else None
                # writers omit min/max for large values, so only nulls are ruled out
                # here; empty (non-null) bytes are met where used, like corrupt ones
                clean = stats is not None and stats.has_null_count and stats.null_count == 0
                if clean:
                    continue
                data = self._group(f, g)
                self._cache.pop((f, g), None)
                empty = pc.fill_null(pc.equal(pc.binary_length(data), 0), True)
                local = np.flatnonzero(empty.to_numpy(zero_copy_only=False))
                if len(local):
                    bad[(f, g)] = set(local.tolist())
        if not bad:
            return np.zeros(0, np.int64)
        codes = (self.file_of.astype(np.int64) << 32) | self.group_of
        candidates = np.flatnonzero(np.isin(codes, [(f << 32) | g for f, g in bad]))
        return np.asarray(
            [
                r
                for r in candidates
                if int(self.row_of[r]) in bad[(int(self.file_of[r]), int(self.group_of[r]))]
            ],
            dtype=np.int64,
        )


def _leaf_index(meta: pq.FileMetaData, column: str) -> int | None:
    """Index of the leaf holding the bytes (``image`` or ``image.bytes``), if any."""
    for j in range(meta.num_columns):
        if meta.schema.column(j).path in (column, f"{column}.bytes"):
            return j
    return None
