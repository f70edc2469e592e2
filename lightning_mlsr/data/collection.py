"""Read an image-suggestion collection in AToMiC format: images, texts and TREC qrels.

Two on-disk layouts are recognised under a root directory:

- **AToMiC layout** (what ``scripts/build_emoji_collection.py`` writes)::

      images/*.parquet   image_id, image, language, caption_* (list columns)
      texts/*.parquet    text_id, page_title, section_title, context_* ...
      qrels/*.trec       "text_id Q0 image_id rel", one file per split (train.trec, ...)
      qrels/*.parquet    text_id, image_id, rel (+ optional Q0, split)
      collection.json    optional defaults (name, query_fields, caption_fields, ...)

- **Hugging Face download layout**: a root holding ``AToMiC-Images-v0.2/data/*.parquet``,
  ``AToMiC-Texts-v0.2.1/data/*.parquet`` and ``AToMiC-Qrels-v0.2/data/*.parquet``.

The split of a qrels file comes from a ``split`` column if there is one, else from the
file name up to the first ``-`` or ``.`` (``train.trec``, ``validation-00000-of-00001.parquet``),
or from the folder when the file name is a bare shard number (``test/0000.parquet``, as on
the Hub's parquet-converter branch).

Extra columns are ignored. The ``image`` column may be a struct ``{bytes, path}`` (as
Hugging Face ``datasets`` writes it) or plain binary. Caption columns are lists aligned
with the ``language`` list (AToMiC), or plain strings. Anything unusable raises
:class:`~lightning_mlsr.data.errors.DataError` naming the file, column or ids at fault.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from PIL import Image, ImageOps
from tqdm.auto import tqdm

from lightning_mlsr.data.errors import DataError, format_ids

__all__ = [
    "ATOMIC_CAPTION_FIELDS",
    "ATOMIC_CAPTION_LANGUAGES",
    "ATOMIC_QUERY_FIELDS",
    "BUNDLED_DIR",
    "CAPTION_SEPARATOR",
    "Collection",
    "ImageTable",
    "Qrels",
    "TextTable",
    "bundled_collections",
    "load_collection",
]

logger = logging.getLogger("lightning_mlsr.data")

BUNDLED_DIR = Path(__file__).resolve().parent / "bundled"
ATOMIC_CAPTION_FIELDS = ("caption_reference_description",)
ATOMIC_CAPTION_LANGUAGES = ("en",)
ATOMIC_QUERY_FIELDS = ("page_title", "section_title", "context_section_description")
CAPTION_SEPARATOR = " ; "
#: Collections larger than this get a progress bar while their images are decoded.
_PROGRESS_MIN_IMAGES = 2000
_CANONICAL_SPLITS = ("train", "validation", "test")

#: split -> text_id -> image_id -> relevance
Qrels = dict[str, dict[str, dict[str, int]]]
CorruptPolicy = Literal["skip", "error"]
MissingCaptionPolicy = Literal["error", "skip", "keep"]


# ----------------------------------------------------------------------------- tables


def _as_arrow(values: Sequence[Any] | pa.Array | pa.ChunkedArray, type_: pa.DataType) -> pa.Array:
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks() if values.num_chunks else pa.array([], type_)
    if not isinstance(values, pa.Array):
        values = pa.array(list(values), type_)
    return values.cast(type_)


def _index_of(ids: list[str], what: str, where: str = "") -> dict[str, int]:
    index: dict[str, int] = {}
    dups = []
    for i, id_ in enumerate(ids):
        if index.setdefault(id_, i) != i:
            dups.append(id_)
    if dups:
        raise DataError(
            f"duplicate {what}s{where}: {format_ids(dict.fromkeys(dups))}; ids must be unique"
        )
    return index


class ImageTable:
    """The documents: image ids, encoded image bytes and one caption string per image.

    Bytes and captions stay in Arrow arrays (no Python object per row until asked for).
    """

    def __init__(
        self,
        ids: Sequence[str],
        image_bytes: Sequence[bytes | None] | pa.Array | pa.ChunkedArray,
        captions: Sequence[str] | pa.Array | pa.ChunkedArray,
    ) -> None:
        self.ids: list[str] = list(ids)
        self._bytes = _as_arrow(image_bytes, pa.large_binary())
        self._captions = _as_arrow(captions, pa.large_string())
        if not len(self.ids) == len(self._bytes) == len(self._captions):
            raise ValueError(
                f"ImageTable needs as many ids ({len(self.ids)}) as images "
                f"({len(self._bytes)}) and captions ({len(self._captions)})"
            )
        self._index = _index_of(self.ids, "image_id")

    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        return f"ImageTable({len(self)} images)"

    def index(self, image_id: str) -> int:
        """Row of ``image_id``; KeyError if the table has no such image."""
        try:
            return self._index[image_id]
        except KeyError:
            raise KeyError(
                f"no image with image_id {image_id!r} in this table of {len(self)} images"
            ) from None

    def caption(self, i: int) -> str:
        """Caption of row ``i``: the chosen fields/languages, de-duplicated, joined by ' ; '."""
        return self._captions[i].as_py() or ""

    def captions(self) -> list[str]:
        return [c or "" for c in self._captions.to_pylist()]

    def image_bytes(self, i: int) -> bytes:
        """The encoded image (PNG, JPEG, ...) of row ``i``, exactly as stored."""
        data = self._bytes[i].as_py()
        if not data:
            raise DataError(f"image {self.ids[i]!r} has no image bytes")
        return data

    def load_image(self, i: int) -> Image.Image:
        """Decode row ``i`` to an RGB image.

        Transparent images (emoji PNGs) are composited on white, so that the transparent
        background does not turn black; EXIF orientation is applied.
        """
        try:
            return to_rgb(Image.open(io.BytesIO(self.image_bytes(i))))
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
            raise DataError(
                f"image {self.ids[i]!r} cannot be decoded ({err}); load the collection with "
                f"validate_images=True to find and skip such images"
            ) from err

    def content_hash(self, i: int) -> str:
        """sha1 hex digest of the image bytes of row ``i`` (a key for feature caches)."""
        return hashlib.sha1(self.image_bytes(i)).hexdigest()

    def take(self, rows: Sequence[int]) -> ImageTable:
        """A new table with the given rows, in that order."""
        indices = pa.array(rows, pa.int64())
        return ImageTable(
            [self.ids[i] for i in rows], self._bytes.take(indices), self._captions.take(indices)
        )


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB copy of ``image``: EXIF orientation applied, transparency composited on white."""
    image = ImageOps.exif_transpose(image)
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


