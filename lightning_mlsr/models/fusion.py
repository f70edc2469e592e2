"""Image + caption encoders: early fusion in the transformer, or late fusion of two heads."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import torch
from torch import nn

from lightning_mlsr.io.encoder_reads import Reads
from lightning_mlsr.io.pretrained import DEFAULT_IMAGE_BACKBONE, DEFAULT_TEXT_BACKBONE
from lightning_mlsr.models.backbones import load_masked_lm, load_text_encoder
from lightning_mlsr.models.encoder import SparseEncoder
from lightning_mlsr.models.image_backbone import ImageBackbone
from lightning_mlsr.models.pooling import Pooling, _check_pooling, keep_top_terms
from lightning_mlsr.models.registry import register_head
from lightning_mlsr.models.transformer import (
    TextTransformerEncoder,
    init_term_scorer,
    split_masked_lm,
)

__all__ = ["FusedImageTextHead", "LateFusionHead"]


@register_head("fused")
class FusedImageTextHead(TextTransformerEncoder):
    """Early fusion: the image enters the text transformer as one extra token.

    The image embedding, projected to the hidden size ``H``, is inserted **right after
    ``[CLS]``** (position 1) into the caption's word embeddings and fed through
    ``inputs_embeds``; the attention mask gets a 1 for it, and position embeddings follow
    the extended sequence (``[CLS]`` 0, image 1, caption tokens from 2), so the caption
    is shifted by one position and the sequence may be at most ``max_position_embeddings
    - 1`` tokens. Captions must be right-padded (the tokenizer default) with ``[CLS]``
    first.

    With ``head="mlp"`` the caption tokens are scored like :class:`MLPHead` (the image
    token has no vocabulary id, so it contributes only through attention); with
    ``head="mlm"`` every kept position, the image token included, is scored like
    :class:`MLMHead`.

    Args:
        backbone: text transformer name.
        head: ``"mlp"`` or ``"mlm"``.
        image_backbone: ``timm`` model name.
        image_pretrained: load ImageNet weights for the image backbone.
        image_size: override the image backbone's input resolution.
        freeze_image_backbone: no gradients into the image backbone.
        pooling: ``"sum"`` or ``"max"``; None means ``"sum"`` for ``mlp`` and ``"max"`` for
            ``mlm`` (as in :class:`MLPHead` / :class:`MLMHead`).
        max_terms: with ``head="mlm"``, keep only this many largest weights per document
            (None: all), as :class:`MLMHead`'s budget.

    Shape:
        ``input_ids``/``attention_mask`` ``(B, L)`` and ``image_features`` ``(B, D)`` (or
        ``pixel_values`` ``(B, 3, H, W)``) -> ``(B, V)``.
    """

    def __init__(
        self,
        backbone: str = DEFAULT_TEXT_BACKBONE,
        head: Literal["mlp", "mlm"] = "mlp",
        image_backbone: str = DEFAULT_IMAGE_BACKBONE,
        image_pretrained: bool = True,
        image_size: int | None = None,
        freeze_image_backbone: bool = True,
        pooling: Pooling | None = None,
        max_terms: int | None = None,
    ) -> None:
        if head not in ("mlp", "mlm"):
            raise ValueError(f"FusedImageTextHead: head must be 'mlp' or 'mlm', got {head!r}")
        if max_terms is not None and (head != "mlm" or max_terms < 1):
            raise ValueError(
                f"FusedImageTextHead: max_terms must be a positive integer with head='mlm', got "
                f"{max_terms} with head={head!r}"
            )
        pooling = pooling or ("sum" if head == "mlp" else "max")
        _check_pooling(pooling, type(self).__name__)
        if head == "mlm":
            super().__init__(backbone, *split_masked_lm(load_masked_lm(backbone)))
        else:
            super().__init__(backbone, load_text_encoder(backbone))
        self.head = head
        self.pooling: Pooling = pooling
        self.max_terms = max_terms
        self.image_backbone = ImageBackbone(
            image_backbone, image_pretrained, image_size=image_size, frozen=freeze_image_backbone
        )
        self.image_projection = nn.Linear(self.image_backbone.num_features, self.hidden_size)
        self.term_scorer: nn.Linear | None = None
        if head == "mlp":
            self.term_scorer = nn.Linear(self.hidden_size, 1)
            init_term_scorer(self.term_scorer)

    def reads(self) -> Reads:
        """Captions, at most the backbone's positions less the one the image token takes,
        and images (cached features of a frozen backbone, else pixels)."""
        return self._text_reads(reserved=1) | self.image_backbone.reads()

    def forward(self, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Term weights of image + caption. Shape: ``(B, L)``, ``(B, D)`` -> ``(B, V)``."""
        input_ids, attention_mask = self._text_inputs(inputs)
        word_embeddings = self._word_embeddings()
        features = self._image_features(
            inputs, self.image_backbone, self.image_projection.weight.dtype
        )  # (B, D)
        max_positions = getattr(
            getattr(self.encoder, "config", None), "max_position_embeddings", None
        )
        if max_positions is not None and input_ids.shape[1] + 1 > max_positions:
            raise ValueError(
                f"FusedImageTextHead: captions of {input_ids.shape[1]} tokens plus the image "
                f"token exceed the backbone's {max_positions} positions; tokenize with "
                f"max_length <= {max_positions - 1}."
            )
        image_token = self.image_projection(features).unsqueeze(1)  # (B, 1, H)
        tokens = word_embeddings(input_ids)  # (B, L, H)
        embeds = torch.cat([tokens[:, :1], image_token.to(tokens.dtype), tokens[:, 1:]], dim=1)
        ones = attention_mask.new_ones(attention_mask.shape[0], 1)  # (B, 1)
        mask = torch.cat([attention_mask[:, :1], ones, attention_mask[:, 1:]], dim=1)  # (B, L+1)
        hidden = self.encoder(inputs_embeds=embeds, attention_mask=mask).last_hidden_state
        # hidden: (B, L+1, H), the image token at position 1
        if self.term_scorer is not None:
            caption = torch.cat([hidden[:, :1], hidden[:, 2:]], dim=1)  # (B, L, H)
            return self._input_term_weights(
                self.term_scorer, caption, input_ids, attention_mask, self.pooling
            )  # (B, V)
        keep = self._token_mask(input_ids, attention_mask)  # (B, L)
        keep = torch.cat([keep[:, :1], keep.new_ones(keep.shape[0], 1), keep[:, 1:]], dim=1)
        weights = self._expanded_term_weights(hidden, keep, self.pooling)  # (B, V)
        return keep_top_terms(weights, self.max_terms)

    def new_parameters(self) -> list[nn.Parameter]:
        """The image projection and, for ``head="mlp"``, the term scorer."""
        scorer = [] if self.term_scorer is None else list(self.term_scorer.parameters())
        return list(self.image_projection.parameters()) + scorer


