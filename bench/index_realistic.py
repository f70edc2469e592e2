"""The realistic index benchmark: WordNet vectors (:mod:`wordnet_vectors`) searched by ours
(batched and one query per call), PISA and Anserini on quantized impacts and Seismic on the
floats, in interleaved rounds; and its markdown table."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from measurement import on_cores, peak_rss, quiet_stdout
from wordnet_vectors import encode_texts, lemma_queries, proxy_documents, read_wordnet

from lightning_mlsr.retrieval.index import InvertedIndex


@dataclass
class Engine:
    """One method of the realistic benchmark: its index and how it searches."""

    name: str
    vectors: str  # "float" or "impacts": which matrices it indexes and is compared with
    build_s: float
    size_mib: float
    search: Callable[[sp.csr_matrix, int, int], tuple[np.ndarray, np.ndarray]]
    qps: dict[int, list[float]] = field(default_factory=dict)  # threads -> per-round q/s
    cpu_qps: dict[int, list[float]] = field(default_factory=dict)  # same, per CPU second
    recall: float = float("nan")
    # seconds of the last search spent in the engine's own call (None: not separable)
    engine_seconds: Callable[[], float] | None = None
    engine_qps: dict[int, list[float]] = field(default_factory=dict)
    cpu_measured: bool = True  # False: it searches in another process, out of process_time
    processes: tuple[int, ...] = ()  # its search processes, held to the same cores as this one


def _dir_mib(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


def build_engines(
    docs: sp.csr_matrix,
    doc_impacts: sp.csr_matrix,
    workdir: Path,
    wanted: list[str],
    args: argparse.Namespace,
) -> list[Engine]:
    """Build every wanted method's index once (timed), skipping engines not installed."""
    engines: list[Engine] = []
    with peak_rss() as mem:
        t0 = time.perf_counter()
        ours = InvertedIndex.from_matrix(docs)
        build_s = time.perf_counter() - t0
    args.ours_build_ratio = mem.mib / (ours.size_bytes / 2**20)
    engines.append(
        Engine(
            "ours (exact TAAT, batched)",
            "float",
            build_s,
            ours.size_bytes / 2**20,
            lambda q, k, t: ours.search(q, k, num_threads=t),
        )
    )
    if "ours-single" in wanted:
        engines.append(
            Engine(
                "ours, one query per call (search_one)",
                "float",
                build_s,
                ours.size_bytes / 2**20,
                partial(_one_at_a_time, ours),
            )
        )
    if "ours-pruned" in wanted or "ours-pruned-single" in wanted:
        t0 = time.perf_counter()
        bounds_mib = ours.prepare_pruning() / 2**20
        pruned_build_s = build_s + time.perf_counter() - t0
        args.pruning_bounds_mib = bounds_mib
        if "ours-pruned" in wanted:
            engines.append(
                Engine(
                    "ours, block-max pruned (batched)",
                    "float",
                    pruned_build_s,
                    ours.size_bytes / 2**20 + bounds_mib,
                    lambda q, k, t: ours.search(q, k, num_threads=t, pruning="blockmax"),
                )
            )
        if "ours-pruned-single" in wanted:
            engines.append(
                Engine(
                    "ours, block-max pruned, one query per call",
                    "float",
                    pruned_build_s,
                    ours.size_bytes / 2**20 + bounds_mib,
                    partial(_one_at_a_time, ours, pruning="blockmax"),
                )
            )
    if any(w.startswith("pisa") for w in wanted):
        try:
            from lightning_mlsr.retrieval.index.engines import PisaImpactIndex

            t0 = time.perf_counter()
            pisa = PisaImpactIndex.from_matrix(doc_impacts, path=workdir / "pisa")
            forward_s = time.perf_counter() - t0
        except ImportError as err:
            print(f"skipping PISA: {err}", file=sys.stderr)
        else:
            for algorithm, label in (("block_max_wand", "pisa-bmw"), ("maxscore", "pisa-maxscore")):
                if label not in wanted:
                    continue
                t0 = time.perf_counter()
                for threads in args.thread_counts:
                    pisa.prepare(algorithm, args.k, threads)
                engines.append(
                    Engine(
                        f"PISA {algorithm} (impacts)",
                        "impacts",
                        forward_s + time.perf_counter() - t0,
                        pisa.size_bytes / 2**20,
                        partial(_pisa_search, pisa, algorithm),
                    )
                )
    if "anserini" in wanted:
        try:
            from lightning_mlsr.retrieval.index.engines import AnseriniImpactIndex

            t0 = time.perf_counter()
            anserini = AnseriniImpactIndex.from_matrix(
                doc_impacts, path=workdir / "anserini", threads=max(args.thread_counts)
            )
            build_s = time.perf_counter() - t0
        except ImportError as err:
            print(f"skipping Anserini: {err}", file=sys.stderr)
        else:
            engines.append(
                Engine(
                    "Anserini impact (Lucene, impacts)",
                    "impacts",
                    build_s,
                    anserini.size_bytes / 2**20,
                    lambda q, k, t: anserini.search(q, k, num_threads=t),
                    engine_seconds=lambda: anserini.last_engine_seconds,
                    cpu_measured=False,  # Lucene runs in the search process
                    processes=(anserini.search_pid,),
                )
            )
    if "seismic" in wanted:
        try:
            from lightning_mlsr.retrieval.index import SeismicIndex

            SeismicIndex._seismic()
        except ImportError as err:
            print(f"skipping Seismic: {err}", file=sys.stderr)
        else:
            with quiet_stdout():
                t0 = time.perf_counter()
                seis = SeismicIndex.from_matrix(
                    docs, n_postings=args.seismic_n_postings, num_threads=max(args.thread_counts)
                )
                build_s = time.perf_counter() - t0
                seis._index.save(str(workdir / "seismic"))
            engines.append(
                Engine(
                    f"Seismic (n_postings={args.seismic_n_postings}, "
                    f"query_cut={args.seismic_query_cut}, heap_factor={args.seismic_heap_factor})",
                    "float",
                    build_s,
                    _file_or_dir_mib(workdir, "seismic"),
                    partial(_seismic_search, seis, args),
                    engine_seconds=lambda: seis.last_engine_seconds,
                )
            )
    return engines


