"""The text-transformer plumbing the heads share: splitting a masked LM into transformer
and MLM head, the term-scorer start, and :class:`TextTransformerEncoder`, the base of the
transformer heads."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from lightning_mlsr.io.encoder_reads import Reads
from lightning_mlsr.io.pretrained import load_tokenizer
from lightning_mlsr.models.backbones import vocabulary_size
from lightning_mlsr.models.encoder import SparseEncoder
from lightning_mlsr.models.pooling import (
    Pooling,
    log_saturation,
    pool_kept_vocab_logits,
    pool_vocab_logits,
    scatter_token_weights,
)

__all__ = [
    "TextTransformerEncoder",
    "init_term_scorer",
    "mlm_head_parts",
    "mlm_transform_dense",
    "split_masked_lm",
]


def split_masked_lm(mlm: Any) -> tuple[nn.Module, nn.Module]:
    """Split a ``*ForMaskedLM`` model into its transformer and its MLM head.

    The head maps hidden states ``(..., H)`` to vocabulary logits ``(..., V)`` and keeps
    the pretrained weights (its decoder still shares the word embeddings when tied).
    Supports BERT-style (``cls``), RoBERTa-style (``lm_head``) and DistilBERT models.
    """
    prefix = getattr(mlm, "base_model_prefix", "")
    encoder = getattr(mlm, prefix, None)
    head: nn.Module | None = None
    if hasattr(mlm, "cls"):
        head = mlm.cls
    elif hasattr(mlm, "lm_head"):
        head = mlm.lm_head
    elif hasattr(mlm, "vocab_projector"):
        head = nn.Sequential(
            mlm.vocab_transform, mlm.activation, mlm.vocab_layer_norm, mlm.vocab_projector
        )
    if not isinstance(encoder, nn.Module) or head is None:
        raise ValueError(
            f"cannot split {type(mlm).__name__} into a transformer and an MLM head; supported "
            "are BERT-, RoBERTa- and DistilBERT-style masked LMs. Use one of those backbones."
        )
    return encoder, head


def mlm_head_parts(head: nn.Module) -> tuple[nn.Module, nn.Module]:
    """The vocabulary LayerNorm and the decoder of an MLM head from :func:`split_masked_lm`.

    An MLM head is ``decoder(LayerNorm(act(dense(h))))``; the multimodal LSR reference
    (thongnt99/lsr-multimodal) feeds a projected image embedding into ``LayerNorm`` and
    ``decoder`` only, skipping ``dense`` and the activation.
    """
    predictions: Any = getattr(head, "predictions", None)  # BERT: cls.predictions
    if predictions is not None:
        return predictions.transform.LayerNorm, predictions.decoder
    lm_head: Any = head
    if hasattr(lm_head, "layer_norm") and hasattr(lm_head, "decoder"):  # RoBERTa: lm_head
        return lm_head.layer_norm, lm_head.decoder
    if isinstance(head, nn.Sequential) and len(head) == 4:  # DistilBERT, as split above
        return head[2], head[3]
    raise ValueError(
        f"cannot find the vocabulary LayerNorm and decoder of {type(head).__name__}; use a "
        "BERT-, RoBERTa- or DistilBERT-style backbone, or wiring='full'."
    )


def mlm_transform_dense(head: nn.Module) -> nn.Module | None:
    """The ``dense`` layer of an MLM head's transform (None when not found)."""
    predictions: Any = getattr(head, "predictions", None)
    if predictions is not None:
        return predictions.transform.dense
    lm_head: Any = head
    if hasattr(lm_head, "dense"):
        return lm_head.dense
    if isinstance(head, nn.Sequential) and len(head) == 4:
        return head[0]
    return None


def init_term_scorer(scorer: nn.Linear, bias: float = 1.0, std: float = 0.02) -> None:
    """Initialise an MLP term scorer so that (almost) every token starts active.

    Transformer hidden states share a common direction, so ``nn.Linear``'s default init
    puts about half the tokens (sometimes nearly all) below zero, where ``relu`` passes no
    gradient. A small weight (BERT's ``std=0.02``) and a positive bias start every token
    at a weight near ``log(1 + bias)``, from where training re-weights them.
    """
    nn.init.normal_(scorer.weight, std=std)
    nn.init.constant_(scorer.bias, bias)


class TextTransformerEncoder(SparseEncoder):
    """Shared plumbing for heads built on a text transformer.

    Holds the transformer as ``self.encoder`` and, for MLM heads, the pretrained MLM head
    as ``self.mlm_head`` (hidden ``(..., H)`` -> logits ``(..., V)``).
    :func:`~lightning_mlsr.models.tie_text_backbones` swaps the transformer for another
    encoder's and re-ties the MLM decoder to the new word embeddings.
    """

    def __init__(
        self, backbone: str, encoder: nn.Module, mlm_head: nn.Module | None = None
    ) -> None:
        tokenizer = load_tokenizer(backbone)
        config: Any = getattr(encoder, "config", None)
        if config is None:
            raise ValueError(f"text backbone {backbone!r} is not a transformers model (no config)")
        super().__init__(vocabulary_size(config, tokenizer), tokenizer.all_special_ids)
        self.text_backbone_name = backbone
        self.encoder = encoder
        self.mlm_head = mlm_head
        self.hidden_size = int(config.hidden_size)

    @property
    def text_model(self) -> nn.Module | None:
        """The text transformer (e.g. a ``BertModel``)."""
        return self.encoder

    def reads(self) -> Reads:
        """Texts by the backbone's tokenizer, at most its transformer's positions."""
        return self._text_reads()

    def _word_embeddings(self) -> nn.Module:
        """The transformer's input (word) embedding layer."""
        embeddings: Any = self.encoder
        return embeddings.get_input_embeddings()

    def _text_inputs(self, inputs: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        return self._require(inputs, "input_ids"), self._require(inputs, "attention_mask")

    def _input_term_weights(
        self,
        scorer: nn.Module,
        hidden: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        pooling: Pooling,
    ) -> torch.Tensor:
        """MLP scoring: ``log(1 + relu(scorer(h_l)))`` at each kept token's id.

        Shape:
            hidden ``(B, L, H)``, input_ids/attention_mask ``(B, L)`` -> ``(B, V)``.
        """
        scores = scorer(hidden).squeeze(-1)  # (B, L)
        keep = self._token_mask(input_ids, attention_mask)  # (B, L)
        weights = log_saturation(scores) * keep  # (B, L)
        return scatter_token_weights(weights, input_ids, self.vocab_size, pooling)  # (B, V)

    def _expanded_term_weights(
        self, hidden: torch.Tensor, keep: torch.Tensor, pooling: Pooling
    ) -> torch.Tensor:
        """MLM scoring: vocabulary logits of every kept position, saturated and pooled.

        Shape:
            hidden ``(B, L, H)``, keep ``(B, L)`` bool -> ``(B, V)``.
        """
        assert self.mlm_head is not None, "only MLM heads expand"
        if bool(keep.all()):  # nothing to skip (every text of the batch at full length)
            logits = self.mlm_head(hidden)  # (B, L, V)
            return self._mask_special_terms(pool_vocab_logits(logits, keep, pooling))  # (B, V)
        pooled = pool_kept_vocab_logits(self.mlm_head, hidden, keep, pooling)  # (B, V)
        return self._mask_special_terms(pooled)
