"""Every sparse head: the shared contract (timm-style, over the registry), then per-head
behaviour checked against hand examples and naive references."""

from __future__ import annotations

import functools

import pytest
import torch
from PIL import Image
from torch import nn

from lightning_mlsr.io.pretrained import load_tokenizer
from lightning_mlsr.models import (
    HEADS,
    DenseEncoder,
    DenseTextHead,
    Encoder,
    FusedImageTextHead,
    ImageMLMHead,
    LateFusionHead,
    MissingInputError,
    MLMHead,
    MLPHead,
    SparseEncoder,
    is_dense_model,
    list_heads,
    tie_text_backbones,
)
from lightning_mlsr.models.image_backbone import ImageBackbone
from lightning_mlsr.models.pooling import (
    pool_kept_vocab_logits,
    pool_vocab_logits,
    scatter_token_weights,
)
from tests.helpers import HEAD_CONFIGS as CONFIGS
from tests.helpers import TINY_ARGS, TINY_IMAGE, VARIANTS
from tests.helpers import make_head as make

V = 30522
IMAGE_DIM = 256  # test_efficientnet's pooled features
CAPTIONS = ["a cat sitting on a red sofa", "two dogs, two dogs and a ball on the grass"]
IMAGE_CONFIGS = ["image_mlm", "fused", "fused-mlm", "late_fusion", "dense_image"]
TEXT_CONFIGS = [k for k in CONFIGS if k not in ("image_mlm", "dense_image")]


@functools.cache
def build(config: str) -> Encoder:
    """A shared instance per configuration (tests that mutate heads build their own)."""
    torch.manual_seed(0)
    return make(config)


@functools.cache
def tokenizer():
    return load_tokenizer("splade-tiny")


def batch(texts: list[str] = CAPTIONS, seed: int = 0) -> dict[str, torch.Tensor]:
    tokens = tokenizer()(texts, return_tensors="pt", padding=True)
    generator = torch.Generator().manual_seed(seed)
    return {
        "input_ids": tokens["input_ids"],
        "attention_mask": tokens["attention_mask"],
        "image_features": torch.rand(len(texts), IMAGE_DIM, generator=generator) * 2,
    }


def image_backbone(head: Encoder) -> ImageBackbone:
    """The head's image backbone (a late fusion head's is its image sub-head's)."""
    return next(m for m in head.modules() if isinstance(m, ImageBackbone))


def token_id(word: str) -> int:
    return int(tokenizer().convert_tokens_to_ids(word))


def test_the_registry_holds_every_head_of_both_kinds() -> None:
    assert set(list_heads(SparseEncoder)) == {
        "mlp",
        "mlm",
        "d2s",
        "image_mlm",
        "fused",
        "late_fusion",
        "static",
    }
    assert set(list_heads(DenseEncoder)) == {"dense_text", "dense_image"}
    assert list_heads() == sorted(HEADS)
    for name, cls in HEADS.items():  # every head is exactly one kind
        assert issubclass(cls, SparseEncoder) != issubclass(cls, DenseEncoder), name
    assert set(TINY_ARGS) <= set(HEADS) and all(n in HEADS for n, _ in VARIANTS.values())


# --------------------------------------------------------------------------- contract


@pytest.mark.parametrize("config", list(CONFIGS))
def test_head_contract_forward_backward(config: str) -> None:
    """Sparse: ``(B, V)`` non-negative, special terms zero; dense: ``(B, D)``, unit norm."""
    head = build(config)
    head.train()
    head.zero_grad()
    inputs = batch()
    weights = head(inputs)
    assert weights.dtype == torch.float32 and torch.isfinite(weights).all()
    if isinstance(head, SparseEncoder):
        assert weights.shape == (2, V) and head.vocab_size == V
        assert (weights >= 0).all()
        assert (weights > 0).any(dim=1).all(), "every example should activate some term"
        assert (weights[:, head.special_token_ids] == 0).all(), "special tokens are never terms"
    else:
        assert isinstance(head, DenseEncoder)
        assert weights.shape == (2, head.dim)
        torch.testing.assert_close(weights.norm(dim=1), torch.ones(2))  # normalize=True
    reads = head.reads()
    assert reads.modalities <= {"text", "image"} and reads.modalities
    assert (head.text_backbone_name is not None) == reads.text
    backbones = [m for m in head.modules() if isinstance(m, ImageBackbone)]
    assert len(backbones) == reads.images

    torch.manual_seed(1)
    (weights * torch.rand_like(weights)).sum().backward()
    trainable = {n: p for n, p in head.named_parameters() if p.requires_grad}
    assert trainable
    for name, param in trainable.items():
        assert param.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(param.grad).all(), f"{name} has a non-finite gradient"
    # the newly added parameters (scorers, projections) learn
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in head.new_parameters())
    for backbone in backbones:
        assert backbone.frozen
        assert not any(p.requires_grad for p in backbone.parameters())
        assert not backbone.training, "a frozen backbone stays in eval mode"
    head.zero_grad()


