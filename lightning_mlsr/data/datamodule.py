"""LightningDataModule over an image-suggestion collection.

Training batches are (query text, relevant image with its caption) pairs from the train
qrels. Validation/test batches are the same pairs of that split (for a held-out loss);
retrieval evaluation over the whole corpus uses :meth:`RetrievalDataModule.corpus_dataloader`
and :meth:`RetrievalDataModule.query_dataloader`, driven by the retrieval callback.

What a batch holds is decided by the model's encoders (their ``modalities``, text backbone
and image backbone), read from the attached LightningModule in :meth:`setup` — so the same
YAML ``data:`` block serves caption-only, image-only and image+caption models, and image
features are only computed when an image encoder needs them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from lightning_mlsr.backbones import load_tokenizer
from lightning_mlsr.data.collection import Collection, load_collection
from lightning_mlsr.data.errors import DataError
from lightning_mlsr.data.features import FeatureStore

if TYPE_CHECKING:
    from lightning_mlsr.backbones import ImageBackbone
    from lightning_mlsr.heads.base import SparseEncoder

log = logging.getLogger("lightning_mlsr.data")

__all__ = ["Batch", "RetrievalDataModule"]

Batch = dict[str, Any]


class _IndexDataset(Dataset):
    """Items are integers (row indices, or indices into a pair list)."""

    def __init__(self, indices: Sequence[int] | np.ndarray) -> None:
        self.indices = np.asarray(indices, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> int:
        return int(self.indices[i])


@dataclass
class _SideSpec:
    """What one side (query or document) of the model reads."""

    text: bool
    image: bool
    tokenizer: Any = None
    max_length: int = 32
    features: FeatureStore | None = None  # frozen features, computed on demand
    transform: Callable[[Any], torch.Tensor] | None = None  # pixels when not frozen


def false_negative_mask(
    relevant: dict[int, set[int]],
    text_rows: Sequence[int],
    image_rows: Sequence[int],
    offset: int = 0,
) -> torch.Tensor:
    """``[i, j]``: image j is also relevant to query i, and j is not its positive
    (the positive of query i sits in column ``offset + i``).

    Shape: ``(len(text_rows), len(image_rows))`` bool.
    """
    mask = torch.zeros(len(text_rows), len(image_rows), dtype=torch.bool)
    for i, t in enumerate(text_rows):
        rel = relevant.get(int(t), set())
        for j, im in enumerate(image_rows):
            if j != offset + i and int(im) in rel:
                mask[i, j] = True
    return mask


class _Collator:
    """Turns lists of indices into model inputs. Picklable, so it runs in workers."""

    def __init__(
        self,
        collection: Collection,
        query: _SideSpec,
        doc: _SideSpec,
        pairs: np.ndarray | None = None,
        relevant: dict[int, set[int]] | None = None,
    ) -> None:
        self.collection = collection
        self.query = query
        self.doc = doc
        self.pairs = pairs  # (P, 2) [text row, image row]
        self.relevant = relevant or {}

    def encode_texts(self, texts: list[str], side: _SideSpec) -> dict[str, torch.Tensor]:
        enc = side.tokenizer(
            texts,
            padding=True,
            truncation=True,
            max_length=side.max_length,
            return_tensors="pt",
        )
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

    def queries(self, rows: Sequence[int]) -> dict[str, torch.Tensor]:
        texts = [self.collection.texts.query(r) for r in rows]
        return self.encode_texts(texts, self.query)

    def docs(self, rows: Sequence[int]) -> dict[str, torch.Tensor]:
        inputs: dict[str, torch.Tensor] = {}
        if self.doc.text:
            captions = [self.collection.images.caption(r) for r in rows]
            inputs.update(self.encode_texts(captions, self.doc))
        if self.doc.image:
            if self.doc.features is not None:  # missing ones are computed here, see FeatureStore
                inputs["image_features"] = torch.from_numpy(self.doc.features.features(rows))
            else:
                assert self.doc.transform is not None
                images = [self.collection.images.load_image(r) for r in rows]
                inputs["pixel_values"] = torch.stack([self.doc.transform(im) for im in images])
        return inputs

    # collate functions ---------------------------------------------------------------
    def pair_batch(self, pair_rows: list[int]) -> Batch:
        assert self.pairs is not None
        text_rows = self.pairs[pair_rows, 0].tolist()
        image_rows = self.pairs[pair_rows, 1].tolist()
        return {
            "query": self.queries(text_rows),
            "doc": self.docs(image_rows),
            "false_negatives": false_negative_mask(self.relevant, text_rows, image_rows),
            "query_idx": torch.tensor(text_rows, dtype=torch.long),
            "doc_idx": torch.tensor(image_rows, dtype=torch.long),
        }

    def doc_batch(self, rows: list[int]) -> Batch:
        return {"doc": self.docs(rows), "doc_idx": torch.tensor(rows, dtype=torch.long)}

    def query_batch(self, rows: list[int]) -> Batch:
        return {"query": self.queries(rows), "query_idx": torch.tensor(rows, dtype=torch.long)}


def shard_indices(n: int, rank: int, world_size: int) -> np.ndarray:
    """Rows ``rank, rank + W, ...`` of ``range(n)``: disjoint, covering, no padding."""
    return np.arange(rank, n, world_size, dtype=np.int64)


class RetrievalDataModule(L.LightningDataModule):
    """Training pairs and evaluation corpora of an image-suggestion collection.

    Args:
        collection: a directory in the AToMiC layout, or a bundled collection name (``emoji``).
        caption_fields / caption_languages / query_fields / max_query_chars: how captions
            and queries are formed (None: the collection's defaults).
        query_max_length / doc_max_length: tokenizer truncation, in wordpieces.
        batch_size: training pairs per batch (in-batch negatives come from the same batch).
        eval_batch_size: rows per batch when encoding the corpus and queries.
        num_workers: DataLoader workers.
        feature_cache_dir: where frozen image features are cached (None: the default cache).
        feature_batch_size: images per batch when filling the feature cache.
        feature_fill: ``"lazy"`` computes frozen features when a batch first needs them
            (a short run encodes only the images it reads); ``"upfront"`` fills the cache
            for every image the run needs in ``prepare_data``, with a progress bar
            (resumable; worth it for large collections).
        on_corrupt_image / on_missing_caption: see :func:`load_collection`.
        predict_target: what ``predict`` encodes: ``corpus`` or ``queries:<split>``.
    """

    def __init__(
        self,
        collection: str = "emoji",
        caption_fields: list[str] | None = None,
        caption_languages: list[str] | None = None,
        query_fields: list[str] | None = None,
        max_query_chars: int | None = None,
        query_max_length: int = 32,
        doc_max_length: int = 32,
        batch_size: int = 64,
        eval_batch_size: int = 256,
        num_workers: int = 0,
        feature_cache_dir: str | None = None,
        feature_batch_size: int = 32,
        feature_fill: Literal["lazy", "upfront"] = "lazy",
        on_corrupt_image: Literal["skip", "error"] = "skip",
        on_missing_caption: Literal["error", "skip", "keep"] = "error",
        predict_target: str = "corpus",
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if batch_size < 2:
            raise ValueError(f"batch_size must be >= 2 for in-batch negatives, got {batch_size}")
        if feature_fill not in ("lazy", "upfront"):
            raise ValueError(f"feature_fill must be 'lazy' or 'upfront', got {feature_fill!r}")
        self._collection: Collection | None = None
        self._collator: _Collator | None = None
        self._pairs: dict[str, np.ndarray] = {}
        self._relevant: dict[str, dict[int, set[int]]] = {}
        self._encoders: tuple[SparseEncoder, SparseEncoder] | None = None

    @property
    def _hp(self) -> Any:
        """The init arguments (saved by ``save_hyperparameters``), attribute access."""
        return self.hparams

    # ------------------------------------------------------------------ collection
    @property
    def collection(self) -> Collection:
        if self._collection is None:
            hp = self._hp
            self._collection = load_collection(
                hp.collection,
                caption_fields=hp.caption_fields,
                caption_languages=hp.caption_languages,
                query_fields=hp.query_fields,
                max_query_chars=hp.max_query_chars,
                on_corrupt_image=hp.on_corrupt_image,
                on_missing_caption=hp.on_missing_caption,
            )
        return self._collection

    def qrels(self, split: str) -> dict[str, dict[str, int]]:
        if split not in self.collection.qrels:
            raise DataError(
                f"collection {self.collection.name!r} has no {split!r} qrels "
                f"(has: {sorted(self.collection.qrels)})"
            )
        return self.collection.qrels[split]

    def _split_pairs(self, split: str) -> np.ndarray:
        """(text row, image row) for every positive judgment of a split, in a fixed order."""
        if split not in self._pairs:
            texts, images = self.collection.texts, self.collection.images
            known = set(images.ids)
            pairs: list[tuple[int, int]] = []
            relevant: dict[int, set[int]] = {}
            unretrievable = 0
            for text_id, judged in sorted(self.qrels(split).items()):
                t = texts.index(text_id)
                for image_id, rel in sorted(judged.items()):
                    if rel <= 0:
                        continue
                    if image_id not in known:  # e.g. a skipped corrupt image
                        unretrievable += 1
                        continue
                    im = images.index(image_id)
                    pairs.append((t, im))
                    relevant.setdefault(t, set()).add(im)
            if unretrievable:
                log.warning(
                    "%s: %d judged pairs point at images that were skipped; they are left out "
                    "of the %s pairs (they still count as relevant in retrieval metrics)",
                    self.collection.name,
                    unretrievable,
                    split,
                )
            if not pairs:
                raise DataError(
                    f"split {split!r} of {self.collection.name!r} has no positive pairs"
                )
            self._pairs[split] = np.asarray(pairs, dtype=np.int64)
            self._relevant[split] = relevant
        return self._pairs[split]

    # ------------------------------------------------------------------ model wiring
    def attach_encoders(self, query_encoder: SparseEncoder, doc_encoder: SparseEncoder) -> None:
        """Declare which encoders consume the batches (done automatically under a Trainer)."""
        self._encoders = (query_encoder, doc_encoder)
        self._collator = None

    def _model_encoders(self) -> tuple[SparseEncoder, SparseEncoder]:
        if self._encoders is not None:
            return self._encoders
        trainer = getattr(self, "trainer", None)
        model = trainer.lightning_module if trainer is not None else None
        if model is None or not hasattr(model, "query_encoder"):
            raise RuntimeError(
                "RetrievalDataModule needs to know the model's encoders: use it with a Trainer "
                "and a SparseBiEncoder, or call attach_encoders(query_encoder, doc_encoder)."
            )
        return model.query_encoder, model.doc_encoder

    def _side(self, encoder: SparseEncoder, max_length: int) -> _SideSpec:
        text = "text" in encoder.modalities
        image = "image" in encoder.modalities
        spec = _SideSpec(text=text, image=image, max_length=max_length)
        if text:
            if encoder.text_backbone_name is None:
                raise RuntimeError(
                    f"{type(encoder).__name__} reads text but names no text backbone"
                )
            spec.tokenizer = load_tokenizer(encoder.text_backbone_name)
        if image:
            backbone = encoder.image_backbone
            if backbone is None:
                raise RuntimeError(
                    f"{type(encoder).__name__} reads images but has no image_backbone"
                )
            if encoder.freeze_image_backbone:
                spec.features = self._feature_store(backbone)
            else:
                spec.transform = backbone.transform()
        return spec

    def _feature_store(self, backbone: ImageBackbone) -> FeatureStore:
        """The frozen-feature store of ``backbone`` over this collection's images
        (fails at once, before computing anything, if the cache is not writable)."""
        return FeatureStore(
            backbone,
            self.collection.images,
            cache_dir=self._hp.feature_cache_dir,
            batch_size=self._hp.feature_batch_size,
            on_corrupt_image=self._hp.on_corrupt_image,
        )

    def feature_rows(self) -> np.ndarray:
        """Image rows whose frozen features a run needs: the train pairs' images and the
        evaluation corpus (the whole collection, see :meth:`corpus_dataloader`)."""
        corpus = np.arange(len(self.collection.images))
        return np.union1d(self._split_pairs("train")[:, 1], corpus)

    def prepare_data(self) -> None:
        """``feature_fill="upfront"``: fill the image-feature cache once per node, before
        DDP ranks read it (lazy filling needs nothing here)."""
        if self._hp.feature_fill != "upfront":
            return
        for encoder in self._model_encoders():
            backbone = encoder.image_backbone
            if "image" in encoder.modalities and encoder.freeze_image_backbone and backbone:
                self._feature_store(backbone).fill(self.feature_rows())

    def teardown(self, stage: str) -> None:
        """Write the frozen features computed lazily in this process (for the next run)
        and report the undecodable images met."""
        if self._collator is not None and self._collator.doc.features is not None:
            self._collator.doc.features.flush()
            self._collator.doc.features.report_skipped()

    def setup(self, stage: str | None = None) -> None:
        if self._collator is not None:
            return
        query_encoder, doc_encoder = self._model_encoders()
        if "image" in query_encoder.modalities:
            raise DataError("queries are texts: the query encoder must be a text head")
        if not query_encoder.modalities & {"text"}:
            raise DataError(f"query encoder {type(query_encoder).__name__} reads no text")
        self._collator = _Collator(
            self.collection,
            query=self._side(query_encoder, self._hp.query_max_length),
            doc=self._side(doc_encoder, self._hp.doc_max_length),
        )

    @property
    def collator(self) -> _Collator:
        if self._collator is None:
            self.setup()
        assert self._collator is not None
        return self._collator

    # ------------------------------------------------------------------ loaders
    def _pair_loader(self, split: str, shuffle: bool, batch_size: int) -> DataLoader:
        pairs = self._split_pairs(split)
        collator = _Collator(
            self.collection,
            self.collator.query,
            self.collator.doc,
            pairs=pairs,
            relevant=self._relevant[split],
        )
        return DataLoader(
            _IndexDataset(range(len(pairs))),
            batch_size=batch_size,
            shuffle=shuffle,
            drop_last=shuffle and len(pairs) >= batch_size,  # full batches: fixed negatives
            num_workers=self._hp.num_workers,
            persistent_workers=self._hp.num_workers > 0,
            collate_fn=collator.pair_batch,
        )

    def train_dataloader(self) -> DataLoader:
        return self._pair_loader("train", shuffle=True, batch_size=self._hp.batch_size)

    def val_dataloader(self) -> DataLoader:
        return self._pair_loader("validation", shuffle=False, batch_size=self._hp.batch_size)

    def test_dataloader(self) -> DataLoader:
        return self._pair_loader("test", shuffle=False, batch_size=self._hp.batch_size)

    def corpus_dataloader(self, rank: int = 0, world_size: int = 1) -> DataLoader:
        """This rank's shard of the whole image corpus (rows ``rank::world_size``)."""
        rows = shard_indices(len(self.collection.images), rank, world_size)
        return DataLoader(
            _IndexDataset(rows),
            batch_size=self._hp.eval_batch_size,
            num_workers=self._hp.num_workers,
            collate_fn=self.collator.doc_batch,
        )

    def query_rows(self, split: str) -> np.ndarray:
        """Text rows of the split's judged queries, sorted by text id."""
        texts = self.collection.texts
        return np.asarray([texts.index(t) for t in sorted(self.qrels(split))], dtype=np.int64)

    def query_dataloader(self, split: str, rank: int = 0, world_size: int = 1) -> DataLoader:
        """This rank's shard of the split's judged queries."""
        rows = self.query_rows(split)
        return DataLoader(
            _IndexDataset(rows[shard_indices(len(rows), rank, world_size)]),
            batch_size=self._hp.eval_batch_size,
            num_workers=self._hp.num_workers,
            collate_fn=self.collator.query_batch,
        )

    def predict_dataloader(self) -> DataLoader:
        target = self._hp.predict_target
        if target == "corpus":
            return self.corpus_dataloader()
        if target.startswith("queries:"):
            return self.query_dataloader(target.split(":", 1)[1])
        raise ValueError(f"predict_target must be 'corpus' or 'queries:<split>', got {target!r}")

    def false_negative_mask(
        self, split: str, query_idx: torch.Tensor, doc_idx: torch.Tensor, offset: int = 0
    ) -> torch.Tensor:
        """``(len(query_idx), len(doc_idx))``: doc j relevant to query i but not its positive
        (column ``offset + i``); used when documents are gathered from all DDP ranks."""
        self._split_pairs(split)
        return false_negative_mask(
            self._relevant[split], query_idx.tolist(), doc_idx.tolist(), offset=offset
        )
