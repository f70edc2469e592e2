"""Read an image-suggestion collection in AToMiC format: images, texts and TREC qrels.

The reader is split by job: :mod:`~lightning_mlsr.data.layout` (where the files are),
:mod:`~lightning_mlsr.data.arrow` (reading and coercing columns),
:mod:`~lightning_mlsr.data.qrels` (judgments), :mod:`~lightning_mlsr.data.image_store`
(image bytes read on demand), :mod:`~lightning_mlsr.data.decode` (bytes to RGB),
:mod:`~lightning_mlsr.data.tables` (the loaded tables) and
:mod:`~lightning_mlsr.data.load` (``load_collection`` and its policies). This module
gathers their public names.
"""

from lightning_mlsr.data.arrow import CAPTION_SEPARATOR
from lightning_mlsr.data.decode import CorruptImageError, decode_image, to_rgb
from lightning_mlsr.data.layout import BUNDLED_DIR, UNUSABLE_IMAGES_FILE, bundled_collections
from lightning_mlsr.data.load import CorruptPolicy, MissingCaptionPolicy, load_collection
from lightning_mlsr.data.qrels import Qrels, QrelsTable
from lightning_mlsr.data.tables import (
    ATOMIC_CAPTION_FIELDS,
    ATOMIC_CAPTION_LANGUAGES,
    ATOMIC_QUERY_FIELDS,
    Collection,
    IdList,
    ImageTable,
    TextTable,
)

__all__ = [
    "ATOMIC_CAPTION_FIELDS",
    "ATOMIC_CAPTION_LANGUAGES",
    "ATOMIC_QUERY_FIELDS",
    "BUNDLED_DIR",
    "CAPTION_SEPARATOR",
    "UNUSABLE_IMAGES_FILE",
    "Collection",
    "CorruptImageError",
    "CorruptPolicy",
    "IdList",
    "ImageTable",
    "MissingCaptionPolicy",
    "Qrels",
    "QrelsTable",
    "TextTable",
    "bundled_collections",
    "decode_image",
    "load_collection",
    "to_rgb",
]
