"""A head's weights as files: its transformer (and MLM head) as a Hugging Face folder, and
the state such a folder does not hold (term scorers, image projections, the image backbone).

:func:`silence_special_terms` makes a saved MLM head's special tokens score 0 for any input,
as :class:`~lightning_mlsr.models.MLMHead` does, so that sentence-transformers' SPLADE pooling
of the same folder gives the same vectors.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lightning_mlsr.hub.manifest import ExportError
from lightning_mlsr.io.pretrained import resolve_text_backbone
from lightning_mlsr.models.static import StaticQueryHead
from lightning_mlsr.models.transformer import mlm_head_parts, split_masked_lm

__all__ = ["extra_weights", "save_masked_lm", "save_transformer", "silence_special_terms"]


def extra_weights(head: nn.Module) -> dict[str, torch.Tensor]:
    """The state a Hugging Face folder does not hold: everything outside the transformer
    and MLM head (the special-id buffer is rebuilt from the tokenizer)."""
    skip = ("encoder.", "mlm_head.")
    state = head.state_dict()
    return {
        k: v.detach().cpu().contiguous().clone()
        for k, v in state.items()
        if not k.startswith(skip)
        and k != "special_token_ids"
        and not isinstance(head, StaticQueryHead)
    }


def save_transformer(encoder: nn.Module, out: Path) -> None:
    cast_encoder: Any = encoder
    cast_encoder.save_pretrained(out)


def save_masked_lm(head: Any, out: Path, silence: bool) -> None:
    """Reassemble the head's transformer and MLM head as one ``*ForMaskedLM`` and save it;
    an image head (no transformer of its own) gets a transformer of zero layers, so the
    folder holds its MLM head, vocabulary and embeddings and nothing unused."""
    from transformers import AutoConfig, AutoModelForMaskedLM

    encoder = getattr(head, "encoder", None)
    if encoder is not None:
        config = copy.deepcopy(encoder.config)
    else:
        config = AutoConfig.from_pretrained(resolve_text_backbone(head.mlm_backbone_name))
        config.num_hidden_layers = 0
    decoder: Any = mlm_head_parts(head.mlm_head)[1]
    tied = encoder is None or decoder.weight is encoder.get_input_embeddings().weight
    config.tie_word_embeddings = bool(tied)
    model: Any = AutoModelForMaskedLM.from_config(config)
    split: tuple[Any, Any] = split_masked_lm(model)
    new_encoder, new_head = split
    if encoder is not None:
        new_encoder.load_state_dict(encoder.state_dict())
    new_head.load_state_dict(head.mlm_head.state_dict())
    if encoder is None:  # the word embeddings are the decoder's (tied), nothing else is used
        cast_embeddings: Any = new_encoder.get_input_embeddings()
        cast_embeddings.weight.data.copy_(decoder.weight.data)
    if silence:
        silence_special_terms(new_head, head.special_token_ids)
    model.save_pretrained(out)


def silence_special_terms(
    mlm_head: nn.Module, special_ids: torch.Tensor, margin: float = 1.0
) -> None:
    """Lower the decoder bias of ``special_ids`` until their logit is below ``-margin`` for
    every possible input, so ``log(1 + relu(.))`` gives them 0 as ``MLMHead`` does.

    The decoder reads a LayerNorm output ``gamma * x + beta`` with ``||x||_2 <= sqrt(H)``, so
    row ``s`` of the decoder gives at most ``sqrt(H) * ||W_s * gamma||_2 + |W_s . beta|``
    plus its bias; the bias is set to minus that bound minus ``margin``.
    """
    parts: tuple[Any, Any] = mlm_head_parts(mlm_head)
    layer_norm, decoder = parts
    if decoder.bias is None:
        raise ExportError("the MLM decoder has no bias to silence special tokens with")
    ids = special_ids.to(decoder.weight.device)
    with torch.no_grad():
        rows = decoder.weight[ids].double()  # (S, H)
        gamma, beta = layer_norm.weight.double(), layer_norm.bias.double()  # (H,)
        bound = math.sqrt(rows.shape[1]) * (rows * gamma).norm(dim=1) + (rows @ beta).abs()
        decoder.bias[ids] = (-(bound + margin)).to(decoder.bias.dtype)
