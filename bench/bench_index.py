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
each method indexes, build time and index size. ``ours-single`` is ours called once per
query (``search_one``), timed against the batched call in the same rounds.

Usage::

    python bench/bench_index.py [--docs 100000 1000000] [--queries 1000] [--threads 2]
    python bench/bench_index.py --data wordnet --wordnet DIR [--max-docs N] [--out FILE]
    python bench/bench_index.py --data wordnet --wordnet DIR --max-docs 49152 \
        --proxy-docs 10000000       # any collection size from real vectors (see --proxy-docs)

Memory is the peak resident set size (VmHWM, reset through ``/proc/self/clear_refs``) above
the resident size just before the step, so it counts numpy, numba and Rust allocations alike.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import os
import platform
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

VOCAB = 30522  # BERT-uncased wordpieces
WORDNET_HELP = (
    "WordNet 3.0's database files (data.noun, data.verb, data.adj, data.adv), e.g. from "
    "Debian's wordnet-base package without installing it: `apt-get download wordnet-base && "
    "dpkg-deb -x wordnet-base_*.deb wn` then `--wordnet wn/usr/share/wordnet`"
)


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
        default=["ours-single", "pisa-bmw", "pisa-maxscore", "anserini", "seismic"],
        help="besides ours (batched); ours-single: ours called once per query (search_one); "
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

import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lightning_mlsr.retrieval.index import InvertedIndex  # noqa: E402

# --------------------------------------------------------------------------------------------
# Synthetic data
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Measurement helpers
# --------------------------------------------------------------------------------------------


def _rss_kib(field_name: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field_name} not in /proc/self/status")


@dataclass
class Peak:
    mib: float = float("nan")


@contextlib.contextmanager
def peak_rss() -> Iterator[Peak]:
    """Peak RSS during the block, above the RSS at its start (MiB; NaN without /proc)."""
    result = Peak()
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand freed heap back so the baseline is honest
    try:
        base = _rss_kib("VmRSS")
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # reset VmHWM to the current RSS
    except OSError:
        base = None
    yield result
    if base is not None:
        result.mib = (_rss_kib("VmHWM") - base) / 1024


