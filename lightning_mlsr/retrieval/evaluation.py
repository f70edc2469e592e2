"""Evaluation as functions: encode → retrieve → score, with no Trainer.

The one call path from vectors to metrics. The evaluator callback, the zero-shot
baselines and the notebook loader all go through it, so for the same vectors they give
the same run and the same figures:

- :func:`encode` runs an encoder over batches (eval mode, no gradients) and returns its
  vectors: CSR term weights for a sparse encoder, an ``(N, D)`` array for a dense one.
- :func:`retrieve` ranks documents for each query: sparse vectors through the exact
  :class:`~lightning_mlsr.retrieval.index.InvertedIndex`, dense ones through
  :func:`~lightning_mlsr.retrieval.index.dense_search`, chosen by the vectors' type.
- :func:`score` gives trec_eval-exact means and per-query values
  (:func:`~lightning_mlsr.retrieval.metrics.evaluate`) and, on request, a confidence
  interval per measure from :func:`mean_interval`, the bootstrap every interval in the
  package comes from.
- :func:`write_evaluation` writes what was evaluated: the TREC run file and, next to it,
  the per-query values and every figure as JSON.

Imports no Lightning; torch only inside :func:`encode`.
"""

from __future__ import annotations

import contextlib
import json
import math
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import scipy.sparse as sp

from lightning_mlsr.io.atomic import atomic_write_text
from lightning_mlsr.retrieval.index import InvertedIndex, dense_search
from lightning_mlsr.retrieval.index.inputs import check_k
from lightning_mlsr.retrieval.metrics import DEFAULT_MEASURES, Qrels, evaluate, trec_eval_command
from lightning_mlsr.retrieval.trec import run_from_topk, write_trec_run

__all__ = [
    "INTERVAL_METHOD",
    "Run",
    "Scores",
    "encode",
    "mean_interval",
    "retrieve",
    "score",
    "sparse_efficiency",
    "write_evaluation",
]

Run = dict[str, dict[str, float]]

#: how :func:`mean_interval` computes an interval, in words (for cards and reports)
INTERVAL_METHOD = "BCa bootstrap over queries (scipy.stats.bootstrap, 9,999 resamples, seed 0)"


def encode(
    encoder: Callable[[dict[str, Any]], Any],
    batches: Iterable[Mapping[str, Any]],
    *,
    width: int,
    dense: bool = False,
    device: Any = "cpu",
    module: Any = None,
    context: contextlib.AbstractContextManager[Any] | None = None,
) -> sp.csr_matrix | np.ndarray:
    """The vectors of every input in ``batches``, in batch order.

    ``encoder`` maps an input dict to ``(b, width)`` weights (a head, or a bound
    ``encode_docs`` / ``encode_queries``); the loop is
    :func:`~lightning_mlsr.retrieval.batch_encoding.encode_loader`'s (eval mode, no
    gradients, ``module`` restored afterwards, ``context`` entered around it).

    Shape: N inputs -> ``(N, width)`` CSR of the positive weights, or float32 if ``dense``.
    """
    from lightning_mlsr.retrieval.batch_encoding import encode_loader

    return encode_loader(
        encoder,
        batches,
        width=width,
        dense=dense,
        device=device,
        module=module,
        context=context,
    )[1]


def retrieve(
    doc_vectors: sp.spmatrix | np.ndarray,
    doc_ids: Sequence[str] | np.ndarray,
    query_vectors: sp.spmatrix | np.ndarray,
    query_ids: Sequence[str] | np.ndarray,
    k: int = 1000,
    *,
    index: InvertedIndex | None = None,
) -> Run:
    """The top ``k`` documents of each query as a run ``{query_id: {doc_id: score}}``.

    Sparse vectors (scipy sparse) are searched with the exact inverted index (``index``,
    when the caller already built it over ``doc_vectors``); dense ones (numpy arrays) by
    exact inner product. Documents that score nothing are not retrieved.

    Shape: docs ``(N, W)``, queries ``(Q, W)``.
    """
    k = check_k(k)
    if isinstance(doc_vectors, np.ndarray) != isinstance(query_vectors, np.ndarray):
        raise TypeError(
            "retrieve: documents and queries must both be sparse (scipy) or both dense "
            f"(numpy), got {type(doc_vectors).__name__} and {type(query_vectors).__name__}"
        )
    if isinstance(doc_vectors, np.ndarray):
        scores, indices = dense_search(doc_vectors, np.asarray(query_vectors), k)
    else:
        if index is None:
            index = InvertedIndex.from_matrix(doc_vectors, list(doc_ids))
        scores, indices = index.search(query_vectors, k)
    return run_from_topk(scores, indices, query_ids, doc_ids)


