"""Dense encoders for the dense bi-encoder baseline.

They plug into the same module, DataModule and evaluator as the sparse heads, but are
:class:`~lightning_mlsr.models.encoder.DenseEncoder` s: they return ``(B, D)`` real-valued
(optionally L2-normalised) embeddings instead of term weights, and the evaluator, seeing
the type, searches them exactly (faiss ``IndexFlatIP``) instead of with the inverted index.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from lightning_mlsr.io.encoder_reads import Reads
from lightning_mlsr.io.pretrained import DEFAULT_IMAGE_BACKBONE
from lightning_mlsr.models.backbones import load_text_encoder
from lightning_mlsr.models.encoder import DenseEncoder
from lightning_mlsr.models.image_backbone import ImageBackbone
from lightning_mlsr.models.registry import register_head

__all__ = ["DenseImageHead", "DenseTextHead"]

DensePooling = Literal["mean", "cls"]


@register_head("dense_text")
class DenseTextHead(DenseEncoder):
    """Mean (or [CLS]) pooled transformer states, optionally L2-normalised.

    Args:
        backbone: text backbone (default ``minilm-l6``: all-MiniLM-L6-v2, a trained dense
            sentence encoder).
        pooling: ``mean`` over real tokens or the ``cls`` state.
        normalize: L2-normalise, so the dot product is the cosine.

    Shape:
        ``input_ids``/``attention_mask`` ``(B, L)`` -> ``(B, H)``.
    """

    def __init__(
        self, backbone: str = "minilm-l6", pooling: DensePooling = "mean", normalize: bool = True
    ) -> None:
        if pooling not in ("mean", "cls"):
            raise ValueError(f"DenseTextHead: pooling must be 'mean' or 'cls', got {pooling!r}")
        encoder = load_text_encoder(backbone)
        config: Any = getattr(encoder, "config", None)
        if config is None:
            raise ValueError(f"text backbone {backbone!r} is not a transformers model (no config)")
        super().__init__(int(config.hidden_size))
        self.encoder = encoder
        self.hidden_size = self.dim
        self.text_backbone_name = backbone
        self.pooling = pooling
        self.normalize = normalize

    @property
    def text_model(self) -> nn.Module | None:
        """The text transformer."""
        return self.encoder

    def reads(self) -> Reads:
        """Texts by the backbone's tokenizer, at most its transformer's positions."""
        return self._text_reads()

    def forward(self, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Pooled embeddings. Shape: ``(B, L)`` -> ``(B, H)``."""
        input_ids = self._require(inputs, "input_ids")
        attention_mask = self._require(inputs, "attention_mask")
        hidden = self.encoder(
            input_ids=input_ids, attention_mask=attention_mask
        ).last_hidden_state  # (B, L, H)
        if self.pooling == "cls":
            emb = hidden[:, 0]  # (B, H)
        else:
            m = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (B, L, 1)
            emb = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)  # (B, H)
        return F.normalize(emb, dim=-1) if self.normalize else emb


@register_head("dense_image")
class DenseImageHead(DenseEncoder):
    """Image embedding projected to ``dim`` (to meet a text encoder's space).

    Args:
        dim: output size — the query encoder's hidden size (384 for ``minilm-l6``).
        image_backbone / image_pretrained / image_size / freeze_image_backbone: as for
            :class:`~lightning_mlsr.models.ImageMLMHead`.
        normalize: L2-normalise the output.

    Shape:
        ``image_features`` ``(B, D)`` or ``pixel_values`` ``(B, 3, H, W)`` -> ``(B, dim)``.
    """

    def __init__(
        self,
        dim: int = 384,
        image_backbone: str = DEFAULT_IMAGE_BACKBONE,
        image_pretrained: bool = True,
        image_size: int | None = None,
        freeze_image_backbone: bool = True,
        normalize: bool = True,
    ) -> None:
        super().__init__(dim)
        self.image_backbone = ImageBackbone(
            image_backbone, image_pretrained, image_size=image_size, frozen=freeze_image_backbone
        )
        self.projection = nn.Linear(self.image_backbone.num_features, dim)
        self.normalize = normalize

    def reads(self) -> Reads:
        """Images: cached features of a frozen backbone, else pixels."""
        return self.image_backbone.reads()

    def new_parameters(self) -> list[nn.Parameter]:
        """The projection (the image backbone is pretrained)."""
        return list(self.projection.parameters())

    def forward(self, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Projected image embeddings. Shape: ``(B, D_img)`` -> ``(B, dim)``."""
        features = self._image_features(inputs, self.image_backbone, self.projection.weight.dtype)
        emb = self.projection(features)  # (B, dim)
        return F.normalize(emb, dim=-1) if self.normalize else emb
