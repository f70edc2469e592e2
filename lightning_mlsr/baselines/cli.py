"""``python -m lightning_mlsr.baselines``: run baselines on splits, print a markdown table."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, get_args

from lightning_mlsr.baselines.dense import DensePooling
from lightning_mlsr.baselines.run import BASELINES, BaselineResult, format_table, run_baseline
from lightning_mlsr.retrieval.metrics import DEFAULT_MEASURES
from lightning_mlsr.retrieval.trec import write_trec_run

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m lightning_mlsr.baselines",
        description="Untrained baselines (BM25, zero-shot SPLADE, zero-shot dense) scored like "
        "the trained models; prints a markdown table.",
    )
    parser.add_argument("--collection", default="emoji", help="bundled name or directory")
    parser.add_argument("--split", nargs="+", default=["test"], help="one or more splits")
    parser.add_argument("--methods", nargs="+", choices=BASELINES, default=list(BASELINES))
    parser.add_argument("--run-dir", type=Path, help="write <run-dir>/<split>.<method>.trec")
    parser.add_argument("--k", type=int, default=1000, help="images retrieved per query")
    parser.add_argument("--measures", nargs="+", default=list(DEFAULT_MEASURES))
    parser.add_argument("--device", default="cpu", help="torch device of the neural baselines")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--bm25-k1", type=float, default=0.9)
    parser.add_argument("--bm25-b", type=float, default=0.4)
    parser.add_argument("--dense-pooling", choices=get_args(DensePooling), default="mean")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return parser


def main(argv: Sequence[str] | None = None) -> list[BaselineResult]:
    """Run the chosen baselines on the chosen splits, print the table, write runs."""
    from lightning_mlsr.data.collection import load_collection
    from lightning_mlsr.data.errors import DataError

    args = _parser().parse_args(argv)
    try:
        collection = load_collection(args.collection)
    except DataError as err:
        sys.exit(f"error: {err}")
    missing = [s for s in args.split if s not in collection.qrels]
    if missing:
        sys.exit(
            f"error: collection {collection.name!r} has no split(s) {missing}; "
            f"it has {collection.splits}"
        )
    progress = not args.no_progress
    options: dict[str, dict[str, Any]] = {
        "bm25": {"k1": args.bm25_k1, "b": args.bm25_b},
        "splade-zero-shot": {"batch_size": args.batch_size, "device": args.device},
        "dense-zero-shot": {
            "batch_size": args.batch_size,
            "device": args.device,
            "pooling": args.dense_pooling,
        },
    }
    results = []
    for split in args.split:
        for method in args.methods:
            result = run_baseline(
                method,
                collection,
                split,
                args.k,
                args.measures,
                progress=progress,
                **options[method],
            )
            results.append(result)
            if args.run_dir is not None:
                args.run_dir.mkdir(parents=True, exist_ok=True)
                write_trec_run(args.run_dir / f"{split}.{method}.trec", result.run, tag=method)
    print(format_table(results, args.measures))
    return results