def _file_or_dir_mib(workdir: Path, stem: str) -> float:
    paths = [p for p in workdir.iterdir() if p.name.startswith(stem)]
    return sum(_dir_mib(p) if p.is_dir() else p.stat().st_size / 2**20 for p in paths)


def _one_at_a_time(
    index: InvertedIndex, q: sp.csr_matrix, k: int, threads: int, pruning: str | None = None
):
    scores = np.full((q.shape[0], k), -np.inf, dtype=np.float32)
    indices = np.full((q.shape[0], k), -1, dtype=np.int64)
    for r in range(q.shape[0]):
        row = slice(q.indptr[r], q.indptr[r + 1])
        scores[r], indices[r] = index.search_one(
            q.indices[row], q.data[row], k, num_threads=threads, pruning=pruning
        )
    return scores, indices


def _pisa_search(index: Any, algorithm: str, q: sp.csr_matrix, k: int, threads: int):
    return index.search(q, k, algorithm=algorithm, num_threads=threads)


def _seismic_search(index: Any, args: argparse.Namespace, q: sp.csr_matrix, k: int, threads: int):
    with quiet_stdout():
        return index.search(
            q,
            k,
            query_cut=args.seismic_query_cut,
            heap_factor=args.seismic_heap_factor,
            num_threads=threads,
        )


