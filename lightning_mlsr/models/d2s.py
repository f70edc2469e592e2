"""D2S (dense to sparse) text head: a pooled sentence embedding mapped onto the vocabulary.

The multimodal LSR reference (thongnt99/lsr-multimodal, ECIR 2024) turns a dense embedding
into term weights with ``log(1 + relu(decoder(LayerNorm(Linear(e)))))``, where ``decoder``
is the text model's vocabulary projection, tied to its word embeddings. Here ``e`` is the
mean-pooled output of a trained sentence encoder (MiniLM-L6 by default), so the head is
meaningful before any training: the projection starts as the identity, and the vocabulary
terms whose input embeddings lie closest to the sentence embedding weigh most.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import torch
from torch import nn

from lightning_mlsr.models.backbones import load_masked_lm
from lightning_mlsr.models.pooling import (
    _check_max_terms,
    keep_top_terms,
    log_saturation,
    scatter_token_weights,
)
from lightning_mlsr.models.registry import register_head
from lightning_mlsr.models.transformer import (
    TextTransformerEncoder,
    mlm_head_parts,
    mlm_transform_dense,
    split_masked_lm,
)

__all__ = ["D2SHead"]

Expansion = Literal["full", "input"]


@register_head("d2s")
class D2SHead(TextTransformerEncoder):
    """Dense to sparse: ``log(1 + relu(decoder(LayerNorm(Linear(mean_l h_l)))))``.

    ``Linear(H, H)`` is new and starts as the identity; the LayerNorm and the decoder are
    the backbone's MLM head (for MiniLM an untrained one, decoder tied to the word
    embeddings; see :func:`~lightning_mlsr.models.backbones.load_masked_lm`). The MLM
    head's own transform (dense + activation) is skipped, as in the reference.

    Args:
        backbone: text backbone (default ``minilm-l6``, a trained sentence encoder).
        max_terms: keep only this many largest weights per text (None: all). A budget on
            non-zeros that holds from the first step; FLOPS then decides within it.
        expansion: ``"full"`` scores the whole vocabulary; ``"input"`` keeps only the
            text's own wordpieces (the reference's non-expanding mode, e.g. for queries).
        new_head_scale: where the MLM head is new (MiniLM-L6), the starting scale of its
            LayerNorm weight (see :func:`~lightning_mlsr.models.backbones.init_new_mlm_head`);
            1.0 as before.

    Shape:
        ``input_ids``/``attention_mask`` ``(B, L)`` -> ``(B, V)``.
    """

    def __init__(
        self,
        backbone: str = "minilm-l6",
        max_terms: int | None = None,
        expansion: Expansion = "full",
        new_head_scale: float = 1.0,
    ) -> None:
        _check_max_terms(max_terms, "D2SHead")
        encoder, mlm_head = split_masked_lm(load_masked_lm(backbone, new_head_scale))
        super().__init__(backbone, encoder, mlm_head)
        self.max_terms = max_terms
        self.expansion: Expansion = expansion
        mlm_head_parts(mlm_head)  # fail now, not at the first batch, if unsupported
        dense = mlm_transform_dense(mlm_head)
        if dense is not None:
            dense.requires_grad_(False)  # skipped, as in the reference
        self.projection = nn.Linear(self.hidden_size, self.hidden_size)
        with torch.no_grad():
            self.projection.weight.copy_(torch.eye(self.hidden_size))
            self.projection.bias.zero_()

    def forward(self, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Term weights from the pooled embedding. Shape: ``(B, L)`` -> ``(B, V)``."""
        input_ids, attention_mask = self._text_inputs(inputs)
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (B, L, 1)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)  # (B, H)
        layer_norm, decoder = mlm_head_parts(self.mlm_head)  # type: ignore[arg-type]
        weights = log_saturation(decoder(layer_norm(self.projection(pooled))))  # (B, V)
        if self.expansion == "input":
            keep = self._token_mask(input_ids, attention_mask).to(weights.dtype)  # (B, L)
            present = scatter_token_weights(keep, input_ids, self.vocab_size, "max")  # (B, V)
            weights = weights * present
        weights = self._mask_special_terms(weights)
        return keep_top_terms(weights, self.max_terms)

    def new_parameters(self) -> list[nn.Parameter]:
        """None: the projection starts as the identity, not at random, so it trains at the
        pretrained parts' learning rate (at the new layers' 20x higher rate, the first
        warm-up steps scramble the identity and the ranking loss stays at chance)."""
        return []