class TextTable:
    """The texts (queries): ids and one query string per text."""

    def __init__(self, ids: Sequence[str], queries: Sequence[str] | pa.Array | pa.ChunkedArray):
        self.ids: list[str] = list(ids)
        self._queries = _as_arrow(queries, pa.large_string())
        if len(self.ids) != len(self._queries):
            raise ValueError(
                f"TextTable needs as many ids ({len(self.ids)}) as queries ({len(self._queries)})"
            )
        self._index = _index_of(self.ids, "text_id")

    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        return f"TextTable({len(self)} texts)"

    def index(self, text_id: str) -> int:
        """Row of ``text_id``; KeyError if the table has no such text."""
        try:
            return self._index[text_id]
        except KeyError:
            raise KeyError(
                f"no text with text_id {text_id!r} in this table of {len(self)} texts"
            ) from None

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
    qrels: Qrels
    #: images dropped at load (undecodable, or no caption with ``on_missing_caption="skip"``)
    skipped_images: list[str] = field(default_factory=list)
    #: image_id -> why it was skipped
    skip_reasons: dict[str, str] = field(default_factory=dict)
    caption_fields: tuple[str, ...] = ATOMIC_CAPTION_FIELDS
    #: ``None`` means all languages
    caption_languages: tuple[str, ...] | None = ATOMIC_CAPTION_LANGUAGES
    query_fields: tuple[str, ...] = ATOMIC_QUERY_FIELDS

    @property
    def splits(self) -> list[str]:
        """Split names present in the qrels: train, validation, test first, then others."""
        known = [s for s in _CANONICAL_SPLITS if s in self.qrels]
        return known + sorted(s for s in self.qrels if s not in _CANONICAL_SPLITS)

    def query_ids(self, split: str) -> list[str]:
        """Sorted ids of the texts of ``split`` that have at least one judged image."""
        if split not in self.qrels:
            raise KeyError(f"collection {self.name!r} has no split {split!r}; it has {self.splits}")
        return sorted(t for t, docs in self.qrels[split].items() if docs)

    def __repr__(self) -> str:
        splits = ", ".join(f"{s}: {len(self.qrels[s])} queries" for s in self.splits)
        return (
            f"Collection({self.name!r}, {len(self.images)} images, {len(self.texts)} texts, "
            f"{splits}, {len(self.skipped_images)} skipped images)"
        )


