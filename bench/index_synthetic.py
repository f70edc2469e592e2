"""The synthetic index benchmark: seeded SPLADE-like vectors searched by ours, by the naive
scipy way (``Q @ D.T`` and ``argpartition``) and by Seismic, and its markdown table."""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import scipy.sparse as sp
from measurement import peak_rss, quiet_stdout, timed
from wordnet_vectors import VOCAB

from lightning_mlsr.retrieval.index import InvertedIndex


def zipf_term_probs(rng: np.random.Generator, a: float, s: float) -> np.ndarray:
    """Term probabilities ~ 1/(rank + 1 + s)^a, ranks assigned to term ids at random."""
    p = 1.0 / (np.arange(VOCAB) + 1.0 + s) ** a
    p /= p.sum()
    return p[rng.permutation(VOCAB)]


def synthetic_sparse(
    n_rows: int, draws: int, probs: np.ndarray, rng: np.random.Generator, chunk: int = 100_000
) -> sp.csr_matrix:
    """Rows of ``draws`` terms sampled from ``probs`` (duplicates merged), SPLADE-like weights.

    Weights are ``log1p`` of a Gamma(2, 1) draw: positive, mostly below 3, like
    ``log(1 + relu(logits))``.
    """
    cdf = np.cumsum(probs)
    cdf /= cdf[-1]
    indptr = [np.zeros(1, dtype=np.int64)]
    indices, data = [], []
    offset = 0
    for start in range(0, n_rows, chunk):
        n = min(chunk, n_rows - start)
        # Sorted uniforms give sorted term ids per row, so duplicates are neighbours.
        cols = np.searchsorted(cdf, np.sort(rng.random((n, draws)), axis=1), side="right")
        cols = np.minimum(cols, VOCAB - 1)
        keep = np.ones(cols.shape, dtype=bool)
        keep[:, 1:] = cols[:, 1:] != cols[:, :-1]
        terms = cols[keep]
        indptr.append(offset + np.cumsum(keep.sum(axis=1)))
        offset += len(terms)
        indices.append(terms.astype(np.int32))
        data.append(np.log1p(rng.gamma(2.0, 1.0, size=len(terms))).astype(np.float32))
    return sp.csr_matrix(
        (np.concatenate(data), np.concatenate(indices), np.concatenate(indptr)),
        shape=(n_rows, VOCAB),
    )


def naive_topk(docs_t: sp.csr_matrix, queries: sp.csr_matrix, k: int, batch: int):
    """What one writes first: dense score blocks from ``Q @ D.T`` and ``argpartition``."""
    n_q = queries.shape[0]
    scores = np.full((n_q, k), -np.inf, dtype=np.float32)
    indices = np.full((n_q, k), -1, dtype=np.int64)
    for start in range(0, n_q, batch):
        block = (queries[start : start + batch] @ docs_t).toarray()  # (batch, n_docs)
        top = np.argpartition(-block, k - 1, axis=1)[:, :k]
        top_s = np.take_along_axis(block, top, axis=1)
        order = np.argsort(-top_s, axis=1, kind="stable")
        top, top_s = np.take_along_axis(top, order, 1), np.take_along_axis(top_s, order, 1)
        hit = top_s > 0
        scores[start : start + batch] = np.where(hit, top_s, -np.inf)
        indices[start : start + batch] = np.where(hit, top, -1)
    return scores, indices


def same_up_to_ties(s_a, i_a, s_b, i_b) -> tuple[int, bool]:
    """(#queries with identical ids, whether all other differences are among equal scores)."""
    identical = np.all(i_a == i_b, axis=1)
    ok = np.array_equal(s_a, s_b)
    for q in np.flatnonzero(~identical):
        for s in np.unique(s_a[q][i_a[q] != i_b[q]]):
            # ids at positions holding score s must be the same set, except at the cut-off
            at_a, at_b = set(i_a[q][s_a[q] == s]), set(i_b[q][s_b[q] == s])
            if at_a != at_b and s != s_a[q][-1]:
                ok = False
    return int(identical.sum()), ok


def recall_at_k(exact_i: np.ndarray, approx_i: np.ndarray) -> float:
    hits, total = 0, 0
    for e, a in zip(exact_i, approx_i):
        e = set(e[e >= 0].tolist())
        hits += len(e & set(a[a >= 0].tolist()))
        total += len(e)
    return hits / max(total, 1)


@dataclass
class Row:
    method: str
    build_s: float = float("nan")
    build_mib: float = float("nan")
    qps: float = float("nan")
    cpu_qps: float = float("nan")
    search_mib: float = float("nan")
    extra: dict[str, str] = field(default_factory=dict)