@pytest.mark.parametrize("config", list(CONFIGS))
def test_reads_name_what_the_data_must_provide(config: str) -> None:
    head = build(config)
    reads = head.reads()
    assert reads.tokenizer == head.text_backbone_name
    assert reads.tokenizer in (None, "splade-tiny", "minilm-l6")
    # the fused head's image token takes one of the backbone's 512 positions
    assert reads.max_length == (
        (511 if isinstance(head, FusedImageTextHead) else 512) if reads.text else None
    )
    assert reads.pixels is None  # every test head freezes its image backbone
    features = reads.features
    assert (features is not None) == reads.images
    if features is not None:  # plain values and a frozen copy, not the head's module
        backbone = image_backbone(head)
        assert features.cache_key == backbone.cache_key and features.dim == backbone.num_features
        compute = features.compute_on(torch.device("cpu"))
        assert compute is not backbone and not any(p.requires_grad for p in compute.parameters())


def test_a_trained_image_backbone_is_read_as_pixels() -> None:
    head = ImageMLMHead(**TINY_IMAGE, freeze_image_backbone=False)
    reads = head.reads()
    assert reads.modalities == {"image"} and reads.features is None and reads.pixels is not None
    pixels = reads.pixels(Image.new("RGB", (40, 30)))
    assert pixels.shape == tuple(head.image_backbone.data_config["input_size"])
    late = LateFusionHead(MLPHead(), head).reads()
    assert late.tokenizer == "splade-tiny" and late.max_length == 512 and late.pixels is not None


def test_dense_and_sparse_are_told_apart_by_type() -> None:
    class Pair:
        def __init__(self, q: Encoder, d: Encoder) -> None:
            self.query_encoder, self.doc_encoder = q, d

    assert is_dense_model(Pair(build("dense_text"), build("dense_image")))
    assert not is_dense_model(Pair(build("mlp"), build("image_mlm")))
    with pytest.raises(ValueError, match="both be sparse heads or both dense"):
        is_dense_model(Pair(build("mlp"), build("dense_text")))
    assert not hasattr(build("dense_text"), "vocab_size"), "a dense head has no vocabulary"


