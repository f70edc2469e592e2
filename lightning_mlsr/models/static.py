"""An inference-free query head: one learned weight per vocabulary term, no transformer.

A query's vector is the weights of the distinct terms it contains, so encoding a query is
a tokenizer call and a table lookup (sentence-transformers' ``SparseStaticEmbedding``,
OpenSearch's inference-free sparse models). The document side carries all the modelling.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal, cast

import torch
from torch import nn

from lightning_mlsr.io.encoder_reads import Reads
from lightning_mlsr.io.pretrained import DEFAULT_TEXT_BACKBONE, load_tokenizer
from lightning_mlsr.models.backbones import vocabulary_size
from lightning_mlsr.models.encoder import SparseEncoder
from lightning_mlsr.models.registry import register_head

__all__ = ["StaticQueryHead", "idf_weights"]

StaticInit = Literal["ones", "idf"]


def idf_weights(texts: Sequence[str], tokenizer: Any, vocab_size: int) -> torch.Tensor:
    """BM25's inverse document frequency of every vocabulary term over ``texts``:
    ``log(1 + (N - df + 0.5) / (df + 0.5))``, positive for every term (a term in no text
    gets the largest value).

    Shape: ``(V,)`` fp32.
    """
    df = torch.zeros(vocab_size, dtype=torch.float64)
    for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]:
        if ids:
            df[torch.tensor(sorted(set(ids)), dtype=torch.long)] += 1
    n = float(len(texts))
    return torch.log1p((n - df + 0.5) / (df + 0.5)).float()


@register_head("static")
class StaticQueryHead(SparseEncoder):
    """``w_t = relu(theta_t)`` for every distinct non-special term ``t`` of the input, 0
    elsewhere: a learned, non-negative per-term weight table.

    A term repeated in a query counts once (as ``SparseStaticEmbedding``); padding and
    special tokens get no weight.

    Args:
        backbone: the text backbone whose tokenizer (and vocabulary) is used; its
            transformer is not loaded.
        init: ``"ones"`` (every term starts at 1) or ``"idf"``: BM25 IDF over the
            captions of every image of the collection trained on, which the training
            module hands over when a fit starts (:meth:`start_from_idf`; no judgment is
            read; a head read from a checkpoint or a folder keeps its weights).
        checkpoint: a sentence-transformers folder whose ``SparseStaticEmbedding`` (alone,
            or the query route of an inference-free model) gives the starting weights;
            overrides ``init``.

    Shape:
        ``input_ids``/``attention_mask`` ``(B, L)`` -> ``(B, V)``.
    """

    def __init__(
        self,
        backbone: str = DEFAULT_TEXT_BACKBONE,
        init: StaticInit = "ones",
        checkpoint: str | None = None,
    ) -> None:
        tokenizer = load_tokenizer(backbone)
        vocab_size = vocabulary_size(None, tokenizer)  # no model: the tokenizer says
        super().__init__(vocab_size, tokenizer.all_special_ids)
        self.text_backbone_name = backbone
        self.init = init
        #: whether the table still waits for its IDF start (``init="idf"``, no weights read)
        self.wants_idf_start = init == "idf" and checkpoint is None
        if checkpoint is not None:
            from lightning_mlsr.io.public_checkpoints import load_static_weights

            start = load_static_weights(checkpoint, vocab_size)
        else:
            start = torch.ones(vocab_size)
        # the term scorer is the table itself (V,), named as the MLP head's scorer is
        self.term_scorer = nn.Parameter(start.clone().float())
        self._max_length = int(tokenizer.model_max_length)
        self.register_load_state_dict_post_hook(_weights_were_read)

    def start_from_idf(self, texts: Sequence[str]) -> None:
        """Set the table to BM25 IDF over ``texts`` (:func:`idf_weights`): the ``init="idf"``
        start, given the training collection's captions."""
        tokenizer = load_tokenizer(self.text_backbone_name or DEFAULT_TEXT_BACKBONE)
        with torch.no_grad():
            self.term_scorer.copy_(idf_weights(texts, tokenizer, self.vocab_size))
        self.wants_idf_start = False

    def reads(self) -> Reads:
        """Texts by the backbone's tokenizer, at most the tokenizer's limit (there are no
        position embeddings; sentence-transformers truncates there too)."""
        limit = self._max_length if self._max_length < 1_000_000 else None
        return Reads(tokenizer=self.text_backbone_name, max_length=limit)

    def term_weights(self) -> torch.Tensor:
        """The effective, non-negative weight of every term. Shape: ``(V,)``."""
        return torch.relu(self.term_scorer)

    def forward(self, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Weights of the distinct input terms. Shape: ``(B, L)`` -> ``(B, V)``."""
        input_ids = self._require(inputs, "input_ids")
        attention_mask = self._require(inputs, "attention_mask")
        keep = self._token_mask(input_ids, attention_mask).to(self.term_scorer.dtype)  # (B, L)
        present = keep.new_zeros(input_ids.shape[0], self.vocab_size)  # (B, V)
        present = present.scatter_reduce(1, input_ids, keep, reduce="amax", include_self=True)
        return present * self.term_weights()  # (B, V)

    def new_parameters(self) -> list[nn.Parameter]:
        """The weight table (nothing here is pretrained)."""
        return [self.term_scorer]


def _weights_were_read(module: nn.Module, incompatible_keys: Any) -> None:
    """Weights loaded from a checkpoint or a folder replace any pending IDF start."""
    cast(StaticQueryHead, module).wants_idf_start = False
