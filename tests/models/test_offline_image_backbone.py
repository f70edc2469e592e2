"""An image backbone whose weights are not on this machine fails at once, not after the
hub client's ~50 s of retries; weights already in a local cache load with no request."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
import timm
import torch

from lightning_mlsr.io.pretrained import BackboneNotFoundError
from lightning_mlsr.models.image_backbone import ImageBackbone


@pytest.fixture
def empty_caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No cached timm weights: an empty torch hub dir and Hugging Face cache."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "torch_hub"))
    yield tmp_path
    torch.hub.set_dir(old)


def test_hf_hub_offline_fails_at_once_naming_the_fix(
    empty_caches: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(BackboneNotFoundError) as err:
        ImageBackbone("resnet18", pretrained=True)
    assert time.perf_counter() - start < 5  # timm's own path retried for ~50 s
    message = str(err.value)
    assert "'resnet18'" in message and "HF_HUB_OFFLINE" in message
    assert "checkpoint_path" in message and "pretrained: false" in message


def test_unreachable_weight_host_fails_at_once(
    empty_caches: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    probed: list[tuple[str, int]] = []

    def unreachable(address: tuple[str, int], timeout: float) -> socket.socket:
        probed.append(address)
        raise OSError("Network is unreachable")

    def no_download(*args: object, **kwargs: object) -> None:
        raise AssertionError("timm's download path was entered while offline")

    monkeypatch.setattr(socket, "create_connection", unreachable)
    monkeypatch.setattr(timm.models._builder, "load_pretrained", no_download)
    with pytest.raises(BackboneNotFoundError, match="huggingface.co cannot be reached"):
        ImageBackbone("resnet18", pretrained=True)
    assert probed == [("huggingface.co", 443)]


def test_weights_in_the_torch_hub_cache_load_offline(
    empty_caches: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    torch.manual_seed(0)
    reference = timm.create_model("resnet18", pretrained=False)
    url = timm.models.get_pretrained_cfg("resnet18").url
    cached = Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]
    cached.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), cached)

    backbone = ImageBackbone("resnet18", pretrained=True)
    for key, value in reference.state_dict().items():
        assert torch.equal(backbone.model.state_dict()[key], value), key