def bench_collection(n_docs: int, args: argparse.Namespace) -> tuple[dict, list[Row]]:
    load_before = os.getloadavg()[0]
    rng = np.random.default_rng(args.seed)
    probs = zipf_term_probs(rng, args.zipf_a, args.zipf_s)
    t0 = time.perf_counter()
    docs = synthetic_sparse(n_docs, args.doc_draws, probs, rng)
    queries = synthetic_sparse(args.queries, args.query_draws, probs, rng)
    gen_s = time.perf_counter() - t0
    rows: list[Row] = []

    # ours ------------------------------------------------------------------------------
    ours = Row(f"ours (numba TAAT, {args.threads} threads)")
    with peak_rss() as mem:
        t0 = time.perf_counter()
        index = InvertedIndex.from_matrix(docs)
        ours.build_s = time.perf_counter() - t0
    ours.build_mib = mem.mib
    flops = index.expected_flops(queries)
    info = {
        "docs": n_docs,
        "nnz/doc": docs.nnz / n_docs,
        "nnz/query": queries.nnz / args.queries,
        "flops/query": float(flops.mean()),
        "index MiB": index.size_bytes / 2**20,
        "build peak ÷ index size": ours.build_mib / (index.size_bytes / 2**20),
        "generate s": gen_s,
    }
    index.search(queries[:2], args.k, num_threads=args.threads)  # load the compiled kernel
    with peak_rss() as mem:
        secs, cpu, (s_ours, i_ours) = timed(
            lambda: index.search(queries, args.k, num_threads=args.threads), args.repeats
        )
    ours.qps, ours.cpu_qps, ours.search_mib = args.queries / secs, args.queries / cpu, mem.mib
    rows.append(ours)

    one = Row("ours (numba TAAT, 1 thread)")
    secs, cpu, _ = timed(lambda: index.search(queries, args.k, num_threads=1), args.repeats)
    one.qps, one.cpu_qps = args.queries / secs, args.queries / cpu
    rows.append(one)

    # naive scipy -----------------------------------------------------------------------
    naive = Row(f"naive scipy Q @ D.T + argpartition (1 thread, batch {args.naive_batch})")
    with peak_rss() as mem:
        t0 = time.perf_counter()
        docs_t = docs.T.tocsr()  # (V, n_docs): the "index" of the naive way
        naive.build_s = time.perf_counter() - t0
    naive.build_mib = mem.mib
    with peak_rss() as mem:
        secs, cpu, (s_naive, i_naive) = timed(
            partial(naive_topk, docs_t, queries, args.k, args.naive_batch), 1
        )
    naive.qps, naive.cpu_qps, naive.search_mib = args.queries / secs, args.queries / cpu, mem.mib
    docs_t = None  # free it before the next method
    n_same, ok = same_up_to_ties(s_ours, i_ours, s_naive, i_naive)
    info["top-k identical to naive"] = f"{n_same}/{args.queries} queries, rest tie-only: {ok}"
    if not ok:
        raise SystemExit(f"ours and naive disagree beyond ties at {n_docs} docs")
    rows.append(naive)

    # seismic ---------------------------------------------------------------------------
    if not args.no_seismic and n_docs > args.seismic_max_docs:
        print(f"skipping seismic at {n_docs:,} docs (> --seismic-max-docs)", file=sys.stderr)
    elif not args.no_seismic:
        try:
            from lightning_mlsr.retrieval.index import SeismicIndex

            SeismicIndex._seismic()
        except ImportError as err:
            print(f"skipping seismic: {err}", file=sys.stderr)
        else:
            seis = Row(
                f"seismic (n_postings={args.seismic_n_postings}, "
                f"heap_factor={args.seismic_heap_factor}, {args.threads} threads)"
            )
            with peak_rss() as mem, quiet_stdout():
                t0 = time.perf_counter()
                sindex = SeismicIndex.from_matrix(
                    docs, n_postings=args.seismic_n_postings, num_threads=args.threads
                )
                seis.build_s = time.perf_counter() - t0
            seis.build_mib = mem.mib
            with peak_rss() as mem, quiet_stdout():
                secs, cpu, (_, i_seis) = timed(
                    lambda: sindex.search(
                        queries,
                        args.k,
                        query_cut=args.query_draws,
                        heap_factor=args.seismic_heap_factor,
                        num_threads=args.threads,
                    ),
                    args.repeats,
                )
            seis.qps, seis.cpu_qps = args.queries / secs, args.queries / cpu
            seis.search_mib = mem.mib
            seis.extra["recall@10"] = f"{recall_at_k(i_ours, i_seis):.4f}"
            rows.append(seis)
            del sindex
    info["1-min load avg before/after"] = f"{load_before:.1f}/{os.getloadavg()[0]:.1f}"
    return info, rows


def markdown(info: dict, rows: list[Row]) -> str:
    ours = rows[0]
    head = ", ".join(
        f"{k} {v:,.1f}" if isinstance(v, float) else f"{k} {v}" for k, v in info.items()
    )
    lines = [
        f"**{info['docs']:,} documents** — {head}",
        "",
        "| method | build s | build peak MiB | queries/s | queries per CPU-s | search peak MiB "
        "| ours q/s ÷ this | recall@10 vs exact |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        cells = [
            r.method,
            _fmt(r.build_s, ".2f"),
            _fmt(r.build_mib, ".0f"),
            _fmt(r.qps, ",.0f"),
            _fmt(r.cpu_qps, ",.0f"),
            _fmt(r.search_mib, ".0f"),
            _fmt(ours.qps / r.qps, ".2f"),
            r.extra.get("recall@10", "1 (exact)"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _fmt(value: float, spec: str) -> str:
    return "–" if np.isnan(value) else format(value, spec)
