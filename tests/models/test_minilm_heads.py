"""Sparse heads on a backbone without a pretrained MLM head (MiniLM-L6) and the D2S head:
hand computations of their forward passes, the tie to the input embeddings, and that an
untrained head ranks sensibly at step 0."""

from __future__ import annotations

import functools

import pytest
import torch

from lightning_mlsr.io.pretrained import load_tokenizer
from lightning_mlsr.models import D2SHead, ImageMLMHead, MLMHead
from lightning_mlsr.models.backbones import load_masked_lm
from lightning_mlsr.models.pooling import keep_top_terms

CAPTIONS = ["a cat sitting on a red sofa", "two dogs playing with a ball on the grass"]


@functools.cache
def tokenizer(backbone: str):
    return load_tokenizer(backbone)


def batch(backbone: str, texts: list[str] = CAPTIONS) -> dict[str, torch.Tensor]:
    enc = tokenizer(backbone)(texts, padding=True, return_tensors="pt")
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


def top_words(weights: torch.Tensor, backbone: str, k: int) -> list[list[str]]:
    ids = weights.topk(k, dim=-1).indices
    return [tokenizer(backbone).convert_ids_to_tokens(row.tolist()) for row in ids]


def test_keep_top_terms_keeps_the_k_largest_of_each_row_by_hand() -> None:
    weights = torch.tensor([[0.0, 3.0, 1.0, 2.0], [5.0, 0.0, 0.0, 0.0]], requires_grad=True)
    kept = keep_top_terms(weights, 2)
    assert kept.tolist() == [[0.0, 3.0, 0.0, 2.0], [5.0, 0.0, 0.0, 0.0]]
    kept.sum().backward()
    assert weights.grad is not None
    assert weights.grad[0].tolist() == [0.0, 1.0, 0.0, 1.0]  # only the kept weights learn
    assert keep_top_terms(weights, 4) is weights


def test_minilm_mlm_head_is_new_tied_to_the_input_embeddings_and_an_identity_transform() -> None:
    mlm = load_masked_lm("minilm-l6")
    assert mlm.new_mlm_head and not load_masked_lm("splade-tiny").new_mlm_head
    predictions = mlm.cls.predictions
    assert predictions.decoder.weight is mlm.bert.get_input_embeddings().weight
    assert torch.equal(predictions.transform.dense.weight, torch.eye(384))
    assert not predictions.bias.any()
    hidden = torch.randn(5, 384).clamp(min=-3.5)  # MiniLM's hidden states stay above -3.1
    with torch.no_grad():  # the shift keeps gelu linear, and the LayerNorm removes it
        torch.testing.assert_close(
            predictions.transform(hidden),
            torch.nn.functional.layer_norm(hidden, (384,)),
            atol=1e-4,
            rtol=1e-4,
        )


def test_tied_mlm_head_on_minilm_against_a_hand_computation() -> None:
    head = MLMHead("minilm-l6").eval()
    inputs = batch("minilm-l6")
    with torch.no_grad():
        out = head(inputs)
        hidden = head.encoder(**inputs).last_hidden_state  # (B, L, H)
        embeddings = head.encoder.get_input_embeddings().weight  # (V, H)
        eps = head.encoder.config.layer_norm_eps
        normed = torch.nn.functional.layer_norm(hidden, (384,), eps=eps)
        logits = normed @ embeddings.T  # (B, L, V): the transform is LayerNorm alone at init
        expected = torch.log1p(torch.relu(logits)) * inputs["attention_mask"].unsqueeze(-1)
        expected = expected.max(dim=1).values
        expected[:, tokenizer("minilm-l6").all_special_ids] = 0
    assert out.shape == (2, 30522) and bool((out >= 0).all())
    torch.testing.assert_close(out, expected, atol=1e-4, rtol=1e-4)


def test_new_head_scale_scales_the_new_heads_logits_by_hand() -> None:
    inputs = batch("minilm-l6")
    scaled = MLMHead("minilm-l6", new_head_scale=0.2).eval()
    predictions = scaled.mlm_head.predictions
    assert torch.equal(predictions.transform.LayerNorm.weight, torch.full((384,), 0.2))
    with torch.no_grad():
        hidden = scaled.encoder(**inputs).last_hidden_state
        eps = scaled.encoder.config.layer_norm_eps
        logits = 0.2 * torch.nn.functional.layer_norm(hidden, (384,), eps=eps)
        logits = logits @ scaled.encoder.get_input_embeddings().weight.T
        expected = torch.log1p(torch.relu(logits)) * inputs["attention_mask"].unsqueeze(-1)
        expected = expected.max(dim=1).values
        expected[:, tokenizer("minilm-l6").all_special_ids] = 0
        out = scaled(inputs)
        plain = MLMHead("minilm-l6").eval()(inputs)
    torch.testing.assert_close(out, expected, atol=1e-4, rtol=1e-4)
    assert bool((out <= plain + 1e-6).all()) and float(out.max()) < 0.5 * float(plain.max())
    # every text keeps its terms' order: log1p(relu(.)) is monotone in the scaled logit
    assert top_words(out, "minilm-l6", 10) == top_words(plain, "minilm-l6", 10)
    # a pretrained MLM head is not rescaled
    tiny = MLMHead("splade-tiny", new_head_scale=0.2).mlm_head.predictions.transform.LayerNorm
    assert not torch.equal(tiny.weight, torch.full_like(tiny.weight, 0.2))


