"""Decode stored image bytes to the 8-bit RGB image every image backbone expects.

Range convention for the modes that are not 8 bits per channel (PIL opens 16-bit PNGs as
``I;16``, 32-bit integer TIFFs as ``I`` and float TIFFs as ``F``):

- ``I;16`` (and ``I;16B``/``I;16L``/``I;16N``): the full 16-bit range ``[0, 65535]``
  maps to ``[0, 255]`` (``v * 255 / 65535``, rounded): 32768 -> 128.
- ``I``: the 16-bit range ``[0, 65535]`` when every value lies in it (16-bit data is
  what such files hold in practice), else the image's own min..max.
- ``F``: ``[0, 1]`` when every value lies in it (the float-image convention), else the
  image's own min..max; NaN counts as the low end. 0.5 -> 128.

Transparency is composited on white (emoji PNGs would otherwise turn black), EXIF
orientation is applied, and ``LAB`` goes through a colour-managed transform to sRGB.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageCms, ImageOps

from lightning_mlsr.data.errors import DataError

__all__ = ["CorruptImageError", "decode_image", "to_rgb"]

_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N")
_ALPHA = ("RGBA", "LA", "PA", "RGBa")
#: what goes wrong when bytes are not a usable image
DECODE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


class CorruptImageError(DataError):
    """The bytes of one image are missing or cannot be decoded (``image_id`` names it)."""

    def __init__(self, image_id: str, reason: str) -> None:
        super().__init__(
            f"image {image_id!r} cannot be decoded ({reason}); it is skipped with "
            f"on_corrupt_image='skip', and `python -m lightning_mlsr.data check` lists all such "
            f"images so that later loads leave them out"
        )
        self.image_id = image_id
        self.reason = reason


def _rescale(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """Map ``[low, high]`` linearly to ``[0, 255]`` (rounded, clipped) as uint8."""
    span = high - low
    scaled = (values - low) * 255.0 / span if span > 0 else np.zeros_like(values)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _grey_to_8bit(image: Image.Image) -> Image.Image:
    """An ``I;16``, ``I`` or ``F`` image as ``L`` under the range convention above."""
    values = np.asarray(image, dtype=np.float64)  # (H, W)
    values = np.where(np.isfinite(values), values, np.nan)
    finite = values[np.isfinite(values)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    if image.mode in _SIXTEEN_BIT or (image.mode == "I" and lo >= 0 and hi <= 65535):
        low, high = 0.0, 65535.0
    elif image.mode == "F" and lo >= 0 and hi <= 1:
        low, high = 0.0, 1.0
    else:
        low, high = lo, hi
    return Image.fromarray(_rescale(np.nan_to_num(values, nan=low), low, high), mode="L")


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB copy of ``image`` in any PIL mode (see the module docstring)."""
    image = ImageOps.exif_transpose(image)
    if image.mode in _SIXTEEN_BIT or image.mode in ("I", "F"):
        return _grey_to_8bit(image).convert("RGB")
    if image.mode == "LAB":
        lab_to_srgb = ImageCms.buildTransform(
            ImageCms.createProfile("LAB"), ImageCms.createProfile("sRGB"), "LAB", "RGB"
        )
        return ImageCms.applyTransform(image, lab_to_srgb) or image
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in _ALPHA:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def decode_image(data: bytes | None, image_id: str) -> Image.Image:
    """Decode encoded image bytes (PNG, JPEG, TIFF, ...) to 8-bit RGB.

    Raises :class:`CorruptImageError` naming ``image_id`` when the bytes are missing or
    no decoder can read them.
    """
    if not data:
        raise CorruptImageError(image_id, "no image bytes")
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            return to_rgb(image)
    except DECODE_ERRORS as err:
        raise CorruptImageError(image_id, f"{type(err).__name__}: {err}") from err
