"""A training order that a mid-epoch checkpoint can resume.

Epoch ``e`` visits the training pairs in the order of torch's ``DistributedSampler`` with
``shuffle=True``: a permutation seeded with ``seed + e``, rows ``rank::world_size`` — the
same order Lightning would inject under DDP, and a pure function of (seed, epoch), so it
can be rebuilt after a restart. :meth:`ResumableSampler.state_dict` says where the order
stands (seed, epoch, batches seen, and the batch and world sizes it counts in), the
DataModule's ``state_dict`` hands it to Lightning, which stores it in every checkpoint, and
:meth:`ResumableSampler.resumed` rebuilds the order from it, skipping the batches already
trained on.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from typing import Any, cast

from torch.utils.data import DistributedSampler

from lightning_mlsr.data.training.batches import SkipReportingLoader

log = logging.getLogger("lightning_mlsr.data")

__all__ = ["ResumableDataLoader", "ResumableSampler"]


class ResumableSampler(DistributedSampler):
    """Seeded shuffled order per epoch, sharded across ranks, resumable mid-epoch.

    A ``DistributedSampler`` subclass, so Lightning neither replaces it under DDP nor
    forgets to call :meth:`set_epoch` at every epoch start.

    Args:
        size: number of training items (pairs).
        batch_size: items per batch on each rank (what "batches seen" counts in).
        seed: the order's seed (``seed_everything``'s value: the run's seed).
        num_replicas / rank: DDP world size and this process's rank.
        epoch: the epoch the first pass belongs to (the trainer's, when resuming).
    """

    def __init__(
        self,
        size: int,
        batch_size: int,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
        epoch: int = 0,
    ) -> None:
        super().__init__(
            cast(Any, range(size)), num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed
        )
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        self.epoch = epoch
        self._skip: tuple[int, int] | None = None  # (epoch, items to skip in it)

    @classmethod
    def resumed(
        cls,
        state: Mapping[str, Any] | None,
        size: int,
        batch_size: int,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
        epoch: int = 0,
    ) -> ResumableSampler:
        """The order of ``epoch``, continuing a checkpoint's (``state``, from
        :meth:`state_dict`; None: a fresh start with ``seed``).

        The checkpoint's seed is kept, and if it stopped inside ``epoch`` the batches it
        trained on are skipped. An order counted in another batch size or world size
        cannot be continued: then the epoch restarts in a new order, with a warning.
        """
        batches_seen = 0
        if state is not None:
            if (state["batch_size"], state["world_size"]) != (batch_size, num_replicas):
                log.warning(
                    "the checkpoint's training order used batch size %d on %d process(es), "
                    "this run uses %d on %d: epoch %d restarts in a new order",
                    state["batch_size"],
                    state["world_size"],
                    batch_size,
                    num_replicas,
                    epoch,
                )
            else:
                seed = state["seed"]
                batches_seen = state["batches_seen"] if state["epoch"] == epoch else 0
        sampler = cls(size, batch_size, seed, num_replicas, rank, epoch)
        sampler.resume(epoch, batches_seen)
        return sampler

    def state_dict(self, batches_seen: int) -> dict[str, Any]:
        """Where the order stands once ``batches_seen`` batches of the current epoch were
        trained on (what :meth:`resumed` continues)."""
        return {
            "seed": self.seed,
            "epoch": self.epoch,
            "batches_seen": int(batches_seen),
            "batch_size": self.batch_size,
            "world_size": self.num_replicas,
        }

    def resume(self, epoch: int, batches_seen: int) -> None:
        """Make passes over ``epoch`` start after its first ``batches_seen`` batches."""
        self.epoch = epoch
        self._skip = (epoch, batches_seen * self.batch_size) if batches_seen > 0 else None

    def set_epoch(self, epoch: int) -> None:
        if self._skip is not None and self._skip[0] != epoch:
            self._skip = None  # a new epoch starts from its first batch
        super().set_epoch(epoch)

    def __iter__(self) -> Iterator[int]:
        order = list(super().__iter__())  # this rank's rows of the (seed + epoch) permutation
        if self._skip is not None and self._skip[0] == self.epoch:
            order = order[self._skip[1] :]
        return iter(order)


class ResumableDataLoader(SkipReportingLoader):
    """A DataLoader over a :class:`ResumableSampler`, marked resumable for Lightning.

    Its position travels in the DataModule's ``state_dict`` (the sampler's, which positions
    the sampler before the loader is built), so the loader's own state is empty; having the two methods
    tells Lightning that a mid-epoch resume continues the epoch, instead of warning that it
    cannot.
    """

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        return None
