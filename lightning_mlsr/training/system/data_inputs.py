"""What the model's encoders read, as the plain values the DataModule takes.

The bridge between the two sides, which never import each other: an :class:`Encoder`'s
:meth:`~lightning_mlsr.models.encoder.Encoder.reads` becomes a
:class:`~lightning_mlsr.data.inputs.SideInputs`; a frozen image backbone's
:class:`~lightning_mlsr.io.encoder_reads.FeatureSpec` computes with a private frozen copy
(:class:`~lightning_mlsr.models.backbones.FrozenCopy`), never the model's own module.
"""

from __future__ import annotations

from lightning_mlsr.data.inputs import SideInputs
from lightning_mlsr.io.encoder_reads import BatchInputs, FeatureSpec
from lightning_mlsr.models.backbones import FrozenCopy, ImageBackbone
from lightning_mlsr.models.encoder import Encoder

__all__ = ["FrozenCopy", "batch_inputs", "feature_spec", "side_inputs"]


def feature_spec(backbone: ImageBackbone) -> FeatureSpec:
    """The feature cache's view of a frozen image backbone
    (:meth:`~lightning_mlsr.models.backbones.ImageBackbone.feature_spec`)."""
    return backbone.feature_spec()


def side_inputs(encoder: Encoder) -> SideInputs:
    """What ``encoder``'s batches must hold, from what it reads."""
    reads = encoder.reads()
    return SideInputs(
        modalities=reads.modalities,
        tokenizer=reads.tokenizer,
        max_length=reads.max_length,
        image_transform=reads.pixels,
        frozen_features=reads.features,
    )


def batch_inputs(query_encoder: Encoder, doc_encoder: Encoder) -> BatchInputs:
    """What the query and the document batches of a model must hold."""
    return BatchInputs(query_encoder.reads(), doc_encoder.reads())
