"""Reads: what an encoder reads, its checks and the union of two encoders of one batch."""

from __future__ import annotations

import pytest
import torch

from lightning_mlsr.io.encoder_reads import FeatureSpec, Reads


def _spec(key: str = "k") -> FeatureSpec:
    return FeatureSpec(key, "backbone", 8, (3, 4, 4), lambda im: torch.zeros(3, 4, 4), print)


def test_what_is_read_follows_from_the_fields() -> None:
    assert Reads().modalities == frozenset()
    text = Reads(tokenizer="splade-tiny", max_length=512)
    assert text.text and not text.images and text.modalities == {"text"}
    image = Reads(features=_spec())
    assert image.images and not image.text and image.modalities == {"image"}
    assert Reads(pixels=torch.zeros_like).modalities == {"image"}
    # equal cache keys compute the same features: equal whatever their callables
    assert Reads(features=_spec()) == Reads(features=_spec())
    assert Reads(features=_spec("a")) != Reads(features=_spec("b"))


def test_contradictions_are_refused() -> None:
    with pytest.raises(ValueError, match="pixels or as cached features"):
        Reads(pixels=torch.zeros_like, features=_spec())
    with pytest.raises(ValueError, match="token limit without a tokenizer"):
        Reads(max_length=32)


def test_two_encoders_of_one_batch_read_the_union() -> None:
    text = Reads(tokenizer="a", max_length=512)
    fused = Reads(tokenizer="b", max_length=511, features=_spec("fused"))
    image = Reads(features=_spec("image"))
    assert text | image == Reads(tokenizer="a", max_length=512, features=_spec("image"))
    assert image | text == text | image
    # both read text: the first one's tokenizer, cut for both; the second one's images
    assert text | fused == Reads(tokenizer="a", max_length=511, features=_spec("fused"))
    assert fused | image == Reads(tokenizer="b", max_length=511, features=_spec("image"))
