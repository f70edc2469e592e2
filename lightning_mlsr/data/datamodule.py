"""LightningDataModule over an image-suggestion collection.

Training batches are (query text, relevant image with its caption) pairs from the train
qrels. Validation/test batches are the same pairs of that split (for a held-out loss);
retrieval evaluation over the whole corpus uses :meth:`RetrievalDataModule.corpus_dataloader`
and :meth:`RetrievalDataModule.query_dataloader`, driven by the retrieval callback.

What a batch holds is decided by the model's encoders and reaches the DataModule as plain
values, by one route: each encoder's :class:`~lightning_mlsr.io.encoder_reads.Reads`
(``encoder.reads()``), a pair of them (:class:`~lightning_mlsr.io.encoder_reads.BatchInputs`)
handed to :meth:`RetrievalDataModule.set_batch_inputs` (by ``SparseBiEncoder.setup`` under a
Trainer, or by hand: ``datamodule.set_batch_inputs(model.batch_inputs())``), and to the
collator as is. So one ``data:`` block
serves caption-only, image-only and image+caption models, and image features are computed
only when an image encoder needs them.

Its settings come in groups, each a dataclass of :mod:`lightning_mlsr.data.settings` and a
nested key of the ``data:`` block (``reading``, ``batching``, ``features``, ``evaluation``,
``negatives``); the collection and what ``predict`` encodes are its own keys.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from lightning_mlsr.data.collection import Collection, load_collection
from lightning_mlsr.data.errors import DataError
from lightning_mlsr.data.evaluation_corpus import eval_corpus_rows, judged_query_rows, shard_indices
from lightning_mlsr.data.features.fill import FillReport, fill_features
from lightning_mlsr.data.features.store import FeatureStore
from lightning_mlsr.data.settings import (
    BatchingSettings,
    EvaluationSettings,
    FeatureSettings,
    NegativeSettings,
    ReadingSettings,
    grouped_hparams,
    plain,
    settings_of,
)
from lightning_mlsr.data.training.batches import Batch, Collator, IndexDataset, SkipReportingLoader
from lightning_mlsr.data.training.negatives import HardNegatives
from lightning_mlsr.data.training.pair_loader import TrainingOrder, pair_loader
from lightning_mlsr.data.training.pairs import RelevantPairs, positive_pairs, split_qrels
from lightning_mlsr.data.training.sampler import ResumableSampler
from lightning_mlsr.io.encoder_reads import BatchInputs, FeatureSpec

__all__ = [
    "Batch",
    "BatchingSettings",
    "EvaluationSettings",
    "FeatureSettings",
    "NegativeSettings",
    "ReadingSettings",
    "RetrievalDataModule",
    "SkipReportingLoader",
    "shard_indices",
]


class RetrievalDataModule(L.LightningDataModule):
    """Training pairs and evaluation corpora of an image-suggestion collection.

    Args:
        collection: a directory in the AToMiC layout, or a bundled collection name (``emoji``).
        reading: how captions and queries are read (:class:`ReadingSettings`).
        batching: batch sizes, loader workers, text lengths (:class:`BatchingSettings`).
        features: the frozen image-feature cache (:class:`FeatureSettings`).
        evaluation: the images an evaluation ranks (:class:`EvaluationSettings`).
        negatives: teacher-mined hard negatives for training (:class:`NegativeSettings`).
        predict: what ``predict`` encodes: the ``corpus`` (every image), or the judged
            ``queries`` of ``predict_split``.
        predict_split: the split whose queries ``predict: queries`` encodes.

    What the batches hold comes separately, from the model: :meth:`set_batch_inputs`.
    """

    def __init__(
        self,
        collection: str = "emoji",
        reading: ReadingSettings = ReadingSettings(),
        batching: BatchingSettings = BatchingSettings(),
        features: FeatureSettings = FeatureSettings(),
        evaluation: EvaluationSettings = EvaluationSettings(),
        negatives: NegativeSettings = NegativeSettings(),
        predict: Literal["corpus", "queries"] = "corpus",
        predict_split: str = "test",
    ) -> None:
        super().__init__()
        self.collection_source = collection
        self.reading = settings_of(ReadingSettings, reading)
        self.batching = settings_of(BatchingSettings, batching)
        self.features = settings_of(FeatureSettings, features)
        self.evaluation = settings_of(EvaluationSettings, evaluation)
        self.negatives = settings_of(NegativeSettings, negatives)
        self.predict, self.predict_split = predict, predict_split
        # plain dicts: a checkpoint then loads without unpickling project classes
        groups = ("reading", "batching", "features", "evaluation", "negatives")
        plain_groups = {name: plain(getattr(self, name)) for name in groups}
        self.save_hyperparameters(
            {
                "collection": collection,
                **plain_groups,
                "predict": predict,
                "predict_split": predict_split,
            }
        )
        self._collection: Collection | None = None
        self._collator: Collator | None = None
        self._pairs: dict[str, np.ndarray] = {}
        self._relevant: dict[str, RelevantPairs] = {}
        self._inputs: BatchInputs | None = None
        self._train_order = TrainingOrder()
        self._negatives: HardNegatives | None = None
        self._filled = False  # features.fill="upfront" done in this process

    @classmethod
    def from_hparams(cls, hparams: Mapping[str, Any]) -> RetrievalDataModule:
        """The DataModule a checkpoint's ``datamodule_hyper_parameters`` describe (grouped,
        or flat as in checkpoints of earlier versions: :func:`grouped_hparams`)."""
        return cls(**grouped_hparams(hparams))

    # ------------------------------------------------------------------ collection
    @property
    def collection(self) -> Collection:
        if self._collection is None:
            self._collection = load_collection(
                self.collection_source,
                caption_fields=self.reading.caption_fields,
                caption_languages=self.reading.caption_languages,
                query_fields=self.reading.query_fields,
                max_query_chars=self.reading.max_query_chars,
                on_corrupt_image=self.reading.on_corrupt_image,
                on_missing_caption=self.reading.on_missing_caption,
                caption_preprocessing=self.reading.caption_preprocessing,
            )
        return self._collection

    def qrels(self, split: str) -> dict[str, dict[str, int]]:
        return split_qrels(self.collection, split)

    def _split_pairs(self, split: str) -> np.ndarray:
        """(text row, image row) of every positive judgment of a split (:func:`positive_pairs`),
        built once, with their :class:`RelevantPairs`."""
        if split not in self._pairs:
            pairs = positive_pairs(self.collection, split)  # (P, 2)
            self._pairs[split] = pairs
            self._relevant[split] = RelevantPairs(
                pairs[:, 0], pairs[:, 1], len(self.collection.images)
            )
        return self._pairs[split]

    # ------------------------------------------------------------------ model wiring
    def set_batch_inputs(self, inputs: BatchInputs) -> None:
        """What the query and document batches must hold, from the model
        (``model.batch_inputs()``): the one way the DataModule learns it.

        ``SparseBiEncoder.setup`` calls it under a Trainer; call it by hand before using
        the loaders or :meth:`fill_features` outside one. Equal inputs keep the batches
        already built (and their feature cache).
        """
        if inputs != self._inputs:
            self._inputs, self._collator = inputs, None

    @property
    def batch_inputs(self) -> BatchInputs:
        """What the batches hold (given by :meth:`set_batch_inputs`)."""
        if self._inputs is None:
            raise RuntimeError(
                "RetrievalDataModule needs to know what the model's encoders read: call "
                "datamodule.set_batch_inputs(model.batch_inputs()) first (SparseBiEncoder "
                "does it in its setup hook under a Trainer)."
            )
        return self._inputs

    def _feature_store(self, spec: FeatureSpec) -> FeatureStore:
        """The frozen-feature store of ``spec`` over this collection's images
        (fails at once, before computing anything, if the cache is not writable)."""
        return FeatureStore(
            spec,
            self.collection.images,
            cache_dir=self.features.cache_dir,
            batch_size=self.features.batch_size,
            on_corrupt_image=self.reading.on_corrupt_image,
        )

    def feature_rows(self) -> np.ndarray:
        """Image rows whose frozen features a run needs: the train pairs' images and the
        evaluation corpora of validation and test (see :class:`EvaluationSettings`)."""
        rows = [self._split_pairs("train")[:, 1]]
        rows += [self.corpus_rows(split) for split in ("validation", "test")]
        return np.unique(np.concatenate(rows).astype(np.int64))

    def fill_features(
        self,
        rows: np.ndarray | None = None,
        device: torch.device | str | None = None,
        autocast: Callable[[], AbstractContextManager[Any]] | None = None,
        progress: bool = True,
    ) -> list[FillReport]:
        """Fill the frozen-feature cache of every frozen image backbone the model reads,
        for ``rows`` (None: :meth:`feature_rows`), on ``device`` in batches of
        ``features.batch_size``, with ``batching.num_workers`` loader workers decoding; under DDP
        each rank computes a disjoint share (:func:`~lightning_mlsr.data.features.fill.
        fill_features`). ``device``/``autocast`` default to the Trainer's (its root device,
        its precision's forward context), else the CPU in float32.
        """
        trainer = self.trainer
        if device is None:
            device = trainer.strategy.root_device if trainer is not None else "cpu"
        if autocast is None:
            autocast = trainer.precision_plugin.forward_context if trainer else nullcontext
        rows = self.feature_rows() if rows is None else rows
        return [
            fill_features(
                self._feature_store(spec),
                rows,
                device=device,
                autocast=autocast,
                batch_size=self.features.batch_size,
                num_workers=self.batching.num_workers,
                progress=progress,
            )
            for spec in self.batch_inputs.frozen_features()
        ]

    def teardown(self, stage: str) -> None:
        """Write the frozen features computed lazily in this process (for the next run)
        and report the undecodable images met."""
        if self._collator is not None and self._collator.features is not None:
            self._collator.features.flush()
            self._collator.features.report_skipped()

    def setup(self, stage: str | None = None) -> None:
        """Build the batch collator if the batch inputs are known already (under a
        Trainer they arrive after this hook, from the model's ``setup``: then the collator
        is built when a loader first needs it)."""
        if self._collator is None and self._inputs is not None:
            self._build_collator()

    def _build_collator(self) -> Collator:
        """The collator of the batch inputs; with ``features.fill="upfront"``, first the
        image-feature cache is filled once per process, every DDP rank computing its share
        on its device (:meth:`fill_features`), so every rank builds it at the same point."""
        query, doc = self.batch_inputs.query, self.batch_inputs.doc
        if query.images:
            raise DataError("queries are texts: the query encoder must be a text head")
        if not query.text:
            raise DataError("the query encoder reads no text")
        if self.features.fill == "upfront" and not self._filled:
            self.fill_features()
            self._filled = True
        self._collator = Collator(
            self.collection,
            query,
            doc,
            query_max_length=self.batching.query_max_length,
            doc_max_length=self.batching.doc_max_length,
            features=self._feature_store(doc.features) if doc.features is not None else None,
            on_corrupt_image=self.reading.on_corrupt_image,
        )
        return self._collator

    @property
    def collator(self) -> Collator:
        return self._collator if self._collator is not None else self._build_collator()

    # ------------------------------------------------------------------ loaders
    def hard_negatives(self) -> HardNegatives | None:
        """The training queries' hard negatives (``negatives.file``), read once; every
        training query must have some."""
        if self.negatives.file is None:
            return None
        if self._negatives is None:
            negatives = HardNegatives.read(self.negatives.file, self.collection)
            negatives.check_covers(self._split_pairs("train")[:, 0], self.collection)
            self._negatives = negatives
        return self._negatives

    def _pair_loader(
        self,
        split: str,
        sampler: ResumableSampler | None = None,
        negatives: HardNegatives | None = None,
        seed: int = 0,
    ) -> DataLoader:
        """The split's pairs in batches: in ``sampler``'s order (training), else in order."""
        pairs = self._split_pairs(split)  # read before the collator is built
        return pair_loader(
            self.collator,
            pairs,
            self._relevant[split],
            batching=self.batching,
            negative_settings=self.negatives,
            sampler=sampler,
            negatives=negatives,
            seed=seed,
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled training pairs in a resumable order (see :mod:`lightning_mlsr.data.training.sampler`):
        after ``load_state_dict`` of a mid-epoch checkpoint, the epoch goes on with the
        batches that were still to come."""
        size, batch_size = len(self._split_pairs("train")), self.batching.batch_size
        sampler = self._train_order.sampler(size, batch_size, self.trainer)
        return self._pair_loader(
            "train", sampler, negatives=self.hard_negatives(), seed=sampler.seed
        )

    def state_dict(self) -> dict[str, Any]:
        """The training order's position, which Lightning saves in every checkpoint: its
        seed, the epoch, and how many of the epoch's batches were trained on."""
        return self._train_order.state_dict(self.trainer)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Resume the checkpoint's training order at the next :meth:`train_dataloader`."""
        self._train_order.load_state_dict(state_dict)

    def val_dataloader(self) -> DataLoader:
        return self._pair_loader("validation")

    def test_dataloader(self) -> DataLoader:
        return self._pair_loader("test")

    def corpus_rows(self, split: str | None = None) -> np.ndarray:
        """Image rows of the evaluation corpus of ``split`` (see :class:`EvaluationSettings`)."""
        e = self.evaluation
        return eval_corpus_rows(self.collection, split, e.corpus, e.distractors, e.seed)

    def corpus_dataloader(
        self, rank: int = 0, world_size: int = 1, split: str | None = None
    ) -> DataLoader:
        """This rank's contiguous shard of the evaluation corpus of ``split`` (``None``:
        every image). Image bytes are read in the loader's workers, batch by batch."""
        rows = self.corpus_rows(split)
        return SkipReportingLoader(
            IndexDataset(rows[shard_indices(len(rows), rank, world_size)]),
            batch_size=self.batching.eval_batch_size,
            num_workers=self.batching.num_workers,
            collate_fn=self.collator.doc_batch,
        )

    def query_rows(self, split: str) -> np.ndarray:
        """Text rows of the split's judged queries, sorted by text id."""
        return judged_query_rows(self.collection, split)

    def query_dataloader(self, split: str, rank: int = 0, world_size: int = 1) -> DataLoader:
        """This rank's shard of the split's judged queries."""
        rows = self.query_rows(split)
        return DataLoader(
            IndexDataset(rows[shard_indices(len(rows), rank, world_size)]),
            batch_size=self.batching.eval_batch_size,
            num_workers=self.batching.num_workers,
            collate_fn=self.collator.query_batch,
        )

    @property
    def predict_name(self) -> str:
        """What ``predict`` encodes, as export files name it: ``corpus``, ``queries_<split>``."""
        return "corpus" if self.predict == "corpus" else f"queries_{self.predict_split}"

    def predict_dataloader(self) -> DataLoader:
        if self.predict == "corpus":
            return self.corpus_dataloader()
        return self.query_dataloader(self.predict_split)
