"""Untrained sparse heads on MiniLM-L6, scored on a bundled collection's validation split.

How well do MiniLM-L6's sparse heads rank before any training? Each variant encodes the
validation queries and every caption, keeps at most ``k`` terms per text, and is scored
through the project's retrieve → score path (exact index, trec_eval semantics):

- ``embedding projection``: the mean-pooled sentence embedding times the input word
  embeddings, ``log(1 + relu(.))`` (no head at all);
- ``D2S``: :class:`~lightning_mlsr.models.D2SHead` as initialised (identity projection,
  LayerNorm, tied decoder);
- ``MLM (tied)``: :class:`~lightning_mlsr.models.MLMHead` as initialised (per-token
  ``LayerNorm(h)`` scored by the tied embeddings, max-pooled);
- the untrained dense MiniLM (cosine, exact) as the reference.

    python bench/zero_shot_minilm_heads.py                 # emoji, k = 32, 64, 128
    python bench/zero_shot_minilm_heads.py --collection emoji-describe --k 64

One thread; minutes on the bundled collections (MiniLM encodes ~2,300 texts per variant).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import numpy as np
import torch

from lightning_mlsr.baselines.common import split_texts, text_batches
from lightning_mlsr.data.collection import load_collection
from lightning_mlsr.io.pretrained import load_tokenizer
from lightning_mlsr.models import D2SHead, DenseTextHead, MLMHead
from lightning_mlsr.models.pooling import keep_top_terms
from lightning_mlsr.retrieval.evaluation import encode, retrieve, score


class EmbeddingProjection(torch.nn.Module):
    """Mean-pooled MiniLM embedding times its input word embeddings, top ``k`` kept."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.dense = DenseTextHead("minilm-l6", normalize=False)
        self.k = k

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        pooled = self.dense(inputs)  # (B, H)
        words = self.dense.encoder.get_input_embeddings().weight  # (V, H)
        weights = torch.log1p(torch.relu(pooled @ words.T))  # (B, V)
        return keep_top_terms(weights, self.k)


def _variants(k: int) -> dict[str, Callable[[], torch.nn.Module]]:
    return {
        f"embedding projection, top {k}": lambda: EmbeddingProjection(k),
        f"D2S as initialised, top {k}": lambda: D2SHead("minilm-l6", max_terms=k),
        f"MLM (tied) as initialised, top {k}": lambda: MLMHead("minilm-l6", max_terms=k),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--collection", default="emoji")
    parser.add_argument("--split", default="validation")
    parser.add_argument("--k", type=int, nargs="+", default=[32, 64, 128])
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    collection = load_collection(args.collection)
    tokenizer = load_tokenizer("minilm-l6")
    query_ids, queries = split_texts(collection, args.split)
    captions = collection.images.captions()
    qrels = collection.qrels[args.split]

    def vectors(head: torch.nn.Module, texts: list[str], length: int, dense: bool):
        batches = text_batches(texts, tokenizer, 64, length, "encode", progress=True)
        return encode(head, batches, width=384 if dense else 30522, dense=dense)

    rows = []
    dense = DenseTextHead("minilm-l6").eval()
    run = retrieve(
        vectors(dense, captions, 32, True),
        collection.images.ids,
        vectors(dense, queries, 16, True),
        query_ids,
    )
    rows.append(("untrained dense MiniLM (cosine)", score(run, qrels).means, None))
    for k in args.k:
        for name, build in _variants(k).items():
            head = build().eval()
            docs, qs = vectors(head, captions, 32, False), vectors(head, queries, 16, False)
            run = retrieve(docs, collection.images.ids, qs, query_ids)
            nnz = (float(np.diff(qs.indptr).mean()), float(np.diff(docs.indptr).mean()))
            rows.append((name, score(run, qrels).means, nnz))
    print(f"\n{args.collection} {args.split}, {len(query_ids)} queries, untrained MiniLM-L6\n")
    print("| variant | nDCG@10 | R@1000 | q_nnz | d_nnz |\n|---|---:|---:|---:|---:|")
    for name, means, nnz in rows:
        cells = "– | –" if nnz is None else f"{nnz[0]:.1f} | {nnz[1]:.1f}"
        print(f"| {name} | {means['nDCG@10']:.4f} | {means['R@1000']:.4f} | {cells} |")


if __name__ == "__main__":
    main()
