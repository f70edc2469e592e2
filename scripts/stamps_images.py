"""Image handling for ``scripts/build_stamps.py``: SVG rasterization and the image type.

Both are deterministic functions of the bytes in the Debian package, so a rebuild gives the
same collection; DATA.md ("The stamps collection") says how good the type heuristic is.
"""

from __future__ import annotations

import io
import re
from pathlib import PurePosixPath

import numpy as np
from PIL import Image

#: The SVG rasterizer (``pip install -e ".[bundled-data]"``), pinned like the OpenMoji one.
RASTERIZER = ("resvg-py", "0.5.0")
#: An SVG is rendered so that its longer side is this many pixels (the image backbones read
#: 224 px; the package's PNGs have a median longer side of 150 px).
SVG_LONGER_SIDE = 256
#: The image types, in the order the tables list them.
TYPES = ("photo", "clipart", "letter", "sign", "symbol")
#: Folders whose stamps are letters, signs or symbols whatever their pixels (prefixes of the
#: path below the stamps folder; the first match wins).
FOLDER_TYPES = (
    ("symbols/alphabets/", "letter"),
    ("town/roadsigns/", "sign"),
    ("town/flags/", "symbol"),
    ("symbols/math/", "symbol"),
    ("symbols/music/", "symbol"),
    ("symbols/shapes/", "symbol"),
    ("symbols/chess/", "symbol"),
    ("symbols/faces/", "symbol"),
    ("symbols/money/00_symbols/", "symbol"),
)
#: Pixel rule for the other PNGs: a drawing has large flat fills, so many neighbouring
#: opaque pixels are exactly equal; a photograph's sensor noise makes few of them equal.
FLAT_FRACTION_CLIPART = 0.30
#: ... and a stamp this small (opaque pixels) is an icon, not a photograph.
MIN_PHOTO_PIXELS = 1000
OPAQUE = 250

_UNITS_PX = {"px": 1.0, "pt": 4 / 3, "pc": 16.0, "mm": 96 / 25.4, "cm": 96 / 2.54, "in": 96.0}
_SVG_TAG = re.compile(r"<svg\b[^>]*>", re.S)


def flat_fraction(rgba: np.ndarray) -> tuple[float, int]:
    """The fraction of horizontally or vertically neighbouring opaque pixel pairs whose
    colours are exactly equal, and the number of opaque pixels.

    Shape: ``rgba`` (H, W, 4) uint8.
    """
    pixels = rgba.astype(np.int16)
    opaque = pixels[..., 3] >= OPAQUE
    equal = total = 0
    for a, b, both in (
        (pixels[:, :-1], pixels[:, 1:], opaque[:, :-1] & opaque[:, 1:]),
        (pixels[:-1], pixels[1:], opaque[:-1] & opaque[1:]),
    ):
        same = (a[..., :3] == b[..., :3]).all(-1)
        equal += int((same & both).sum())
        total += int(both.sum())
    return (equal / total if total else 1.0), int(opaque.sum())


def image_type(rel_path: str, png: bytes, from_svg: bool) -> str:
    """The type of the stamp at ``rel_path`` (below the stamps folder): folder rules first,
    then vector drawings and ``cartoon`` folders are clip art, then the pixel rule."""
    for prefix, kind in FOLDER_TYPES:
        if rel_path.startswith(prefix):
            return kind
    if from_svg or "cartoon" in PurePosixPath(rel_path).parts[:-1]:
        return "clipart"
    rgba = np.asarray(Image.open(io.BytesIO(png)).convert("RGBA"))
    flat, n_opaque = flat_fraction(rgba)
    if n_opaque < MIN_PHOTO_PIXELS or flat >= FLAT_FRACTION_CLIPART:
        return "clipart"
    return "photo"


def _absolute_size_in_px(svg: str) -> str:
    """The SVG with a root ``width``/``height`` given in absolute units (``128pt``,
    ``210mm``) and no ``viewBox`` rewritten in CSS pixels, which resvg otherwise rejects
    ("invalid size"); the SVG rule is the same (user units are pixels without a viewBox)."""
    match = _SVG_TAG.search(svg)
    if match is None or "viewBox" in match.group(0):
        return svg
    tag = match.group(0)

    def to_px(m: re.Match[str]) -> str:
        value, unit = float(m.group(2)), m.group(3)
        return f'{m.group(1)}="{value * _UNITS_PX[unit]:.3f}"'

    fixed = re.sub(r'(\swidth|\sheight)="([0-9.]+)(pt|pc|mm|cm|in|px)"', to_px, tag)
    return svg[: match.start()] + fixed + svg[match.end() :]


def rasterize_svg(svg: bytes, resources_dir: str) -> bytes:
    """A PNG of ``svg`` with its longer side :data:`SVG_LONGER_SIDE` pixels, transparent
    background, no system fonts (so the pixels do not depend on the machine; SVG ``<text>``
    is not drawn). ``resources_dir`` resolves relative ``xlink:href`` images."""
    try:
        import resvg_py
    except ImportError as err:
        raise SystemExit(
            f"error: rasterizing the stamps' SVGs needs {RASTERIZER[0]}=={RASTERIZER[1]}: "
            'pip install -e ".[bundled-data]"'
        ) from err
    text = _absolute_size_in_px(svg.decode("utf-8"))
    natural = resvg_py.svg_to_bytes(
        svg_string=text, skip_system_fonts=True, resources_dir=resources_dir
    )
    width, height = Image.open(io.BytesIO(bytes(natural))).size
    zoom = SVG_LONGER_SIDE / max(width, height)
    png = resvg_py.svg_to_bytes(
        svg_string=text, skip_system_fonts=True, resources_dir=resources_dir, zoom=zoom
    )
    return bytes(png)
