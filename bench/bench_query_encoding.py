"""Benchmark query encoding: the inference-free static head vs the MLP and MLM query heads.

A query side is what a search engine runs per request. ``StaticQueryHead`` is a tokenizer
call and a table lookup (no transformer); the MLP head (M2's query side) and the MLM head
(SPLADE) run the text transformer. This times each head encoding the bundled collection's
validation queries, tokenization included, in batches of ``--batch-sizes``, alternating the
heads round by round so that load from other processes hits all alike; it reports the median
queries/s of each head and its ratio to the MLP head measured in the same run. Latency
depends on the architecture, not on training, so the heads are built untrained (the static
table from ones) on the experiments' backbone.

Usage::

    python bench/bench_query_encoding.py [--collection emoji] [--batch-sizes 1 64]
                                         [--rounds 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lightning_mlsr.data.collection import load_collection  # noqa: E402
from lightning_mlsr.io.pretrained import load_tokenizer  # noqa: E402
from lightning_mlsr.models import MLMHead, MLPHead, StaticQueryHead  # noqa: E402


def encode_all(head: Any, tokenizer: Any, texts: list[str], batch_size: int) -> int:
    """Encode every text (tokenization included); returns the non-zeros, so that the work
    cannot be optimised away."""
    nnz = 0
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(
                texts[start : start + batch_size],
                padding=True,
                truncation=True,
                max_length=16,
                return_tensors="pt",
            )
            weights = head(dict(batch))  # (B, V)
            nnz += int((weights > 0).sum())
    return nnz


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--collection", default="emoji")
    parser.add_argument("--split", default="validation")
    parser.add_argument("--backbone", default="splade-tiny")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per head")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = parser.parse_args(argv)
    if args.rounds < 1 or min(args.batch_sizes) < 1:
        parser.error("need --rounds >= 1 and batch sizes >= 1")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    collection = load_collection(args.collection)
    ids = collection.query_ids(args.split)  # judged queries, sorted
    texts = [collection.texts.query(collection.texts.index(q)) for q in ids]
    tokenizer = load_tokenizer(args.backbone)
    heads = {
        "static (inference-free)": StaticQueryHead(backbone=args.backbone).eval(),
        "MLP (M2's query side)": MLPHead(backbone=args.backbone).eval(),
        "MLM (SPLADE)": MLMHead(backbone=args.backbone).eval(),
    }
    print(
        f"{len(texts)} {args.collection} {args.split} queries, backbone {args.backbone}, "
        f"{args.threads} thread(s), {args.rounds} rounds, torch {torch.__version__}\n"
    )
    print("| query head | batch | queries/s (median) | ÷ MLP head | non-zeros per query |")
    print("|---|---|---|---|---|")
    for batch_size in args.batch_sizes:
        seconds: dict[str, list[float]] = {name: [] for name in heads}
        nnz: dict[str, int] = {}
        for head in heads.values():  # untimed warm-up
            encode_all(head, tokenizer, texts[: 4 * batch_size], batch_size)
        for _ in range(args.rounds):
            for name, head in heads.items():
                started = time.perf_counter()
                nnz[name] = encode_all(head, tokenizer, texts, batch_size)
                seconds[name].append(time.perf_counter() - started)
        rate = {name: len(texts) / statistics.median(s) for name, s in seconds.items()}
        base = rate["MLP (M2's query side)"]
        for name in heads:
            print(
                f"| {name} | {batch_size} | {rate[name]:,.0f} | {rate[name] / base:.2f}× "
                f"| {nnz[name] / len(texts):.1f} |"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
