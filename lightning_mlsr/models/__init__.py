"""Encoder heads. Sparse heads map a batch dict to ``(B, V)`` non-negative term weights;
dense heads (the baselines) to ``(B, D)`` embeddings.

Every head registers itself in ``HEADS`` with ``@register_head`` (``list_heads()`` names
them; the contract test runs over all of them). YAML configs name the class with
``class_path``.
"""

from __future__ import annotations

from typing import Any

from lightning_mlsr.models.d2s import D2SHead
from lightning_mlsr.models.dense import DenseImageHead, DenseTextHead
from lightning_mlsr.models.encoder import (
    DenseEncoder,
    Encoder,
    MissingInputError,
    SparseEncoder,
)
from lightning_mlsr.models.fusion import FusedImageTextHead, LateFusionHead
from lightning_mlsr.models.image import ImageMLMHead
from lightning_mlsr.models.registry import HEADS, list_heads, register_head
from lightning_mlsr.models.sharing import tie_text_backbones
from lightning_mlsr.models.static import StaticQueryHead
from lightning_mlsr.models.text import MLMHead, MLPHead
from lightning_mlsr.models.transformer import TextTransformerEncoder

__all__ = [
    "HEADS",
    "D2SHead",
    "DenseEncoder",
    "DenseImageHead",
    "DenseTextHead",
    "Encoder",
    "FusedImageTextHead",
    "ImageMLMHead",
    "LateFusionHead",
    "MLMHead",
    "MLPHead",
    "MissingInputError",
    "SparseEncoder",
    "StaticQueryHead",
    "TextTransformerEncoder",
    "check_encoder_pair",
    "is_dense_model",
    "list_heads",
    "register_head",
    "tie_text_backbones",
]


def check_encoder_pair(query_encoder: Encoder, doc_encoder: Encoder) -> bool:
    """Whether the pair is dense; raises unless both are sparse or both dense."""
    dense = isinstance(query_encoder, DenseEncoder), isinstance(doc_encoder, DenseEncoder)
    if dense[0] != dense[1]:
        raise ValueError(
            "query and document encoders must both be sparse heads or both dense heads, got "
            f"{type(query_encoder).__name__} and {type(doc_encoder).__name__}"
        )
    return dense[0]


def is_dense_model(model: Any) -> bool:
    """Whether a bi-encoder's ``query_encoder``/``doc_encoder`` are dense (the baseline)."""
    return check_encoder_pair(model.query_encoder, model.doc_encoder)
