"""``load_collection``: read a collection's metadata and apply the loading policies.

Loading reads ids, captions, queries and qrels (Arrow, column-projected) and the parquet
footers of the image files; it reads no image bytes except where column statistics
cannot rule out missing ones. Images are decoded where they are used (feature caching,
training, evaluation); ``python -m lightning_mlsr.data check`` decodes a whole collection
once and writes the unusable ids to ``unusable_images.tsv``, which later loads skip.

Policies for bad items, each a clear :class:`~lightning_mlsr.data.errors.DataError` or a
counted, logged skip:

- ids with whitespace (they would break TREC run files): always an error;
- a judged text whose query is empty (or only invisible characters): always an error;
- an image without a caption: ``on_missing_caption`` (error / skip / keep);
- an image without bytes, listed as unusable, or (``validate_images=True``) undecodable:
  ``on_corrupt_image`` (skip / error).
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from lightning_mlsr.data.collection.arrow import as_ids, captions, is_blank, iter_parquet, queries
from lightning_mlsr.data.collection.caption_text import (
    CAPTION_PREPROCESSING,
    CaptionPreprocessing,
    preprocess_captions,
)
from lightning_mlsr.data.collection.decode import CorruptImageError, decode_image
from lightning_mlsr.data.collection.image_store import ParquetImageStore, binary_column
from lightning_mlsr.data.collection.layout import (
    UNUSABLE_IMAGES_FILE,
    describe,
    field_names,
    find_layout,
    languages,
    read_defaults,
    resolve_root,
)
from lightning_mlsr.data.collection.qrels import read_qrels
from lightning_mlsr.data.collection.tables import (
    ATOMIC_CAPTION_FIELDS,
    ATOMIC_CAPTION_LANGUAGES,
    ATOMIC_QUERY_FIELDS,
    Collection,
    IdList,
    ImageTable,
    TextTable,
)
from lightning_mlsr.data.errors import DataError, format_ids

__all__ = ["CorruptPolicy", "MissingCaptionPolicy", "load_collection", "read_unusable"]

logger = logging.getLogger("lightning_mlsr.data")
pool = pa.default_memory_pool()

CorruptPolicy = Literal["skip", "error"]
MissingCaptionPolicy = Literal["error", "skip", "keep"]


def _read_images(
    files: list[Path], fields: tuple[str, ...], langs: tuple[str, ...] | None
) -> tuple[pa.Array, pa.Array, np.ndarray]:
    """Ids, captions and a has-caption mask of every image (the image column is not read)."""
    required = ["image_id", *fields] + (["language"] if langs is not None else [])
    ids, caps, has_caption = [], [], []
    for path in files:
        for table in iter_parquet(path, [*required, "image"], columns=required):
            caption, present = captions(table, fields, langs, path)
            ids.append(as_ids(table, "image_id", path))
            caps.append(caption)
            has_caption.append(present)
        binary_column(pa.array([], pq.read_schema(path).field("image").type), str(path))
    pool.release_unused()  # give the temporaries back to the system
    return pa.concat_arrays(ids), pa.concat_arrays(caps), np.concatenate(has_caption)


def _read_texts(
    files: list[Path], fields: tuple[str, ...], max_query_chars: int | None
) -> tuple[pa.Array, pa.Array]:
    ids, texts = [], []
    for path in files:
        for table in iter_parquet(path, ["text_id", *fields]):
            ids.append(as_ids(table, "text_id", path))
            texts.append(queries(table, fields, max_query_chars, path))
    pool.release_unused()
    return pa.concat_arrays(ids), pa.concat_arrays(texts)


def _reject_whitespace_ids(ids: pa.Array, what: str, where: str) -> None:
    bad = ids.filter(pc.match_substring_regex(ids, r"\s"))
    if len(bad):
        raise DataError(
            f"{len(bad)} {what}(s) in {where} contain whitespace: {format_ids(bad.to_pylist())}. "
            f"TREC run and qrels files separate fields by whitespace; rename these ids."
        )


def read_unusable(path: Path) -> dict[str, str]:
    """``image_id -> reason`` from a file written by the ``check`` command."""
    try:
        with open(path, encoding="utf-8", newline="") as handle:
            rows = list(csv.reader(handle, delimiter="\t"))
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path} cannot be read ({err}); delete it or rerun the check") from err
    return {r[0]: (r[1] if len(r) > 1 else "listed as unusable") for r in rows[1:] if r}


def _undecodable(images: ImageTable, rows: Sequence[int]) -> dict[int, str]:
    bad = {}
    for i in tqdm(rows, desc="checking images", unit=" img", disable=len(rows) <= 2000):
        try:
            decode_image(images.store.get(int(i)), images.ids[int(i)])
        except CorruptImageError as err:
            bad[int(i)] = err.reason
    return bad


def load_collection(
    path_or_name: str | os.PathLike[str],
    *,
    caption_fields: Sequence[str] | str | None = None,
    caption_languages: Sequence[str] | str | None = None,
    query_fields: Sequence[str] | str | None = None,
    max_query_chars: int | None = None,
    on_corrupt_image: CorruptPolicy = "skip",
    on_missing_caption: MissingCaptionPolicy = "error",
    caption_preprocessing: CaptionPreprocessing = "raw",
    validate_images: bool = False,
    unusable_images: str | os.PathLike[str] | None = None,
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
        on_corrupt_image: ``"skip"`` drops images found unusable at load (no bytes,
            listed in the unusable-images file, undecodable with ``validate_images``),
            with one warning, listed in ``skipped_images``; ``"error"`` raises.
        on_missing_caption: for images with no caption in the chosen fields/languages:
            ``"error"`` raises, ``"skip"`` drops them (one warning), ``"keep"`` keeps
            them with an empty caption.
        caption_preprocessing: which words of each caption are kept: ``"raw"`` (all),
            ``"no_stopwords"`` or ``"nouns"``; see
            :mod:`~lightning_mlsr.data.collection.caption_text` for the rules. A caption it
            would empty keeps its text (counted, logged, in ``unpreprocessed_captions``).
        validate_images: decode every image now (slow at scale: prefer the ``check``
            command). Without it a bad image is met, and skipped or raised, where used.
        unusable_images: a file written by ``python -m lightning_mlsr.data check``
            (default: ``unusable_images.tsv`` in the collection root, if present).

    Qrels that point at skipped images are kept: those relevant images are simply not
    retrievable, and every metric counts them as misses.
    """
    if on_corrupt_image not in ("skip", "error"):
        raise DataError(f"on_corrupt_image must be 'skip' or 'error', got {on_corrupt_image!r}")
    if on_missing_caption not in ("error", "skip", "keep"):
        raise DataError(
            f"on_missing_caption must be 'error', 'skip' or 'keep', got {on_missing_caption!r}"
        )
    if caption_preprocessing not in CAPTION_PREPROCESSING:
        raise DataError(
            f"caption_preprocessing must be one of {list(CAPTION_PREPROCESSING)}, "
            f"got {caption_preprocessing!r}"
        )
    if max_query_chars is not None and max_query_chars < 1:
        raise DataError(f"max_query_chars must be positive, got {max_query_chars}")

    root = resolve_root(path_or_name)
    defaults = read_defaults(root)
    source = str(root / "collection.json") if defaults else "the AToMiC defaults"
    fields = field_names(
        caption_fields
        if caption_fields is not None
        else defaults.get("caption_fields", ATOMIC_CAPTION_FIELDS),
        "caption_fields",
        "the arguments" if caption_fields is not None else source,
    )
    langs = (
        languages(caption_languages, "the arguments")
        if caption_languages is not None
        else languages(defaults.get("caption_languages", ATOMIC_CAPTION_LANGUAGES), source)
    )
    queries_from = field_names(
        query_fields
        if query_fields is not None
        else defaults.get("query_fields", ATOMIC_QUERY_FIELDS),
        "query_fields",
        "the arguments" if query_fields is not None else source,
    )
    layout = find_layout(root)

    image_ids_arr, caps, has_caption = _read_images(layout.image_files, fields, langs)
    unpreprocessed: list[str] = []
    if caption_preprocessing != "raw":
        texts_in = [c or "" for c in caps.to_pylist()]
        texts_out, unpreprocessed = preprocess_captions(
            texts_in, caption_preprocessing, ids=image_ids_arr.to_pylist()
        )
        caps = pa.array(texts_out, type=caps.type)
    image_ids = IdList(image_ids_arr, "image_id")
    image_ids.check_unique(f" in {describe(layout.image_files)}")
    _reject_whitespace_ids(image_ids_arr, "image_id", describe(layout.image_files))
    text_ids_arr, texts = _read_texts(layout.text_files, queries_from, max_query_chars)
    text_ids = IdList(text_ids_arr, "text_id")
    text_ids.check_unique(f" in {describe(layout.text_files)}")
    _reject_whitespace_ids(text_ids_arr, "text_id", describe(layout.text_files))
    qrels = read_qrels(layout.qrels_files, text_ids_arr, image_ids_arr)

    judged = np.flatnonzero(
        pc.is_in(text_ids_arr, value_set=qrels.ids("text_id")).to_numpy(zero_copy_only=False)
    )
    empty_rows = judged[is_blank(texts.take(pa.array(judged)))]
    if len(empty_rows):
        empty = text_ids.take(empty_rows)
        raise DataError(
            f"{len(empty)} judged text(s) have an empty query in fields {list(queries_from)}: "
            f"{format_ids(empty)}. Choose other query_fields."
        )

    skip_reasons: dict[str, str] = {}
    no_caption = list(image_ids.take(np.flatnonzero(~has_caption)))
    if no_caption and on_missing_caption != "keep":
        where = f"fields {list(fields)}, languages {list(langs) if langs else 'all'}"
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

    store = ParquetImageStore.scan(layout.image_files)
    images = ImageTable(image_ids, store, caps, check_unique=False)
    corrupt = {int(i): "no image bytes" for i in store.missing_rows()}
    listed = Path(unusable_images) if unusable_images is not None else root / UNUSABLE_IMAGES_FILE
    if unusable_images is not None or listed.is_file():
        for image_id, reason in read_unusable(listed).items():
            row = image_ids.position(image_id)
            if row >= 0:
                corrupt.setdefault(row, f"{reason} (listed in {listed})")
    if validate_images:
        candidates = [i for i in range(len(image_ids)) if i not in corrupt]
        corrupt.update(_undecodable(images, candidates))
    corrupt = {i: r for i, r in sorted(corrupt.items()) if image_ids[i] not in skip_reasons}
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

    if skip_reasons:
        drop = image_ids.positions(list(skip_reasons))
        keep = np.setdiff1d(np.arange(len(image_ids)), drop)
        skipped = list(image_ids.take(np.sort(drop)))
        images = images.take(keep)
    else:
        skipped = []
    return Collection(
        name=str(defaults.get("name") or root.name),
        root=root,
        images=images,
        texts=TextTable(text_ids, texts),
        qrels=qrels,
        skipped_images=skipped,
        skip_reasons=skip_reasons,
        caption_fields=fields,
        caption_languages=langs,
        query_fields=queries_from,
        caption_preprocessing=caption_preprocessing,
        unpreprocessed_captions=unpreprocessed,
    )
