"""Read an image-suggestion collection in AToMiC format: images, texts and TREC qrels.

The reader is split by job: :mod:`~lightning_mlsr.data.collection.layout` (where the files are),
:mod:`~lightning_mlsr.data.collection.arrow` (reading and coercing columns),
:mod:`~lightning_mlsr.data.collection.qrels` (judgments), :mod:`~lightning_mlsr.data.collection.image_store`
(image bytes read on demand), :mod:`~lightning_mlsr.data.collection.decode` (bytes to RGB),
:mod:`~lightning_mlsr.data.collection.tables` (the loaded tables) and
:mod:`~lightning_mlsr.data.collection.load` (``load_collection`` and its policies). This module
gathers their public names.
"""

from lightning_mlsr.data.collection.arrow import CAPTION_SEPARATOR
from lightning_mlsr.data.collection.decode import CorruptImageError, decode_image, to_rgb
from lightning_mlsr.data.collection.layout import (
    BUNDLED_DIR,
    UNUSABLE_IMAGES_FILE,
    bundled_collections,
)
from lightning_mlsr.data.collection.load import CorruptPolicy, MissingCaptionPolicy, load_collection
from lightning_mlsr.data.collection.qrels import Qrels, QrelsTable
from lightning_mlsr.data.collection.tables import (
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
