"""TREC qrels of a collection: read from ``.trec`` or parquet files, kept as one Arrow table.

The split of a qrels file comes from a ``split`` column if there is one, else from the
file name up to the first ``-`` or ``.`` (``train.trec``, ``validation-00000-of-00001.parquet``),
or from the folder when the file name is a bare shard number (``test/0000.parquet``, as on
the Hub's parquet-converter branch).

AToMiC has millions of training judgments: they stay in an Arrow table (four columns, no
Python object per judgment); :class:`QrelsTable` turns one split into the nested
``text_id -> image_id -> rel`` dict that the metrics take only when that split is asked for.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lightning_mlsr.data.collection.arrow import as_ids, column, read_parquet
from lightning_mlsr.data.errors import DataError, format_ids
from lightning_mlsr.retrieval.trec import parse_trec_qrels

__all__ = ["CANONICAL_SPLITS", "Qrels", "QrelsTable", "read_qrels"]

#: split -> text_id -> image_id -> relevance
Qrels = dict[str, dict[str, dict[str, int]]]
CANONICAL_SPLITS = ("train", "validation", "test")
_SCHEMA = pa.schema(
    [
        ("split", pa.large_string()),
        ("text_id", pa.large_string()),
        ("image_id", pa.large_string()),
        ("rel", pa.int64()),
    ]
)


class QrelsTable(Mapping[str, dict[str, dict[str, int]]]):
    """``split -> text_id -> image_id -> rel``, backed by one Arrow table.

    ``qrels[split]`` builds (and keeps) the nested dict of that split on first use;
    :meth:`table` gives the split's judgments as Arrow columns without building it.
    """

    def __init__(self, table: pa.Table) -> None:
        self._table = table.cast(_SCHEMA)
        splits = pc.unique(self._table["split"]).to_pylist()
        self._splits = [s for s in CANONICAL_SPLITS if s in splits] + sorted(
            s for s in splits if s not in CANONICAL_SPLITS
        )
        self._dicts: dict[str, dict[str, dict[str, int]]] = {}

    @classmethod
    def from_dict(cls, qrels: Mapping[str, Mapping[str, Mapping[str, int]]]) -> QrelsTable:
        rows = [
            (s, t, i, int(r))
            for s, per_text in qrels.items()
            for t, judged in per_text.items()
            for i, r in judged.items()
        ]
        return cls(pa.table(list(map(list, zip(*rows))) or [[], [], [], []], schema=_SCHEMA))

    def table(self, split: str) -> pa.Table:
        """The judgments of ``split``: columns text_id, image_id, rel."""
        if split not in self._splits:
            raise KeyError(split)
        mask = pc.equal(self._table["split"], split)
        return self._table.filter(mask).select(["text_id", "image_id", "rel"])

    def __getitem__(self, split: str) -> dict[str, dict[str, int]]:
        if split not in self._dicts:
            table = self.table(split)
            out: dict[str, dict[str, int]] = {}
            for t, i, r in zip(*(table[c].to_pylist() for c in ("text_id", "image_id", "rel"))):
                out.setdefault(t, {})[i] = r
            self._dicts[split] = out
        return self._dicts[split]

    def __iter__(self) -> Iterator[str]:
        return iter(self._splits)

    def __len__(self) -> int:
        return len(self._splits)

    def __contains__(self, split: object) -> bool:
        return split in self._splits

    def ids(self, name: str) -> pa.Array:
        """The distinct ``text_id`` or ``image_id`` values judged in any split."""
        return pc.unique(self._table[name])

    @property
    def num_judgments(self) -> int:
        return self._table.num_rows

    def __repr__(self) -> str:
        return f"QrelsTable({self._table.num_rows} judgments in splits {self._splits})"


def split_from_name(path: Path) -> str:
    """``train.trec``, ``train-00000-of-00001.parquet`` -> train; ``test/0000.parquet`` -> test."""
    match = re.match(r"[^-.]+", path.name)
    prefix = match.group(0) if match else path.name
    return path.parent.name if prefix.isdigit() else prefix


def _read_trec(path: Path) -> pa.Table:
    try:
        text_ids, image_ids, rels = parse_trec_qrels(path)
    except ValueError as err:  # the message names the file, line and fix
        raise DataError(str(err)) from None
    split = pa.array([split_from_name(path)] * len(rels), pa.large_string())
    columns = [pa.array(ids, pa.large_string()) for ids in (text_ids, image_ids)]
    return pa.table([split, *columns, pa.array(rels, pa.int64())], schema=_SCHEMA)


def _read_qrels_parquet(path: Path) -> pa.Table:
    table = read_parquet(path, ["text_id", "image_id", "rel"], ["split"])
    rel = column(table, "rel")
    try:
        if rel.null_count:
            raise ValueError(f"{rel.null_count} null values")
        rel = rel.cast(pa.int64())
    except (pa.ArrowException, ValueError) as err:
        raise DataError(f"{path}: column 'rel' must hold integers ({err})") from err
    if "split" in table.column_names:
        split = column(table, "split").cast(pa.large_string())
        if split.null_count:
            raise DataError(f"{path}: column 'split' has null values")
    else:
        split = pa.array([split_from_name(path)] * table.num_rows, pa.large_string())
    ids = [as_ids(table, name, path) for name in ("text_id", "image_id")]
    return pa.table([split, *ids, rel], schema=_SCHEMA)


def _has_repeated_pairs(table: pa.Table) -> bool:
    """Whether some (split, text_id, image_id) occurs twice (hash-encoded, numpy sort)."""
    codes = []
    for name in ("split", "text_id", "image_id"):
        encoded = pc.dictionary_encode(table[name]).combine_chunks()
        codes.append((encoded.indices.to_numpy().astype(np.int64), len(encoded.dictionary)))
    (s, _), (t, nt), (i, ni) = codes
    key = np.sort((s * nt + t) * ni + i)
    return bool(len(key) > 1 and (key[1:] == key[:-1]).any())


def read_qrels(files: list[Path], text_ids: pa.Array, image_ids: pa.Array) -> QrelsTable:
    """Read every qrels file; every id must be in the texts/images tables."""
    tables: list[pa.Table] = []
    for path in files:
        table = _read_trec(path) if path.suffix == ".trec" else _read_qrels_parquet(path)
        if table.num_rows == 0:
            raise DataError(
                f"{path}: the qrels file holds no judgments; a split without judgments has no "
                "qrels file: delete it, or regenerate the collection's qrels"
            )
        for what, known, name in (("text", text_ids, "text_id"), ("image", image_ids, "image_id")):
            col = column(table, name)
            unknown = col.filter(pc.invert(pc.is_in(col, value_set=known)))
            if len(unknown):
                names = list(dict.fromkeys(unknown.to_pylist()))
                raise DataError(
                    f"{path}: qrels name {len(names)} {what} id(s) that are not in the "
                    f"{what}s table: {format_ids(names)}. Use qrels, texts and images from "
                    f"the same collection version."
                )
        tables.append(table.append_column("file", pa.array([len(tables)] * table.num_rows)))
    table = pa.concat_tables(tables)
    if not _has_repeated_pairs(table):  # the usual case: skip the (slower) grouping
        return QrelsTable(table.select(["split", "text_id", "image_id", "rel"]))
    groups = table.group_by(["split", "text_id", "image_id"], use_threads=False).aggregate(
        [("rel", "min"), ("rel", "max"), ("file", "max")]
    )
    conflict = np.flatnonzero(groups["rel_min"].to_numpy() != groups["rel_max"].to_numpy())
    if len(conflict):
        key = groups.slice(int(conflict[0]), 1).to_pylist()[0]
        same = pc.and_(
            pc.and_(
                pc.equal(table["split"], key["split"]), pc.equal(table["text_id"], key["text_id"])
            ),
            pc.equal(table["image_id"], key["image_id"]),
        )
        judged = list(dict.fromkeys(table.filter(same)["rel"].to_pylist()))
        raise DataError(
            f"{files[key['file_max']]}: ({key['text_id']!r}, {key['image_id']!r}) in split "
            f"{key['split']!r} is judged both {judged[0]} and {judged[1]}; "
            f"keep one judgment per pair"
        )
    if len(groups) != table.num_rows:  # repeated identical judgments: keep one of each
        table = groups.select(["split", "text_id", "image_id", "rel_min"]).rename_columns(
            ["split", "text_id", "image_id", "rel"]
        )
    return QrelsTable(table.select(["split", "text_id", "image_id", "rel"]))
