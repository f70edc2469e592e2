"""Fill the frozen-feature store on an accelerator, each DDP rank computing its own share.

:class:`~lightning_mlsr.data.features.store.FeatureStore` computes features lazily, on the CPU,
in whichever process asks. For a large collection that leaves the GPUs idle while CPU
workers run the backbone. :func:`fill_features` is the fill driver for that case:

- rank 0 lists the rows whose features are missing (one lookup by content key) and sends
  the list to every rank as a bit mask; each rank takes a contiguous, disjoint block of it
  (:func:`~lightning_mlsr.data.evaluation_corpus.shard_indices`), so the ranks' blocks cover the
  missing rows exactly once;
- DataLoader workers only read and decode images (:class:`DecodedImages`); the rank's own
  process runs the feature callable (the store's
  :meth:`~lightning_mlsr.data.features.computer.FeatureComputer.compute_on`) on its device
  in large batches, under the precision context
  the caller passes (a Trainer's or Fabric's autocast: the driver owns precision, not the
  model), and writes whole shards into the same store — which is resumable and safe for
  concurrent writers already;
- a batch whose features come out non-finite under reduced precision is recomputed in
  float32 (a backbone that does not allow bf16/fp16 still gets valid features).

Without ``torch.distributed`` initialised it is a single-process fill on ``device``.
The DDP launch comes from the caller: ``python -m lightning_mlsr features`` (Fabric,
from the ``trainer:`` config) or a fit with ``data.features.fill=upfront`` (the Trainer's
processes, in the DataModule's ``setup``). Every rank must see the same cache folder (a
filesystem shared by all nodes when ``num_nodes > 1``); a rank that still sees missing
features after the fill says so.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from lightning_mlsr.data.errors import DataError
from lightning_mlsr.data.evaluation_corpus import shard_indices
from lightning_mlsr.data.features import shards as feature_shards
from lightning_mlsr.data.features.shards import FeatureCacheError

if TYPE_CHECKING:
    from lightning_mlsr.data.collection import ImageTable
    from lightning_mlsr.data.features.store import FeatureStore
    from lightning_mlsr.io.encoder_reads import FeatureCompute

log = logging.getLogger("lightning_mlsr.data")

__all__ = ["DecodedImages", "FillReport", "fill_features"]


@dataclass(frozen=True)
class FillReport:
    """What one rank's fill did.

    Attributes:
        rank / world_size: this process among the fill's processes.
        missing: rows missing before the fill, over all ranks.
        encoded: images this rank encoded (its share, undecodable ones included).
        seconds: wall time of this rank's encoding loop.
        rows: the rows this rank encoded. Shape: ``(encoded,)`` int64.
    """

    rank: int
    world_size: int
    missing: int
    encoded: int
    seconds: float
    rows: np.ndarray

    @property
    def images_per_second(self) -> float:
        return self.encoded / max(self.seconds, 1e-9)


class DecodedImages(Dataset):
    """``(row, pixels, error)`` for the given rows of an image table: what a DataLoader
    worker does in a fill (read the bytes, decode, preprocess), nothing more.

    ``pixels`` is None and ``error`` says why when an image cannot be decoded.
    """

    def __init__(
        self,
        images: ImageTable,
        rows: np.ndarray,
        transform: Callable[[Any], torch.Tensor],
        image_size: tuple[int, int, int],
    ) -> None:
        self.images, self.rows, self.transform = images, rows, transform
        self.image_size = image_size

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor | None, str | None]:
        row = int(self.rows[i])
        try:
            return row, self.transform(self.images.load_image(row)), None
        except DataError as err:
            return row, None, str(err)

    def collate(
        self, items: Sequence[tuple[int, torch.Tensor | None, str | None]]
    ) -> tuple[torch.Tensor, torch.Tensor, list[str | None]]:
        """rows ``(B,)``, pixels ``(B, 3, H, W)`` (zeros where undecodable), errors."""
        rows = torch.tensor([row for row, _, _ in items], dtype=torch.int64)
        pixels = torch.zeros((len(items), *self.image_size))
        for j, (_, image, _) in enumerate(items):
            if image is not None:
                pixels[j] = image
        return rows, pixels, [error for _, _, error in items]


def fill_features(
    store: FeatureStore,
    rows: Sequence[int] | np.ndarray | None = None,
    device: torch.device | str = "cpu",
    autocast: Callable[[], AbstractContextManager[Any]] = contextlib.nullcontext,
    batch_size: int = 256,
    num_workers: int = 0,
    progress: bool = True,
) -> FillReport:
    """Compute the missing features of ``rows`` (None: every image) of ``store`` on
    ``device``; under ``torch.distributed`` every rank calls it and computes a disjoint
    share (see the module docstring). Returns this rank's :class:`FillReport`.

    Args:
        store: the store to fill (each rank opens its own on the same folder).
        rows: image rows of ``store.images``.
        device: where this rank runs the feature callable.
        autocast: a context manager factory for the forward pass (e.g.
            ``fabric.autocast`` or ``trainer.precision_plugin.forward_context``).
        batch_size: images per forward pass.
        num_workers: DataLoader workers reading and decoding images.
        progress: a progress bar on rank 0 (images/second of rank 0's share).
    """
    device = torch.device(device)
    rank, world = (dist.get_rank(), dist.get_world_size()) if _distributed() else (0, 1)
    all_rows = None if rows is None else np.asarray(rows, dtype=np.int64)
    mask, problem = None, None
    if rank == 0:
        mask = np.zeros(len(store.images), dtype=bool)
        mask[store.missing(all_rows)] = True
        try:  # fail now if the features cannot fit, not after hours of work
            feature_shards.check_space(store.root, int(mask.sum()), store.dim)
        except FeatureCacheError as err:
            problem = str(err)
    mask, problem = _broadcast((mask, problem), len(store.images), device)
    if problem is not None:  # every rank stops, none waits for the others
        raise FeatureCacheError(problem)
    missing = np.flatnonzero(mask).astype(np.int64)
    share = missing[shard_indices(len(missing), rank, world)]
    if rank != 0:
        share = store.missing(share)  # its content keys, for store.add
    spec = store.spec
    data = DecodedImages(store.images, share, spec.transform, spec.pixel_shape)
    loader = DataLoader(
        data,
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=data.collate,
        pin_memory=device.type == "cuda",
    )
    compute = store.computer.compute_on(device)
    bar = tqdm(
        total=len(share),
        desc=f"image features ({spec.name}, {world} rank(s))",
        unit="img",
        disable=not progress or rank != 0,
    )
    start = time.perf_counter()
    done = 0
    pending: tuple[torch.Tensor, torch.Tensor, list[str | None]] | None = None
    try:
        for rows_b, pixels, errors in loader:
            features = _forward(compute, pixels.to(device, non_blocking=True), autocast)
            if pending is not None:  # the previous batch leaves the device while this runs
                done += _store(store, pending, len(share) - done)
                bar.update(len(pending[0]))
            pending = (rows_b, features, errors)
        if pending is not None:
            done += _store(store, pending, 0)
            bar.update(len(pending[0]))
    finally:
        bar.close()
        store.flush()
    seconds = time.perf_counter() - start
    store.report_skipped()
    report = FillReport(rank, world, len(missing), len(share), seconds, share)
    log.info(
        "rank %d/%d: %s features of %d of %d missing images in %.1f s (%.1f images/s) into %s",
        rank,
        world,
        spec.name,
        report.encoded,
        report.missing,
        seconds,
        report.images_per_second,
        store.root,
    )
    if _distributed():
        dist.barrier()
        left = store.missing(all_rows)
        if len(left):
            log.warning(
                "rank %d still sees %d of %d image features missing from %s after the fill: "
                "the ranks do not share this folder (e.g. a node-local disk). Put the cache "
                "on a filesystem every node sees (LIGHTNING_MLSR_CACHE or "
                "data.features.cache_dir); the missing features are computed lazily otherwise.",
                rank,
                len(left),
                len(missing),
                store.root,
            )
    return report


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _broadcast(
    sent: tuple[np.ndarray | None, str | None], n: int, device: torch.device
) -> tuple[np.ndarray, str | None]:
    """Rank 0's ``(boolean mask of n rows, error or None)`` on every rank (the mask sent
    packed: n/8 bytes)."""
    mask, problem = sent
    if not _distributed():
        assert mask is not None
        return mask, problem
    packed: list[Any] = [None if mask is None else (np.packbits(mask), problem)]
    dist.broadcast_object_list(packed, src=0, device=device if device.type == "cuda" else None)
    bits, problem = packed[0]
    return np.unpackbits(np.asarray(bits, dtype=np.uint8), count=n).astype(bool), problem


@torch.no_grad()
def _forward(
    compute: FeatureCompute,
    pixels: torch.Tensor,
    autocast: Callable[[], AbstractContextManager[Any]],
) -> torch.Tensor:
    """Pooled float32 features; recomputed in float32 if reduced precision overflowed.

    Shape: ``(B, 3, H, W)`` -> ``(B, D)``.
    """
    with autocast():
        features = compute(pixels).float()  # (B, D)
    if not bool(torch.isfinite(features).all()):
        with torch.autocast(pixels.device.type, enabled=False):
            features = compute(pixels.float()).float()
    return features


def _store(
    store: FeatureStore,
    batch: tuple[torch.Tensor, torch.Tensor, list[str | None]],
    rows_to_come: int,
) -> int:
    rows, features, errors = batch
    n = len(rows)
    store.add(rows.numpy(), features.cpu().numpy(), errors, max(rows_to_come - n, 0))
    return n
