"""Computing frozen image features: a feature callable run over decoded images in batches.

:class:`FeatureComputer` decodes and preprocesses the images of a table (the spec's
``transform``) and runs the spec's feature callable on them, on the CPU, in the process
that asks; a fill on an accelerator takes the callable on its device from
:meth:`FeatureComputer.compute_on`. :class:`SkippedImages` collects the images that could
not be decoded, to report them once per pass.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np
import torch

from lightning_mlsr.data.errors import DataError, format_ids

if TYPE_CHECKING:
    from lightning_mlsr.data.collection.tables import ImageTable
    from lightning_mlsr.io.encoder_reads import FeatureCompute, FeatureSpec

log = logging.getLogger("lightning_mlsr.data")

__all__ = ["FeatureComputer", "SkippedImages"]


class FeatureComputer:
    """Features of table rows, computed by ``spec``'s callable, ``batch_size`` at a time.

    Args:
        spec: the frozen backbone's transform and feature callable.
        images: the image table; only ``load_image(row)`` is used.
        batch_size: images per forward pass.

    Attributes:
        compute: the feature callable on the CPU (built once, in the constructing process).
    """

    def __init__(self, spec: FeatureSpec, images: ImageTable, batch_size: int = 32) -> None:
        self.spec, self.images, self.batch_size = spec, images, batch_size
        self.compute = spec.compute_on(torch.device("cpu"))

    def compute_on(self, device: torch.device) -> FeatureCompute:
        """The feature callable on ``device`` (on the CPU: :attr:`compute` itself)."""
        return self.compute if device.type == "cpu" else self.spec.compute_on(device)

    def batches(self, rows: np.ndarray) -> Iterator[np.ndarray]:
        """``rows`` in chunks of ``batch_size``."""
        for begin in range(0, len(rows), self.batch_size):
            yield rows[begin : begin + self.batch_size]

    @torch.no_grad()
    def encode(self, rows: np.ndarray) -> tuple[np.ndarray, list[str | None]]:
        """Features of one batch of rows, and per row why it could not be decoded (None:
        decoded); undecodable images get zeros.

        Shape: ``(b,)`` -> ``(b, D)`` float32.
        """
        errors: list[str | None] = []
        pixels = []
        for row in rows.tolist():
            try:
                pixels.append(self.spec.transform(self.images.load_image(row)))
                errors.append(None)
            except DataError as err:
                errors.append(str(err))
        features = np.zeros((len(rows), self.spec.dim), dtype=np.float32)
        if pixels:
            decoded = np.array([e is None for e in errors])
            features[decoded] = self.compute(torch.stack(pixels)).float().numpy()  # (b', D)
        return features, errors


class SkippedImages:
    """Images that could not be decoded in this pass: id -> reason, reported once."""

    def __init__(self) -> None:
        self.reasons: dict[str, str] = {}

    def add(self, image_id: str, reason: str) -> None:
        self.reasons[image_id] = reason

    def report(self) -> int:
        """Log (once) the images met since the last report; returns their count."""
        count = len(self.reasons)
        if count:
            log.warning(
                "%d image(s) could not be decoded and got zero features: %s (first: %s). "
                "Fix or remove them, or load the collection with on_corrupt_image='error' to "
                "stop at the first one.",
                count,
                format_ids(self.reasons),
                next(iter(self.reasons.values())),
            )
        self.reasons = {}
        return count
