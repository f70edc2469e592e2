"""On-disk cache of frozen image-backbone features.

Frozen-encoder experiments (the image head's backbone is not trained) would otherwise run
the CNN over every image every epoch. Features are keyed by the backbone (name, weights,
input size) and by the content of the images (a hash over every image's bytes, in order),
so a changed image, a changed backbone or a different image set never reuses stale features.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from tqdm.auto import tqdm

if TYPE_CHECKING:
    from lightning_mlsr.backbones import ImageBackbone
    from lightning_mlsr.data.collection import ImageTable

log = logging.getLogger("lightning_mlsr.data")

__all__ = ["compute_image_features", "default_cache_dir", "load_or_compute_features"]


def default_cache_dir() -> Path:
    """``$LIGHTNING_MLSR_CACHE`` or ``~/.cache/lightning_mlsr``."""
    env = os.environ.get("LIGHTNING_MLSR_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "lightning_mlsr"


def content_fingerprint(images: ImageTable) -> str:
    """A hash over every image's content hash, in table order."""
    digest = hashlib.sha1()
    for i in range(len(images)):
        digest.update(images.content_hash(i).encode())
    return digest.hexdigest()


def cache_path(cache_dir: str | Path, backbone: ImageBackbone, images: ImageTable) -> Path:
    return Path(cache_dir) / "features" / backbone.cache_key / f"{content_fingerprint(images)}.npy"


@torch.no_grad()
def compute_image_features(
    backbone: ImageBackbone,
    images: ImageTable,
    batch_size: int = 32,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> np.ndarray:
    """Pooled features of every image, in table order, in eval mode.

    Shape: returns ``(len(images), backbone.num_features)`` float32.
    """
    transform = backbone.transform()
    was_training = backbone.training
    original_device = next(backbone.parameters()).device
    backbone.eval().to(device)
    out = np.empty((len(images), backbone.num_features), dtype=np.float32)
    try:
        for start in tqdm(
            range(0, len(images), batch_size),
            desc=f"image features ({backbone.name})",
            unit="batch",
            disable=not progress,
        ):
            stop = min(start + batch_size, len(images))
            pixels = torch.stack([transform(images.load_image(i)) for i in range(start, stop)])
            out[start:stop] = backbone(pixels.to(device)).float().cpu().numpy()  # (b, D)
    finally:
        backbone.train(was_training).to(original_device)
    return out


def load_or_compute_features(
    backbone: ImageBackbone,
    images: ImageTable,
    cache_dir: str | Path | None = None,
    batch_size: int = 32,
    device: torch.device | str = "cpu",
    compute: bool = True,
) -> np.ndarray:
    """Features from the cache, filling it first if needed (``compute=False``: only read)."""
    path = cache_path(cache_dir or default_cache_dir(), backbone, images)
    if path.is_file():
        features = np.load(path)
        if features.shape == (len(images), backbone.num_features):
            return features
        log.warning("ignoring feature cache %s with unexpected shape %s", path, features.shape)
    if not compute:
        raise FileNotFoundError(f"image feature cache {path} is missing; compute it first")
    log.info("computing %s features of %d images into %s", backbone.cache_key, len(images), path)
    features = compute_image_features(backbone, images, batch_size=batch_size, device=device)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}.npy")
    np.save(tmp, features)
    os.replace(tmp, path)  # atomic: concurrent readers never see a half-written file
    return features
