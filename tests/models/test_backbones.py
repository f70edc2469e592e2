"""Offline backbone resolution: packaged weights load, bad names fail with advice."""

from __future__ import annotations

import pytest
import torch

from lightning_mlsr.io.pretrained import (
    BackboneNotFoundError,
    load_tokenizer,
    resolve_text_backbone,
)
from lightning_mlsr.models.backbones import load_masked_lm, load_text_encoder
from lightning_mlsr.models.image_backbone import ImageBackbone


def test_default_text_backbone_gives_mlm_logits_and_hidden_states() -> None:
    tokenizer = load_tokenizer()
    enc = tokenizer(["a cat sitting on a red sofa"], return_tensors="pt")
    mlm = load_masked_lm().eval()
    encoder = load_text_encoder().eval()
    with torch.no_grad():
        logits = mlm(**enc).logits
        hidden = encoder(**enc).last_hidden_state
    length = enc["input_ids"].shape[1]
    assert logits.shape == (1, length, 30522)
    assert hidden.shape == (1, length, 128)
    # the MLM head is the pretrained SPLADE one: "sofa" expands to "couch" (not in the input)
    weights = torch.log1p(torch.relu(logits)).amax(dim=1)[0]
    top = set(tokenizer.convert_ids_to_tokens(weights.topk(20).indices.tolist()))
    assert {"cat", "sofa"} <= top
    assert "couch" in top


def test_minilm_alias_resolves_offline() -> None:
    encoder = load_text_encoder("minilm-l6")
    assert encoder.config.hidden_size == 384


def test_unknown_text_backbone_says_what_was_tried(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    resolve_text_backbone.cache_clear()
    with pytest.raises(BackboneNotFoundError) as err:
        resolve_text_backbone("no-such-org/no-such-model")
    message = str(err.value)
    assert "no-such-org/no-such-model" in message
    assert "alias" in message and "local path" in message and "HF_HUB_OFFLINE" in message


def test_local_directory_without_config_is_rejected(tmp_path) -> None:
    with pytest.raises(BackboneNotFoundError, match="config.json"):
        resolve_text_backbone(str(tmp_path))


def test_unknown_timm_name_is_rejected() -> None:
    with pytest.raises(BackboneNotFoundError, match="unknown timm model"):
        ImageBackbone("resnet_does_not_exist")


def test_bundled_efficientnet_sees_a_cat_in_chelsea() -> None:
    data = pytest.importorskip("skimage.data", reason="scikit-image provides the chelsea image")
    from PIL import Image

    backbone = ImageBackbone().eval()
    assert backbone.num_features == 1280
    assert backbone.cache_key.startswith("tf_efficientnet_lite0-224x224-")
    pixels = backbone.transform()(Image.fromarray(data.chelsea()))[None]  # (1, 3, 224, 224)
    with torch.no_grad():
        logits = backbone.classify(pixels)
        features = backbone(pixels)
    assert features.shape == (1, 1280)
    # ImageNet-1k: 281 tabby, 282 tiger cat, 283 Persian, 284 Siamese, 285 Egyptian cat
    assert int(logits.argmax()) in {281, 282, 283, 284, 285}


def test_random_image_backbone_and_size_override() -> None:
    backbone = ImageBackbone("test_efficientnet", pretrained=False, image_size=64)
    assert backbone.cache_key.startswith("test_efficientnet-64x64-")
    assert backbone(torch.randn(2, 3, 64, 64)).shape == (2, backbone.num_features)