@contextlib.contextmanager
def quiet_stdout() -> Iterator[None]:
    """Silence fd 1 (Seismic's Rust code prints progress with println!)."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 1)
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def timed(fn: Callable[[], object], repeats: int) -> tuple[float, float, object]:
    """Wall and process CPU seconds (all threads) of the fastest of ``repeats`` calls, and
    the last result. CPU time barely moves with load from other jobs; wall time does.
    """
    best, best_cpu, out = float("inf"), float("inf"), None
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        if wall < best:
            best, best_cpu = wall, cpu
    return best, best_cpu, out


# --------------------------------------------------------------------------------------------
# Methods
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Realistic vectors: WordNet glosses and lemmas encoded by the bundled SPLADE-tiny
# --------------------------------------------------------------------------------------------

WORDNET_FILES = ("data.noun", "data.verb", "data.adj", "data.adv")


@dataclass
class WordNet:
    ids: list[str]  # "<pos><offset>", unique
    glosses: list[str]  # definition and examples
    lemmas: list[list[str]]  # the synset's words, underscores as spaces


def read_wordnet(directory: str | Path) -> WordNet:
    """Every synset of WordNet's ``data.*`` files: id, gloss and lemmas."""
    root = Path(directory)
    missing = [f for f in WORDNET_FILES if not (root / f).is_file()]
    if missing:
        raise FileNotFoundError(f"{root} lacks {', '.join(missing)}: pass {WORDNET_HELP}")
    out = WordNet([], [], [])
    for name in WORDNET_FILES:
        with (root / name).open(encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("  ") or " | " not in line:  # license header
                    continue
                head, gloss = line.split(" | ", 1)
                fields = head.split()
                n_words = int(fields[3], 16)
                out.ids.append(f"{fields[2]}{fields[0]}")
                out.glosses.append(gloss.strip())
                out.lemmas.append([w.replace("_", " ") for w in fields[4 : 4 + 2 * n_words : 2]])
    return out


def lemma_queries(wn: WordNet, n: int, seed: int) -> list[str]:
    """``n`` distinct lemmas of synsets drawn at random (keyword queries of 1-3 words)."""
    rng = np.random.default_rng(seed)
    seen: dict[str, None] = {}
    for s in rng.permutation(len(wn.ids)):
        lemma = wn.lemmas[s][int(rng.integers(len(wn.lemmas[s])))]
        seen.setdefault(lemma.split("(")[0].strip(), None)
        if len(seen) == n:
            break
    return list(seen)


def encode_texts(
    texts: list[str],
    max_length: int,
    cache_dir: Path | None,
    batch_size: int = 128,
    chunk: int = 4096,
) -> sp.csr_matrix:
    """Zero-shot SPLADE-tiny vectors of ``texts`` (the bundled MLM head, max pooling).

    Encoded in chunks of ``chunk`` texts, each cached on disk under a hash of its texts and
    settings, so an interrupted run resumes and a larger run reuses a smaller one's chunks
    (the realistic collection is a seeded permutation, so ``--max-docs N`` takes a prefix).
    Shape: (len(texts), 30522).
    """
    import hashlib

    head: Any = None
    blocks = []
    for start in range(0, len(texts), chunk):
        part = texts[start : start + chunk]
        digest = hashlib.sha1(
            "\n".join([f"splade-tiny max {max_length}", *part]).encode("utf-8")
        ).hexdigest()[:16]
        path = cache_dir / f"splade-tiny-{len(part)}-{digest}.npz" if cache_dir else None
        if path is not None and path.exists():
            blocks.append(sp.load_npz(path).tocsr())
            continue
        if head is None:
            from lightning_mlsr.baselines.common import text_batches
            from lightning_mlsr.io.pretrained import load_tokenizer
            from lightning_mlsr.models.text import MLMHead
            from lightning_mlsr.retrieval.batch_encoding import encode_loader

            head = MLMHead("splade-tiny", pooling="max").eval()
            tokenizer = load_tokenizer("splade-tiny")
        t0 = time.perf_counter()
        batches = text_batches(part, tokenizer, batch_size, max_length, "encode", False)
        block = encode_loader(head, batches, width=head.vocab_size, device="cpu")[1]
        if len(texts) > chunk:
            print(
                f"encoded texts {start:,}-{start + len(part):,} of {len(texts):,} "
                f"in {time.perf_counter() - t0:.0f} s",
                file=sys.stderr,
                flush=True,
            )
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            sp.save_npz(path, block)
        blocks.append(block)
    if not blocks:
        return sp.csr_matrix((0, VOCAB), dtype=np.float32)
    return sp.vstack(blocks, format="csr")


def proxy_documents(
    vectors: sp.csr_matrix, n_docs: int, seed: int, chunk: int = 1_000_000
) -> sp.csr_matrix:
    """``n_docs`` documents, each the first half (rounded up) of one random row's entries
    and the second half of another's, duplicate terms summed: real term statistics and
    weights at any collection size. Built ``chunk`` documents at a time.

    Shape: vectors (n_rows, V) -> (n_docs, V)
    """
    rng = np.random.default_rng(seed)
    lengths = np.diff(vectors.indptr)
    first_half = (lengths + 1) // 2
    blocks = []
    for start in range(0, n_docs, chunk):
        n = min(chunk, n_docs - start)
        a, b = rng.integers(vectors.shape[0], size=(2, n))
        starts = np.stack([vectors.indptr[a], vectors.indptr[b] + first_half[b]], axis=1).ravel()
        lens = np.stack([first_half[a], lengths[b] - first_half[b]], axis=1).ravel()
        offsets = np.cumsum(lens) - lens  # (2n,) where each half starts in the output
        pos = np.repeat(starts - offsets, lens) + np.arange(int(lens.sum()))
        indptr = np.concatenate([[0], np.cumsum(lens.reshape(n, 2).sum(axis=1))])
        block = sp.csr_matrix(
            (vectors.data[pos], vectors.indices[pos], indptr), shape=(n, vectors.shape[1])
        )
        block.sum_duplicates()
        blocks.append(block)
    return sp.vstack(blocks, format="csr")


@dataclass
class Engine:
    """One method of the realistic benchmark: its index and how it searches."""

    name: str
    vectors: str  # "float" or "impacts": which matrices it indexes and is compared with
    build_s: float
    size_mib: float
    search: Callable[[sp.csr_matrix, int, int], tuple[np.ndarray, np.ndarray]]
    qps: dict[int, list[float]] = field(default_factory=dict)  # threads -> per-round q/s
    recall: float = float("nan")


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
                )
            )
    return engines


def _file_or_dir_mib(workdir: Path, stem: str) -> float:
    paths = [p for p in workdir.iterdir() if p.name.startswith(stem)]
    return sum(_dir_mib(p) if p.is_dir() else p.stat().st_size / 2**20 for p in paths)


def _one_at_a_time(index: InvertedIndex, q: sp.csr_matrix, k: int, threads: int):
    scores = np.full((q.shape[0], k), -np.inf, dtype=np.float32)
    indices = np.full((q.shape[0], k), -1, dtype=np.int64)
    for r in range(q.shape[0]):
        row = slice(q.indptr[r], q.indptr[r + 1])
        scores[r], indices[r] = index.search_one(
            q.indices[row], q.data[row], k, num_threads=threads
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
                    t0 = time.perf_counter()
                    e.search(q, args.k, threads)
                    e.qps.setdefault(threads, []).append(q.shape[0] / (time.perf_counter() - t0))
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
    return realistic_markdown(info, engines, args)


def realistic_markdown(
    info: dict[str, str], engines: list[Engine], args: argparse.Namespace
) -> str:
    base = engines[0]
    head = "; ".join(f"{k} {v}" for k, v in info.items())
    thread_cols = "".join(f" | q/s, {t} thr | ÷ ours, {t} thr" for t in args.thread_counts)
    lines = [
        head,
        "",
        f"| method | build s | index MiB{thread_cols} | recall@{args.k} vs exact |",
        "|---|---:|---:" + "|---:|---:" * len(args.thread_counts) + "|---:|",
    ]
    for e in engines:
        cells = [e.name, f"{e.build_s:.2f}", f"{e.size_mib:.1f}"]
        for t in args.thread_counts:
            ratios = [mine / ref for mine, ref in zip(e.qps[t], base.qps[t])]
            cells += [f"{float(np.median(e.qps[t])):,.0f}", f"{float(np.median(ratios)):.3f}"]
        cells.append(f"{e.recall:.4f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


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
