"""Text heads: MLP (no expansion) and MLM (SPLADE, expands to the whole vocabulary)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from lightning_mlsr.io.pretrained import DEFAULT_TEXT_BACKBONE
from lightning_mlsr.models.backbones import load_masked_lm, load_text_encoder
from lightning_mlsr.models.pooling import Pooling, _check_max_terms, _check_pooling, keep_top_terms
from lightning_mlsr.models.registry import register_head
from lightning_mlsr.models.transformer import (
    TextTransformerEncoder,
    init_term_scorer,
    split_masked_lm,
)

__all__ = ["MLMHead", "MLPHead"]


@register_head("mlp")
class MLPHead(TextTransformerEncoder):
    """Scores only the input tokens: ``log(1 + relu(Linear(h_l)))`` placed at each token id.

    Padding and special tokens get no weight; a token id that occurs several times gets the
    sum (typical for queries) or the max (typical for documents) of its occurrences. The
    scorer starts with a small weight and a positive bias (:func:`init_term_scorer`), so
    every token is active at init and gets a gradient.

    Args:
        backbone: text transformer name (see :mod:`lightning_mlsr.models.backbones`).
        pooling: how repeated tokens are combined, ``"sum"`` or ``"max"``.

    Shape:
        ``input_ids``/``attention_mask`` ``(B, L)`` -> ``(B, V)``.
    """

    def __init__(self, backbone: str = DEFAULT_TEXT_BACKBONE, pooling: Pooling = "sum") -> None:
        _check_pooling(pooling, type(self).__name__)
        super().__init__(backbone, load_text_encoder(backbone))
        self.pooling = pooling
        self.term_scorer = nn.Linear(self.hidden_size, 1)
        init_term_scorer(self.term_scorer)

    def forward(self, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Term weights of the input tokens. Shape: ``(B, L)`` -> ``(B, V)``."""
        input_ids, attention_mask = self._text_inputs(inputs)
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self._input_term_weights(
            self.term_scorer, hidden, input_ids, attention_mask, self.pooling
        )  # (B, V)

    def new_parameters(self) -> list[nn.Parameter]:
        """The term scorer (the transformer is pretrained)."""
        return list(self.term_scorer.parameters())


@register_head("mlm")
class MLMHead(TextTransformerEncoder):
    """SPLADE: MLM logits over the vocabulary, ``log(1 + relu(.))``, pooled over tokens.

    Pooling runs over the attention mask, ``[CLS]`` and ``[SEP]`` included, as naver/splade
    does (on the bundled data zero-shot SPLADE-tiny reaches R@1000 0.73 this way vs 0.47
    without them); ``exclude_special_tokens=True`` leaves their positions out.
    The special tokens' own vocabulary terms are always zeroed.

    Args:
        backbone: name of a text backbone with a masked-LM head (its pretrained MLM head is
            used; a backbone without one gets an untrained head tied to the embeddings).
        pooling: ``"max"`` (SPLADE) or ``"sum"`` over token positions.
        exclude_special_tokens: leave special-token positions out of the pooling.
        max_terms: keep only this many largest weights per text (None: all). A new MLM head
            (MiniLM-L6: identity transform, decoder tied to the word embeddings) ranks the
            vocabulary sensibly from the start but activates most of it; the budget makes
            its vectors sparse from the first step.
        new_head_scale: where the head is new, the starting scale of its logits (see
            :func:`~lightning_mlsr.models.backbones.init_new_mlm_head`); 1.0 as before.
            Ignored for a pretrained MLM head.

    Shape:
        ``input_ids``/``attention_mask`` ``(B, L)`` -> ``(B, V)``.
    """

    def __init__(
        self,
        backbone: str = DEFAULT_TEXT_BACKBONE,
        pooling: Pooling = "max",
        exclude_special_tokens: bool = False,
        max_terms: int | None = None,
        new_head_scale: float = 1.0,
    ) -> None:
        _check_pooling(pooling, type(self).__name__)
        _check_max_terms(max_terms, "MLMHead")
        encoder, mlm_head = split_masked_lm(load_masked_lm(backbone, new_head_scale))
        super().__init__(backbone, encoder, mlm_head)
        self.pooling = pooling
        self.exclude_special_tokens = exclude_special_tokens
        self.max_terms = max_terms

    def forward(self, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Expanded term weights. Shape: ``(B, L)`` -> ``(B, V)``."""
        input_ids, attention_mask = self._text_inputs(inputs)
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        if self.exclude_special_tokens:
            keep = self._token_mask(input_ids, attention_mask)  # (B, L)
        else:
            keep = attention_mask.bool()  # (B, L)
        weights = self._expanded_term_weights(hidden, keep, self.pooling)  # (B, V)
        return keep_top_terms(weights, self.max_terms)
