"""Offline-resolvable text backbones and the MLM heads built on them.

Text backbones are anything ``transformers`` ``Auto*`` classes can load: a Hugging Face
name, a local directory, or one of the aliases of :mod:`lightning_mlsr.io.pretrained` that
point at weights shipped inside an installed package (so they work with no network). Image
backbones (``timm``) are in :mod:`.image_backbone`.

A name that cannot be resolved raises :class:`BackboneNotFoundError` saying what was tried
and how to fix it, instead of a deep traceback from the hub client.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from lightning_mlsr.io.pretrained import (
    DEFAULT_TEXT_BACKBONE,
    resolve_text_backbone,
)

__all__ = [
    "init_new_mlm_head",
    "load_masked_lm",
    "load_text_encoder",
    "vocabulary_size",
]


def vocabulary_size(config: Any, tokenizer: Any) -> int:
    """``V``, the number of terms a head over this text backbone scores: the model's
    embedding matrix (``config.vocab_size``) when there is a model config stating it (a
    tokenizer may be shorter), else (``config=None``: a head without a transformer) the
    tokenizer's length."""
    size = getattr(config, "vocab_size", None)
    return int(size) if size is not None else len(tokenizer)


def load_masked_lm(name: str = DEFAULT_TEXT_BACKBONE, new_head_scale: float = 1.0) -> nn.Module:
    """An ``AutoModelForMaskedLM`` (encoder + MLM head) for a text backbone.

    For a backbone without a pretrained MLM head (MiniLM-L6) the head is new: its decoder
    is tied to the word embeddings (transformers' default) and :func:`init_new_mlm_head`
    starts its transform as the identity (times ``new_head_scale``), so that it scores a
    hidden state by the input embeddings of the vocabulary and ranks sensibly before any
    training. The model's ``new_mlm_head`` attribute says which case it is;
    ``new_head_scale`` is ignored for a pretrained head.
    """
    if not (isinstance(new_head_scale, (int, float)) and new_head_scale > 0):
        raise ValueError(f"new_head_scale must be a positive number, got {new_head_scale!r}")
    import transformers
    from transformers import AutoModelForMaskedLM

    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # "some weights newly initialized" is expected
    try:
        model, info = AutoModelForMaskedLM.from_pretrained(
            resolve_text_backbone(name), output_loading_info=True
        )
    finally:
        transformers.logging.set_verbosity(verbosity)
    prefix = getattr(model, "base_model_prefix", "")
    new_head = any(not key.startswith(f"{prefix}.") for key in info.get("missing_keys", []))
    if new_head:
        init_new_mlm_head(model, scale=new_head_scale)
    model.new_mlm_head = new_head
    return model


#: added before the MLM transform's activation by :func:`init_new_mlm_head`
_LINEAR_SHIFT = 8.0


def init_new_mlm_head(model: nn.Module, scale: float = 1.0) -> None:
    """Start an untrained BERT-style MLM head as ``decoder(scale * LayerNorm(h))`` in effect.

    The transform ``LayerNorm(gelu(dense(h)))`` gets ``dense(h) = h + shift``: the shift puts
    the activation in its linear range (MiniLM-L6's hidden states stay above -3.1 on the
    bundled captions; ``gelu(x) = x`` to 1e-6 above 5) and the LayerNorm removes it again.
    The decoder bias is zero, so a hidden state scores each vocabulary term by the dot
    product of its normalised self with the term's (tied) input embedding. On the bundled
    validation queries this ranks as well as dropping the activation (nDCG@10 0.382 with 64
    terms per text, untrained; 0.357 through gelu without the shift). Randomly
    initialised, the same head activates unrelated terms and has to be learnt from scratch.

    ``scale`` starts the LayerNorm's weight (learnt afterwards) below 1: it scales every
    logit alike, so each text's terms keep their order, while the scores start small. With
    MLM heads on both sides at scale 1 the first in-batch scores are large and confidently
    wrong (InfoNCE 6.4 on `emoji` training batches, above chance, log 64 = 4.16), and
    fine-tuning collapses every text to the same terms; at 0.2 it starts at 2.1.
    """
    head: Any = getattr(model, "cls", None)
    predictions: Any = getattr(head, "predictions", None)
    if predictions is None:
        return  # not BERT-style: keep transformers' initialisation
    dense = predictions.transform.dense
    with torch.no_grad():
        dense.weight.copy_(torch.eye(dense.weight.shape[0], dense.weight.shape[1]))
        dense.bias.fill_(_LINEAR_SHIFT)
        predictions.transform.LayerNorm.reset_parameters()
        predictions.transform.LayerNorm.weight.fill_(scale)
        if getattr(predictions, "bias", None) is not None:
            predictions.bias.zero_()
        if getattr(predictions.decoder, "bias", None) is not None:
            predictions.decoder.bias.zero_()


def load_text_encoder(name: str = DEFAULT_TEXT_BACKBONE) -> nn.Module:
    """The bare transformer encoder (``AutoModel``, no MLM head) of a text backbone."""
    import transformers
    from transformers import AutoModel

    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # dropping an MLM head is expected
    try:
        return AutoModel.from_pretrained(resolve_text_backbone(name), add_pooling_layer=False)
    except TypeError:  # architectures without a pooling layer argument
        return AutoModel.from_pretrained(resolve_text_backbone(name))
    finally:
        transformers.logging.set_verbosity(verbosity)
