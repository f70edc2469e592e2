"""The encoder types: :class:`Encoder`, and its two kinds :class:`SparseEncoder` and
:class:`DenseEncoder`.

A :class:`SparseEncoder` maps a batch dict to ``(B, V)`` non-negative term weights over
the text vocabulary, so query and document encoders are interchangeable in YAML; a
:class:`DenseEncoder` maps it to ``(B, D)`` embeddings (the dense baselines). Encoders are
plain ``torch``: they never call ``autocast`` or move tensors between devices (the Trainer
owns precision and placement), and they import nothing from Lightning.

Batch keys an encoder may read, as its :meth:`Encoder.reads` declares:

- ``input_ids`` ``(B, L)`` long and ``attention_mask`` ``(B, L)`` long/bool — text;
- ``image_features`` ``(B, D)`` float — pooled features of a *frozen* image backbone,
  precomputed (and usually cached) by the DataModule;
- ``pixel_values`` ``(B, 3, H, W)`` float — used when ``image_features`` is absent.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from lightning_mlsr.io.encoder_reads import Reads
from lightning_mlsr.io.pretrained import DEFAULT_TEXT_BACKBONE, load_tokenizer
from lightning_mlsr.models.image_backbone import ImageBackbone

__all__ = ["DenseEncoder", "Encoder", "MissingInputError", "SparseEncoder"]


class MissingInputError(KeyError):
    """A head was given a batch without a key it needs."""

    def __str__(self) -> str:  # KeyError would print the message inside quotes
        return str(self.args[0]) if self.args else ""


class Encoder(nn.Module):
    """Base class of every encoder: a batch dict -> one vector per example.

    The two kinds are :class:`SparseEncoder` (``(B, V)`` non-negative term weights, searched
    with the inverted index) and :class:`DenseEncoder` (``(B, D)`` embeddings, searched
    exactly); code that treats them differently dispatches with ``isinstance``.

    What an encoder reads (its tokenizer and token limit, its images as pixels or cached
    features) it says in one place, :meth:`reads`.

    Attributes:
        text_backbone_name: name of the text backbone (its tokenizer, its vocabulary), or
            None when there is none.
        text_model: the transformer used for text (or None); share one between encoders
            with :func:`~lightning_mlsr.models.tie_text_backbones`.
    """

    text_backbone_name: str | None = None

    @property
    def text_model(self) -> nn.Module | None:
        """The text transformer, or None for encoders without one."""
        return None

    def reads(self) -> Reads:
        """What this encoder reads, so what its batches must hold: the tokenizer of its
        texts and its token limit, its images as pixels or as a frozen backbone's cached
        features. Every head declares it here; the data code takes it as is
        (``RetrievalDataModule.set_batch_inputs(model.batch_inputs())``)."""
        raise NotImplementedError(f"{type(self).__name__} does not say what it reads (reads())")

    def _text_reads(self, reserved: int = 0) -> Reads:
        """Texts by the text backbone's tokenizer, at most as many tokens as its
        transformer has positions (less ``reserved`` of them; no limit when it states
        none)."""
        if self.text_backbone_name is None:
            raise RuntimeError(f"{type(self).__name__} reads text but names no text backbone")
        config: Any = getattr(self.text_model, "config", None)
        limit = getattr(config, "max_position_embeddings", None)
        return Reads(
            tokenizer=self.text_backbone_name,
            max_length=None if limit is None else int(limit) - reserved,
        )

    @property
    def width(self) -> int:
        """The length of the vectors this encoder returns: ``V`` (sparse) or ``D`` (dense)."""
        raise NotImplementedError

    def forward(self, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """One vector per example. Shape: ``(B, V)`` or ``(B, D)``."""
        raise NotImplementedError

    def new_parameters(self) -> list[nn.Parameter]:
        """Parameters of layers created from scratch (projections, term scorers).

        They form the ``new`` optimizer parameter group (a higher learning rate, as in the
        multimodal LSR reference); every other trainable parameter is pretrained.
        """
        return []

    # ------------------------------------------------------------------ helpers

    def _require(self, inputs: Mapping[str, torch.Tensor], key: str) -> torch.Tensor:
        if key not in inputs:
            raise MissingInputError(
                f"{type(self).__name__} needs the batch key {key!r}, but the batch has "
                f"{sorted(inputs)}; check that the batches hold what its reads() declares."
            )
        return inputs[key]

    def _image_features(
        self, inputs: Mapping[str, torch.Tensor], backbone: ImageBackbone | None, dtype: torch.dtype
    ) -> torch.Tensor:
        """Precomputed ``image_features`` if given, else the backbone on ``pixel_values``.

        Shape: ``(B, D)``.
        """
        if "image_features" in inputs:
            features = inputs["image_features"]
        elif "pixel_values" in inputs:
            if backbone is None:
                raise MissingInputError(
                    f"{type(self).__name__} has no image backbone to run on 'pixel_values'; "
                    "pass precomputed 'image_features' instead."
                )
            if backbone.frozen:
                with torch.no_grad():
                    features = backbone(inputs["pixel_values"])  # (B, D)
            else:
                features = backbone(inputs["pixel_values"])  # (B, D)
        else:
            raise MissingInputError(
                f"{type(self).__name__} needs 'image_features' or 'pixel_values' in the batch, "
                f"but the batch has {sorted(inputs)}."
            )
        if backbone is not None and features.shape[-1] != backbone.num_features:
            raise ValueError(
                f"{type(self).__name__}: image features have dimension {features.shape[-1]}, but "
                f"the image backbone {backbone.cache_key!r} produces {backbone.num_features}; "
                "the feature cache was probably built with another backbone — rebuild it."
            )
        return features.to(dtype)  # cached features may be stored in another precision


class SparseEncoder(Encoder):
    """A batch dict -> ``(B, V)`` non-negative term weights over a text vocabulary.

    Attributes:
        vocab_size: ``V``.
        special_token_ids: buffer of the tokenizer's special ids, masked out of the output.

    Shape:
        ``forward(inputs)`` -> ``(B, V)``.
    """

    vocab_size: int
    special_token_ids: torch.Tensor

    def __init__(self, vocab_size: int, special_token_ids: Iterable[int]) -> None:
        super().__init__()
        self.vocab_size = int(vocab_size)
        ids = sorted({int(i) for i in special_token_ids})
        self.register_buffer("special_token_ids", torch.tensor(ids, dtype=torch.long))

    @property
    def width(self) -> int:
        """``V``."""
        return self.vocab_size

    @property
    def vocab_backbone_name(self) -> str | None:
        """The text backbone whose vocabulary the output dimensions are (None: unknown)."""
        return self.text_backbone_name

    def term_vocabulary(self) -> list[str]:
        """Output dimension -> wordpiece (the default backbone's when none is named)."""
        tokenizer = load_tokenizer(self.vocab_backbone_name or DEFAULT_TEXT_BACKBONE)
        return tokenizer.convert_ids_to_tokens(list(range(self.vocab_size)))

    def forward(self, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Term weights. Shape: ``(B, V)``, non-negative."""
        raise NotImplementedError

    def _mask_special_terms(self, weights: torch.Tensor) -> torch.Tensor:
        """Zero the vocabulary columns of special tokens. Shape: ``(B, V)`` -> ``(B, V)``."""
        return weights.index_fill(1, self.special_token_ids, 0.0)

    def _token_mask(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """True for real, non-special tokens. Shape: ``(B, L)`` -> ``(B, L)`` bool."""
        return attention_mask.bool() & ~torch.isin(input_ids, self.special_token_ids)


class DenseEncoder(Encoder):
    """A batch dict -> ``(B, D)`` real-valued embeddings (the dense baselines).

    Attributes:
        dim: ``D``, the embedding size.

    Shape:
        ``forward(inputs)`` -> ``(B, D)``.
    """

    dim: int

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = int(dim)

    @property
    def width(self) -> int:
        """``D``."""
        return self.dim

    def forward(self, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Embeddings. Shape: ``(B, D)``."""
        raise NotImplementedError
