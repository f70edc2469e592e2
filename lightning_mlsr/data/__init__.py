"""Collections for image suggestion: images with captions, text queries, TREC qrels."""

from lightning_mlsr.data.collection import (
    Collection,
    CorruptImageError,
    ImageTable,
    TextTable,
    bundled_collections,
    load_collection,
)
from lightning_mlsr.data.errors import DataError

__all__ = [
    "Collection",
    "CorruptImageError",
    "DataError",
    "ImageTable",
    "TextTable",
    "bundled_collections",
    "load_collection",
]
