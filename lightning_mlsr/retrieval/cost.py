"""What one query costs to serve: index sizes, postings touched, latency summaries, the table.

Pure numpy (no torch, no Lightning), so the benchmark that measures these figures
(``bench/bench_query_cost.py``) and anything that later rebuilds its table from the JSON it
writes share one definition of every column.

- *Postings touched* by a query on an exact term-at-a-time inverted index: the sum of the
  posting-list lengths of its terms with weight > 0; each is one multiply-add, so it is also
  the query's FLOPS (the project's ``flops_per_query``).
- *Multiply-adds* of exact dense search (faiss ``IndexFlatIP``): every document's every
  dimension, ``n_docs * dim``.
- *Index bytes*: the CSC arrays of the postings (weights, row indices, column pointers) for
  sparse; the float32 ``(n_docs, dim)`` matrix for dense.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

__all__ = [
    "COLUMNS",
    "SCALE_COLUMNS",
    "cost_report",
    "cost_table",
    "csc_bytes",
    "dense_bytes",
    "dense_multiply_adds",
    "percentiles",
    "postings_touched",
]


def csc_bytes(postings: sp.spmatrix) -> int:
    """Bytes of a CSC matrix's three arrays: ``data``, ``indices`` and ``indptr``."""
    csc = postings if sp.isspmatrix_csc(postings) else sp.csc_matrix(postings)
    return int(csc.data.nbytes + csc.indices.nbytes + csc.indptr.nbytes)


def dense_bytes(n_docs: int, dim: int) -> int:
    """Bytes of the float32 ``(n_docs, dim)`` matrix an exact dense index holds."""
    return 4 * int(n_docs) * int(dim)


def dense_multiply_adds(n_docs: int, dim: int) -> int:
    """Multiply-adds of one query's exact inner-product search over every document."""
    return int(n_docs) * int(dim)


def postings_touched(posting_lengths: np.ndarray, queries: sp.spmatrix) -> np.ndarray:
    """Postings an exact term-at-a-time search reads for each query.

    A query's entries with weight <= 0 read nothing; a term stored twice in a row counts once.

    Shape: posting_lengths ``(V,)``, queries ``(Q, V)`` -> ``(Q,)`` int64.
    """
    q = sp.csr_matrix(queries, copy=True)
    q.sum_duplicates()
    q.data = (q.data > 0).astype(np.int64)
    q.eliminate_zeros()
    return np.asarray(q @ np.asarray(posting_lengths, dtype=np.int64)).reshape(-1)


def percentiles(seconds: Sequence[float] | np.ndarray) -> dict[str, float]:
    """p50 and p95 of per-query times, in milliseconds (numpy's linear interpolation)."""
    ms = np.asarray(seconds, dtype=np.float64) * 1e3
    if ms.size == 0:
        return {"p50": float("nan"), "p95": float("nan")}
    return {"p50": float(np.percentile(ms, 50)), "p95": float(np.percentile(ms, 95))}


#: (header, key in a record, format) of the table, in order. Times are milliseconds per query
#: on 1 thread: CPU time of the calling thread (what the query costs, whatever else the
#: machine runs), and wall time (what a caller waited on this machine at its load).
COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("model", "name", "s"),
    ("backbone", "backbone", "s"),
    ("search", "search_kind", "s"),
    ("nDCG@10", "ndcg10", ".4f"),
    ("encode p50 / p95", "encode_cpu_ms", "pair"),
    ("search p50 / p95", "search_cpu_ms", "pair"),
    ("end-to-end p50 / p95", "e2e_cpu_ms", "pair"),
    ("÷ baseline (end-to-end p50)", "e2e_ratio", ".2f"),
    ("end-to-end wall p50 / p95", "e2e_ms", "pair"),
    ("postings / query", "postings_per_query", ",.0f"),
    ("mult-adds / query", "flops_per_query", ",.0f"),
    ("index bytes", "index_bytes", ",d"),
    ("÷ baseline (bytes)", "bytes_ratio", ".2f"),
    ("nnz / query", "q_nnz", ".1f"),
    ("nnz / doc", "d_nnz", ".1f"),
)

#: The same for search alone on a larger corpus (no judgments there, so no quality).
SCALE_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("model", "name", "s"),
    ("docs", "n_docs", ",d"),
    ("search p50 / p95", "search_cpu_ms", "pair"),
    ("÷ baseline (search p50)", "search_ratio", ".3f"),
    ("search wall p50 / p95", "search_ms", "pair"),
    ("postings / query", "postings_per_query", ",.0f"),
    ("mult-adds / query", "flops_per_query", ",.0f"),
    ("index bytes", "index_bytes", ",d"),
    ("nnz / doc", "d_nnz", ".1f"),
)


def _cell(value: Any, spec: str) -> str:
    if value is None:
        return "–"
    if spec == "pair":
        return f"{value['p50']:.3g} / {value['p95']:.3g}"
    if isinstance(value, float) and np.isnan(value):
        return "–"
    return format(value, spec)


def cost_table(
    records: Sequence[Mapping[str, Any]],
    columns: Sequence[tuple[str, str, str]] = COLUMNS,
) -> str:
    """A markdown table of ``columns`` (:data:`COLUMNS` or :data:`SCALE_COLUMNS`), one row per
    record; a missing or None value shows "–"."""
    head = "| " + " | ".join(h for h, _, _ in columns) + " |"
    align = "|" + "|".join("---" if spec == "s" else "---:" for _, _, spec in columns) + "|"
    rows = [
        "| " + " | ".join(_cell(r.get(key), spec) for _, key, spec in columns) + " |"
        for r in records
    ]
    return "\n".join([head, align, *rows])


def cost_report(data: Mapping[str, Any]) -> str:
    """The markdown report of ``bench/bench_query_cost.py``'s JSON (``meta``, ``emoji``,
    ``wordnet``): a header with date, machine and load average, then the tables."""
    meta = data["meta"]
    loads = [
        "/".join(f"{x:.1f}" for x in meta[key])
        for key in ("load_average_before", "load_average_after")
    ]
    lines = [
        f"# Query cost — {meta['date']}, {meta['machine']}, {meta['threads']} thread, "
        f"{meta['split']} queries of emoji, k={meta['k']}, {meta['rounds']} interleaved rounds; "
        f"load average (1/5/15 min) {loads[0]} before, {loads[1]} after. Times in ms per query; "
        f"ratios are medians of per-round ratios to {meta['baseline']}.",
        "",
        cost_table(data["emoji"]),
    ]
    if data.get("wordnet"):
        lines += [
            "",
            "WordNet glosses, search alone:",
            "",
            cost_table(data["wordnet"], SCALE_COLUMNS),
        ]
    return "\n".join(lines) + "\n"
