"""The same emoji drawn by other artists, for ``emoji-twemoji`` and ``emoji-openmoji``:
Twemoji's 64 px PNGs and OpenMoji's colour SVGs rasterized by a pinned resvg, put in place
of the Noto PNGs in ``emoji``'s images table."""

from __future__ import annotations

import io
import json
import sys

import build_emoji_collection as emoji_build
import pyarrow as pa
import pyarrow.parquet as pq
from build_emoji_collection import Source

TWEMOJI = Source(
    "emoji-datasource-twitter",
    "16.0.0",
    "f64a530c63bca463bd8317fdc4615ce63a53a0c65018e4ce2d848aaba7a28877",
    "MIT (data); Twemoji images CC-BY 4.0 (Twitter, Inc and other contributors)",
)
OPENMOJI = Source(
    "openmoji",
    "17.0.0",
    "55ee7d13485dec86e9f38c1f3a645a13382d33ff97c0cd845ee824b0aef45e68",
    "images CC BY-SA 4.0 (OpenMoji, HfG Schwäbisch Gmünd); code LGPL-3.0",
)
#: The SVG rasterizer (build time only; ``pip install -e ".[bundled-data]"``): resvg
#: through its Python binding, pinned because the PNG bytes are part of the collection.
RASTERIZER = ("resvg-py", "0.5.0")
TWEMOJI_IMAGE_DIR = "package/img/twitter/64/"
OPENMOJI_SVG_DIR = "package/color/svg/"
IMAGE_SIZE = 64


def replace_images(emoji_images: bytes, pngs: dict[str, tuple[bytes, str]]) -> bytes:
    """``emoji``'s images table with each Noto PNG replaced by ``pngs[image_id]``
    (``(png bytes, file name)``); ids, captions and row order stay."""
    table = pq.read_table(io.BytesIO(emoji_images))
    structs = [{"bytes": pngs[i][0], "path": pngs[i][1]} for i in table["image_id"].to_pylist()]
    column = pa.array(structs, table.schema.field("image").type)
    table = table.set_column(table.column_names.index("image"), "image", column)
    return emoji_build.parquet_bytes(table, emoji_build.IMAGES_ROW_GROUP)


def twemoji_pngs(ids: list[str], twemoji_files: dict[str, bytes]) -> dict[str, tuple[bytes, str]]:
    """The 64x64 Twemoji PNG of each emoji, matched on code points as the Noto ones are."""
    datasource = json.loads(twemoji_files["package/emoji.json"])
    by_code: dict[str, dict] = {}
    for entry in datasource:
        by_code.setdefault(entry["unified"].upper(), entry)
    for entry in datasource:
        if entry.get("non_qualified"):
            by_code.setdefault(entry["non_qualified"].upper(), entry)
    out = {}
    for image_id in ids:
        ds = by_code.get(image_id.upper())
        png = twemoji_files.get(TWEMOJI_IMAGE_DIR + ds["image"]) if ds else None
        if ds is None or not ds.get("has_img_twitter") or png is None:
            raise RuntimeError(f"{TWEMOJI.spec} has no 64px image for emoji {image_id}")
        out[image_id] = (png, ds["image"])
    return out


def openmoji_pngs(ids: list[str], openmoji_files: dict[str, bytes]) -> dict[str, tuple[bytes, str]]:
    """Each emoji's OpenMoji colour SVG (named by the emojibase hexcode) rasterized to a
    64x64 RGBA PNG by resvg, with no system fonts (the SVGs hold no text)."""
    try:
        import resvg_py
    except ImportError:
        sys.exit(
            f"error: rasterizing OpenMoji needs {RASTERIZER[0]}=={RASTERIZER[1]}: "
            f'pip install -e ".[bundled-data]"'
        )
    out = {}
    for image_id in ids:
        svg = openmoji_files.get(f"{OPENMOJI_SVG_DIR}{image_id}.svg")
        if svg is None:
            raise RuntimeError(f"{OPENMOJI.spec} has no colour SVG for emoji {image_id}")
        png = resvg_py.svg_to_bytes(
            svg_string=svg.decode("utf-8"),
            width=IMAGE_SIZE,
            height=IMAGE_SIZE,
            skip_system_fonts=True,
        )
        out[image_id] = (bytes(png), f"{image_id}.png")
    return out
