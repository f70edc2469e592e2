"""What an encoder reads, in one form: :class:`Reads`.

Each encoder declares it (``Encoder.reads()``) and the data code takes it as is to make
that encoder's batches (``RetrievalDataModule.set_batch_inputs`` hands it to the
``Collator``): the tokenizer of its texts and its token limit, and its images as pixels
through a transform, or as the cached features of a frozen image backbone
(:class:`FeatureSpec`: their cache key and a factory for a private frozen copy that
computes them). Plain values and callables, no model: it sits below both ``models`` and
``data``, which never import each other.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["BatchInputs", "FeatureCompute", "FeatureSpec", "Reads"]

#: pooled features of preprocessed images. Shape: ``(B, 3, H, W)`` -> ``(B, D)``.
FeatureCompute = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class FeatureSpec:
    """A frozen image backbone as the feature cache sees it.

    Two specs with the same ``cache_key`` compute the same features, so they compare equal
    whatever their callables.

    Attributes:
        cache_key: names the features (weights and preprocessing); one cache folder per key.
        name: the backbone's name, for progress bars and logs.
        dim: ``D``, the width of a feature vector.
        pixel_shape: ``(3, H, W)``, what ``transform`` makes of an image.
        transform: PIL image -> ``(3, H, W)`` float tensor.
        compute_on: device -> a frozen copy of the backbone on it, in eval mode
            (:data:`FeatureCompute`); on the CPU the same copy every call.
    """

    cache_key: str
    name: str
    dim: int
    pixel_shape: tuple[int, int, int]
    transform: Callable[[Any], torch.Tensor] = field(compare=False)
    compute_on: Callable[[torch.device], FeatureCompute] = field(compare=False)


@dataclass(frozen=True)
class Reads:
    """What one encoder (a query or a document side) reads, so what its batches hold.

    Attributes:
        tokenizer: name of the text backbone whose tokenizer makes ``input_ids`` and
            ``attention_mask`` (None: the encoder reads no text).
        max_length: the most tokens the encoder accepts (None: no limit of its own); the
            collator cuts texts at the smaller of this and the DataModule's own limit.
        pixels: PIL image -> ``(3, H, W)`` ``pixel_values``, for an image backbone that is
            trained (None: no pixels).
        features: a frozen image backbone, whose features are precomputed, cached and
            passed as ``image_features`` (None: no cached features).
    """

    tokenizer: str | None = None
    max_length: int | None = None
    pixels: Callable[[Any], torch.Tensor] | None = None
    features: FeatureSpec | None = None

    def __post_init__(self) -> None:
        if self.pixels is not None and self.features is not None:
            raise ValueError(
                "an encoder reads images either as pixels or as cached features, not both"
            )
        if self.max_length is not None and self.tokenizer is None:
            raise ValueError("a token limit without a tokenizer: the encoder reads no text")

    @property
    def text(self) -> bool:
        """Whether the batches hold tokenized text."""
        return self.tokenizer is not None

    @property
    def images(self) -> bool:
        """Whether the batches hold images (pixels or cached features)."""
        return self.pixels is not None or self.features is not None

    @property
    def modalities(self) -> frozenset[str]:
        """The subset of ``{"text", "image"}`` read."""
        return frozenset(m for m, read in (("text", self.text), ("image", self.images)) if read)

    def __or__(self, other: Reads) -> Reads:
        """What two encoders of the same batches read together (late fusion): the first
        one's tokenizer that reads text, cut at the smaller of their limits, and the
        second's images (else the first's)."""
        text = self if self.text else other
        limits = [r.max_length for r in (self, other) if r.max_length is not None]
        images = other if other.images else self
        return Reads(
            tokenizer=text.tokenizer,
            max_length=min(limits, default=None),
            pixels=images.pixels,
            features=images.features,
        )


@dataclass(frozen=True)
class BatchInputs:
    """What the query and the document batches hold: each encoder's :class:`Reads`
    (``model.batch_inputs()``)."""

    query: Reads
    doc: Reads

    def frozen_features(self) -> list[FeatureSpec]:
        """The frozen image backbones whose features the batches read."""
        return [r.features for r in (self.query, self.doc) if r.features is not None]
