"""LightningDataModule over an image-suggestion collection.

Training batches are (query text, relevant image with its caption) pairs from the train
qrels. Validation/test batches are the same pairs of that split (for a held-out loss);
retrieval evaluation over the whole corpus uses :meth:`RetrievalDataModule.corpus_dataloader`
and :meth:`RetrievalDataModule.query_dataloader`, driven by the retrieval callback.

What a batch holds is decided by the model's encoders, and the DataModule receives it as
plain values, by one route: a :class:`~lightning_mlsr.data.inputs.BatchInputs` (per side:
modalities, tokenizer name, max length, an image transform, or for a frozen image backbone
the cache key of its features and a factory for a copy that computes them) handed to
:meth:`RetrievalDataModule.set_batch_inputs` — by ``SparseBiEncoder.setup`` under a
Trainer, or by hand (``datamodule.set_batch_inputs(model.batch_inputs())``). So the same
YAML ``data:`` block serves caption-only, image-only and image+caption models, and image
features are only computed when an image encoder needs them.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, Literal, cast

import lightning as L
import numpy as np
import pyarrow.compute as pc
import torch
from torch.utils.data import DataLoader, Sampler

from lightning_mlsr.data.collection import Collection, load_collection
from lightning_mlsr.data.errors import DataError
from lightning_mlsr.data.features.fill import FillReport, fill_features
from lightning_mlsr.data.features.store import FeatureStore
from lightning_mlsr.data.inputs import BatchInputs, FeatureSpec, SideInputs
from lightning_mlsr.data.training.batches import (
    Batch,
    Collator,
    IndexDataset,
    SideSpec,
    SkipReportingLoader,
)
from lightning_mlsr.data.training.corpus import EvalCorpus, eval_corpus_rows, shard_indices
from lightning_mlsr.data.training.negatives import HardNegatives
from lightning_mlsr.data.training.pairs import RelevantPairs
from lightning_mlsr.data.training.sampler import ResumableDataLoader, ResumableSampler
from lightning_mlsr.io.pretrained import load_tokenizer

log = logging.getLogger("lightning_mlsr.data")

__all__ = [
    "Batch",
    "RetrievalDataModule",
    "SkipReportingLoader",
    "shard_indices",
]


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
        feature_batch_size: images per batch when filling the feature cache (on an
            accelerator, with ``feature_fill="upfront"`` or ``python -m lightning_mlsr
            features``, hundreds: e.g. 512).
        feature_fill: ``"lazy"`` computes frozen features when a batch first needs them
            (a short run encodes only the images it reads), on the CPU; ``"upfront"``
            fills the cache for every image the run needs before the first batch is built,
            on the Trainer's devices, each DDP rank a disjoint share, with a progress bar (resumable; worth
            it for large collections).
        on_corrupt_image / on_missing_caption: see :func:`load_collection`; a corrupt
            image met while reading pixels is skipped and reported once per pass, or
            raises with ``on_corrupt_image="error"``.
        eval_corpus: the images ranked in evaluation: ``all``, ``judged`` (the images
            judged in the split, AToMiC's "small" setting) or ``judged+sampled`` (those
            plus ``eval_distractors`` others drawn with ``eval_seed``).
        predict_target: what ``predict`` encodes: ``corpus`` or ``queries:<split>``.
        hard_negatives: a TSV of each training query's ranked negative images (mined by a
            teacher: :mod:`lightning_mlsr.data.training.negatives`); each training batch then holds,
            after its ``B`` positives, ``negatives_per_query`` of them per pair, drawn from
            the first ``negative_depth`` (None: all) of the query's list. None: in-batch
            negatives only.

    What the batches hold comes separately, from the model: :meth:`set_batch_inputs`.
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
        eval_corpus: EvalCorpus = "all",
        eval_distractors: int = 0,
        eval_seed: int = 0,
        hard_negatives: str | None = None,
        negatives_per_query: int = 1,
        negative_depth: int | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if batch_size < 2:
            raise ValueError(f"batch_size must be >= 2 for in-batch negatives, got {batch_size}")
        if eval_corpus not in ("all", "judged", "judged+sampled"):
            raise ValueError(
                f"eval_corpus must be 'all', 'judged' or 'judged+sampled', got {eval_corpus!r}"
            )
        if eval_distractors < 0:
            raise ValueError(f"eval_distractors must be >= 0, got {eval_distractors}")
        if negatives_per_query < 1 or (negative_depth is not None and negative_depth < 1):
            raise ValueError(
                "negatives_per_query and negative_depth must be >= 1, got "
                f"{negatives_per_query} and {negative_depth}"
            )
        if feature_fill not in ("lazy", "upfront"):
            raise ValueError(f"feature_fill must be 'lazy' or 'upfront', got {feature_fill!r}")
        self._collection: Collection | None = None
        self._collator: Collator | None = None
        self._pairs: dict[str, np.ndarray] = {}
        self._relevant: dict[str, RelevantPairs] = {}
        self._inputs: BatchInputs | None = None
        self._train_sampler: ResumableSampler | None = None
        self._train_order: dict[str, Any] | None = None  # from a checkpoint, not yet applied
        self._negatives: HardNegatives | None = None
        self._filled = False  # feature_fill="upfront" done in this process

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
        """(text row, image row) for every positive judgment of a split, sorted by
        (text id, image id); computed in Arrow/numpy, no Python object per judgment."""
        if split not in self._pairs:
            self.qrels(split)  # a clear error for an unknown split
            c = self.collection
            table = c.qrels_table.table(split)
            table = table.filter(pc.greater(table["rel"], 0)).sort_by(
                [("text_id", "ascending"), ("image_id", "ascending")]
            )
            t = c.texts.ids.positions(table["text_id"])
            im = c.images.ids.positions(table["image_id"])
            unretrievable = int((im < 0).sum())  # e.g. a skipped corrupt image
            if unretrievable:
                log.warning(
                    "%s: %d judged pairs point at images that were skipped; they are left out "
                    "of the %s pairs (they still count as relevant in retrieval metrics)",
                    c.name,
                    unretrievable,
                    split,
                )
            pairs = np.stack([t[im >= 0], im[im >= 0]], axis=1)  # (P, 2)
            if not len(pairs):
                raise DataError(f"split {split!r} of {c.name!r} has no positive pairs")
            self._pairs[split] = pairs
            self._relevant[split] = RelevantPairs(pairs[:, 0], pairs[:, 1], len(c.images))
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

    def _side(self, inputs: SideInputs, max_length: int) -> SideSpec:
        if inputs.max_length is not None:
            max_length = min(max_length, inputs.max_length)
        side = SideSpec(text=inputs.reads_text, image=inputs.reads_images, max_length=max_length)
        if inputs.tokenizer is not None and inputs.reads_text:
            side.tokenizer = load_tokenizer(inputs.tokenizer)
        if inputs.reads_images:
            if inputs.frozen_features is not None:
                side.features = self._feature_store(inputs.frozen_features)
            else:
                side.transform = inputs.image_transform
        return side

    def _feature_store(self, spec: FeatureSpec) -> FeatureStore:
        """The frozen-feature store of ``spec`` over this collection's images
        (fails at once, before computing anything, if the cache is not writable)."""
        return FeatureStore(
            spec,
            self.collection.images,
            cache_dir=self._hp.feature_cache_dir,
            batch_size=self._hp.feature_batch_size,
            on_corrupt_image=self._hp.on_corrupt_image,
        )

    def feature_rows(self) -> np.ndarray:
        """Image rows whose frozen features a run needs: the train pairs' images and the
        evaluation corpora of validation and test (see ``eval_corpus``)."""
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
        ``feature_batch_size``, with ``num_workers`` loader workers decoding; under DDP
        each rank computes a disjoint share (:func:`~lightning_mlsr.data.features.fill.
        fill_features`). ``device``/``autocast`` default to the Trainer's (its root device,
        its precision's forward context), else the CPU in float32.
        """
        trainer = self.trainer
        if device is None:
            device = trainer.strategy.root_device if trainer is not None else "cpu"
        if autocast is None:
            autocast = (
                trainer.precision_plugin.forward_context
                if trainer is not None
                else contextlib.nullcontext
            )
        rows = self.feature_rows() if rows is None else rows
        reports = []
        for spec in self.batch_inputs.frozen_features():
            reports.append(
                fill_features(
                    self._feature_store(spec),
                    rows,
                    device=device,
                    autocast=autocast,
                    batch_size=self._hp.feature_batch_size,
                    num_workers=self._hp.num_workers,
                    progress=progress,
                )
            )
        return reports

    def teardown(self, stage: str) -> None:
        """Write the frozen features computed lazily in this process (for the next run)
        and report the undecodable images met."""
        if self._collator is not None and self._collator.doc.features is not None:
            self._collator.doc.features.flush()
            self._collator.doc.features.report_skipped()

    def setup(self, stage: str | None = None) -> None:
        """Build the batch collator if the batch inputs are known already (under a
        Trainer they arrive after this hook, from the model's ``setup``: then the collator
        is built when a loader first needs it)."""
        if self._collator is None and self._inputs is not None:
            self._build_collator()

    def _build_collator(self) -> Collator:
        """The collator of the batch inputs; with ``feature_fill="upfront"``, first the
        image-feature cache is filled once per process, every DDP rank computing its share
        on its device (:meth:`fill_features`), so every rank builds it at the same point."""
        query, doc = self.batch_inputs.query, self.batch_inputs.doc
        if "image" in query.modalities:
            raise DataError("queries are texts: the query encoder must be a text head")
        if "text" not in query.modalities:
            raise DataError("the query encoder reads no text")
        if self._hp.feature_fill == "upfront" and not self._filled:
            self.fill_features()
            self._filled = True
        self._collator = Collator(
            self.collection,
            query=self._side(query, self._hp.query_max_length),
            doc=self._side(doc, self._hp.doc_max_length),
            on_corrupt_image=self._hp.on_corrupt_image,
        )
        return self._collator

    @property
    def collator(self) -> Collator:
        return self._collator if self._collator is not None else self._build_collator()

    # ------------------------------------------------------------------ loaders
    def hard_negatives(self) -> HardNegatives | None:
        """The training queries' hard negatives (``hard_negatives``), read once; every
        training query must have some."""
        if self._hp.hard_negatives is None:
            return None
        if self._negatives is None:
            negatives = HardNegatives.read(self._hp.hard_negatives, self.collection)
            negatives.check_covers(self._split_pairs("train")[:, 0], self.collection)
            self._negatives = negatives
        return self._negatives

    def _pair_loader(
        self,
        split: str,
        shuffle: bool,
        batch_size: int,
        sampler: Sampler | None = None,
        negatives: HardNegatives | None = None,
        seed: int = 0,
    ) -> DataLoader:
        pairs = self._split_pairs(split)
        n_items = len(pairs) if sampler is None else len(cast(Any, sampler))  # on this rank
        collator = Collator(
            self.collection,
            self.collator.query,
            self.collator.doc,
            pairs=pairs,
            relevant=self._relevant[split],
            on_corrupt_image=self._hp.on_corrupt_image,
            negatives=negatives,
            negatives_per_query=self._hp.negatives_per_query,
            negative_depth=self._hp.negative_depth,
            seed=seed,
        )
        loader = SkipReportingLoader if sampler is None else ResumableDataLoader
        return loader(
            IndexDataset(range(len(pairs))),
            batch_size=batch_size,
            shuffle=shuffle and sampler is None,
            sampler=sampler,
            drop_last=shuffle and n_items >= batch_size,  # full batches: fixed negatives
            num_workers=self._hp.num_workers,
            persistent_workers=self._hp.num_workers > 0,
            collate_fn=collator.pair_batch,
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled training pairs in a resumable order (see :mod:`lightning_mlsr.data.training.sampler`):
        after ``load_state_dict`` of a mid-epoch checkpoint, the epoch goes on with the
        batches that were still to come."""
        trainer = self.trainer
        world, rank = (trainer.world_size, trainer.global_rank) if trainer else (1, 0)
        epoch = cast(Any, trainer.fit_loop.epoch_progress.current).processed if trainer else 0
        resume, self._train_order = self._train_order, None
        seed = int(os.environ.get("PL_GLOBAL_SEED", 0))  # what seed_everything set
        batches_seen = 0
        if resume is not None:
            same = (resume["batch_size"], resume["world_size"]) == (self._hp.batch_size, world)
            if not same:
                log.warning(
                    "the checkpoint's training order used batch size %d on %d process(es), "
                    "this run uses %d on %d: epoch %d restarts in a new order",
                    resume["batch_size"],
                    resume["world_size"],
                    self._hp.batch_size,
                    world,
                    epoch,
                )
            else:
                seed = resume["seed"]
                batches_seen = resume["batches_seen"] if resume["epoch"] == epoch else 0
        pairs = self._split_pairs("train")
        sampler = ResumableSampler(len(pairs), self._hp.batch_size, seed, world, rank, epoch)
        sampler.resume(epoch, batches_seen)
        self._train_sampler = sampler
        return self._pair_loader(
            "train",
            True,
            self._hp.batch_size,
            sampler=sampler,
            negatives=self.hard_negatives(),
            seed=sampler.seed,
        )

    def state_dict(self) -> dict[str, Any]:
        """The training order's position, which Lightning saves in every checkpoint: its
        seed, the epoch, and how many of the epoch's batches were trained on."""
        sampler, trainer = self._train_sampler, self.trainer
        if sampler is None or trainer is None:
            return {}
        # Lightning's count of this epoch's batches whose training step ran: right for
        # checkpoints at batch end, at validation, and on an exception (SIGTERM)
        seen = cast(Any, trainer.fit_loop.epoch_loop.batch_progress.current).processed
        order = {
            "seed": sampler.seed,
            "epoch": sampler.epoch,
            "batches_seen": int(seen),
            "batch_size": sampler.batch_size,
            "world_size": sampler.num_replicas,
        }
        return {"train_order": order}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Resume the checkpoint's training order at the next :meth:`train_dataloader`."""
        self._train_order = state_dict.get("train_order")

    def val_dataloader(self) -> DataLoader:
        return self._pair_loader("validation", shuffle=False, batch_size=self._hp.batch_size)

    def test_dataloader(self) -> DataLoader:
        return self._pair_loader("test", shuffle=False, batch_size=self._hp.batch_size)

    def corpus_rows(self, split: str | None = None) -> np.ndarray:
        """Image rows of the evaluation corpus of ``split`` (see ``eval_corpus``)."""
        hp = self._hp
        return eval_corpus_rows(
            self.collection, split, hp.eval_corpus, hp.eval_distractors, hp.eval_seed
        )

    def corpus_dataloader(
        self, rank: int = 0, world_size: int = 1, split: str | None = None
    ) -> DataLoader:
        """This rank's contiguous shard of the evaluation corpus of ``split`` (``None``:
        every image). Image bytes are read in the loader's workers, batch by batch."""
        rows = self.corpus_rows(split)
        return SkipReportingLoader(
            IndexDataset(rows[shard_indices(len(rows), rank, world_size)]),
            batch_size=self._hp.eval_batch_size,
            num_workers=self._hp.num_workers,
            collate_fn=self.collator.doc_batch,
        )

    def query_rows(self, split: str) -> np.ndarray:
        """Text rows of the split's judged queries, sorted by text id."""
        self.qrels(split)
        ids = pc.unique(self.collection.qrels_table.table(split)["text_id"]).sort()
        return self.collection.texts.ids.positions(ids)

    def query_dataloader(self, split: str, rank: int = 0, world_size: int = 1) -> DataLoader:
        """This rank's shard of the split's judged queries."""
        rows = self.query_rows(split)
        return DataLoader(
            IndexDataset(rows[shard_indices(len(rows), rank, world_size)]),
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
