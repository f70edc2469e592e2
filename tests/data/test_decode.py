"""Every PIL mode decodes to the right 8-bit RGB (values computed by hand)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from lightning_mlsr.data import CorruptImageError
from lightning_mlsr.data.collection.decode import decode_image, to_rgb


def saved(image: Image.Image, fmt: str) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt)
    return out.getvalue()


def pixel(image: Image.Image) -> tuple[int, ...]:
    rgb = to_rgb(image)
    assert rgb.mode == "RGB"
    return tuple(int(v) for v in np.asarray(rgb)[0, 0])


def grey(mode: str, value: float) -> Image.Image:
    dtype = {"I;16": np.uint16, "I": np.int32, "F": np.float32}[mode]
    image = Image.fromarray(np.full((2, 2), value, dtype=dtype))
    assert image.mode == mode
    return image


@pytest.mark.parametrize(
    "mode, value, expected",
    [
        ("I;16", 32768, 128),  # 32768 * 255 / 65535 = 127.502 -> 128
        ("I;16", 65535, 255),
        ("I;16", 0, 0),
        ("I;16", 1000, 4),  # 3.89 -> 4
        ("I", 40000, 156),  # 16-bit range: 155.64 -> 156
        ("F", 0.5, 128),  # [0, 1]: 127.5 -> 128
        ("F", 0.25, 64),  # 63.75 -> 64
        ("F", 1.0, 255),
    ],
)
def test_high_bit_depth_grey_uses_its_range(mode: str, value: float, expected: int) -> None:
    assert pixel(grey(mode, value)) == (expected,) * 3


def test_sixteen_bit_png_and_float_tiff_files() -> None:
    """The files of issue 10: a 50% grey 16-bit PNG was white, a 0.5 float TIFF black."""
    png16 = saved(Image.fromarray(np.full((4, 4), 32768, np.uint16)), "PNG")
    assert Image.open(io.BytesIO(png16)).mode == "I;16"
    assert np.asarray(decode_image(png16, "p"))[0, 0].tolist() == [128, 128, 128]
    tiff = saved(Image.fromarray(np.full((4, 4), 0.5, np.float32)), "TIFF")
    assert Image.open(io.BytesIO(tiff)).mode == "F"
    assert np.asarray(decode_image(tiff, "t"))[0, 0].tolist() == [128, 128, 128]


def test_out_of_convention_ranges_use_the_image_min_max() -> None:
    values = np.array([[-100, 0], [100, 100]], dtype=np.int32)  # not 16-bit: min..max
    out = np.asarray(to_rgb(Image.fromarray(values)))[..., 0]
    assert out.tolist() == [[0, 128], [255, 255]]  # 0 -> 127.5 -> 128
    floats = np.array([[0.0, 500.0], [1000.0, np.nan]], dtype=np.float32)  # not [0, 1]
    out = np.asarray(to_rgb(Image.fromarray(floats)))[..., 0]
    assert out.tolist() == [[0, 128], [255, 0]]  # NaN -> the low end


@pytest.mark.parametrize(
    "image, expected",
    [
        (Image.new("1", (2, 2), 1), (255, 255, 255)),
        (Image.new("L", (2, 2), 77), (77, 77, 77)),
        (Image.new("RGB", (2, 2), (10, 20, 30)), (10, 20, 30)),
        (Image.new("RGBA", (2, 2), (10, 20, 30, 255)), (10, 20, 30)),
        (Image.new("RGBA", (2, 2), (0, 0, 255, 0)), (255, 255, 255)),  # transparent: white
        (Image.new("RGBA", (2, 2), (0, 0, 0, 128)), (127, 127, 127)),  # half over white
        (Image.new("LA", (2, 2), (0, 0)), (255, 255, 255)),
        (Image.new("CMYK", (2, 2), (0, 0, 0, 0)), (255, 255, 255)),
        (Image.new("CMYK", (2, 2), (0, 0, 0, 255)), (0, 0, 0)),
        (Image.new("YCbCr", (2, 2), (128, 128, 128)), (128, 128, 128)),
        (Image.new("HSV", (2, 2), (0, 0, 200)), (200, 200, 200)),
    ],
    ids=lambda x: x.mode if isinstance(x, Image.Image) else None,
)
def test_eight_bit_modes(image: Image.Image, expected: tuple[int, int, int]) -> None:
    assert pixel(image) == pytest.approx(expected, abs=1)


def test_palette_with_transparency_and_lab() -> None:
    p = Image.new("P", (2, 2), 0)
    p.putpalette([200, 0, 0] + [0, 0, 0] * 255)
    assert pixel(p) == (200, 0, 0)
    p.info["transparency"] = 0
    assert pixel(saved_and_opened(p, "PNG")) == (255, 255, 255)
    # LAB goes through a colour-managed transform: L=100% is white, L=0 black
    assert pixel(Image.new("LAB", (2, 2), (255, 128, 128))) == pytest.approx((255,) * 3, abs=2)
    assert pixel(Image.new("LAB", (2, 2), (0, 128, 128))) == pytest.approx((0,) * 3, abs=2)


def saved_and_opened(image: Image.Image, fmt: str) -> Image.Image:
    return Image.open(io.BytesIO(saved(image, fmt)))


def test_missing_and_garbage_bytes_name_the_image() -> None:
    with pytest.raises(CorruptImageError, match="image 'x' cannot be decoded \\(no image bytes"):
        decode_image(b"", "x")
    with pytest.raises(CorruptImageError, match="image 'y' cannot be decoded") as err:
        decode_image(b"not an image", "y")
    assert err.value.image_id == "y"