@pytest.mark.parametrize("config", TEXT_CONFIGS)
def test_padding_does_not_change_the_output(config: str) -> None:
    head = build(config).eval()
    inputs = batch(CAPTIONS[:1])
    padded = dict(inputs)
    pad = torch.full((1, 5), tokenizer().pad_token_id)
    padded["input_ids"] = torch.cat([inputs["input_ids"], pad], dim=1)
    padded["attention_mask"] = torch.cat([inputs["attention_mask"], torch.zeros_like(pad)], dim=1)
    with torch.no_grad():
        torch.testing.assert_close(head(padded), head(inputs), atol=1e-5, rtol=1e-5)
        # and inside a padded batch: row 0 of a 2-caption batch == the caption alone
        together = head(batch(CAPTIONS))
        torch.testing.assert_close(together[:1], head(inputs), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("config", TEXT_CONFIGS)
def test_missing_text_key_names_key_and_head(config: str) -> None:
    head = build(config)
    inputs = batch()
    del inputs["attention_mask"]
    with pytest.raises(MissingInputError, match=r"\w+Head needs the batch key 'attention_mask'"):
        head(inputs)
    assert issubclass(MissingInputError, KeyError)


@pytest.mark.parametrize("config", IMAGE_CONFIGS)
def test_missing_image_key_is_reported(config: str) -> None:
    inputs = batch()
    del inputs["image_features"]
    with pytest.raises(MissingInputError, match="image_features' or 'pixel_values"):
        build(config)(inputs)


# --------------------------------------------------------------------------- pooling


def test_scatter_token_weights_sum_and_max_by_hand() -> None:
    weights = torch.tensor([[1.0, 2.0, 3.0, 0.0], [0.5, 0.0, 0.0, 0.0]])
    ids = torch.tensor([[5, 7, 5, 5], [2, 5, 0, 0]])
    summed = scatter_token_weights(weights, ids, 8, "sum")
    maxed = scatter_token_weights(weights, ids, 8, "max")
    expected_sum = torch.zeros(2, 8)
    expected_sum[0, 5], expected_sum[0, 7], expected_sum[1, 2] = 4.0, 2.0, 0.5
    expected_max = expected_sum.clone()
    expected_max[0, 5] = 3.0
    torch.testing.assert_close(summed, expected_sum)
    torch.testing.assert_close(maxed, expected_max)


def test_pool_vocab_logits_matches_activation_then_pooling() -> None:
    torch.manual_seed(0)
    logits = torch.randn(3, 5, 11)
    keep = torch.rand(3, 5) > 0.3
    keep[2] = False  # an example with no kept token gives all zeros
    activated = torch.log1p(torch.relu(logits)) * keep.unsqueeze(-1)  # (B, L, V)
    torch.testing.assert_close(pool_vocab_logits(logits.clone(), keep, "sum"), activated.sum(1))
    torch.testing.assert_close(
        pool_vocab_logits(logits.clone(), keep, "max"), activated.amax(1), atol=0, rtol=0
    )
    assert (pool_vocab_logits(logits.clone(), keep, "max")[2] == 0).all()


@pytest.mark.parametrize("pooling", ["max", "sum"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_packed_pooling_gives_the_padded_values_and_gradients(
    pooling: str, dtype: torch.dtype
) -> None:
    """The head run only at kept positions: same output and the same gradients for the
    hidden states and the head's weights as running it everywhere and masking."""
    torch.manual_seed(0)
    head = nn.Sequential(nn.Linear(6, 6), nn.GELU(), nn.LayerNorm(6), nn.Linear(6, 13)).to(dtype)
    hidden = torch.randn(4, 5, 6, dtype=dtype)
    hidden[0, 2] = hidden[0, 1]  # a tie: max's gradient is shared between the two positions
    keep = torch.tensor(
        [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0], [1, 0, 1, 0, 1]], dtype=torch.bool
    )
    weights = torch.randn(4, 13, dtype=dtype)
    results = []
    for pool in (
        lambda h: pool_vocab_logits(head(h), keep, pooling),  # type: ignore[arg-type]
        lambda h: pool_kept_vocab_logits(head, h, keep, pooling),  # type: ignore[arg-type]
    ):
        h = hidden.clone().requires_grad_(True)
        out = pool(h)
        grads = torch.autograd.grad((out * weights).sum(), [h, *head.parameters()])
        results.append((out, grads))
    (padded, padded_grads), (packed, packed_grads) = results
    torch.testing.assert_close(packed, padded)  # a (N, H) matmul may round unlike (B, L, H)
    assert (packed[2] == 0).all()  # no kept token: an all-zero vector
    assert (packed[0] > 0).any()  # the test exercises active terms
    # bf16 gradients are sums over positions rounded to 8 bits, in another order when packed
    tolerance = {"atol": 1e-2, "rtol": 5e-2} if dtype == torch.bfloat16 else {}
    for got, want in zip(packed_grads, padded_grads, strict=True):
        torch.testing.assert_close(got, want, **tolerance)


def test_mlm_head_runs_its_vocabulary_projection_only_at_kept_positions() -> None:
    """Padding is not projected onto the vocabulary (the speed-up); a batch without padding
    takes the unpacked path; both give the padded computation's vectors."""
    torch.manual_seed(0)
    head = MLMHead().eval()
    seen: list[int] = []
    hook = head.mlm_head.register_forward_hook(lambda m, i, o: seen.append(o.shape[:-1].numel()))
    for texts in (["a dog runs in the park with a ball", "cat"], ["cat", "dog"]):
        inputs = batch(texts)
        ids, mask = inputs["input_ids"], inputs["attention_mask"]
        seen.clear()
        with torch.no_grad():
            got = head(inputs)
            hidden = head.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
            want = pool_vocab_logits(head.mlm_head(hidden), mask.bool(), "max")
        assert seen[0] == int(mask.sum())  # padded batch: kept positions only; full: all
        torch.testing.assert_close(got, head._mask_special_terms(want))
    hook.remove()


def test_mlp_head_against_a_naive_loop_for_sum_and_max() -> None:
    torch.manual_seed(0)
    summing = MLPHead(pooling="sum").eval()
    maxing = MLPHead(pooling="max").eval()
    maxing.load_state_dict(summing.state_dict())
    with torch.no_grad():
        nn_init = summing.term_scorer
        nn_init.weight.normal_(0, 0.2)
        nn_init.bias.fill_(0.5)  # most tokens active, so repeats are really combined
        maxing.load_state_dict(summing.state_dict())
    inputs = batch(["dog dog cat dog", "cat"])
    with torch.no_grad():
        hidden = summing.encoder(
            input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]
        ).last_hidden_state
        per_token = torch.log1p(torch.relu(summing.term_scorer(hidden).squeeze(-1)))  # (B, L)
        got_sum, got_max = summing(inputs), maxing(inputs)
    special = set(tokenizer().all_special_ids)
    expected_sum, expected_max = torch.zeros(2, V), torch.zeros(2, V)
    for b in range(2):
        for pos in range(inputs["input_ids"].shape[1]):
            tid = int(inputs["input_ids"][b, pos])
            if inputs["attention_mask"][b, pos] == 0 or tid in special:
                continue
            expected_sum[b, tid] += per_token[b, pos]
            expected_max[b, tid] = max(expected_max[b, tid], per_token[b, pos])
    torch.testing.assert_close(got_sum, expected_sum)
    torch.testing.assert_close(got_max, expected_max)
    dog = token_id("dog")
    assert got_sum[0, dog] > got_max[0, dog] > 0, "three 'dog's: sum exceeds max"


# --------------------------------------------------------------------------- text heads


@pytest.mark.parametrize("config", ["mlp", "mlp-max", "fused"])
def test_mlp_weights_only_on_input_tokens(config: str) -> None:
    head = build(config).eval()
    inputs = batch()
    with torch.no_grad():
        weights = head(inputs)
    special = set(tokenizer().all_special_ids)
    for row, ids in zip(weights, inputs["input_ids"]):
        allowed = {int(i) for i in ids} - special
        active = {int(i) for i in row.nonzero().flatten()}
        assert active <= allowed
    for name in ("[CLS]", "[SEP]", "[PAD]"):
        assert (weights[:, token_id(name)] == 0).all()


def test_mlm_expands_beyond_the_input() -> None:
    head = build("mlm").eval()
    inputs = batch(CAPTIONS[:1])
    with torch.no_grad():
        weights = head(inputs)[0]
    for word in ("cat", "red", "sofa"):
        assert weights[token_id(word)] > 0
    inputs_ids = {int(i) for i in inputs["input_ids"][0]}
    for word in ("couch", "cats"):
        assert token_id(word) not in inputs_ids
        assert weights[token_id(word)] > 0, f"SPLADE-tiny should expand to {word!r}"
    assert (weights > 0).sum() > len(inputs_ids)


def test_sharing_the_text_model_between_encoders() -> None:
    query, doc = MLPHead(), MLMHead().eval()
    with torch.no_grad():
        before = doc(batch())
    tie_text_backbones(query, doc)
    assert doc.text_model is query.text_model and doc.encoder is query.encoder
    decoder = doc.mlm_head.predictions.decoder
    assert decoder.weight is query.encoder.get_input_embeddings().weight, "decoder re-tied"
    with torch.no_grad():  # same pretrained weights, so the same output
        torch.testing.assert_close(doc(batch()), before)
    shared = {id(p) for p in query.parameters()}
    assert sum(id(p) in shared for p in doc.parameters()) == sum(
        1 for _ in query.encoder.parameters()
    )


def test_sharing_reaches_fused_late_fusion_and_dense_heads() -> None:
    query = MLPHead()
    fused = FusedImageTextHead(head="mlm", **TINY_IMAGE)  # type: ignore[arg-type]
    late = LateFusionHead(MLPHead(), ImageMLMHead(**TINY_IMAGE), combine="max")  # type: ignore[arg-type]
    tie_text_backbones(query, fused)
    tie_text_backbones(query, late)
    assert fused.encoder is query.encoder and late.text_head.text_model is query.encoder
    assert fused.mlm_head.predictions.decoder.weight is query.encoder.get_input_embeddings().weight
    with pytest.raises(ValueError, match="ImageMLMHead has none"):
        tie_text_backbones(query, late.image_head)
    assert late.image_head.text_model is None and late.image_head.text_backbone_name is None
    with pytest.raises(ValueError, match="same text backbone"):
        tie_text_backbones(query, build("dense_text"))
    dense_q, dense_d = DenseTextHead(), DenseTextHead()
    tie_text_backbones(dense_q, dense_d)
    assert dense_d.encoder is dense_q.encoder


# --------------------------------------------------------------------------- image heads


@pytest.mark.parametrize("config", IMAGE_CONFIGS)
def test_features_and_pixels_give_the_same_output(config: str) -> None:
    head = build(config).eval()
    pixels = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    inputs = batch()
    del inputs["image_features"]
    with torch.no_grad():
        features = image_backbone(head)(pixels)
        from_pixels = head({**inputs, "pixel_values": pixels})
        from_features = head({**inputs, "image_features": features})
        # precomputed features win when both are present
        both = head({**inputs, "image_features": features, "pixel_values": pixels * 0})
    torch.testing.assert_close(from_pixels, from_features)
    torch.testing.assert_close(both, from_features)


def test_image_features_of_the_wrong_backbone_are_rejected() -> None:
    with pytest.raises(ValueError, match="feature cache"):
        build("image_mlm")({"image_features": torch.rand(2, IMAGE_DIM + 1)})


def test_image_mlm_head_keeps_the_pretrained_mlm_head() -> None:
    image, text = build("image_mlm"), build("mlm")
    assert not hasattr(image, "encoder"), "the transformer layers are dropped"
    for (name, got), (_, want) in zip(
        image.mlm_head.state_dict().items(), text.mlm_head.state_dict().items()
    ):
        torch.testing.assert_close(got, want, msg=name)
    assert image.reads().modalities == {"image"} and image.text_model is None


@pytest.mark.parametrize("config", ["fused", "fused-mlm"])
def test_fused_output_depends_on_the_image(config: str) -> None:
    head = build(config).eval()
    inputs = batch()
    with torch.no_grad():
        first = head(inputs)
        second = head({**inputs, "image_features": inputs["image_features"].flip(0)})
    assert not torch.allclose(first, second)
    if config == "fused":  # the image changes weights, never which terms can fire
        assert ((first > 0) <= (inputs_mask := _input_terms(inputs))).all()
        assert ((second > 0) <= inputs_mask).all()


@pytest.mark.parametrize("config", ["fused", "fused-mlm"])
def test_fused_head_against_a_naive_reference(config: str) -> None:
    """The image token sits right after [CLS]; MLP scores caption tokens, MLM all kept ones."""
    head = build(config).eval()
    inputs = batch()
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    special = set(tokenizer().all_special_ids)
    with torch.no_grad():
        image = head.image_projection(inputs["image_features"])  # (B, H)
        words = head.encoder.get_input_embeddings()
        rows, masks = [], []
        for b in range(ids.shape[0]):
            tokens = [words(ids[b, p]) for p in range(ids.shape[1])]
            rows.append(torch.stack([tokens[0], image[b], *tokens[1:]]))
            masks.append(torch.tensor([int(mask[b, 0]), 1, *mask[b, 1:].tolist()]))
        hidden = head.encoder(
            inputs_embeds=torch.stack(rows), attention_mask=torch.stack(masks)
        ).last_hidden_state  # (B, L+1, H)
        expected = torch.zeros(ids.shape[0], V)
        for b in range(ids.shape[0]):
            kept = [p for p in range(ids.shape[1]) if mask[b, p] and int(ids[b, p]) not in special]
            if config == "fused":
                for p in kept:
                    at = 0 if p == 0 else p + 1
                    score = torch.log1p(torch.relu(head.term_scorer(hidden[b, at])))[0]
                    expected[b, ids[b, p]] += score
            else:
                positions = [1] + [0 if p == 0 else p + 1 for p in kept]
                logits = head.mlm_head(hidden[b, positions])  # (P, V)
                expected[b] = torch.log1p(torch.relu(logits)).amax(0)
                expected[b, sorted(special)] = 0
        got = head(inputs)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def _input_terms(inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    mask = torch.zeros(inputs["input_ids"].shape[0], V, dtype=torch.bool)
    return mask.scatter(1, inputs["input_ids"], True)


def test_fused_head_rejects_too_long_captions() -> None:
    head = build("fused")
    inputs = batch()
    inputs["input_ids"] = torch.full((2, 512), token_id("cat"))
    inputs["attention_mask"] = torch.ones(2, 512, dtype=torch.long)
    with pytest.raises(ValueError, match="max_length <= 511"):
        head(inputs)


@pytest.mark.parametrize("combine", ["sum", "max"])
def test_late_fusion_combines_its_sub_heads_elementwise(combine: str) -> None:
    # two caption heads, so that their active terms overlap and sum != max
    first, second = build("mlp").eval(), build("mlm").eval()
    late = LateFusionHead(first, second, combine=combine).eval()
    inputs = batch()
    with torch.no_grad():
        got, a, b = late(inputs), first(inputs), second(inputs)
    assert ((a > 0) & (b > 0)).any(), "the example must exercise overlapping terms"
    expected = a + b if combine == "sum" else torch.maximum(a, b)
    torch.testing.assert_close(got, expected, atol=0, rtol=0)


def test_late_fusion_of_caption_and_image_exposes_both_sides() -> None:
    text, image = build("mlp"), build("image_mlm")
    late = LateFusionHead(text, image)
    assert late.reads() == text.reads() | image.reads()
    assert late.reads().modalities == {"text", "image"} and late.reads().features is not None
    assert late.text_backbone_name == "splade-tiny" and late.text_model is text.encoder
    assert "image_backbone" not in late._modules, "no duplicate state-dict entries"


def test_bad_options_are_rejected_with_the_choices() -> None:
    with pytest.raises(ValueError, match="pooling"):
        MLPHead(pooling="mean")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="head must be"):
        FusedImageTextHead(head="cnn", **TINY_IMAGE)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="combine"):
        LateFusionHead(build("mlp"), build("image_mlm"), combine="mean")  # type: ignore[arg-type]


