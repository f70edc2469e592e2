"""What the model's encoders read, as the plain values the DataModule takes.

The bridge between the two sides, which never import each other: an :class:`Encoder`
(its tokenizer name, its token limit, its image backbone and whether that is frozen)
becomes a :class:`~lightning_mlsr.data.inputs.SideInputs`, and a frozen image backbone a
:class:`~lightning_mlsr.data.inputs.FeatureSpec` whose feature callable is a private
frozen copy (:class:`FrozenCopy`), never the model's own module.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from lightning_mlsr.data.inputs import BatchInputs, FeatureSpec, SideInputs
from lightning_mlsr.models.backbones import ImageBackbone
from lightning_mlsr.models.encoder import Encoder

__all__ = ["FrozenCopy", "batch_inputs", "feature_spec", "side_inputs"]


class FrozenCopy:
    """A frozen CPU copy of a module, taken when built; called with a device, the copy on
    it in eval mode (the CPU copy itself, or a fresh copy on another device).

    Holding a copy, not the model's module, keeps the model's later moves (to a GPU) and
    updates out of DataLoader workers and the feature cache.
    """

    def __init__(self, module: nn.Module) -> None:
        self.module = copy.deepcopy(module).cpu().eval().requires_grad_(False)

    def __call__(self, device: torch.device) -> nn.Module:
        if torch.device(device).type == "cpu":
            return self.module
        return copy.deepcopy(self.module).to(device).eval()


def feature_spec(backbone: ImageBackbone) -> FeatureSpec:
    """The feature cache's view of a frozen image backbone: its cache key (weights and
    preprocessing as they are now), its transform and a frozen copy that computes."""
    shape = tuple(int(s) for s in backbone.data_config["input_size"])
    assert len(shape) == 3, shape
    return FeatureSpec(
        cache_key=backbone.cache_key,
        name=backbone.name,
        dim=int(backbone.num_features),
        pixel_shape=(shape[0], shape[1], shape[2]),
        transform=backbone.transform(),
        compute_on=FrozenCopy(backbone),
    )


def side_inputs(encoder: Encoder) -> SideInputs:
    """What ``encoder``'s batches must hold: its modalities, tokenizer, token limit, and
    for images either a transform (a trained backbone reads pixels) or a
    :class:`FeatureSpec` (a frozen one reads cached features)."""
    text = "text" in encoder.modalities
    image = "image" in encoder.modalities
    name = type(encoder).__name__
    if text and encoder.text_backbone_name is None:
        raise RuntimeError(f"{name} reads text but names no text backbone")
    backbone = encoder.image_backbone if image else None
    if image and backbone is None:
        raise RuntimeError(f"{name} reads images but has no image_backbone")
    frozen = backbone is not None and encoder.freeze_image_backbone
    return SideInputs(
        modalities=frozenset(encoder.modalities),
        tokenizer=encoder.text_backbone_name if text else None,
        max_length=encoder.max_text_length() if text else None,
        image_transform=backbone.transform() if backbone is not None and not frozen else None,
        frozen_features=feature_spec(backbone) if backbone is not None and frozen else None,
    )


def batch_inputs(query_encoder: Encoder, doc_encoder: Encoder) -> BatchInputs:
    """What the query and the document batches of a model must hold."""
    return BatchInputs(side_inputs(query_encoder), side_inputs(doc_encoder))
