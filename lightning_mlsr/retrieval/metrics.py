"""Retrieval effectiveness with trec_eval semantics (a thin, checked wrapper of pytrec_eval).

``evaluate(run, qrels)`` takes a run ``{qid: {docid: score}}`` and qrels
``{qid: {docid: relevance}}`` and returns the mean of each measure over the judged queries,
the way ``trec_eval -c`` reports it:

- The queries that count are those with at least one judgement in ``qrels``. A judged query
  missing from the run (or with an empty ranking) scores 0 on every measure. Run queries
  without judgements are ignored. A qrels entry with no judgements at all (``{}``) cannot occur
  in a TREC qrels file, so it is treated as absent.
- A judged query with no relevant document (every relevance <= 0) is kept and scores 0, as in
  trec_eval and pytrec_eval (checked in the tests; ir_measures agrees).
- Binary measures count relevance >= 1 as relevant; nDCG uses the graded relevance as gain.
- Documents are ranked by score descending, ties broken by docid descending (trec_eval's
  order; docids compare as strings).

Measures use ir_measures-style names (``nDCG@10``, ``AP``, ``RR@10``, ``R@1000``, ...) and map
to trec_eval's (``ndcg_cut_10``, ``map``, ...). ``RR@k`` is not a trec_eval measure: it is
computed here, on trec_eval's ordering, as the reciprocal rank of the first relevant document
within the top k (0 if none).

pytrec_eval is imported lazily so that importing this module stays cheap.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

from lightning_mlsr.retrieval.trec import trec_order

__all__ = [
    "DEFAULT_MEASURES",
    "SUPPORTED_MEASURES",
    "evaluate",
    "parse_measure",
    "trec_eval_command",
]

#: The measures reported everywhere by default: the evaluator callback, the baselines, evaluate.
DEFAULT_MEASURES: tuple[str, ...] = ("nDCG@10", "AP", "RR@10", "R@10", "R@100", "R@1000")

# ir_measures-style family -> (trec_eval family, needs a cutoff, accepts a cutoff)
_FAMILIES: dict[str, tuple[str, bool, bool]] = {
    "nDCG": ("ndcg", False, True),  # nDCG@k -> ndcg_cut.k, nDCG -> ndcg
    "AP": ("map", False, True),  # AP@k -> map_cut.k
    "RR": ("recip_rank", False, True),  # RR@k is computed here
    "R": ("recall", True, True),
    "P": ("P", True, True),
}
#: Human-readable list of accepted names (any positive integer k).
SUPPORTED_MEASURES: tuple[str, ...] = ("nDCG", "nDCG@k", "AP", "AP@k", "RR", "RR@k", "R@k", "P@k")

_NAME = re.compile(r"^(?P<family>[A-Za-z]+)(?:@(?P<k>[1-9][0-9]*))?$")

Run = Mapping[Any, Mapping[Any, float]]
Qrels = Mapping[Any, Mapping[Any, int]]


def parse_measure(name: str) -> tuple[str, int | None]:
    """Split an ir_measures-style name into (family, cutoff); ValueError if unsupported."""
    match = _NAME.match(name) if isinstance(name, str) else None
    family = match["family"] if match else None
    if match is None or family not in _FAMILIES:
        raise ValueError(
            f"unsupported measure {name!r}; supported: {', '.join(SUPPORTED_MEASURES)} "
            "(k a positive integer, e.g. nDCG@10, R@1000)"
        )
    cutoff = int(match["k"]) if match["k"] else None
    if cutoff is None and _FAMILIES[family][1]:
        raise ValueError(f"measure {name!r} needs a cutoff, e.g. {family}@10")
    return family, cutoff


def _trec_eval_request(family: str, cutoff: int | None) -> tuple[str, str]:
    """(measure string to request from pytrec_eval, key of its per-query result)."""
    base = _FAMILIES[family][0]
    if cutoff is None:
        return base, base
    if family == "nDCG":
        return f"ndcg_cut.{cutoff}", f"ndcg_cut_{cutoff}"
    if family == "AP":
        return f"map_cut.{cutoff}", f"map_cut_{cutoff}"
    return f"{base}.{cutoff}", f"{base}_{cutoff}"


def trec_eval_command(measures: Iterable[str], run_file: str, qrels: str = "QRELS") -> str:
    """The ``trec_eval -c -m ...`` call whose figures :func:`evaluate` reproduces.

    ``RR@k`` has no trec_eval equivalent (it is computed here) and is left out.
    """
    requests: list[str] = []
    for name in measures:
        family, cutoff = parse_measure(name)
        if family == "RR" and cutoff is not None:
            continue  # trec_eval has no recip_rank cutoff: computed by lightning_mlsr
        request = _trec_eval_request(family, cutoff)[0]
        if request not in requests:
            requests.append(request)
    flags = " ".join(f"-m {r}" for r in requests)
    return f"trec_eval -c {flags} {qrels} {run_file}"


def _clean_qrels(qrels: Qrels) -> dict[str, dict[str, int]]:
    clean: dict[str, dict[str, int]] = {}
    for qid, judged in qrels.items():
        docs: dict[str, int] = {}
        for docid, rel in judged.items():
            if isinstance(rel, bool) or not float(rel).is_integer():
                raise ValueError(
                    f"qrels[{qid!r}][{docid!r}] = {rel!r}: relevance must be an integer grade"
                )
            docs[str(docid)] = int(rel)
        if docs:  # a query with no judgement lines does not exist for trec_eval
            clean[str(qid)] = docs
    return clean


def _clean_run(run: Run, judged: Iterable[str]) -> dict[str, dict[str, float]]:
    """String ids, float scores, and an empty ranking for every judged query (``-c``)."""
    clean: dict[str, dict[str, float]] = {qid: {} for qid in judged}
    for qid, ranking in run.items():
        qid = str(qid)
        if qid not in clean:
            continue  # unjudged queries do not count
        docs = clean[qid]
        for docid, score in ranking.items():
            value = float(score)
            if math.isnan(value):
                raise ValueError(f"run[{qid!r}][{docid!r}] is NaN; scores must be numbers")
            docs[str(docid)] = value
    return clean


def _reciprocal_rank_at(
    ranking: Mapping[str, float], judged: Mapping[str, int], cutoff: int
) -> float:
    """1/rank of the first relevant (rel >= 1) document in trec_eval's top ``cutoff``."""
    top = trec_order(ranking)[:cutoff]
    for rank, (docid, _) in enumerate(top, start=1):
        if judged.get(docid, 0) >= 1:
            return 1.0 / rank
    return 0.0