# ---------------------------------------------------------------- issue 12: heads that train


def test_image_head_reference_wiring_against_a_hand_written_forward() -> None:
    """Default wiring: projection -> vocabulary LayerNorm -> decoder (dense + GELU skipped)."""
    head = build("image_mlm")
    assert head.wiring == "reference"
    x = batch()["image_features"]  # (B, D)
    sd = {k: v.detach() for k, v in head.state_dict().items()}
    h = x @ sd["image_projection.weight"].T + sd["image_projection.bias"]  # (B, H)
    mu, var = h.mean(-1, keepdim=True), h.var(-1, unbiased=False, keepdim=True)
    ln = "mlm_head.predictions.transform.LayerNorm."
    h = (h - mu) / torch.sqrt(var + 1e-12) * sd[ln + "weight"] + sd[ln + "bias"]
    logits = h @ sd["mlm_head.predictions.decoder.weight"].T + sd["mlm_head.predictions.bias"]
    want = torch.log1p(torch.clamp(logits, min=0))  # (B, V)
    want[:, tokenizer().all_special_ids] = 0.0
    with torch.no_grad():
        got = head({"image_features": x})
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    # the skipped dense layer is frozen (no optimizer state, no DDP unused-parameter error)
    assert not head.mlm_head.predictions.transform.dense.weight.requires_grad


