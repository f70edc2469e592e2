"""What the model's encoders read, stated to the data code as plain values.

The DataModule never holds a model: the model side builds a :class:`BatchInputs` (tokenizer
names, token limits, an image transform, and, for a frozen image backbone, a
:class:`FeatureSpec`: the cache key of its features and a factory for a private copy that
computes them) and hands it over once, with
:meth:`~lightning_mlsr.data.datamodule.RetrievalDataModule.set_batch_inputs`. open_clip
hands its ``preprocess`` to the data code the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from lightning_mlsr.io.encoder_reads import FeatureCompute, FeatureSpec

__all__ = ["BatchInputs", "FeatureCompute", "FeatureSpec", "SideInputs"]


@dataclass(frozen=True)
class SideInputs:
    """What one side's (query or document) batches must hold.

    Attributes:
        modalities: the subset of ``{"text", "image"}`` the encoder reads.
        tokenizer: name of the text backbone whose tokenizer makes ``input_ids`` (None
            without text).
        max_length: the most tokens the encoder accepts (None: no limit of its own); the
            DataModule truncates to the smaller of this and its own ``*_max_length``.
        image_transform: PIL image -> ``(3, H, W)`` ``pixel_values``, for an image backbone
            that is trained (None without images, or with ``frozen_features``).
        frozen_features: for a frozen image backbone: its features are precomputed,
            cached and passed as ``image_features``.
    """

    modalities: frozenset[str]
    tokenizer: str | None = None
    max_length: int | None = None
    image_transform: Callable[[Any], torch.Tensor] | None = None
    frozen_features: FeatureSpec | None = None

    def __post_init__(self) -> None:
        if "text" in self.modalities and self.tokenizer is None:
            raise ValueError("a side that reads text must name its tokenizer")
        if "image" in self.modalities and (self.image_transform is None) == (
            self.frozen_features is None
        ):
            raise ValueError(
                "a side that reads images needs exactly one of image_transform (pixels) "
                "and frozen_features (cached features)"
            )

    @property
    def reads_text(self) -> bool:
        return "text" in self.modalities

    @property
    def reads_images(self) -> bool:
        return "image" in self.modalities


@dataclass(frozen=True)
class BatchInputs:
    """What the query and the document batches must hold."""

    query: SideInputs
    doc: SideInputs

    def frozen_features(self) -> list[FeatureSpec]:
        """The frozen image backbones whose features the batches read."""
        return [s.frozen_features for s in (self.query, self.doc) if s.frozen_features]