# ----------------------------------------------------------------------------- layout


def bundled_collections() -> list[str]:
    """Names of the collections shipped inside the package."""
    if not BUNDLED_DIR.is_dir():
        return []
    return sorted(p.name for p in BUNDLED_DIR.iterdir() if (p / "collection.json").is_file())


@dataclass(frozen=True)
class _Layout:
    kind: str
    image_files: list[Path]
    text_files: list[Path]
    qrels_files: list[Path]


def _resolve_root(path_or_name: str | os.PathLike[str]) -> Path:
    path = Path(path_or_name).expanduser()
    if path.is_dir():
        return path.resolve()
    name = str(path_or_name)
    if name in bundled_collections():
        return BUNDLED_DIR / name
    if path.exists():
        raise DataError(f"{path} is a file; give the directory that holds the collection")
    raise DataError(
        f"no collection at {str(path)!r}: it is neither a directory nor the name of a bundled "
        f"collection (bundled: {', '.join(bundled_collections()) or 'none'})"
    )


def _visible_parquet(folder: Path) -> list[Path]:
    """``*.parquet`` under ``folder``, recursively, skipping hidden folders (HF cache)."""
    return sorted(
        p
        for p in folder.rglob("*.parquet")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def _find_layout(root: Path) -> _Layout:
    atomic = {d: root / d for d in ("images", "texts", "qrels")}
    hf_dirs = {
        kind: sorted(p for p in root.glob(f"AToMiC-{kind}*") if p.is_dir())
        for kind in ("Images", "Texts", "Qrels")
    }
    if any(p.is_dir() for p in atomic.values()):
        missing = [f"{d}/" for d, p in atomic.items() if not p.is_dir()]
        if missing:
            raise DataError(
                f"{root} looks like an AToMiC-layout collection but has no {' or '.join(missing)} "
                f"folder; it needs images/*.parquet, texts/*.parquet and qrels/*.trec|*.parquet"
            )
        images = sorted(atomic["images"].glob("*.parquet"))
        texts = sorted(atomic["texts"].glob("*.parquet"))
        qrels = sorted(
            p
            for p in atomic["qrels"].iterdir()
            if p.suffix in (".trec", ".parquet") and p.is_file()
        )
        return _Layout(
            "atomic",
            _nonempty(images, atomic["images"], "*.parquet"),
            _nonempty(texts, atomic["texts"], "*.parquet"),
            _nonempty(qrels, atomic["qrels"], "*.trec or *.parquet"),
        )
    if any(hf_dirs.values()):
        missing = [f"AToMiC-{kind}-*" for kind, dirs in hf_dirs.items() if not dirs]
        if missing:
            raise DataError(
                f"{root} looks like a Hugging Face AToMiC download but has no "
                f"{' or '.join(missing)} folder; it needs AToMiC-Images-*, AToMiC-Texts-* and "
                f"AToMiC-Qrels-* folders holding parquet files"
            )
        found = {}
        for kind, dirs in hf_dirs.items():
            if len(dirs) > 1:
                names = ", ".join(d.name for d in dirs)
                raise DataError(
                    f"{root} holds several AToMiC-{kind}-* folders ({names}); "
                    f"keep one version per collection root"
                )
            found[kind] = _nonempty(_visible_parquet(dirs[0]), dirs[0], "*.parquet")
        return _Layout("huggingface", found["Images"], found["Texts"], found["Qrels"])
    entries = sorted(p.name + ("/" if p.is_dir() else "") for p in root.iterdir())
    raise DataError(
        f"{root} is not a recognised collection layout. Looked for images/, texts/ and qrels/ "
        f"folders (AToMiC layout) or AToMiC-Images-*/, AToMiC-Texts-*/ and AToMiC-Qrels-*/ "
        f"folders (Hugging Face download layout); found: {format_ids(entries) or 'nothing'}"
    )


def _describe(files: list[Path]) -> str:
    return str(files[0]) if len(files) == 1 else f"{files[0].parent} ({len(files)} files)"


def _nonempty(files: list[Path], folder: Path, pattern: str) -> list[Path]:
    if not files:
        raise DataError(f"{folder} holds no {pattern} files")
    return files


def _read_defaults(root: Path) -> dict[str, Any]:
    path = root / "collection.json"
    if not path.is_file():
        return {}
    try:
        defaults = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"{path} is not valid JSON ({err}); fix or delete it") from err
    if not isinstance(defaults, dict):
        raise DataError(f"{path} must hold a JSON object of collection defaults")
    return defaults