def evaluate(
    run: Run,
    qrels: Qrels,
    measures: Iterable[str] = DEFAULT_MEASURES,
    per_query: bool = False,
) -> dict[str, float] | dict[str, dict[str, float]]:
    """Evaluate a run against qrels with trec_eval semantics (see the module docstring).

    Args:
        run: ``{qid: {docid: score}}``; ids may be any type and are compared as strings.
        qrels: ``{qid: {docid: integer relevance}}``.
        measures: ir_measures-style names, e.g. ``("nDCG@10", "AP", "RR@10", "R@1000")``.
        per_query: return ``{measure: {qid: value}}`` instead of the means.

    Returns:
        ``{measure: mean over judged queries}``, or per-query values with ``per_query=True``.

    Raises:
        ValueError: an unknown measure name (the message lists the supported ones), empty
            qrels, a non-integer relevance or a NaN score.
    """
    names = [measures] if isinstance(measures, str) else list(measures)
    if not names:
        raise ValueError("measures is empty; pass e.g. ('nDCG@10', 'AP')")
    parsed = {name: parse_measure(name) for name in names}
    clean_qrels = _clean_qrels(qrels)
    if not clean_qrels:
        raise ValueError("qrels hold no judgements: there is nothing to evaluate")
    clean_run = _clean_run(run, clean_qrels)

    values: dict[str, dict[str, float]] = {}
    requests = {
        name: _trec_eval_request(*spec)
        for name, spec in parsed.items()
        if not (spec[0] == "RR" and spec[1] is not None)
    }
    if requests:
        import pytrec_eval

        evaluator = pytrec_eval.RelevanceEvaluator(
            clean_qrels, {request for request, _ in requests.values()}, relevance_level=1
        )
        results = evaluator.evaluate(clean_run)
        for name, (_, key) in requests.items():
            # every judged query is in clean_run, so pytrec_eval returns all of them
            values[name] = {qid: float(results[qid][key]) for qid in clean_qrels}
    for name, (family, cutoff) in parsed.items():
        if family == "RR" and cutoff is not None:
            values[name] = {
                qid: _reciprocal_rank_at(clean_run[qid], judged, cutoff)
                for qid, judged in clean_qrels.items()
            }

    if per_query:
        return values
    return {name: math.fsum(per_q.values()) / len(per_q) for name, per_q in values.items()}
