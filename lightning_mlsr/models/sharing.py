"""Sharing one text transformer between a query and a document encoder."""

from __future__ import annotations

import torch
from torch import nn

from lightning_mlsr.models.dense import DenseTextHead
from lightning_mlsr.models.encoder import Encoder
from lightning_mlsr.models.transformer import TextTransformerEncoder

__all__ = ["tie_text_backbones"]


def tie_text_backbones(query: Encoder, doc: Encoder) -> None:
    """Make ``doc`` use ``query``'s text transformer (one set of weights, trained by both).

    Every text transformer inside ``doc`` (itself, or the sub-heads of a late-fusion head)
    is replaced; an MLM decoder that was tied to the old word embeddings is re-tied to the
    new ones, so the pretrained tie survives. Both encoders must read text with the same
    backbone.
    """
    model = query.text_model
    towers = _text_towers(doc)
    if model is None or not towers:
        culprit = query if model is None else doc
        raise ValueError(
            "share_text_backbone=true needs a text transformer on both sides; "
            f"{type(culprit).__name__} has none"
        )
    if query.text_backbone_name != doc.text_backbone_name:
        raise ValueError(
            "share_text_backbone=true needs the same text backbone on both sides, got "
            f"{query.text_backbone_name!r} and {doc.text_backbone_name!r}"
        )
    for tower in towers:
        if isinstance(tower, TextTransformerEncoder) and tower.mlm_head is not None:
            _retie_decoder(tower.mlm_head, tower.encoder, model)
        tower.encoder = model


def _text_towers(encoder: Encoder) -> list[TextTransformerEncoder | DenseTextHead]:
    """The encoders inside ``encoder`` (itself included) that own a text transformer."""
    return [m for m in encoder.modules() if isinstance(m, TextTransformerEncoder | DenseTextHead)]


def _input_embedding_weight(model: nn.Module) -> torch.Tensor | None:
    get = getattr(model, "get_input_embeddings", None)
    embeddings = get() if callable(get) else None
    return getattr(embeddings, "weight", None)


def _retie_decoder(head: nn.Module, old: nn.Module, new: nn.Module) -> None:
    """Point decoder weights that were tied to ``old``'s word embeddings at ``new``'s."""
    old_weight, new_weight = _input_embedding_weight(old), _input_embedding_weight(new)
    if old_weight is None or new_weight is None or old_weight is new_weight:
        return
    for module in head.modules():
        if isinstance(module, nn.Linear) and module.weight is old_weight:
            if module.weight.shape != new_weight.shape:
                raise ValueError(
                    f"cannot tie an MLM decoder of shape {tuple(module.weight.shape)} to word "
                    f"embeddings of shape {tuple(new_weight.shape)}: the backbones differ"
                )
            module.weight = new_weight
