"""Hard negatives read for training: for every training query, the images a teacher ranked
highest among those not judged relevant (written by :mod:`lightning_mlsr.generate.hard_negatives`).

With hard negatives each training batch also holds, for every pair, ``negatives.per_query``
images sampled from its query's list (``data.negatives.file: FILE``): InfoNCE
ranks them below the positive and the teacher's scores over them — what SPLADE++ and D2S
distil — say *how much* below.

The file is plain TSV, one training query per line, the teacher's ranking after the text id:

    text_id <TAB> image_id <TAB> image_id ...
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lightning_mlsr.data.collection.tables import Collection
from lightning_mlsr.data.errors import DataError, format_ids

log = logging.getLogger("lightning_mlsr.data")

__all__ = ["HardNegatives"]


class HardNegatives:
    """Each text row's ranked negative image rows (CSR: ``offsets`` into ``rows``).

    Args:
        offsets: ``(T + 1,)`` int64; text row ``t``'s negatives are
            ``rows[offsets[t]:offsets[t + 1]]``, best first.
        rows: image rows.
    """

    def __init__(self, offsets: np.ndarray, rows: np.ndarray) -> None:
        self.offsets = np.asarray(offsets, np.int64)
        self.rows = np.asarray(rows, np.int64)

    @classmethod
    def read(cls, path: str | os.PathLike[str], collection: Collection) -> HardNegatives:
        """Read a negatives TSV against ``collection``'s text and image ids.

        An unknown text id is an error (the file belongs to another collection); an unknown
        image id (e.g. an image skipped as corrupt) is left out, counted and logged.
        """
        path = Path(path)
        if not path.is_file():
            raise DataError(
                f"hard negatives file {str(path)!r} does not exist; mine one with "
                "`python -m lightning_mlsr.data.training.negatives COLLECTION --teacher CKPT --out FILE`"
            )
        text_ids: list[str] = []
        image_ids: list[str] = []
        counts: list[int] = []
        with path.open(encoding="utf-8") as f:
            for line_no, line in enumerate(f, 1):
                fields = line.rstrip("\n").split("\t")
                if not fields[0]:
                    raise DataError(f"{path}:{line_no}: empty text id")
                text_ids.append(fields[0])
                negs = [x for x in fields[1:] if x]
                image_ids.extend(negs)
                counts.append(len(negs))
        t = np.asarray(collection.texts.ids.positions(text_ids), np.int64)
        if (t < 0).any():
            unknown = [text_ids[i] for i in np.flatnonzero(t < 0)]
            raise DataError(
                f"{path}: {len(unknown)} text id(s) not in collection {collection.name!r}: "
                f"{format_ids(unknown)}"
            )
        if len(np.unique(t)) != len(t):
            raise DataError(f"{path}: a text id is listed on more than one line")
        im = np.asarray(collection.images.ids.positions(image_ids), np.int64)
        owner = np.repeat(t, counts)  # (N,)
        missing = int((im < 0).sum())
        if missing:
            log.warning(
                "%s: %d negative image id(s) are not in collection %r (e.g. skipped as "
                "corrupt); left out",
                path,
                missing,
                collection.name,
            )
        owner, im = owner[im >= 0], im[im >= 0]
        order = np.argsort(owner, kind="stable")  # keep each query's ranking
        owner, im = owner[order], im[order]
        offsets = np.searchsorted(owner, np.arange(len(collection.texts) + 1))
        return cls(offsets, im)

    def count(self, text_rows: np.ndarray) -> np.ndarray:
        """How many negatives each text row has. Shape: ``(B,)``."""
        t = np.asarray(text_rows, np.int64)
        return self.offsets[t + 1] - self.offsets[t]

    def check_covers(self, text_rows: np.ndarray, collection: Collection) -> None:
        """Every text row must have a negative (a clear error naming those without)."""
        t = np.unique(np.asarray(text_rows, np.int64))
        empty = t[self.count(t) == 0]
        if len(empty):
            ids = [collection.texts.ids[int(r)] for r in empty[:20]]
            raise DataError(
                f"{len(empty)} training query(ies) have no hard negatives, e.g. "
                f"{format_ids(ids)}; mine the file for this collection's train split"
            )

    def sample(
        self, text_rows: Sequence[int], n: int, rng: np.random.Generator, depth: int | None = None
    ) -> np.ndarray:
        """``n`` negatives per text row, drawn uniformly without replacement from its first
        ``depth`` (None: all) — with replacement where it has fewer than ``n``.

        Shape: ``(B,)`` -> ``(B, n)`` image rows.
        """
        out = np.empty((len(text_rows), n), np.int64)
        for i, t in enumerate(text_rows):
            lo, hi = self.offsets[t], self.offsets[t + 1]
            if depth is not None:
                hi = min(hi, lo + depth)
            if hi <= lo:
                raise DataError(f"text row {t} has no hard negatives")
            pick = rng.choice(hi - lo, n, replace=hi - lo < n)
            out[i] = self.rows[lo + pick]
        return out
