"""The positive pairs of a split and the in-batch false-negative mask built from them."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pyarrow.compute as pc
import torch

from lightning_mlsr.data.collection.tables import Collection
from lightning_mlsr.data.errors import DataError

log = logging.getLogger("lightning_mlsr.data")

__all__ = ["RelevantPairs", "false_negative_mask", "positive_pairs", "split_qrels"]


def split_qrels(collection: Collection, split: str) -> dict[str, dict[str, int]]:
    """The qrels of ``split``, or an error that lists the splits the collection has."""
    if split not in collection.qrels:
        raise DataError(
            f"collection {collection.name!r} has no {split!r} qrels "
            f"(has: {sorted(collection.qrels)})"
        )
    return collection.qrels[split]


def positive_pairs(collection: Collection, split: str) -> np.ndarray:
    """(text row, image row) for every positive judgment of a split, sorted by
    (text id, image id); computed in Arrow/numpy, no Python object per judgment.

    Judgments of images skipped at load (e.g. corrupt) are left out, with a warning.

    Shape: ``(P, 2)`` int64.
    """
    split_qrels(collection, split)
    table = collection.qrels_table.table(split)
    table = table.filter(pc.greater(table["rel"], 0)).sort_by(
        [("text_id", "ascending"), ("image_id", "ascending")]
    )
    t = collection.texts.ids.positions(table["text_id"])
    im = collection.images.ids.positions(table["image_id"])
    unretrievable = int((im < 0).sum())
    if unretrievable:
        log.warning(
            "%s: %d judged pairs point at images that were skipped; they are left out "
            "of the %s pairs (they still count as relevant in retrieval metrics)",
            collection.name,
            unretrievable,
            split,
        )
    pairs = np.stack([t[im >= 0], im[im >= 0]], axis=1)  # (P, 2)
    if not len(pairs):
        raise DataError(f"split {split!r} of {collection.name!r} has no positive pairs")
    return pairs


class RelevantPairs:
    """The positive (text row, image row) pairs of a split as sorted int64 keys.

    Compact (8 bytes a pair, no Python set per query) and vectorised lookups, for AToMiC's
    millions of training judgments.
    """

    def __init__(self, text_rows: np.ndarray, image_rows: np.ndarray, num_images: int) -> None:
        self.num_images = max(int(num_images), 1)
        self.keys = np.unique(np.asarray(text_rows, np.int64) * self.num_images + image_rows)

    def contains(self, text_rows: np.ndarray, image_rows: np.ndarray) -> np.ndarray:
        """Elementwise: is ``image_rows[k]`` relevant to ``text_rows[k]`` (broadcasting)."""
        keys = np.asarray(text_rows, np.int64) * self.num_images + np.asarray(image_rows)
        pos = np.searchsorted(self.keys, keys)
        pos = np.minimum(pos, len(self.keys) - 1) if len(self.keys) else pos
        return (self.keys[pos] == keys) if len(self.keys) else np.zeros(keys.shape, bool)

    def images_of(self, text_rows: Sequence[int]) -> np.ndarray:
        """The image rows relevant to each text row, padded with -1 to the longest list.

        Shape: ``(len(text_rows), R)`` int64, ``R >= 1``.
        """
        t = np.asarray(text_rows, np.int64)
        start = np.searchsorted(self.keys, t * self.num_images)  # (B,)
        stop = np.searchsorted(self.keys, (t + 1) * self.num_images)  # (B,)
        counts = stop - start
        out = np.full((len(t), max(int(counts.max(initial=0)), 1)), -1, np.int64)  # (B, R)
        for i, (lo, n) in enumerate(zip(start.tolist(), counts.tolist())):
            out[i, :n] = self.keys[lo : lo + n] - t[i] * self.num_images
        return out


def false_negative_mask(
    relevant: RelevantPairs,
    text_rows: Sequence[int],
    image_rows: Sequence[int],
    offset: int = 0,
) -> torch.Tensor:
    """``[i, j]``: image j is also relevant to query i, and j is not its positive
    (the positive of query i sits in column ``offset + i``).

    Shape: ``(len(text_rows), len(image_rows))`` bool.
    """
    t = np.asarray(text_rows, np.int64)[:, None]  # (B, 1)
    im = np.asarray(image_rows, np.int64)[None, :]  # (1, B')
    mask = relevant.contains(t, im)  # (B, B')
    rows = np.arange(len(t))
    cols = offset + rows
    inside = cols < mask.shape[1]
    mask[rows[inside], cols[inside]] = False
    return torch.from_numpy(np.ascontiguousarray(mask))
