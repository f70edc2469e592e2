"""The zero-shot SPLADE baseline: the pretrained MLM head as shipped, exact inverted index."""

from __future__ import annotations

from typing import Literal

import numpy as np
import scipy.sparse as sp

from lightning_mlsr.baselines.common import (
    Retrieved,
    Stopwatch,
    mean_nnz,
    split_texts,
    text_batches,
)
from lightning_mlsr.data.collection import Collection
from lightning_mlsr.retrieval.evaluation import encode, retrieve
from lightning_mlsr.retrieval.index import InvertedIndex

__all__ = ["splade_zero_shot_baseline"]


def splade_zero_shot_baseline(
    collection: Collection,
    split: str,
    k: int = 1000,
    *,
    backbone: str = "splade-tiny",
    pooling: Literal["max", "sum"] = "max",
    query_max_length: int = 32,
    doc_max_length: int = 32,
    batch_size: int = 64,
    device: str = "cpu",
    progress: bool = True,
) -> Retrieved:
    """The pretrained SPLADE MLM head, untrained here, on queries and captions."""
    from lightning_mlsr.io.pretrained import load_tokenizer
    from lightning_mlsr.models.text import MLMHead

    watch = Stopwatch()
    head = MLMHead(backbone, pooling=pooling).to(device).eval()
    tokenizer = load_tokenizer(backbone)
    watch.lap("load")

    def encode_texts(texts: list[str], max_length: int, desc: str) -> sp.csr_matrix:
        batches = text_batches(texts, tokenizer, batch_size, max_length, desc, progress)
        return encode(head, batches, width=head.vocab_size, device=device)

    docs = encode_texts(collection.images.captions(), doc_max_length, "splade: encode captions")
    watch.lap("encode_docs")
    query_ids, queries = split_texts(collection, split)
    q = encode_texts(queries, query_max_length, "splade: encode queries")
    watch.lap("encode_queries")
    index = InvertedIndex.from_matrix(docs, collection.images.ids)
    watch.lap("index")
    run = retrieve(docs, collection.images.ids, q, query_ids, k, index=index)
    watch.lap("search")
    return Retrieved(
        run=run,
        q_nnz=mean_nnz(q),
        d_nnz=mean_nnz(docs),
        flops_per_query=float(np.mean(index.expected_flops(q))) if q.shape[0] else 0.0,
        timings=watch.timings,
    )
