"""Dense encoders for the dense bi-encoder baseline.

They plug into the same module, DataModule and evaluator as the sparse heads, but return
``(B, dim)`` real-valued (optionally L2-normalised) embeddings instead of term weights;
``is_dense = True`` tells :class:`~lightning_mlsr.callbacks.RetrievalEvaluator` to search
with faiss ``IndexFlatIP`` instead of the inverted index. They are deliberately not in
``HEADS``: that registry holds the sparse, non-negative heads.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from lightning_mlsr.backbones import (
    DEFAULT_IMAGE_BACKBONE,
    load_text_encoder,
    load_tokenizer,
)
from lightning_mlsr.heads.base import SparseEncoder, TextTransformerEncoder, build_image_backbone

__all__ = ["DENSE_HEADS", "DenseImageHead", "DenseTextHead"]

DensePooling = Literal["mean", "cls"]


class DenseTextHead(TextTransformerEncoder):
    """Mean (or [CLS]) pooled transformer states, optionally L2-normalised.

    Args:
        backbone: text backbone (default ``minilm-l6``: all-MiniLM-L6-v2, a trained dense
            sentence encoder).
        pooling: ``mean`` over real tokens or the ``cls`` state.
        normalize: L2-normalise, so the dot product is the cosine.

    Shape:
        ``input_ids``/``attention_mask`` ``(B, L)`` -> ``(B, H)``.
    """

    is_dense = True

    def __init__(
        self, backbone: str = "minilm-l6", pooling: DensePooling = "mean", normalize: bool = True
    ) -> None:
        if pooling not in ("mean", "cls"):
            raise ValueError(f"DenseTextHead: pooling must be 'mean' or 'cls', got {pooling!r}")
        super().__init__(backbone, load_text_encoder(backbone))
        self.vocab_size = self.hidden_size  # the "vocabulary" of a dense vector: its dims
        self.modalities = frozenset({"text"})
        self.image_backbone = None
        self.freeze_image_backbone = True
        self.pooling = pooling
        self.normalize = normalize

    def forward(self, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        input_ids, attention_mask = self._text_inputs(inputs)
        hidden = self.encoder(
            input_ids=input_ids, attention_mask=attention_mask
        ).last_hidden_state  # (B, L, H)
        if self.pooling == "cls":
            emb = hidden[:, 0]  # (B, H)
        else:
            m = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (B, L, 1)
            emb = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)  # (B, H)
        return F.normalize(emb, dim=-1) if self.normalize else emb


class DenseImageHead(SparseEncoder):
    """Image embedding projected to ``dim`` (to meet a text encoder's space).

    Args:
        dim: output size — the query encoder's hidden size (384 for ``minilm-l6``).
        image_backbone / image_pretrained / image_size / freeze_image_backbone: as for
            :class:`~lightning_mlsr.heads.ImageMLMHead`.
        normalize: L2-normalise the output.

    Shape:
        ``image_features`` ``(B, D)`` or ``pixel_values`` ``(B, 3, H, W)`` -> ``(B, dim)``.
    """

    is_dense = True

    def __init__(
        self,
        dim: int = 384,
        image_backbone: str = DEFAULT_IMAGE_BACKBONE,
        image_pretrained: bool = True,
        image_size: int | None = None,
        freeze_image_backbone: bool = True,
        normalize: bool = True,
    ) -> None:
        super().__init__(dim, load_tokenizer("splade-tiny").all_special_ids)
        self.modalities = frozenset({"image"})
        self.text_backbone_name = None
        self.freeze_image_backbone = freeze_image_backbone
        self.image_backbone: Any = build_image_backbone(
            image_backbone, image_pretrained, image_size, freeze_image_backbone
        )
        self.projection = nn.Linear(self.image_backbone.num_features, dim)
        self.normalize = normalize

    def new_parameters(self) -> list[nn.Parameter]:
        """The projection (the image backbone is pretrained)."""
        return list(self.projection.parameters())

    def forward(self, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        features = self._image_features(inputs, self.image_backbone, self.projection.weight.dtype)
        emb = self.projection(features)  # (B, dim)
        return F.normalize(emb, dim=-1) if self.normalize else emb


DENSE_HEADS: dict[str, type[SparseEncoder]] = {
    "dense_text": DenseTextHead,
    "dense_image": DenseImageHead,
}
