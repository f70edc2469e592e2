"""Batches from row indices: tokenised queries, captions, image features or pixels.

The collator runs in DataLoader workers (it pickles with the collection, whose image
store reads bytes for itself in each worker); corrupt images met there are skipped and
reported once per pass by :class:`SkipReportingLoader`, or raise.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from lightning_mlsr.data.collection.decode import CorruptImageError
from lightning_mlsr.data.collection.tables import Collection
from lightning_mlsr.data.errors import DataError, format_ids
from lightning_mlsr.data.training.pairs import RelevantPairs, false_negative_mask
from lightning_mlsr.io.encoder_reads import Reads
from lightning_mlsr.io.pretrained import load_tokenizer

if TYPE_CHECKING:
    from lightning_mlsr.data.features.store import FeatureStore
    from lightning_mlsr.data.training.negatives import HardNegatives

log = logging.getLogger("lightning_mlsr.data")

__all__ = ["Batch", "Collator", "IndexDataset", "SkipReportingLoader"]

Batch = dict[str, Any]


class IndexDataset(Dataset):
    """Items are integers (row indices, or indices into a pair list)."""

    def __init__(self, indices: Sequence[int] | np.ndarray) -> None:
        self.indices = np.asarray(indices, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> int:
        return int(self.indices[i])


class Collator:
    """Turns lists of indices into model inputs, each side as its encoder reads it.
    Picklable, so it runs in workers.

    Args:
        collection: the collection the rows index.
        query, doc: what the query and the document encoder read (``encoder.reads()``),
            taken as is.
        query_max_length, doc_max_length: the DataModule's token limits; a side's texts
            are cut at the smaller of its limit and its encoder's own.
        features: the store of the document encoder's frozen image features over this
            collection's images (needed when ``doc.features`` is set); it computes what is
            missing.
        pairs: ``(P, 2)`` (text row, image row) pairs that :meth:`pair_batch` batches.
        relevant: every relevant pair, for the false-negative mask.
        on_corrupt_image: ``"skip"`` (report) or ``"error"``.
        negatives: hard negatives; pair batches then also get ``negatives_per_query`` per
            pair, drawn from each query's first ``negative_depth`` (see
            :mod:`lightning_mlsr.data.training.negatives`), seeded with ``seed``.
    """

    def __init__(
        self,
        collection: Collection,
        query: Reads,
        doc: Reads,
        query_max_length: int = 32,
        doc_max_length: int = 32,
        features: FeatureStore | None = None,
        pairs: np.ndarray | None = None,
        relevant: RelevantPairs | None = None,
        on_corrupt_image: Literal["skip", "error"] = "skip",
        negatives: HardNegatives | None = None,
        negatives_per_query: int = 1,
        negative_depth: int | None = None,
        seed: int = 0,
    ) -> None:
        if doc.features is not None and features is None:
            raise ValueError("the document encoder reads cached image features: pass their store")
        self.collection = collection
        self.query, self.doc = query, doc
        self.query_max_length = _limit(query_max_length, query)
        self.doc_max_length = _limit(doc_max_length, doc)
        self.tokenizers = {
            name: load_tokenizer(name)
            for name in dict.fromkeys((query.tokenizer, doc.tokenizer))
            if name is not None
        }
        self.features = features if doc.features is not None else None
        self.pairs = pairs  # (P, 2) [text row, image row]
        self.relevant = relevant or RelevantPairs(np.zeros(0), np.zeros(0), 1)
        self.on_corrupt_image = on_corrupt_image
        self.negatives = negatives
        self.negatives_per_query = negatives_per_query
        self.negative_depth = negative_depth
        self.seed = seed

    def for_pairs(
        self,
        pairs: np.ndarray,
        relevant: RelevantPairs,
        negatives: HardNegatives | None = None,
        negatives_per_query: int = 1,
        negative_depth: int | None = None,
        seed: int = 0,
    ) -> Collator:
        """This collator over ``pairs`` (the same sides, tokenizers and feature store)."""
        collator = copy.copy(self)
        collator.pairs, collator.relevant, collator.negatives = pairs, relevant, negatives
        collator.negatives_per_query, collator.negative_depth = negatives_per_query, negative_depth
        collator.seed = seed
        return collator

    def encode_texts(
        self, texts: list[str], side: Reads, max_length: int
    ) -> dict[str, torch.Tensor]:
        assert side.tokenizer is not None, "this side reads no text"
        enc = self.tokenizers[side.tokenizer](
            texts,
            padding=True,
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
        )
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

    def queries(self, rows: Sequence[int]) -> dict[str, torch.Tensor]:
        texts = [self.collection.texts.query(r) for r in rows]
        return self.encode_texts(texts, self.query, self.query_max_length)

    def usable(self, rows: Sequence[int]) -> tuple[list[int], list[str], list[Any]]:
        """``rows`` whose images decode, the ids of those that do not, and the decoded
        images (empty unless the batch needs pixels).

        Only the pixel path decodes here (the feature store handles its own); a
        corrupt image raises with ``on_corrupt_image="error"``, else it is reported.
        """
        if self.doc.pixels is None:
            return list(rows), [], []
        good, bad, decoded = [], [], []
        for r in rows:
            try:
                decoded.append(self.collection.images.load_image(r))
            except CorruptImageError as err:
                if self.on_corrupt_image == "error":
                    raise
                bad.append(err.image_id)
            else:
                good.append(r)
        return good, bad, decoded

    def docs(self, rows: Sequence[int], decoded: Sequence[Any] = ()) -> dict[str, torch.Tensor]:
        inputs: dict[str, torch.Tensor] = {}
        if self.doc.text:
            captions = [self.collection.images.caption(r) for r in rows]
            inputs.update(self.encode_texts(captions, self.doc, self.doc_max_length))
        if self.features is not None:  # missing ones are computed here, see FeatureStore
            inputs["image_features"] = torch.from_numpy(self.features.features(rows))
        elif self.doc.pixels is not None:
            images = list(decoded) or [self.collection.images.load_image(r) for r in rows]
            inputs["pixel_values"] = torch.stack([self.doc.pixels(im) for im in images])
        return inputs

    # collate functions ---------------------------------------------------------------
    def pair_batch(self, pair_rows: list[int]) -> Batch:
        """A batch of (query, positive image) pairs; with hard negatives, the ``B``
        positives are followed by ``B * negatives_per_query`` negatives (pair ``i``'s at
        ``B + i * n ...``), so documents are ``(B * (1 + n), ...)``.

        A pair whose image is corrupt is replaced by a copy of a good pair of the same
        batch, so every batch (and every DDP rank) keeps its size; the copy's image is
        relevant to its query, so the false-negative mask keeps it out of the negatives.
        A corrupt hard negative is replaced by the next pair's positive.
        """
        assert self.pairs is not None
        pairs = self.pairs[pair_rows]
        good, bad, decoded = self.usable(pairs[:, 1].tolist())
        if bad:
            if not good:
                raise DataError(f"every image of a training batch is corrupt: {format_ids(bad)}")
            ok = np.flatnonzero(np.isin(pairs[:, 1], good))
            broken = np.flatnonzero(~np.isin(pairs[:, 1], good))
            source = ok[np.arange(len(broken)) % len(ok)]
            pairs = pairs.copy()
            pairs[broken] = pairs[source]
            by_row = dict(zip(good, decoded))
            decoded = [by_row[r] for r in pairs[:, 1].tolist()]
        text_rows, image_rows = pairs[:, 0].tolist(), pairs[:, 1].tolist()
        if self.negatives is not None:
            negs, neg_decoded, neg_bad = self._hard_negatives(pair_rows, text_rows, image_rows)
            image_rows, bad = image_rows + negs, bad + neg_bad
            decoded = [*decoded, *neg_decoded]
        return {
            "query": self.queries(text_rows),
            "doc": self.docs(image_rows, decoded),
            "false_negatives": false_negative_mask(self.relevant, text_rows, image_rows),
            "query_idx": torch.tensor(text_rows, dtype=torch.long),
            "doc_idx": torch.tensor(image_rows, dtype=torch.long),
            # (B, R), -1 padded: for the false negatives among documents of other DDP ranks
            "relevant_doc_idx": torch.from_numpy(self.relevant.images_of(text_rows)),
            "skipped_images": bad,
        }

    def _hard_negatives(
        self, pair_rows: list[int], text_rows: list[int], positives: list[int]
    ) -> tuple[list[int], list[Any], list[str]]:
        """Image rows of each pair's sampled hard negatives (pair-major), their decoded
        images (pixel path only) and the ids of corrupt ones (replaced by the next pair's
        positive). The draw is seeded by the batch's pair indices: reproducible, and new
        each epoch as batches are reshuffled."""
        assert self.negatives is not None
        n, b = self.negatives_per_query, len(text_rows)
        rng = np.random.default_rng([self.seed, *pair_rows])
        negs = self.negatives.sample(text_rows, n, rng, self.negative_depth).reshape(-1)  # (B*n,)
        good, bad, decoded = self.usable(negs.tolist())
        if not bad:
            return negs.tolist(), decoded, []
        kept = set(good)
        rows = [
            r if r in kept else positives[(k // n + 1) % b] for k, r in enumerate(negs.tolist())
        ]
        by_row = dict(zip(good, decoded))
        decoded = [by_row[r] if r in by_row else self.collection.images.load_image(r) for r in rows]
        return rows, decoded, bad

    def doc_batch(self, rows: list[int]) -> Batch:
        """Corpus rows; corrupt images are left out of the batch (and so of the index)."""
        rows, bad, decoded = self.usable(rows)
        return {
            "doc": self.docs(rows, decoded),
            "doc_idx": torch.tensor(rows, dtype=torch.long),
            "skipped_images": bad,
        }

    def query_batch(self, rows: list[int]) -> Batch:
        return {"query": self.queries(rows), "query_idx": torch.tensor(rows, dtype=torch.long)}


def _limit(max_length: int, side: Reads) -> int:
    """``max_length``, or the side's encoder's own limit when that is smaller."""
    return max_length if side.max_length is None else min(max_length, side.max_length)


class SkipReportingLoader(DataLoader):
    """A DataLoader that takes ``skipped_images`` out of each batch and reports them once,
    when the pass ends (or stops early), counted over all workers."""

    def __iter__(self) -> Any:
        skipped: list[str] = []
        self.last_skipped = skipped
        try:
            for batch in super().__iter__():
                skipped.extend(batch.pop("skipped_images", ()))
                yield batch
        finally:
            if skipped:
                log.warning(
                    "skipped %d corrupt image(s) in this pass: %s; run `python -m "
                    "lightning_mlsr.data check` to list them all so that loads leave them out",
                    len(skipped),
                    format_ids(dict.fromkeys(skipped)),
                )
