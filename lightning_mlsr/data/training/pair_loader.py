"""The DataLoader of a split's (query, relevant image) pairs, and the training order that a
checkpoint resumes.

:func:`pair_loader` batches a split's pairs: in a :class:`ResumableSampler`'s shuffled order
for training (full batches, with hard negatives), in order for validation and test.
:class:`TrainingOrder` is what the DataModule keeps of the training order between
checkpoints: the current epoch's sampler, whose position goes into every checkpoint, and the
position a checkpoint restored, applied at the next training loader.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, cast

import numpy as np
from torch.utils.data import DataLoader

from lightning_mlsr.data.settings import BatchingSettings, NegativeSettings
from lightning_mlsr.data.training.batches import Collator, IndexDataset, SkipReportingLoader
from lightning_mlsr.data.training.negatives import HardNegatives
from lightning_mlsr.data.training.pairs import RelevantPairs
from lightning_mlsr.data.training.sampler import ResumableDataLoader, ResumableSampler

if TYPE_CHECKING:
    from lightning import Trainer

__all__ = ["TrainingOrder", "pair_loader"]


def pair_loader(
    sides: Collator,
    pairs: np.ndarray,
    relevant: RelevantPairs,
    *,
    batching: BatchingSettings,
    negative_settings: NegativeSettings,
    sampler: ResumableSampler | None = None,
    negatives: HardNegatives | None = None,
    seed: int = 0,
) -> DataLoader:
    """``pairs`` ``(P, 2)`` in batches of ``batching.batch_size``, the query and document
    sides read as ``sides`` reads them: in ``sampler``'s order (training), else in order."""
    batch_size = batching.batch_size
    collator = sides.for_pairs(
        pairs,
        relevant,
        negatives=negatives,
        negatives_per_query=negative_settings.per_query,
        negative_depth=negative_settings.depth,
        seed=seed,
    )
    loader = SkipReportingLoader if sampler is None else ResumableDataLoader
    return loader(
        IndexDataset(range(len(pairs))),
        batch_size=batch_size,
        sampler=sampler,
        # training in full batches (fixed negatives), if this rank has one
        drop_last=sampler is not None and len(sampler) >= batch_size,
        num_workers=batching.num_workers,
        persistent_workers=batching.num_workers > 0,
        collate_fn=collator.pair_batch,
    )


class TrainingOrder:
    """The training order across checkpoints (see :mod:`lightning_mlsr.data.training.sampler`):
    after :meth:`load_state_dict` of a mid-epoch checkpoint, the next :meth:`sampler` goes on
    with the batches that were still to come."""

    def __init__(self) -> None:
        self._sampler: ResumableSampler | None = None
        self._resume: dict[str, Any] | None = None  # from a checkpoint, not yet applied

    def sampler(self, size: int, batch_size: int, trainer: Trainer | None) -> ResumableSampler:
        """A new epoch's sampler of ``size`` pairs on this rank, resumed where a loaded
        checkpoint stopped (once), seeded with the run's seed."""
        world, rank = (trainer.world_size, trainer.global_rank) if trainer else (1, 0)
        epoch = cast(Any, trainer.fit_loop.epoch_progress.current).processed if trainer else 0
        resume, self._resume = self._resume, None
        sampler = ResumableSampler.resumed(
            resume,
            size,
            batch_size,
            seed=int(os.environ.get("PL_GLOBAL_SEED", 0)),  # what seed_everything set
            num_replicas=world,
            rank=rank,
            epoch=epoch,
        )
        self._sampler = sampler
        return sampler

    def state_dict(self, trainer: Trainer | None) -> dict[str, Any]:
        """The order's position, which Lightning saves in every checkpoint: its seed, the
        epoch, and how many of the epoch's batches were trained on."""
        sampler = self._sampler
        if sampler is None or trainer is None:
            return {}
        # Lightning's count of this epoch's batches whose training step ran: right for
        # checkpoints at batch end, at validation, and on an exception (SIGTERM)
        seen = cast(Any, trainer.fit_loop.epoch_loop.batch_progress.current).processed
        return {"train_order": sampler.state_dict(seen)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Resume the checkpoint's order at the next :meth:`sampler`."""
        self._resume = state_dict.get("train_order")
