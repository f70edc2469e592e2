"""Image head: an image embedding projected into a text backbone's pretrained MLM head."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import torch
from torch import nn

from lightning_mlsr.io.encoder_reads import Reads
from lightning_mlsr.io.pretrained import (
    DEFAULT_IMAGE_BACKBONE,
    DEFAULT_TEXT_BACKBONE,
    load_tokenizer,
)
from lightning_mlsr.models.backbones import load_masked_lm, vocabulary_size
from lightning_mlsr.models.encoder import SparseEncoder
from lightning_mlsr.models.image_backbone import ImageBackbone
from lightning_mlsr.models.pooling import _check_max_terms, keep_top_terms, log_saturation
from lightning_mlsr.models.registry import register_head
from lightning_mlsr.models.transformer import (
    mlm_head_parts,
    mlm_transform_dense,
    split_masked_lm,
)

__all__ = ["ImageMLMHead"]


Wiring = Literal["reference", "full"]


@register_head("image_mlm")
class ImageMLMHead(SparseEncoder):
    """Image -> vocabulary: ``log(1 + relu(decoder(LayerNorm(Linear(image_embedding)))))``.

    Only the text backbone's MLM head is kept (initialised from the pretrained model, the
    decoder from the word embeddings it was tied to); the transformer layers are dropped.
    The projection ``Linear(D, H)`` is new.

    ``wiring`` says which part of the MLM head the projected image goes through:

    - ``"reference"`` (default, as thongnt99/lsr-multimodal): the vocabulary LayerNorm and
      the decoder; the transform's dense layer and activation are skipped (and frozen, so
      they get no optimizer state and DDP sees no unused trainable parameter).
    - ``"full"``: the whole head, dense -> activation -> LayerNorm -> decoder. At init it
      activates the same filler terms for almost every image; on the bundled data its
      image vectors die within a few dozen steps (79% of images empty after 60 steps,
      seed 42, 64 px features).

    The encoder has no text transformer: ``text_backbone_name`` and ``text_model`` are
    None, and :func:`~lightning_mlsr.models.tie_text_backbones` refuses it (sharing a
    transformer into it would have no effect). ``mlm_backbone_name`` names the backbone
    whose head and vocabulary it uses.

    Args:
        text_backbone: backbone whose MLM head (and vocabulary) is used.
        image_backbone: ``timm`` model name.
        image_pretrained: load ImageNet weights for the image backbone.
        image_size: override the image backbone's input resolution.
        freeze_image_backbone: no gradients into the image backbone (features may then be
            precomputed and passed as ``image_features``).
        wiring: ``"reference"`` or ``"full"`` (see above).
        max_terms: keep only this many largest weights per image (None: all); a budget on
            non-zeros from the first step (an untrained projection activates about half the
            vocabulary).
        new_head_scale: where the text backbone's MLM head is new (MiniLM-L6), the starting
            scale of its LayerNorm weight (see
            :func:`~lightning_mlsr.models.backbones.init_new_mlm_head`); 1.0 as before.

    Shape:
        ``image_features`` ``(B, D)`` or ``pixel_values`` ``(B, 3, H, W)`` -> ``(B, V)``.
    """

    def __init__(
        self,
        text_backbone: str = DEFAULT_TEXT_BACKBONE,
        image_backbone: str = DEFAULT_IMAGE_BACKBONE,
        image_pretrained: bool = True,
        image_size: int | None = None,
        freeze_image_backbone: bool = True,
        wiring: Wiring = "reference",
        max_terms: int | None = None,
        new_head_scale: float = 1.0,
    ) -> None:
        if wiring not in ("reference", "full"):
            raise ValueError(f"ImageMLMHead: wiring must be 'reference' or 'full', got {wiring!r}")
        tokenizer = load_tokenizer(text_backbone)
        encoder, mlm_head = split_masked_lm(load_masked_lm(text_backbone, new_head_scale))
        config: Any = encoder.config
        super().__init__(vocabulary_size(config, tokenizer), tokenizer.all_special_ids)
        self.mlm_backbone_name = text_backbone
        self.image_backbone = ImageBackbone(
            image_backbone, image_pretrained, image_size=image_size, frozen=freeze_image_backbone
        )
        self.image_projection = nn.Linear(self.image_backbone.num_features, int(config.hidden_size))
        self.mlm_head = mlm_head  # the encoder is dropped here; its tied decoder weight stays
        self.wiring: Wiring = wiring
        _check_max_terms(max_terms, "ImageMLMHead")
        self.max_terms = max_terms
        if wiring == "reference":
            mlm_head_parts(mlm_head)  # fail now, not at the first batch, if unsupported
            dense = mlm_transform_dense(mlm_head)
            if dense is not None:
                dense.requires_grad_(False)  # skipped by the reference wiring

    def reads(self) -> Reads:
        """Images: cached features of a frozen backbone, else pixels."""
        return self.image_backbone.reads()

    @property
    def vocab_backbone_name(self) -> str | None:
        """The backbone whose MLM head (and vocabulary) scores the image."""
        return self.mlm_backbone_name

    def forward(self, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Term weights of the images. Shape: ``(B, D)`` -> ``(B, V)``."""
        features = self._image_features(
            inputs, self.image_backbone, self.image_projection.weight.dtype
        )  # (B, D)
        hidden = self.image_projection(features)  # (B, H)
        if self.wiring == "reference":
            layer_norm, decoder = mlm_head_parts(self.mlm_head)
            logits = decoder(layer_norm(hidden))  # (B, V)
        else:
            logits = self.mlm_head(hidden)  # (B, V)
        weights = self._mask_special_terms(log_saturation(logits))  # (B, V)
        return keep_top_terms(weights, self.max_terms)

    def new_parameters(self) -> list[nn.Parameter]:
        """The image projection (the MLM head and image backbone are pretrained)."""
        return list(self.image_projection.parameters())