@register_head("late_fusion")
class LateFusionHead(SparseEncoder):
    """Late fusion: two sub-encoders combined elementwise (``sum`` or ``max``).

    Typically a caption head (e.g. :class:`MLPHead`) and an image head (e.g.
    :class:`ImageMLMHead`), injected with ``class_path``/``init_args`` in YAML. Both must
    produce the same vocabulary. ``text_model`` is the first sub-head's transformer
    (:func:`~lightning_mlsr.models.tie_text_backbones` replaces it in every sub-head that
    has one); what it reads is what both sub-heads read (:meth:`reads`).

    Args:
        text_head: encoder of the caption.
        image_head: encoder of the image.
        combine: ``"sum"`` or ``"max"``.

    Shape:
        the union of the sub-heads' inputs -> ``(B, V)``.
    """

    def __init__(
        self,
        text_head: SparseEncoder,
        image_head: SparseEncoder,
        combine: Literal["sum", "max"] = "sum",
    ) -> None:
        if combine not in ("sum", "max"):
            raise ValueError(f"LateFusionHead: combine must be 'sum' or 'max', got {combine!r}")
        if text_head.vocab_size != image_head.vocab_size:
            raise ValueError(
                f"LateFusionHead: the sub-heads have different vocabularies "
                f"({type(text_head).__name__}: {text_head.vocab_size} terms, "
                f"{type(image_head).__name__}: {image_head.vocab_size}); use backbones that "
                "share a tokenizer."
            )
        special = set(text_head.special_token_ids.tolist()) | set(
            image_head.special_token_ids.tolist()
        )
        super().__init__(text_head.vocab_size, special)
        self.text_head = text_head
        self.image_head = image_head
        self.combine = combine

    def reads(self) -> Reads:
        """What the two sub-heads read, in one batch (:meth:`Reads.__or__`)."""
        return self.text_head.reads() | self.image_head.reads()

    @property
    def _heads(self) -> tuple[SparseEncoder, SparseEncoder]:
        return self.text_head, self.image_head

    @property
    def text_backbone_name(self) -> str | None:  # type: ignore[override]
        """The text backbone of the first sub-head that has one."""
        return next((h.text_backbone_name for h in self._heads if h.text_backbone_name), None)

    @property
    def vocab_backbone_name(self) -> str | None:
        """The vocabulary backbone of the first sub-head that names one."""
        return next((h.vocab_backbone_name for h in self._heads if h.vocab_backbone_name), None)

    @property
    def text_model(self) -> nn.Module | None:
        """The first sub-head's text transformer."""
        return next((h.text_model for h in self._heads if h.text_model is not None), None)

    def new_parameters(self) -> list[nn.Parameter]:
        """The new layers of both sub-heads."""
        return self.text_head.new_parameters() + self.image_head.new_parameters()

    def forward(self, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Combined term weights. Shape: ``(B, V)``."""
        text = self.text_head(inputs)  # (B, V)
        image = self.image_head(inputs)  # (B, V)
        if self.combine == "sum":
            return text + image
        return torch.maximum(text, image)
