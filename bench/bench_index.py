"""Benchmark top-k search of ``lightning_mlsr.retrieval.index`` on synthetic and on realistic vectors.

Synthetic SPLADE-like vectors (default), on the same seeded collection and queries:

- ours: ``InvertedIndex.search`` (numba term-at-a-time, parallel over queries);
- naive: ``(Q_batch @ D.T).toarray()`` + ``np.argpartition`` per query batch (scipy only);
- seismic: ``pyseismic-lsr`` approximate search, if installed (recall@10 against ours).

Realistic vectors (``--data wordnet``): WordNet 3.0's glosses (documents) and lemmas
(queries) encoded by the bundled SPLADE-tiny, searched by ours, PISA (block-max WAND,
MaxScore) and Anserini on the quantized impacts (``[engines]`` extra) and Seismic on the
floats (``[seismic]`` extra), in one interleaved run: queries/s on each thread count as a
ratio to ours within each round, tie-aware recall@k against exact search of the vectors
each method indexes, build time and index size, with ratios of wall-clock and of CPU time.
``ours-single`` is ours called once per query (``search_one``), timed against the batched
call in the same rounds; ``ours-pruned`` is ours with safe block-max pruning
(``pruning="blockmax"``: the same results, bit for bit).

Usage::

    python bench/bench_index.py [--docs 100000 1000000] [--queries 1000] [--threads 2]
    python bench/bench_index.py --data wordnet --wordnet DIR [--max-docs N] [--out FILE]
    python bench/bench_index.py --data wordnet --wordnet DIR --max-docs 49152 \
        --proxy-docs 10000000       # any collection size from real vectors (see --proxy-docs)

Memory is the peak resident set size (VmHWM, reset through ``/proc/self/clear_refs``) above
the resident size just before the step, so it counts numpy, numba and Rust allocations alike.

The parts live beside this script: :mod:`index_synthetic` (the synthetic benchmark),
:mod:`index_realistic` and :mod:`wordnet_vectors` (the realistic one), :mod:`measurement`.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

from wordnet_vectors import WORDNET_HELP


def _parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--doc-draws", type=int, default=130, help="term draws per document")
    parser.add_argument("--query-draws", type=int, default=21, help="term draws per query")
    parser.add_argument("--zipf-a", type=float, default=1.0, help="p(rank r) ~ 1/(r+1+s)^a")
    parser.add_argument("--zipf-s", type=float, default=10.0)
    parser.add_argument("--naive-batch", type=int, default=64, help="queries per Q @ D.T block")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of the fast methods")
    parser.add_argument("--no-seismic", action="store_true")
    parser.add_argument(
        "--seismic-max-docs",
        type=int,
        default=100_000,
        help="build Seismic only for collections up to this size (its build is slow: minutes "
        "at 100k documents on 2 cores)",
    )
    parser.add_argument("--seismic-n-postings", type=int, default=3500)  # library default
    parser.add_argument("--seismic-heap-factor", type=float, default=0.9)
    real = parser.add_argument_group("realistic vectors (--data wordnet)")
    real.add_argument(
        "--data",
        choices=("synthetic", "wordnet"),
        default="synthetic",
        help="synthetic SPLADE-like vectors, or WordNet glosses (documents) and lemmas "
        "(queries) encoded by the bundled SPLADE-tiny",
    )
    real.add_argument("--wordnet", default="/usr/share/wordnet", help=WORDNET_HELP)
    real.add_argument("--max-docs", type=int, default=None, help="glosses sampled (all: 117,659)")
    real.add_argument(
        "--proxy-docs",
        type=int,
        default=None,
        help="index this many proxy documents instead of the glosses: each the first half of "
        "one encoded gloss's terms and the second half of another's (a collection of any "
        "size, e.g. 10000000, from --max-docs real vectors; queries stay the real lemmas)",
    )
    real.add_argument(
        "--engines",
        nargs="+",
        default=["ours-single", "ours-pruned", "pisa-bmw", "pisa-maxscore", "anserini", "seismic"],
        help="besides ours (batched); ours-single: ours called once per query (search_one); "
        "ours-pruned / ours-pruned-single: the same with pruning='blockmax'; "
        "those not installed are skipped ([engines], [seismic] extras)",
    )
    real.add_argument("--thread-counts", type=int, nargs="+", default=[1, 2])
    real.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds")
    real.add_argument("--scale", type=float, default=100.0, help="impact quantization factor")
    real.add_argument("--doc-max-length", type=int, default=16, help="wordpieces per gloss")
    real.add_argument("--query-max-length", type=int, default=16)
    real.add_argument("--seismic-query-cut", type=int, default=10)
    real.add_argument(
        "--cache-dir",
        default=str(Path.home() / ".cache" / "lightning_mlsr" / "bench_index"),
        help="encoded vectors are kept here ('' to not cache)",
    )
    real.add_argument("--workdir", default=None, help="where engine indexes are built (temp)")
    real.add_argument("--out", default=None, help="also write the report to this file")
    return parser.parse_args(argv)


ARGS = _parse_args() if __name__ == "__main__" else None
if ARGS is not None:
    # Thread pools read these once, when the libraries start.
    _pool = max(ARGS.thread_counts) if ARGS.data == "wordnet" else ARGS.threads
    os.environ.setdefault("RAYON_NUM_THREADS", str(_pool))
    os.environ.setdefault("NUMBA_NUM_THREADS", str(_pool))


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
# after the thread pools' sizes are set: these load numba and the index
from index_realistic import run_realistic  # noqa: E402
from index_synthetic import bench_collection, markdown  # noqa: E402
from wordnet_vectors import lemma_queries, proxy_documents, read_wordnet  # noqa: E402

__all__ = ["lemma_queries", "main", "proxy_documents", "read_wordnet"]


def main(args: argparse.Namespace) -> None:
    import numba

    numba.set_num_threads(max(args.thread_counts) if args.data == "wordnet" else args.threads)
    if args.data == "wordnet":
        report = (
            f"# bench_index --data wordnet — {time.strftime('%Y-%m-%d')}, "
            f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
            f"numba {numba.__version__}, k={args.k}, scale {args.scale}, {args.rounds} "
            f"interleaved rounds, seed {args.seed}\n\n" + run_realistic(args)
        )
        print(report, flush=True)
        if args.out:
            Path(args.out).write_text(report + "\n", encoding="utf-8")
        return
    print(
        f"# bench_index — {time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, numba {numba.__version__}, threads {args.threads}, "
        f"{args.queries} queries, k={args.k}, seed {args.seed}\n"
    )
    for n_docs in args.docs:
        info, rows = bench_collection(n_docs, args)
        print(markdown(info, rows), end="\n\n", flush=True)


if __name__ == "__main__":
    main(ARGS)