def run_realistic(args: argparse.Namespace) -> str:
    """The realistic benchmark; returns its markdown report."""
    import tempfile

    from lightning_mlsr.retrieval.index.engines import quantize, tie_aware_recall

    load_before = os.getloadavg()[0]
    wn = read_wordnet(args.wordnet)
    n_docs = min(args.max_docs or len(wn.ids), len(wn.ids))
    order = np.random.default_rng(args.seed).permutation(len(wn.ids))[:n_docs]
    texts = [wn.glosses[i] for i in order]
    query_texts = lemma_queries(wn, args.queries, args.seed)
    cache = Path(args.cache_dir) if args.cache_dir else None
    t0 = time.perf_counter()
    docs = encode_texts(texts, args.doc_max_length, cache)
    queries = encode_texts(query_texts, args.query_max_length, cache)
    encode_s = time.perf_counter() - t0
    source = f"{n_docs:,} WordNet 3.0 glosses"
    if args.proxy_docs:
        docs = proxy_documents(docs, args.proxy_docs, args.seed)
        source = f"{args.proxy_docs:,} proxy documents (halves of two of {n_docs:,} glosses)"
        n_docs = args.proxy_docs
    doc_impacts, query_impacts = quantize(docs, args.scale), quantize(queries, args.scale)
    exact = InvertedIndex.from_matrix(docs)
    exact_scores, exact_idx = exact.search(queries, args.k)
    impact_scores, impact_idx = InvertedIndex.from_matrix(doc_impacts).search(query_impacts, args.k)
    quant_recall = tie_aware_recall(exact_scores, impact_idx, queries, docs)

    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        engines = build_engines(docs, doc_impacts, Path(tmp), args.engines, args)
        for e in engines:  # recall against the exact top-k of what each engine indexes
            q, d, ref = (
                (queries, docs, exact_scores)
                if e.vectors == "float"
                else (query_impacts, doc_impacts, impact_scores)
            )
            e.search(q[:2], args.k, 1)  # warm up: load indexes, compiled kernels, JIT
            e.recall = tie_aware_recall(ref, e.search(q, args.k, 1)[1], q, d)
        # Interleaved timing: every round times every method at every thread count, so a
        # change of machine load hits all methods alike; ratios are taken per round.
        for _ in range(args.rounds):
            for threads in args.thread_counts:
                for e in engines:
                    q = queries if e.vectors == "float" else query_impacts
                    with on_cores(threads, e.processes):  # t threads on t cores, for all alike
                        t0, c0 = time.perf_counter(), time.process_time()
                        e.search(q, args.k, threads)
                        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
                    e.qps.setdefault(threads, []).append(q.shape[0] / wall)
                    e.cpu_qps.setdefault(threads, []).append(q.shape[0] / max(cpu, 1e-9))
                    if e.engine_seconds is not None:
                        inside = max(e.engine_seconds(), 1e-9)
                        e.engine_qps.setdefault(threads, []).append(q.shape[0] / inside)
    info = {
        "documents": source,
        "queries": f"{queries.shape[0]:,} WordNet lemmas",
        "nnz/doc": f"{docs.nnz / n_docs:.1f}",
        "nnz/query": f"{queries.nnz / queries.shape[0]:.1f}",
        "flops/query": f"{float(exact.expected_flops(queries).mean()):,.0f}",
        "encode s (0 when cached)": f"{encode_s:.0f}",
        "recall@k of exact search on impacts vs on floats": f"{quant_recall:.4f}",
        "ours build peak ÷ index size": f"{args.ours_build_ratio:.2f}",
        "1-min load avg before/after": f"{load_before:.1f}/{os.getloadavg()[0]:.1f}",
    }
    if hasattr(args, "pruning_bounds_mib"):
        exact.prepare_pruning()
        exact.search(queries, args.k, pruning="blockmax")
        seeds, after = exact._scorer.last_pruning_stats / queries.shape[0]
        n_windows = exact._scorer.bounds.q8.shape[1]
        info["pruned: window bounds MiB"] = f"{args.pruning_bounds_mib:.1f}"
        info["pruned: windows scored/query (seeds + after)"] = (
            f"{seeds:.0f} + {after:.0f} of {n_windows:,}"
        )
    return realistic_markdown(info, engines, args)


def realistic_markdown(
    info: dict[str, str], engines: list[Engine], args: argparse.Namespace
) -> str:
    base = engines[0]
    head = "; ".join(f"{k} {v}" for k, v in info.items())
    thread_cols = "".join(
        f" | q/s, {t} thr | ÷ ours, {t} thr | ÷ ours CPU, {t} thr" for t in args.thread_counts
    )
    lines = [
        head,
        "",
        "t thr: the method is asked for t threads and every thread of the process (and of an "
        "engine's search process) is held to t cores while it is timed (Seismic's search "
        "ignores its thread count). "
        "q/s: wall clock; ÷ ours: median over rounds of the ratio of q/s to ours (batched) in "
        "the same round; ÷ ours CPU: the same with queries per second of process CPU time "
        "(all threads), which moves less with the machine's load (— where the engine searches "
        "in another process). *engine call only*: the same search timed inside the engine's "
        "own batch call, without building its query objects and reading its hits back (for "
        "Anserini: the pyjnius bridge and the pipe to its search process).",
        "",
        f"| method | build s | index MiB{thread_cols} | recall@{args.k} vs exact |",
        "|---|---:|---:" + "|---:|---:|---:" * len(args.thread_counts) + "|---:|",
    ]
    for e in engines:
        rows = [(e.name, e.qps, e.cpu_qps if e.cpu_measured else None)]
        if e.engine_qps:
            rows.append((f"{e.name}, *engine call only*", e.engine_qps, None))
        for name, qps, cpu_qps in rows:
            cells = [name, f"{e.build_s:.2f}", f"{e.size_mib:.1f}"]
            for t in args.thread_counts:
                ratios = [mine / ref for mine, ref in zip(qps[t], base.qps[t])]
                cells += [f"{float(np.median(qps[t])):,.0f}", f"{float(np.median(ratios)):.3f}"]
                if cpu_qps is None:
                    cells.append("—")
                else:
                    cpu = [mine / ref for mine, ref in zip(cpu_qps[t], base.cpu_qps[t])]
                    cells.append(f"{float(np.median(cpu)):.3f}")
            cells.append(f"{e.recall:.4f}")
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
