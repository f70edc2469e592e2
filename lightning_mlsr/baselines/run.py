"""Run one baseline on one split and score it exactly like the trained models."""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from lightning_mlsr.baselines.bm25 import bm25_baseline
from lightning_mlsr.baselines.common import Retrieved, Run
from lightning_mlsr.baselines.dense import dense_zero_shot_baseline
from lightning_mlsr.baselines.splade import splade_zero_shot_baseline
from lightning_mlsr.data.collection import Collection
from lightning_mlsr.retrieval.evaluation import score
from lightning_mlsr.retrieval.index.inputs import check_k
from lightning_mlsr.retrieval.metrics import DEFAULT_MEASURES

__all__ = ["BASELINES", "BaselineName", "BaselineResult", "format_table", "run_baseline"]

BaselineName = Literal["bm25", "splade-zero-shot", "dense-zero-shot"]
BASELINES: tuple[str, ...] = get_args(BaselineName)


@dataclass
class BaselineResult:
    """One baseline on one split.

    Attributes:
        run: ``{text_id: {image_id: score}}``, at most ``k`` images per judged query.
        metrics: ``evaluate(run, collection.qrels[split], measures)``.
        q_nnz / d_nnz: mean non-zero terms per query / per document (None for dense).
        seconds: wall time of the whole baseline: loading the model, encoding, indexing,
            search and evaluation.
        flops_per_query: mean postings scored per query (None for dense).
        timings: seconds per stage (``load``, ``encode_docs``, ``encode_queries``, ``index``,
            ``search``, ``evaluate``).
    """

    run: Run
    metrics: dict[str, float]
    q_nnz: float | None
    d_nnz: float | None
    seconds: float
    name: str = ""
    split: str = ""
    flops_per_query: float | None = None
    timings: dict[str, float] = field(default_factory=dict)


_METHODS: dict[str, Callable[..., Retrieved]] = {
    "bm25": bm25_baseline,
    "splade-zero-shot": splade_zero_shot_baseline,
    "dense-zero-shot": dense_zero_shot_baseline,
}


def run_baseline(
    name: BaselineName,
    collection: Collection,
    split: str,
    k: int = 1000,
    measures: Sequence[str] = DEFAULT_MEASURES,
    **options: Any,
) -> BaselineResult:
    """Run one baseline on ``split`` and score it like the trained models.

    Args:
        name: ``"bm25"``, ``"splade-zero-shot"`` or ``"dense-zero-shot"``.
        collection: the corpus is all its images; the queries are ``split``'s judged texts.
        k: images retrieved per query.
        measures: passed to :func:`lightning_mlsr.retrieval.metrics.evaluate`.
        options: method options, e.g. ``k1``/``b``/``stopwords``/``stemmer`` (bm25),
            ``backbone``/``batch_size``/``device`` (both neural ones), ``pooling`` and
            ``normalize`` (dense); ``progress=False`` hides the progress bars.

    Raises:
        ValueError: an unknown name or option, or a bad ``k``.
        KeyError: the collection has no such split.
    """
    if name not in _METHODS:
        raise ValueError(f"unknown baseline {name!r}; choose one of {', '.join(BASELINES)}")
    method = _METHODS[name]
    accepted = [
        p.name for p in inspect.signature(method).parameters.values() if p.kind is p.KEYWORD_ONLY
    ]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(
            f"baseline {name!r} has no option(s) {unknown}; it accepts {', '.join(accepted)}"
        )
    k = check_k(k)
    collection.query_ids(split)  # fail on an unknown split before loading any model
    start = time.perf_counter()
    found = method(collection, split, k, **options)
    before_eval = time.perf_counter()
    means = score(found.run, collection.qrels[split], tuple(measures)).means
    metrics = {m: means[m] for m in measures}  # in the order asked for
    end = time.perf_counter()
    return BaselineResult(
        run=found.run,
        metrics=metrics,
        q_nnz=found.q_nnz,
        d_nnz=found.d_nnz,
        seconds=end - start,
        name=name,
        split=split,
        flops_per_query=found.flops_per_query,
        timings={**found.timings, "evaluate": end - before_eval},
    )


def format_table(results: Sequence[BaselineResult], measures: Sequence[str] | None = None) -> str:
    """A markdown table: one row per result, measures then sparsity and wall time."""
    names = list(measures) if measures is not None else list(results[0].metrics if results else [])

    def num(value: float | None, digits: int) -> str:
        return "–" if value is None else f"{value:.{digits}f}"

    header = ["method", "split", *names, "q_nnz", "d_nnz", "FLOPS/query", "seconds"]
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] * 2 + ["---:"] * (len(header) - 2)) + "|",
    ]
    for r in results:
        cells = [
            r.name,
            r.split,
            *(num(r.metrics.get(m), 4) for m in names),
            num(r.q_nnz, 1),
            num(r.d_nnz, 1),
            num(r.flops_per_query, 0),
            num(r.seconds, 1),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