def test_image_head_full_wiring_runs_the_whole_mlm_head() -> None:
    torch.manual_seed(0)
    head = ImageMLMHead(wiring="full", **TINY_IMAGE)
    x = batch()["image_features"]
    with torch.no_grad():
        want = torch.log1p(torch.relu(head.mlm_head(head.image_projection(x))))
        want[:, tokenizer().all_special_ids] = 0.0
        got = head({"image_features": x})
    torch.testing.assert_close(got, want)
    with pytest.raises(ValueError, match="wiring must be"):
        ImageMLMHead(wiring="half", **TINY_IMAGE)  # type: ignore[arg-type]


@pytest.mark.parametrize("exclude", [False, True])
def test_mlm_pooling_over_the_attention_mask_against_a_naive_loop(exclude: bool) -> None:
    torch.manual_seed(0)
    head = MLMHead(exclude_special_tokens=exclude).eval()
    inputs = batch()
    special = set(tokenizer().all_special_ids)
    with torch.no_grad():
        got = head(inputs)
        hidden = head.encoder(
            input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]
        ).last_hidden_state
        logits = head.mlm_head(hidden)  # (B, L, V)
    for b in range(len(CAPTIONS)):
        want = torch.zeros(V)
        for pos in range(inputs["input_ids"].shape[1]):
            if inputs["attention_mask"][b, pos] == 0:
                continue
            if exclude and int(inputs["input_ids"][b, pos]) in special:
                continue
            want = torch.maximum(want, torch.log1p(torch.relu(logits[b, pos])))
        want[list(special)] = 0.0
        torch.testing.assert_close(got[b], want)
    if not exclude:  # [CLS]/[SEP] positions do contribute terms
        default = build("mlm")
        assert not default.exclude_special_tokens