def _fields(value: Any, what: str, source: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = (value,)
    if (
        not isinstance(value, Sequence)
        or not value
        or not all(isinstance(v, str) and v for v in value)
    ):
        raise DataError(f"{what} from {source} must be a non-empty list of names, got {value!r}")
    return tuple(value)


def _languages(value: Any, source: str) -> tuple[str, ...] | None:
    if value is None or value == "all":
        return None
    return _fields(value, "caption_languages", source)


# ----------------------------------------------------------------------------- parquet


def _read_parquet(path: Path, required: Sequence[str], optional: Sequence[str] = ()) -> pa.Table:
    """Read the ``required`` (and present ``optional``) columns of one parquet file."""
    try:
        names = pq.read_schema(path).names
    except (pa.ArrowException, OSError) as err:
        raise DataError(f"{path} is not a readable parquet file ({err})") from err
    missing = [c for c in required if c not in names]
    if missing:
        raise DataError(
            f"{path} has no column {', '.join(map(repr, missing))}; its columns are {names}. "
            f"Point the loader at the right file, or choose other fields."
        )
    columns = list(dict.fromkeys([*required, *(c for c in optional if c in names)]))
    try:
        return pq.read_table(path, columns=columns)
    except (pa.ArrowException, OSError) as err:
        raise DataError(f"{path} cannot be read ({err}); the file may be truncated") from err


def _column(table: pa.Table, name: str) -> pa.Array:
    col = table[name]
    return col.combine_chunks() if col.num_chunks else pa.array([], col.type)


def _as_ids(table: pa.Table, name: str, path: Path) -> pa.Array:
    col = _column(table, name)
    if col.null_count:
        raise DataError(
            f"{path}: column {name!r} has {col.null_count} null ids; every row needs one"
        )
    if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
        try:
            col = col.cast(pa.string())
        except pa.ArrowException as err:
            raise DataError(f"{path}: column {name!r} of type {col.type} is not an id") from err
    return col.cast(pa.large_string())


def _as_binary(table: pa.Table, name: str, path: Path) -> pa.Array:
    col = _column(table, name)
    if pa.types.is_struct(col.type):
        if col.type.get_field_index("bytes") < 0:
            raise DataError(
                f"{path}: image column {name!r} is a struct without a 'bytes' field "
                f"({col.type}); images must be stored in the file, not referenced by path"
            )
        col = pc.struct_field(col, "bytes")
    if not (pa.types.is_binary(col.type) or pa.types.is_large_binary(col.type)):
        raise DataError(
            f"{path}: image column {name!r} has type {col.type}; expected binary or a "
            f"struct {{bytes, path}}"
        )
    return col.cast(pa.large_binary())


_STRING_LIST = pa.large_list(pa.large_string())


def _as_string_list(table: pa.Table, name: str, path: Path) -> pa.Array:
    """A string or list-of-strings column as ``large_list<large_string>``."""
    col = _column(table, name)
    if pa.types.is_null(col.type):
        return pa.nulls(len(col), _STRING_LIST)
    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        offsets = pa.array(np.arange(len(col) + 1), pa.int64())
        return pa.LargeListArray.from_arrays(offsets, col.cast(pa.large_string()))
    value_type = getattr(col.type, "value_type", None)
    if value_type is None or not (
        pa.types.is_string(value_type)
        or pa.types.is_large_string(value_type)
        or pa.types.is_null(value_type)
    ):
        raise DataError(
            f"{path}: column {name!r} has type {col.type}; expected a string or a list of strings"
        )
    return col.cast(_STRING_LIST)


def _as_query_part(table: pa.Table, name: str, path: Path) -> pa.Array:
    """A query field as strings (list fields joined by spaces, nulls as empty)."""
    col = _as_string_list(table, name, path)
    joined = pc.binary_join(col, pa.scalar(" ", pa.large_string()))
    return pc.fill_null(joined, pa.scalar("", pa.large_string()))


def _normalise_space(values: pa.Array) -> pa.Array:
    return pc.utf8_trim_whitespace(pc.replace_substring_regex(values, r"\s+", " "))


# ----------------------------------------------------------------------------- images


def _read_images(
    files: list[Path], fields: tuple[str, ...], languages: tuple[str, ...] | None
) -> tuple[pa.Array, pa.Array, pa.Array, np.ndarray]:
    """Read the image files; return ids, bytes, captions and a has-caption mask."""
    need_language = languages is not None
    required = ["image_id", "image", *fields] + (["language"] if need_language else [])
    ids, blobs, captions, has_caption = [], [], [], []
    for path in files:
        table = _read_parquet(path, required)
        caption, present = _captions(table, fields, languages, path)
        ids.append(_as_ids(table, "image_id", path))
        blobs.append(_as_binary(table, "image", path))
        captions.append(caption)
        has_caption.append(present)
    return (
        pa.concat_arrays(ids),
        pa.concat_arrays(blobs),
        pa.concat_arrays(captions),
        np.concatenate(has_caption),
    )


def _captions(
    table: pa.Table, fields: tuple[str, ...], languages: tuple[str, ...] | None, path: Path
) -> tuple[pa.Array, np.ndarray]:
    """One caption per row: the non-empty entries of ``fields`` in ``languages``.

    Entries keep their order (field by field, list order within a field); whitespace is
    normalised and repeated entries of a row are kept once. Returns the captions and a mask
    of the rows that have one.
    """
    n = table.num_rows
    lang = _as_string_list(table, "language", path) if languages is not None else None
    wanted = pa.array(list(languages or ()), pa.large_string())
    parts = []
    for f, name in enumerate(fields):
        caps = _as_string_list(table, name, path)
        lengths = pc.fill_null(pc.list_value_length(caps), 0).to_numpy().astype(np.int64)
        starts = caps.offsets.to_numpy()[:-1].astype(np.int64)
        rows = np.repeat(np.arange(n, dtype=np.int64), lengths)
        first = np.cumsum(lengths) - lengths
        pos = np.arange(len(rows), dtype=np.int64) - np.repeat(first, lengths)
        texts = _normalise_space(caps.values.take(pa.array(starts[rows] + pos)))
        keep = pc.and_kleene(pc.is_valid(texts), pc.not_equal(texts, ""))
        if lang is not None:
            lang_lengths = pc.fill_null(pc.list_value_length(lang), 0).to_numpy()
            bad = np.flatnonzero((lengths > 0) & (lang_lengths != lengths))
            if len(bad):
                bad_ids = _column(table, "image_id").take(pa.array(bad)).to_pylist()
                raise DataError(
                    f"{path}: the lists in {name!r} and 'language' have different lengths for "
                    f"images {format_ids(bad_ids)}; they must be aligned (one language per "
                    f"caption), or load with caption_languages='all'"
                )
            lang_starts = lang.offsets.to_numpy()[:-1].astype(np.int64)
            langs = lang.values.take(pa.array(lang_starts[rows] + pos))
            keep = pc.and_kleene(keep, pc.is_in(langs, value_set=wanted))
        parts.append(
            pa.table({"row": rows, "order": pos + f * (1 << 40), "text": texts}).filter(
                pc.fill_null(keep, False)
            )
        )
    entries = pa.concat_tables(parts)
    entries = (
        entries.group_by(["row", "text"], use_threads=False)
        .aggregate([("order", "min")])
        .sort_by([("row", "ascending"), ("order_min", "ascending")])
    )
    counts = np.bincount(entries["row"].to_numpy(), minlength=n)
    offsets = pa.array(np.concatenate([[0], np.cumsum(counts)]), pa.int64())
    values = _column(entries, "text").cast(pa.large_string())
    lists = pa.LargeListArray.from_arrays(offsets, values)
    joined = pc.binary_join(lists, pa.scalar(CAPTION_SEPARATOR, pa.large_string()))
    return joined, counts > 0


def _undecodable(blobs: pa.Array, rows: Iterable[int], validate: bool) -> dict[int, str]:
    """Rows whose bytes are missing or (when ``validate``) cannot be decoded -> reason."""
    rows = list(rows)
    bad: dict[int, str] = {}
    bar = tqdm(rows, desc="checking images", unit=" img", disable=len(rows) <= _PROGRESS_MIN_IMAGES)
    for i in bar:
        data = blobs[i].as_py()
        if not data:
            bad[i] = "no image bytes"
            continue
        if not validate:
            continue
        try:
            with Image.open(io.BytesIO(data)) as image:
                image.load()
        except Exception as err:  # any decoder failure means the image is unusable
            bad[i] = f"undecodable image ({type(err).__name__}: {err})"
    return bad


# ----------------------------------------------------------------------------- texts


def _read_texts(
    files: list[Path], fields: tuple[str, ...], max_query_chars: int | None
) -> tuple[pa.Array, pa.Array]:
    ids, queries = [], []
    for path in files:
        table = _read_parquet(path, ["text_id", *fields])
        ids.append(_as_ids(table, "text_id", path))
        parts = [_as_query_part(table, name, path) for name in fields]
        query = pc.binary_join_element_wise(*parts, pa.scalar(" ", pa.large_string()))
        query = _normalise_space(query)
        if max_query_chars is not None:
            query = pc.utf8_trim_whitespace(pc.utf8_slice_codeunits(query, 0, max_query_chars))
        queries.append(query)
    return pa.concat_arrays(ids), pa.concat_arrays(queries)


# ----------------------------------------------------------------------------- qrels


def _split_from_name(path: Path) -> str:
    """``train.trec``, ``train-00000-of-00001.parquet`` -> train; ``test/0000.parquet`` -> test."""
    match = re.match(r"[^-.]+", path.name)
    prefix = match.group(0) if match else path.name
    return path.parent.name if prefix.isdigit() else prefix


def _read_trec(path: Path) -> list[tuple[str, str, str, int]]:
    split = _split_from_name(path)
    out = []
    with open(path, encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, start=1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 4 or not re.fullmatch(r"-?\d+", fields[3]):
                raise DataError(
                    f"{path}:{lineno}: malformed qrels line {line.rstrip()!r}; expected "
                    f"'text_id Q0 image_id rel' with an integer rel"
                )
            out.append((split, fields[0], fields[2], int(fields[3])))
    return out


def _read_qrels_parquet(path: Path) -> list[tuple[str, str, str, int]]:
    table = _read_parquet(path, ["text_id", "image_id", "rel"], ["split"])
    rel = _column(table, "rel")
    try:
        if rel.null_count:
            raise ValueError(f"{rel.null_count} null values")
        rels = rel.cast(pa.int64()).to_pylist()
    except (pa.ArrowException, ValueError) as err:
        raise DataError(f"{path}: column 'rel' must hold integers ({err})") from err
    if "split" in table.column_names:
        splits = _column(table, "split").cast(pa.string()).to_pylist()
        if None in splits:
            raise DataError(f"{path}: column 'split' has null values")
    else:
        splits = [_split_from_name(path)] * table.num_rows
    text_ids = _as_ids(table, "text_id", path).to_pylist()
    image_ids = _as_ids(table, "image_id", path).to_pylist()
    return list(zip(splits, text_ids, image_ids, rels))


def _read_qrels(files: list[Path], text_ids: set[str], image_ids: set[str]) -> Qrels:
    qrels: Qrels = {}
    for path in files:
        rows = _read_trec(path) if path.suffix == ".trec" else _read_qrels_parquet(path)
        for what, known, col in (("text", text_ids, 1), ("image", image_ids, 2)):
            unknown = list(dict.fromkeys(r[col] for r in rows if r[col] not in known))
            if unknown:
                raise DataError(
                    f"{path}: qrels name {len(unknown)} {what} id(s) that are not in the "
                    f"{what}s table: {format_ids(unknown)}. Use qrels, texts and images from "
                    f"the same collection version."
                )
        for split, text_id, image_id, rel in rows:
            judged = qrels.setdefault(split, {}).setdefault(text_id, {})
            if judged.setdefault(image_id, rel) != rel:
                raise DataError(
                    f"{path}: ({text_id!r}, {image_id!r}) in split {split!r} is judged both "
                    f"{judged[image_id]} and {rel}; keep one judgment per pair"
                )
    return qrels


# ----------------------------------------------------------------------------- loading


def load_collection(
    path_or_name: str | os.PathLike[str],
    *,
    caption_fields: Sequence[str] | str | None = None,
    caption_languages: Sequence[str] | str | None = None,
    query_fields: Sequence[str] | str | None = None,
    max_query_chars: int | None = None,
    on_corrupt_image: CorruptPolicy = "skip",
    on_missing_caption: MissingCaptionPolicy = "error",
    validate_images: bool = True,
) -> Collection:
    """Load a collection from a directory, or a bundled one by name (``"emoji"``).

    Options left ``None`` take the collection's ``collection.json`` defaults, else the
    AToMiC defaults (reference captions in English; page title, section title and section
    context as the query). ``caption_languages="all"`` keeps every language.

    Args:
        caption_fields: image columns whose text makes the caption, in order.
        caption_languages: language codes to keep from the caption lists, or ``"all"``.
        query_fields: text columns joined (by spaces) into the query.
        max_query_chars: truncate queries to this many characters.
        on_corrupt_image: ``"skip"`` drops images whose bytes are missing or cannot be
            decoded (one warning, listed in ``skipped_images``); ``"error"`` raises.
        on_missing_caption: for images with no caption in the chosen fields/languages:
            ``"error"`` raises, ``"skip"`` drops them (one warning), ``"keep"`` keeps
            them with an empty caption.
        validate_images: decode every image at load time to find corrupt ones. Without
            it only missing bytes are caught; a bad image then fails in ``load_image``.

    Qrels that point at skipped images are kept: those relevant images are simply not
    retrievable, and every metric counts them as misses.
    """
    if on_corrupt_image not in ("skip", "error"):
        raise DataError(f"on_corrupt_image must be 'skip' or 'error', got {on_corrupt_image!r}")
    if on_missing_caption not in ("error", "skip", "keep"):
        raise DataError(
            f"on_missing_caption must be 'error', 'skip' or 'keep', got {on_missing_caption!r}"
        )
    if max_query_chars is not None and max_query_chars < 1:
        raise DataError(f"max_query_chars must be positive, got {max_query_chars}")

    root = _resolve_root(path_or_name)
    defaults = _read_defaults(root)
    source = str(root / "collection.json") if defaults else "the AToMiC defaults"
    fields = (
        _fields(caption_fields, "caption_fields", "the arguments")
        if caption_fields is not None
        else _fields(
            defaults.get("caption_fields", ATOMIC_CAPTION_FIELDS), "caption_fields", source
        )
    )
    languages = (
        _languages(caption_languages, "the arguments")
        if caption_languages is not None
        else _languages(defaults.get("caption_languages", ATOMIC_CAPTION_LANGUAGES), source)
    )
    queries_from = (
        _fields(query_fields, "query_fields", "the arguments")
        if query_fields is not None
        else _fields(defaults.get("query_fields", ATOMIC_QUERY_FIELDS), "query_fields", source)
    )
    layout = _find_layout(root)

    image_ids_arr, blobs, captions, has_caption = _read_images(
        layout.image_files, fields, languages
    )
    image_ids = image_ids_arr.to_pylist()
    _index_of(image_ids, "image_id", f" in {_describe(layout.image_files)}")
    text_ids_arr, queries = _read_texts(layout.text_files, queries_from, max_query_chars)
    text_ids = text_ids_arr.to_pylist()
    _index_of(text_ids, "text_id", f" in {_describe(layout.text_files)}")
    qrels = _read_qrels(layout.qrels_files, set(text_ids), set(image_ids))

    judged = {t for per_text in qrels.values() for t in per_text}
    empty = [t for t, q in zip(text_ids, queries.to_pylist()) if t in judged and not q]
    if empty:
        raise DataError(
            f"{len(empty)} judged text(s) have an empty query in fields {list(queries_from)}: "
            f"{format_ids(empty)}. Choose other query_fields."
        )

    skip_reasons: dict[str, str] = {}
    no_caption = [image_ids[i] for i in np.flatnonzero(~has_caption)]
    if no_caption and on_missing_caption != "keep":
        where = f"fields {list(fields)}, languages {list(languages) if languages else 'all'}"
        if on_missing_caption == "error":
            raise DataError(
                f"{len(no_caption)} image(s) have no caption in {where}: "
                f"{format_ids(no_caption)}. Choose other caption_fields or caption_languages "
                f"(e.g. caption_languages='all'), or pass on_missing_caption='skip' to drop "
                f"them or 'keep' to keep them with empty captions."
            )
        logger.warning(
            "skipped %d image(s) with no caption in %s: %s",
            len(no_caption),
            where,
            format_ids(no_caption),
        )
        skip_reasons.update(dict.fromkeys(no_caption, "no caption"))

    candidates = (i for i, id_ in enumerate(image_ids) if id_ not in skip_reasons)
    corrupt = _undecodable(blobs, candidates, validate_images)
    if corrupt:
        named = [image_ids[i] for i in corrupt]
        first = next(iter(corrupt.values()))
        if on_corrupt_image == "error":
            raise DataError(
                f"{len(named)} image(s) cannot be decoded: {format_ids(named)} (first: {first}). "
                f"Fix or remove them, or pass on_corrupt_image='skip' to drop them."
            )
        logger.warning(
            "skipped %d image(s) that cannot be decoded: %s (first: %s)",
            len(named),
            format_ids(named),
            first,
        )
        skip_reasons.update({image_ids[i]: reason for i, reason in corrupt.items()})

    images = ImageTable(image_ids, blobs, captions)
    if skip_reasons:
        images = images.take([i for i, id_ in enumerate(image_ids) if id_ not in skip_reasons])
    return Collection(
        name=str(defaults.get("name") or root.name),
        root=root,
        images=images,
        texts=TextTable(text_ids, queries),
        qrels=qrels,
        skipped_images=[i for i in image_ids if i in skip_reasons],
        skip_reasons=skip_reasons,
        caption_fields=fields,
        caption_languages=languages,
        query_fields=queries_from,
    )
