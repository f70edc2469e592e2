"""The zero-shot dense baseline: a pretrained sentence encoder (the real
:class:`~lightning_mlsr.models.dense.DenseTextHead`), exact inner-product search."""

from __future__ import annotations

from typing import Literal

import numpy as np

from lightning_mlsr.baselines.common import Retrieved, Stopwatch, split_texts, text_batches
from lightning_mlsr.data.collection import Collection
from lightning_mlsr.retrieval.evaluation import encode, retrieve

__all__ = ["DensePooling", "dense_zero_shot_baseline"]

DensePooling = Literal["mean", "cls"]


def dense_zero_shot_baseline(
    collection: Collection,
    split: str,
    k: int = 1000,
    *,
    backbone: str = "minilm-l6",
    pooling: DensePooling = "mean",
    normalize: bool = True,
    max_length: int = 256,
    batch_size: int = 64,
    device: str = "cpu",
    progress: bool = True,
) -> Retrieved:
    """A pretrained sentence encoder (``DenseTextHead``), exact inner-product search."""
    from lightning_mlsr.io.pretrained import load_tokenizer
    from lightning_mlsr.models.dense import DenseTextHead

    watch = Stopwatch()
    head = DenseTextHead(backbone, pooling=pooling, normalize=normalize).to(device).eval()
    tokenizer = load_tokenizer(backbone)
    watch.lap("load")

    def encode_texts(texts: list[str], desc: str) -> np.ndarray:
        batches = text_batches(texts, tokenizer, batch_size, max_length, desc, progress)
        return encode(head, batches, width=head.hidden_size, dense=True, device=device)

    docs = encode_texts(collection.images.captions(), "dense: encode captions")
    watch.lap("encode_docs")
    query_ids, queries = split_texts(collection, split)
    q = encode_texts(queries, "dense: encode queries")
    watch.lap("encode_queries")
    watch.lap("index")  # exact search scores every document: there is nothing to build
    run = retrieve(docs, collection.images.ids, q, query_ids, k)
    watch.lap("search")
    return Retrieved(run=run, timings=watch.timings)
