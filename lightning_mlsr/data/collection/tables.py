"""The tables of a loaded collection: images (documents), texts (queries) and the qrels.

Everything per row lives in Arrow arrays or numpy (ids, captions, queries; for images a
pointer into the parquet files, see :mod:`lightning_mlsr.data.collection.image_store`): there is no
Python object per row until one is asked for, so a 10-million-image collection costs
its metadata, not its image bytes.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, overload

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from PIL import Image

from lightning_mlsr.data.collection.decode import CorruptImageError, decode_image
from lightning_mlsr.data.collection.image_store import ArrowImageStore, ImageStore
from lightning_mlsr.data.collection.qrels import CANONICAL_SPLITS, QrelsTable
from lightning_mlsr.data.errors import DataError, format_ids

__all__ = ["ATOMIC_CAPTION_FIELDS", "Collection", "IdList", "ImageTable", "TextTable"]

ATOMIC_CAPTION_FIELDS = ("caption_reference_description",)
ATOMIC_CAPTION_LANGUAGES = ("en",)
ATOMIC_QUERY_FIELDS = ("page_title", "section_title", "context_section_description")


def _as_arrow(values: Sequence[Any] | pa.Array | pa.ChunkedArray, type_: pa.DataType) -> pa.Array:
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks() if values.num_chunks else pa.array([], type_)
    if not isinstance(values, pa.Array):
        values = pa.array(list(values), type_)
    return values.cast(type_)


class IdList(Sequence[str]):
    """Unique string ids in an Arrow array, with lookups by id.

    Behaves like a read-only ``list[str]`` (indexing, iteration, ``==`` with a list,
    ``in``). :meth:`position` finds one id by binary search over a sorted permutation
    (8 bytes a row); :meth:`positions` looks many up at once in Arrow.
    """

    def __init__(self, values: Sequence[str] | pa.Array | pa.ChunkedArray, what: str = "id"):
        self.arrow = _as_arrow(values, pa.large_string())
        self.what = what
        self._order: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.arrow)

    @overload
    def __getitem__(self, i: int) -> str: ...
    @overload
    def __getitem__(self, i: slice) -> list[str]: ...
    def __getitem__(self, i: int | slice) -> str | list[str]:
        if isinstance(i, slice):
            return self.arrow.to_pylist()[i]
        if not -len(self) <= i < len(self):
            raise IndexError(f"{self.what} row {i} out of range ({len(self)} rows)")
        return str(self.arrow[i].as_py())

    def __iter__(self) -> Iterator[str]:
        for start in range(0, len(self), 65536):
            yield from self.arrow.slice(start, 65536).to_pylist()

    def __eq__(self, other: object) -> bool:
        if isinstance(other, IdList):
            return self.arrow.equals(other.arrow)
        if isinstance(other, Sequence) and not isinstance(other, str):
            return len(other) == len(self) and list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return np.asarray(self.arrow.to_numpy(zero_copy_only=False), dtype=dtype)

    def __repr__(self) -> str:
        return f"IdList({format_ids(self.arrow.slice(0, 11).to_pylist())}, n={len(self)})"

    def _sorted_order(self) -> np.ndarray:
        if self._order is None:
            self._order = pc.sort_indices(self.arrow).to_numpy()
        return self._order

    def check_unique(self, where: str = "") -> None:
        """Raise :class:`DataError` naming the ids that occur more than once."""
        if len(self) < 2:
            return
        ordered = self.arrow.take(pa.array(self._sorted_order()))
        same = pc.equal(ordered.slice(1), ordered.slice(0, len(ordered) - 1))
        dups = ordered.slice(1).filter(same).to_pylist()
        if dups:
            raise DataError(
                f"duplicate {self.what}s{where}: {format_ids(dict.fromkeys(dups))}; "
                f"ids must be unique"
            )

    def position(self, id_: str) -> int:
        """Row of ``id_``, or -1."""
        order = self._sorted_order()
        key = lambda k: self.arrow[int(order[k])].as_py()  # noqa: E731
        k = bisect.bisect_left(range(len(order)), id_, key=key)
        return int(order[k]) if k < len(order) and key(k) == id_ else -1

    def positions(self, ids: Sequence[str] | pa.Array | pa.ChunkedArray) -> np.ndarray:
        """Rows of many ids at once (-1 where absent). Shape: ``(len(ids),)`` int64."""
        found = pc.index_in(_as_arrow(ids, pa.large_string()), value_set=self.arrow)
        return np.asarray(pc.fill_null(found, -1).to_numpy(zero_copy_only=False), np.int64)

    def __contains__(self, id_: object) -> bool:
        return isinstance(id_, str) and self.position(id_) >= 0

    def index(self, id_: Any, start: int = 0, stop: int | None = None) -> int:
        row = self.position(id_) if isinstance(id_, str) else -1
        if row < 0 or row < start or (stop is not None and row >= stop):
            raise ValueError(f"{id_!r} is not in the {self.what}s")
        return row

    def take(self, rows: Sequence[int] | np.ndarray) -> IdList:
        return IdList(self.arrow.take(pa.array(np.asarray(rows, dtype=np.int64))), self.what)


class ImageTable:
    """The documents: image ids, one caption string per image, and the image bytes.

    Bytes come from an :class:`~lightning_mlsr.data.collection.image_store.ImageStore`: read on
    demand from parquet for a loaded collection, in memory for a table built from lists.
    """

    def __init__(
        self,
        ids: Sequence[str] | pa.Array | IdList,
        image_bytes: Sequence[bytes | None] | pa.Array | pa.ChunkedArray | ImageStore,
        captions: Sequence[str] | pa.Array | pa.ChunkedArray,
        *,
        check_unique: bool = True,
    ) -> None:
        self.ids = ids if isinstance(ids, IdList) else IdList(ids, "image_id")
        self.store = (
            image_bytes if isinstance(image_bytes, ImageStore) else ArrowImageStore(image_bytes)
        )
        self._captions = _as_arrow(captions, pa.large_string())
        if not len(self.ids) == len(self.store) == len(self._captions):
            raise ValueError(
                f"ImageTable needs as many ids ({len(self.ids)}) as images "
                f"({len(self.store)}) and captions ({len(self._captions)})"
            )
        if check_unique:
            self.ids.check_unique()

    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        return f"ImageTable({len(self)} images)"

    def index(self, image_id: str) -> int:
        """Row of ``image_id``; KeyError if the table has no such image."""
        row = self.ids.position(image_id)
        if row < 0:
            raise KeyError(
                f"no image with image_id {image_id!r} in this table of {len(self)} images"
            )
        return row

    def caption(self, i: int) -> str:
        """Caption of row ``i``: the chosen fields/languages, de-duplicated, joined by ' ; '."""
        return self._captions[i].as_py() or ""

    def captions(self) -> list[str]:
        return [c or "" for c in self._captions.to_pylist()]

    def image_bytes(self, i: int) -> bytes:
        """The encoded image (PNG, JPEG, ...) of row ``i``, exactly as stored (read now)."""
        data = self.store.get(i)
        if not data:
            raise CorruptImageError(self.ids[i], "no image bytes")
        return data

    def load_image(self, i: int) -> Image.Image:
        """Decode row ``i`` to 8-bit RGB (see :mod:`lightning_mlsr.data.collection.decode`).

        Raises :class:`~lightning_mlsr.data.collection.decode.CorruptImageError` (a ``DataError``)
        naming the image when its bytes are missing or cannot be decoded.
        """
        return decode_image(self.store.get(i), self.ids[i])

    def content_hash(self, i: int) -> str:
        """sha1 hex digest of the image bytes of row ``i`` (read now)."""
        return hashlib.sha1(self.image_bytes(i)).hexdigest()

    def content_keys(self, rows: Sequence[int] | np.ndarray) -> np.ndarray:
        """Feature-cache keys of ``rows`` (:mod:`~lightning_mlsr.data.features.content_keys`), from
        stored key maps where the store keeps them; ``b""`` where a row has no bytes."""
        return self.store.content_keys(rows)

    def take(self, rows: Sequence[int] | np.ndarray) -> ImageTable:
        """A new table with the given rows, in that order."""
        rows = np.asarray(rows, dtype=np.int64)
        return ImageTable(
            self.ids.take(rows),
            self.store.take(rows),
            self._captions.take(pa.array(rows)),
            check_unique=False,
        )


class TextTable:
    """The texts (queries): ids and one query string per text."""

    def __init__(
        self,
        ids: Sequence[str] | pa.Array | IdList,
        queries: Sequence[str] | pa.Array | pa.ChunkedArray,
    ) -> None:
        self.ids = ids if isinstance(ids, IdList) else IdList(ids, "text_id")
        self._queries = _as_arrow(queries, pa.large_string())
        if len(self.ids) != len(self._queries):
            raise ValueError(
                f"TextTable needs as many ids ({len(self.ids)}) as queries ({len(self._queries)})"
            )
        self.ids.check_unique()

    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        return f"TextTable({len(self)} texts)"

    def index(self, text_id: str) -> int:
        """Row of ``text_id``; KeyError if the table has no such text."""
        row = self.ids.position(text_id)
        if row < 0:
            raise KeyError(f"no text with text_id {text_id!r} in this table of {len(self)} texts")
        return row

    def query(self, i: int) -> str:
        """Query of row ``i``: the chosen fields joined by spaces, whitespace-normalised."""
        return self._queries[i].as_py() or ""

    def queries(self) -> list[str]:
        return [q or "" for q in self._queries.to_pylist()]


@dataclass
class Collection:
    """An image-suggestion collection: images (documents), texts (queries) and qrels."""

    name: str
    root: Path
    images: ImageTable
    texts: TextTable
    qrels: QrelsTable | dict[str, dict[str, dict[str, int]]]
    #: images dropped at load (no bytes, listed as unusable, or no caption with
    #: ``on_missing_caption="skip"``)
    skipped_images: list[str] = field(default_factory=list)
    #: image_id -> why it was skipped
    skip_reasons: dict[str, str] = field(default_factory=dict)
    caption_fields: tuple[str, ...] = ATOMIC_CAPTION_FIELDS
    #: ``None`` means all languages
    caption_languages: tuple[str, ...] | None = ATOMIC_CAPTION_LANGUAGES
    query_fields: tuple[str, ...] = ATOMIC_QUERY_FIELDS
    #: ``raw``, ``no_stopwords`` or ``nouns`` (:mod:`~lightning_mlsr.data.collection.caption_text`)
    caption_preprocessing: str = "raw"
    #: images whose caption the preprocessing would have emptied, kept with their original text
    unpreprocessed_captions: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not isinstance(self.qrels, QrelsTable):
            self.qrels = QrelsTable.from_dict(self.qrels)

    @property
    def qrels_table(self) -> QrelsTable:
        assert isinstance(self.qrels, QrelsTable)
        return self.qrels

    @property
    def splits(self) -> list[str]:
        """Split names present in the qrels: train, validation, test first, then others."""
        known = [s for s in CANONICAL_SPLITS if s in self.qrels]
        return known + sorted(s for s in self.qrels if s not in CANONICAL_SPLITS)

    def query_ids(self, split: str) -> list[str]:
        """Sorted ids of the texts of ``split`` that have at least one judged image."""
        if split not in self.qrels:
            raise KeyError(f"collection {self.name!r} has no split {split!r}; it has {self.splits}")
        return sorted(t for t, docs in self.qrels[split].items() if docs)

    def __repr__(self) -> str:
        splits = ", ".join(
            f"{s}: {pc.count_distinct(self.qrels_table.table(s)['text_id']).as_py()} queries"
            for s in self.splits
        )
        return (
            f"Collection({self.name!r}, {len(self.images)} images, {len(self.texts)} texts, "
            f"{splits}, {len(self.skipped_images)} skipped images)"
        )
