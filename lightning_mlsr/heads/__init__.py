"""Sparse heads: every one maps a batch dict to ``(B, V)`` non-negative term weights.

``HEADS`` maps a short name to each head class (used by tests and tooling; YAML configs
name the class with ``class_path``).
"""

from __future__ import annotations

from lightning_mlsr.heads.base import MissingInputError, SparseEncoder, TextTransformerEncoder
from lightning_mlsr.heads.fusion import FusedImageTextHead, LateFusionHead
from lightning_mlsr.heads.image import ImageMLMHead
from lightning_mlsr.heads.text import MLMHead, MLPHead

__all__ = [
    "HEADS",
    "FusedImageTextHead",
    "ImageMLMHead",
    "LateFusionHead",
    "MLMHead",
    "MLPHead",
    "MissingInputError",
    "SparseEncoder",
    "TextTransformerEncoder",
]

HEADS: dict[str, type[SparseEncoder]] = {
    "mlp": MLPHead,
    "mlm": MLMHead,
    "image_mlm": ImageMLMHead,
    "fused": FusedImageTextHead,
    "late_fusion": LateFusionHead,
}