def test_image_mlm_head_new_head_scale_scales_its_logits_by_hand() -> None:
    torch.manual_seed(0)
    plain = ImageMLMHead("minilm-l6").eval()
    scaled = ImageMLMHead("minilm-l6", new_head_scale=0.2).eval()
    scaled.image_projection.load_state_dict(plain.image_projection.state_dict())
    features = {"image_features": torch.randn(3, plain.image_backbone.num_features)}
    layer_norm = scaled.mlm_head.predictions.transform.LayerNorm
    assert torch.equal(layer_norm.weight, torch.full((384,), 0.2))
    with torch.no_grad():
        hidden = plain.image_projection(features["image_features"])
        normed = torch.nn.functional.layer_norm(hidden, (384,), eps=layer_norm.eps)
        logits = 0.2 * normed @ scaled.mlm_head.predictions.decoder.weight.T
        expected = torch.log1p(torch.relu(logits))
        expected[:, tokenizer("minilm-l6").all_special_ids] = 0
        torch.testing.assert_close(scaled(features), expected, atol=1e-5, rtol=1e-5)
        assert top_words(scaled(features), "minilm-l6", 10) == top_words(
            plain(features), "minilm-l6", 10
        )


@pytest.mark.parametrize("scale", [0.0, -1.0, float("nan")])
def test_new_head_scale_must_be_positive(scale: float) -> None:
    with pytest.raises(ValueError, match="new_head_scale must be a positive number"):
        load_masked_lm("minilm-l6", new_head_scale=scale)


def _d2s_by_hand(head: D2SHead, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    hidden = head.encoder(**inputs).last_hidden_state  # (B, L, H)
    mask = inputs["attention_mask"].unsqueeze(-1).float()
    pooled = (hidden * mask).sum(1) / mask.sum(1)  # (B, H)
    predictions = head.mlm_head.predictions
    normed = predictions.transform.LayerNorm(head.projection(pooled))
    weights = torch.log1p(torch.relu(predictions.decoder(normed)))  # (B, V)
    weights[:, tokenizer(head.text_backbone_name).all_special_ids] = 0
    return weights


@pytest.mark.parametrize("backbone", ["splade-tiny", "minilm-l6"])
def test_d2s_head_against_a_hand_computation(backbone: str) -> None:
    torch.manual_seed(0)
    head = D2SHead(backbone).eval()
    with torch.no_grad():
        head.projection.weight.add_(0.01 * torch.randn_like(head.projection.weight))
        inputs = batch(backbone)
        torch.testing.assert_close(head(inputs), _d2s_by_hand(head, inputs))


def test_d2s_new_head_scale_starts_the_layer_norm_small_against_the_hand_computation() -> None:
    head = D2SHead("minilm-l6", new_head_scale=0.2).eval()
    weight = head.mlm_head.predictions.transform.LayerNorm.weight
    assert torch.equal(weight, torch.full((384,), 0.2))
    inputs = batch("minilm-l6")
    with torch.no_grad():
        torch.testing.assert_close(head(inputs), _d2s_by_hand(head, inputs))


def test_d2s_projection_starts_as_the_identity_and_trains_as_a_pretrained_part() -> None:
    head = D2SHead("splade-tiny")
    assert torch.equal(head.projection.weight, torch.eye(head.hidden_size))
    assert head.new_parameters() == []  # started as the identity: the pretrained rate
    dense = head.mlm_head.predictions.transform.dense  # skipped: no gradient, no optimizer state
    assert not any(p.requires_grad for p in dense.parameters())


def test_d2s_max_terms_and_input_expansion() -> None:
    inputs = batch("minilm-l6")
    with torch.no_grad():
        full = D2SHead("minilm-l6").eval()(inputs)
        capped = D2SHead("minilm-l6", max_terms=16).eval()(inputs)
        own = D2SHead("minilm-l6", expansion="input").eval()(inputs)
    assert ((capped > 0).sum(-1) <= 16).all()
    torch.testing.assert_close(capped, keep_top_terms(full, 16))
    for row, ids in zip(own, inputs["input_ids"]):
        assert set(row.nonzero().flatten().tolist()) <= set(ids.tolist())
    torch.testing.assert_close(own[own > 0], full[own > 0])


def test_minilm_heads_rank_sensibly_before_any_training() -> None:
    """Untrained, the tied heads already put the captions' own content words first."""
    inputs = batch("minilm-l6")
    with torch.no_grad():
        d2s = D2SHead("minilm-l6").eval()(inputs)
        mlm = MLMHead("minilm-l6").eval()(inputs)
    cat, _ = top_words(d2s, "minilm-l6", 10)  # one pooled vector: coarser than per token
    assert {"cat", "sofa"} <= set(cat), cat
    cat, dogs = top_words(mlm, "minilm-l6", 10)
    assert {"cat", "sofa", "sitting", "red"} <= set(cat), cat
    assert {"dogs", "ball", "grass"} <= set(dogs), dogs
    capped = MLMHead("minilm-l6", max_terms=64).eval()
    with torch.no_grad():
        torch.testing.assert_close(capped(inputs), keep_top_terms(mlm, 64))


def test_image_head_max_terms_caps_the_nonzeros() -> None:
    head = ImageMLMHead(
        "minilm-l6", image_backbone="test_efficientnet", image_pretrained=False, max_terms=32
    )
    out = head({"image_features": torch.randn(3, head.image_backbone.num_features)})
    assert out.shape == (3, 30522) and ((out > 0).sum(-1) <= 32).all()
    assert head.mlm_head.predictions.decoder.weight.shape == (30522, 384)
