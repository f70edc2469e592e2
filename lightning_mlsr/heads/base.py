"""The common interface of every sparse encoder, and the pieces the heads share.

A :class:`SparseEncoder` maps a batch dict to ``(B, V)`` non-negative term weights over
the text vocabulary, so query and document encoders are interchangeable in YAML. Heads are
plain ``torch``: they never call ``autocast`` or move tensors between devices (the Trainer
owns precision and placement), and they import nothing from Lightning.

Batch keys a head may read:

- ``input_ids`` ``(B, L)`` long and ``attention_mask`` ``(B, L)`` long/bool — text;
- ``image_features`` ``(B, D)`` float — pooled features of a *frozen* image backbone,
  precomputed (and usually cached) by the DataModule;
- ``pixel_values`` ``(B, 3, H, W)`` float — used when ``image_features`` is absent.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal

import torch
from torch import nn

from lightning_mlsr.backbones import DEFAULT_TEXT_BACKBONE, ImageBackbone, load_tokenizer

__all__ = [
    "MissingInputError",
    "Pooling",
    "SparseEncoder",
    "TextTransformerEncoder",
    "build_image_backbone",
    "init_term_scorer",
    "log_saturation",
    "mlm_head_parts",
    "pool_vocab_logits",
    "scatter_token_weights",
    "split_masked_lm",
]

Pooling = Literal["sum", "max"]
_POOLINGS = ("sum", "max")


class MissingInputError(KeyError):
    """A head was given a batch without a key it needs."""

    def __str__(self) -> str:  # KeyError would print the message inside quotes
        return str(self.args[0]) if self.args else ""


def _check_pooling(pooling: str, where: str) -> None:
    if pooling not in _POOLINGS:
        raise ValueError(f"{where}: pooling must be one of {_POOLINGS}, got {pooling!r}")


def log_saturation(x: torch.Tensor) -> torch.Tensor:
    """``log(1 + relu(x))``: the non-negative, saturating term-weight activation."""
    return torch.log1p(torch.relu(x))


def scatter_token_weights(
    weights: torch.Tensor, input_ids: torch.Tensor, vocab_size: int, pooling: Pooling
) -> torch.Tensor:
    """Put per-token weights at their vocabulary ids; repeated ids are summed or maxed.

    ``weights`` must be non-negative and already zero at masked positions (those still
    land on their id, adding nothing).

    Shape:
        weights ``(B, L)``, input_ids ``(B, L)`` -> ``(B, V)``.
    """
    out = weights.new_zeros(weights.shape[0], vocab_size)  # (B, V)
    if pooling == "sum":
        return out.scatter_add(1, input_ids, weights)
    # weights >= 0, so including the zero we start from changes nothing
    return out.scatter_reduce(1, input_ids, weights, reduce="amax", include_self=True)


def pool_vocab_logits(logits: torch.Tensor, mask: torch.Tensor, pooling: Pooling) -> torch.Tensor:
    """SPLADE pooling of MLM logits: ``pool_l log(1 + relu(logits[:, l]))`` over kept tokens.

    Writes into ``logits`` to avoid copying a ``(B, L, V)`` tensor (they are a fresh
    activation from the head, not needed by autograd). For max pooling the activation is
    applied after the max (it is monotone, so the values are the same) so only one
    ``(B, L, V)`` tensor ever exists.

    Shape:
        logits ``(B, L, V)``, mask ``(B, L)`` bool (True = keep) -> ``(B, V)``.
    """
    drop = ~mask.unsqueeze(-1)  # (B, L, 1)
    if pooling == "max":
        logits.masked_fill_(drop, float("-inf"))
        return log_saturation(logits.amax(dim=1))  # (B, V)
    logits.masked_fill_(drop, 0.0)  # log(1 + relu(0)) = 0
    return log_saturation(logits).sum(dim=1)  # (B, V)


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


class SparseEncoder(nn.Module):
    """Base class: a batch dict -> ``(B, V)`` non-negative term weights.

    Attributes:
        modalities: the subset of ``{"text", "image"}`` the encoder reads.
        vocab_size: ``V``.
        text_backbone_name: name of the text transformer, or None when there is none.
        image_backbone: the image backbone module (for ``.transform()``/``.cache_key``), or
            None.
        freeze_image_backbone: True when the image backbone is frozen, so its features may
            be precomputed and passed as ``image_features``.
        special_token_ids: buffer of the tokenizer's special ids, masked out of the output.
        text_model: settable property, the transformer used for text (or None); assign
            another encoder's ``text_model`` to share one backbone between encoders.

    Shape:
        ``forward(inputs)`` -> ``(B, V)``.
    """

    modalities: frozenset[str]
    vocab_size: int
    text_backbone_name: str | None
    image_backbone: ImageBackbone | None
    freeze_image_backbone: bool
    special_token_ids: torch.Tensor

    def __init__(self, vocab_size: int, special_token_ids: Iterable[int]) -> None:
        super().__init__()
        self.vocab_size = int(vocab_size)
        ids = sorted({int(i) for i in special_token_ids})
        self.register_buffer("special_token_ids", torch.tensor(ids, dtype=torch.long))

    # nn.Module.__setattr__ would register an assigned module under the property's name
    # and bypass the setter; route property assignments (``text_model``) to their setter.
    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(getattr(type(self), name, None), property):
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    @property
    def vocab_backbone_name(self) -> str | None:
        """The text backbone whose vocabulary the output dimensions are (None: unknown)."""
        return self.text_backbone_name

    def term_vocabulary(self) -> list[str]:
        """Output dimension -> wordpiece (the default backbone's when none is named)."""
        tokenizer = load_tokenizer(self.vocab_backbone_name or DEFAULT_TEXT_BACKBONE)
        return tokenizer.convert_ids_to_tokens(list(range(self.vocab_size)))

    @property
    def text_model(self) -> nn.Module | None:
        """The text transformer, or None for encoders without one."""
        return None

    @text_model.setter
    def text_model(self, model: nn.Module | None) -> None:
        if model is not None:
            raise AttributeError(
                f"{type(self).__name__} has no text transformer, so one cannot be shared into "
                "it; only tie text models between encoders whose text_backbone_name is set."
            )

    def forward(self, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Term weights. Shape: ``(B, V)``, non-negative."""
        raise NotImplementedError

    def new_parameters(self) -> list[nn.Parameter]:
        """Parameters of layers created from scratch (projections, term scorers).

        They form the ``new`` optimizer parameter group (a higher learning rate, as in the
        multimodal LSR reference); every other trainable parameter is pretrained.
        """
        return []

    def train(self, mode: bool = True) -> SparseEncoder:
        """Like ``nn.Module.train``, but a frozen image backbone stays in eval mode."""
        super().train(mode)
        backbone = self.image_backbone
        if backbone is not None and self.freeze_image_backbone:
            backbone.eval()  # frozen features (and BN statistics) must not drift
        return self

    # ------------------------------------------------------------------ helpers

    def _require(self, inputs: Mapping[str, torch.Tensor], key: str) -> torch.Tensor:
        if key not in inputs:
            raise MissingInputError(
                f"{type(self).__name__} needs the batch key {key!r}, but the batch has "
                f"{sorted(inputs)}; check that the DataModule provides the "
                f"{sorted(self.modalities)} input(s) this encoder reads."
            )
        return inputs[key]

    def _mask_special_terms(self, weights: torch.Tensor) -> torch.Tensor:
        """Zero the vocabulary columns of special tokens. Shape: ``(B, V)`` -> ``(B, V)``."""
        return weights.index_fill(1, self.special_token_ids, 0.0)

    def _token_mask(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """True for real, non-special tokens. Shape: ``(B, L)`` -> ``(B, L)`` bool."""
        return attention_mask.bool() & ~torch.isin(input_ids, self.special_token_ids)

    def _image_features(
        self, inputs: Mapping[str, torch.Tensor], backbone: ImageBackbone | None, dtype: torch.dtype
    ) -> torch.Tensor:
        """Precomputed ``image_features`` if given, else the backbone on ``pixel_values``.

        Shape: ``(B, D)``.
        """
        if "image_features" in inputs:
            features = inputs["image_features"]
        elif "pixel_values" in inputs:
            if backbone is None:
                raise MissingInputError(
                    f"{type(self).__name__} has no image backbone to run on 'pixel_values'; "
                    "pass precomputed 'image_features' instead."
                )
            if self.freeze_image_backbone:
                with torch.no_grad():
                    features = backbone(inputs["pixel_values"])  # (B, D)
            else:
                features = backbone(inputs["pixel_values"])  # (B, D)
        else:
            raise MissingInputError(
                f"{type(self).__name__} needs 'image_features' or 'pixel_values' in the batch, "
                f"but the batch has {sorted(inputs)}."
            )
        if backbone is not None and features.shape[-1] != backbone.num_features:
            raise ValueError(
                f"{type(self).__name__}: image features have dimension {features.shape[-1]}, but "
                f"the image backbone {backbone.cache_key!r} produces {backbone.num_features}; "
                "the feature cache was probably built with another backbone — rebuild it."
            )
        return features.to(dtype)  # cached features may be stored in another precision


def init_term_scorer(scorer: nn.Linear, bias: float = 1.0, std: float = 0.02) -> None:
    """Initialise an MLP term scorer so that (almost) every token starts active.

    Transformer hidden states share a common direction, so ``nn.Linear``'s default init
    puts about half the tokens (sometimes nearly all) below zero, where ``relu`` passes no
    gradient. A small weight (BERT's ``std=0.02``) and a positive bias start every token
    at a weight near ``log(1 + bias)``, from where training re-weights them.
    """
    nn.init.normal_(scorer.weight, std=std)
    nn.init.constant_(scorer.bias, bias)


def build_image_backbone(
    name: str, pretrained: bool, image_size: int | None, freeze: bool
) -> ImageBackbone:
    """A ``timm`` image backbone; a frozen one gets no gradients and stays in eval mode."""
    backbone = ImageBackbone(name, pretrained=pretrained, image_size=image_size)
    if freeze:
        backbone.requires_grad_(False)
        backbone.eval()
    return backbone


class TextTransformerEncoder(SparseEncoder):
    """Shared plumbing for heads built on a text transformer.

    Holds the transformer as ``self.encoder`` and, for MLM heads, the pretrained MLM head
    as ``self.mlm_head`` (hidden ``(..., H)`` -> logits ``(..., V)``). Assigning
    ``text_model`` swaps the transformer; an MLM decoder that was tied to the old word
    embeddings is re-tied to the new ones, so sharing a backbone keeps the pretrained tie.
    """

    def __init__(
        self, backbone: str, encoder: nn.Module, mlm_head: nn.Module | None = None
    ) -> None:
        tokenizer = load_tokenizer(backbone)
        # the model's embedding matrix is authoritative (a tokenizer may be shorter)
        config: Any = getattr(encoder, "config", None)
        if config is None:
            raise ValueError(f"text backbone {backbone!r} is not a transformers model (no config)")
        vocab_size = int(getattr(config, "vocab_size", len(tokenizer)))
        super().__init__(vocab_size, tokenizer.all_special_ids)
        self.text_backbone_name: str | None = backbone
        self.encoder = encoder
        self.mlm_head = mlm_head
        self.hidden_size = int(config.hidden_size)

    @property
    def text_model(self) -> nn.Module | None:
        """The text transformer (e.g. a ``BertModel``)."""
        return self.encoder

    @text_model.setter
    def text_model(self, model: nn.Module | None) -> None:
        if model is None:
            raise AttributeError(f"{type(self).__name__} needs a text transformer, got None")
        if self.mlm_head is not None:
            _retie_decoder(self.mlm_head, self.encoder, model)
        self.encoder = model

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
        logits = self.mlm_head(hidden)  # (B, L, V)
        return self._mask_special_terms(pool_vocab_logits(logits, keep, pooling))  # (B, V)