def test_mlp_init_keeps_most_tokens_active_over_many_seeds() -> None:
    """No init of the term scorer leaves fewer than half the real tokens active; the
    default ``nn.Linear`` init does (so this test can fail)."""
    from lightning_mlsr.models.transformer import init_term_scorer

    queries = ["nerd face", "smiling cat with heart eyes", "red apple", "flag: japan", "rocket"]
    queries += CAPTIONS + ["grinning face with big eyes", "woman technologist: medium skin"]
    head = MLPHead().eval()
    inputs = batch(queries)
    keep = head._token_mask(inputs["input_ids"], inputs["attention_mask"])  # (B, L)
    with torch.no_grad():
        hidden = head.encoder(
            input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]
        ).last_hidden_state[keep]  # (N, H) real, non-special tokens

    def alive(scorer: nn.Linear) -> float:
        with torch.no_grad():
            return float((scorer(hidden).squeeze(-1) > 0).float().mean())

    ours, default = [], []
    for seed in range(200):
        torch.manual_seed(seed)
        scorer = nn.Linear(head.hidden_size, 1)
        default.append(alive(scorer))
        init_term_scorer(scorer)
        ours.append(alive(scorer))
    assert min(ours) >= 0.5, f"an init left only {min(ours):.0%} of tokens active"
    assert min(default) < 0.5  # the default init does kill tokens
    assert alive(MLPHead().term_scorer) >= 0.5  # the head uses this init
    assert alive(FusedImageTextHead(**TINY_IMAGE).term_scorer) >= 0.5  # type: ignore[arg-type]


@pytest.mark.parametrize("config", list(CONFIGS))
def test_new_parameters_are_the_layers_made_from_scratch(config: str) -> None:
    head = build(config)
    new = {id(p) for p in head.new_parameters()}
    names = {n for n, p in head.named_parameters() if id(p) in new}
    want = {n for n, _ in head.named_parameters() if "projection" in n or "term_scorer" in n}
    if config == "d2s":  # its projection starts as the identity: not made from scratch
        want = set()
    assert names == want