def sparse_efficiency(
    index: InvertedIndex, doc_vectors: sp.csr_matrix, query_vectors: sp.csr_matrix
) -> dict[str, float]:
    """Mean non-zeros per query and per document, the share of documents and of queries with
    no active term (``empty_docs``, ``empty_queries``), postings and size of the index, and
    the postings a query touches on average (``flops_per_query``)."""
    q_nnz = np.diff(query_vectors.indptr)
    d_nnz = np.diff(doc_vectors.indptr)
    return {
        "q_nnz": float(q_nnz.mean()) if len(q_nnz) else 0.0,
        "d_nnz": float(d_nnz.mean()) if len(d_nnz) else 0.0,
        "empty_docs": float(np.mean(d_nnz == 0)) if len(d_nnz) else 0.0,
        "empty_queries": float(np.mean(q_nnz == 0)) if len(q_nnz) else 0.0,
        "index_postings": float(index.nnz),
        "index_mb": float(index.size_bytes) / 2**20,
        "flops_per_query": float(np.mean(index.expected_flops(query_vectors)))
        if len(q_nnz)
        else 0.0,
    }


def mean_interval(
    values: Sequence[float] | np.ndarray,
    *,
    confidence: float = 0.95,
    n_resamples: int = 9999,
    seed: int = 0,
) -> tuple[float, float]:
    """BCa bootstrap interval of the mean of ``values`` (``scipy.stats.bootstrap``,
    seeded, so the same values always give the same interval).

    A constant sample has the degenerate interval ``(v, v)`` (BCa is undefined there).
    Shape: ``(N,)`` -> two floats.
    """
    from scipy import stats

    x = np.asarray(values, dtype=float)
    if x.ndim != 1 or x.size < 2:
        raise ValueError(f"mean_interval needs at least 2 values in a flat array, got {x.shape}")
    if np.ptp(x) == 0:
        return float(x[0]), float(x[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)
        res = stats.bootstrap(
            (x,),
            np.mean,
            n_resamples=n_resamples,
            confidence_level=confidence,
            method="BCa",
            rng=np.random.default_rng(seed),
        )
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


@dataclass
class Scores:
    """What :func:`score` gives: ``means`` ``{measure: mean over judged queries}`` (in
    :func:`~lightning_mlsr.retrieval.metrics.evaluate`'s order: trec_eval's measures, then
    ``RR@k``), ``per_query`` ``{measure: {query_id: value}}`` (judged queries, sorted)
    and, when asked for, ``intervals`` ``{measure: (low, high)}`` from :func:`mean_interval`."""

    means: dict[str, float]
    per_query: dict[str, dict[str, float]]
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)

    @property
    def judged(self) -> list[str]:
        """The judged query ids, sorted (those every mean is over)."""
        return sorted(next(iter(self.per_query.values()))) if self.per_query else []


def score(
    run: Mapping[str, Mapping[str, float]],
    qrels: Qrels,
    measures: Sequence[str] = DEFAULT_MEASURES,
    *,
    intervals: bool = False,
    confidence: float = 0.95,
) -> Scores:
    """Score ``run`` against ``qrels`` with trec_eval ``-c`` semantics (every judged query
    counts, 0 where nothing was retrieved); the means are ``math.fsum`` of the per-query
    values over their number, exactly as :func:`~lightning_mlsr.retrieval.metrics.evaluate`
    gives them."""
    names = [measures] if isinstance(measures, str) else list(measures)
    values = cast(dict[str, dict[str, float]], evaluate(run, qrels, names, per_query=True))
    per_query = {m: {q: float(v[q]) for q in sorted(v)} for m, v in values.items()}
    means = {m: math.fsum(v.values()) / len(v) for m, v in per_query.items()}
    found = Scores(means=means, per_query=per_query)
    if intervals:
        found.intervals = {
            m: mean_interval(list(v.values()), confidence=confidence) for m, v in per_query.items()
        }
    return found


def write_evaluation(
    path: str | Path,
    run: Run,
    scores: Scores,
    measures: Sequence[str],
    figures: Mapping[str, float],
    *,
    tag: str = "lightning_mlsr",
) -> dict[str, Any]:
    """Write ``run`` as the TREC run file ``path`` and, next to it,
    ``<path stem>.metrics.json``: ``per_query`` and ``aggregate`` values of ``measures``,
    ``figures`` (whatever else was measured, by name), the trec_eval call that gives them and
    the judged queries that retrieved nothing. Returns what the JSON holds.

    Scores are written with ``repr``, so :func:`~lightning_mlsr.retrieval.trec.read_trec_run`
    reads back the exact run. A judged query that retrieves nothing has no line in a TREC
    run file, but it counts (as 0) in the means — ``trec_eval -c`` semantics — so scoring
    the file without ``-c`` gives higher numbers; the JSON says which queries those are.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_trec_run(path, run, tag=tag)
    per_query, judged = scores.per_query, scores.judged
    empty = [q for q in judged if not run.get(q)]
    command = trec_eval_command(measures, path.name)
    report = {
        "run_file": path.name,
        "semantics": (
            f"`{command}`: the mean over all {len(judged)} judged queries; a judged "
            "query with no line in the run file scores 0. RR@k is not a trec_eval "
            "measure: it is computed on trec_eval's ordering (score desc, docid desc)."
        ),
        "trec_eval_command": command,
        "judged_queries": len(judged),
        "queries_without_results": empty,
        "aggregate": {m: scores.means[m] for m in measures},
        "per_query": {q: {m: per_query[m][q] for m in measures} for q in judged},
        "figures": dict(figures),
    }
    atomic_write_text(path.with_suffix(".metrics.json"), json.dumps(report, indent=1) + "\n")
    return report
