"""evaluate() against pytrec_eval (the trec_eval oracle), ir_measures, and hand-computed values."""

from __future__ import annotations

import math
import random

import ir_measures
import numpy as np
import pytest
import pytrec_eval

from lightning_mlsr.retrieval.metrics import (
    DEFAULT_MEASURES,
    SUPPORTED_MEASURES,
    evaluate,
    parse_measure,
)

ALL_MEASURES = ("nDCG@10", "nDCG", "AP", "AP@10", "RR@10", "RR", "R@10", "R@100", "R@1000", "P@10")
TREC_NAMES = {
    "nDCG@10": "ndcg_cut_10",
    "nDCG": "ndcg",
    "AP": "map",
    "AP@10": "map_cut_10",
    "RR": "recip_rank",
    "R@10": "recall_10",
    "R@100": "recall_100",
    "R@1000": "recall_1000",
    "P@10": "P_10",
}


def random_case(seed: int, ties: bool):
    """Graded qrels and a run with the awkward cases trec_eval -c has to handle."""
    rng = random.Random(seed)
    docs = [f"d{i}" for i in range(60)]
    qrels: dict[str, dict[str, int]] = {}
    for q in range(25):
        judged = rng.sample(docs, rng.randint(1, 30))
        qrels[f"q{q}"] = {d: rng.choice([0, 0, 0, 1, 2, 3]) for d in judged}
    qrels["q_no_rel"] = {"d1": 0, "d2": 0}  # judged, nothing relevant
    qrels["q_missing"] = {"d3": 1}  # judged, absent from the run
    qrels["q_empty_ranking"] = {"d4": 2}  # judged, empty ranking
    run: dict[str, dict[str, float]] = {}
    for q in list(qrels)[:25] + ["q_no_rel"]:
        retrieved = rng.sample(docs, rng.randint(1, 50))
        if ties:  # coarse, partly negative scores: many ties
            run[q] = {d: rng.randint(-3, 3) / 2 for d in retrieved}
        else:
            run[q] = {d: rng.uniform(-5, 5) for d in retrieved}
    run["q_empty_ranking"] = {}
    run["q_unjudged"] = {"d1": 1.0}  # not in qrels: must not count
    return run, qrels


def pytrec_eval_c(run, qrels, trec_name: str) -> tuple[dict[str, float], float]:
    """Per-query values and the trec_eval -c mean: missing judged queries contribute 0."""
    if trec_name in ("map", "ndcg", "recip_rank"):
        request = trec_name
    else:
        base, k = trec_name.rsplit("_", 1)
        request = f"{base}.{k}"
    evaluator = pytrec_eval.RelevanceEvaluator(qrels, {request})
    per_query = {q: v[trec_name] for q, v in evaluator.evaluate(run).items()}
    return per_query, sum(per_query.values()) / len(qrels)


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("seed", [0, 1])
def test_matches_pytrec_eval_with_trec_eval_c_semantics(seed, ties):
    run, qrels = random_case(seed, ties)
    means = evaluate(run, qrels, ALL_MEASURES)
    per_query = evaluate(run, qrels, ALL_MEASURES, per_query=True)
    assert set(means) == set(ALL_MEASURES)
    for name, trec_name in TREC_NAMES.items():
        oracle_q, oracle_mean = pytrec_eval_c(run, qrels, trec_name)
        assert means[name] == pytest.approx(oracle_mean, abs=1e-12), name
        assert set(per_query[name]) == set(qrels), name  # every judged query, no others
        for qid, value in per_query[name].items():
            assert value == pytest.approx(oracle_q.get(qid, 0.0), abs=1e-12), (name, qid)
    # the edge cases are really in there and score 0
    for qid in ("q_no_rel", "q_missing", "q_empty_ranking"):
        assert all(per_query[m][qid] == 0.0 for m in ALL_MEASURES)


@pytest.mark.parametrize("ties", [False, True])
def test_rr_at_10_matches_pytrec_eval_on_truncated_runs(ties):
    run, qrels = random_case(2, ties)
    ours = evaluate(run, qrels, ["RR@10", "RR"], per_query=True)
    # oracle 1: pytrec_eval's recip_rank on the top 10 in trec_eval order (score, docid desc)
    truncated = {
        q: dict(sorted(docs.items(), key=lambda kv: (kv[1], kv[0]), reverse=True)[:10])
        for q, docs in run.items()
    }
    oracle_q, _ = pytrec_eval_c(truncated, qrels, "recip_rank")
    for qid in qrels:
        assert ours["RR@10"][qid] == pytest.approx(oracle_q.get(qid, 0.0)), qid
        # oracle 2: RR@10 is RR when the first relevant document is within rank 10, else 0
        full = ours["RR"][qid]
        assert ours["RR@10"][qid] == (full if full >= 0.1 else 0.0), qid
    assert any(0 < v < 0.1 for v in ours["RR"].values())  # the cutoff matters somewhere


def test_rr_at_10_by_hand_with_ties():
    qrels = {"q": {"a": 0, "b": 1, "c": 0, "z": 2}}
    run = {"q": {"a": 2.0, "b": 1.0, "c": 1.0, "y": 1.0, "z": 0.5}}
    # trec_eval order: a (2.0); then the 1.0 tie by docid descending: y, c, b; then z (0.5).
    # ranks: a=1, y=2, c=3, b=4, z=5 -> first relevant is b at rank 4 -> RR@10 = 1/4.
    assert evaluate(run, qrels, ["RR@10"]) == {"RR@10": 0.25}
    # with cutoff 3 the relevant b (rank 4) is cut off -> 0
    assert evaluate(run, qrels, ["RR@3"]) == {"RR@3": 0.0}
    # and pytrec_eval's full recip_rank agrees on the rank
    assert evaluate(run, qrels, ["RR"])["RR"] == 0.25


def test_agrees_with_ir_measures_on_tie_free_runs():
    run, qrels = random_case(3, ties=False)
    measures = ["nDCG@10", "AP", "AP@10", "RR@10", "RR", "R@10", "R@100", "P@10"]
    ours = evaluate(run, qrels, measures)
    theirs = ir_measures.calc_aggregate(
        [ir_measures.parse_measure(m) for m in measures], qrels, run
    )
    for name in measures:
        assert ours[name] == pytest.approx(theirs[ir_measures.parse_measure(name)]), name


def test_queries_without_relevant_documents_count_as_zero():
    qrels = {"q1": {"a": 1}, "q2": {"a": 0, "b": 0}}
    run = {"q1": {"a": 1.0}, "q2": {"a": 1.0}}
    # q1 is perfect, q2 has nothing relevant: trec_eval keeps it and averages over 2 queries
    assert evaluate(run, qrels, ["AP", "nDCG@10", "RR@10"]) == {
        "AP": 0.5,
        "nDCG@10": 0.5,
        "RR@10": 0.5,
    }
    # a query without any judgement line does not exist for trec_eval
    assert evaluate(run, {**qrels, "q3": {}}, ["AP"]) == {"AP": 0.5}


def test_missing_and_empty_runs_score_zero():
    qrels = {"q1": {"a": 1}, "q2": {"b": 2}}
    assert evaluate({}, qrels, DEFAULT_MEASURES) == dict.fromkeys(DEFAULT_MEASURES, 0.0)
    assert evaluate({"q1": {}, "q2": {}}, qrels, ["AP"]) == {"AP": 0.0}
    assert evaluate({"q1": {"a": 3.0}}, qrels, ["R@10", "P@10"]) == {"R@10": 0.5, "P@10": 0.05}


def test_ids_and_scores_of_any_type():
    qrels = {1: {10: 1, 11: 0}, 2: {20: 2}}
    run = {1: {10: np.float32(0.5), 11: np.float64(0.7)}, "2": {"20": 1}}
    assert evaluate(run, qrels, ["RR"], per_query=True) == {"RR": {"1": 0.5, "2": 1.0}}


def test_graded_relevance_drives_ndcg_only():
    qrels = {"q": {"a": 1, "b": 3}}
    good = evaluate({"q": {"b": 2.0, "a": 1.0}}, qrels, ["nDCG@10", "AP", "P@10"])
    swapped = evaluate({"q": {"a": 2.0, "b": 1.0}}, qrels, ["nDCG@10", "AP", "P@10"])
    assert good["nDCG@10"] == pytest.approx(1.0)
    # by hand: DCG = 1/log2(2) + 3/log2(3), ideal = 3/log2(2) + 1/log2(3)
    assert swapped["nDCG@10"] == pytest.approx((1 + 3 / math.log2(3)) / (3 + 1 / math.log2(3)))
    assert good["AP"] == swapped["AP"] == 1.0
    assert good["P@10"] == swapped["P@10"] == 0.2


def test_unknown_and_malformed_measures():
    qrels, run = {"q": {"a": 1}}, {"q": {"a": 1.0}}
    for bad in ["MRR@10", "ndcg_cut_10", "nDCG@0", "R", "P", "AP@x", ""]:
        with pytest.raises(ValueError) as err:
            evaluate(run, qrels, [bad])
        message = str(err.value)
        assert repr(bad) in message
    with pytest.raises(ValueError, match="supported: " + ", ".join(SUPPORTED_MEASURES)):
        evaluate(run, qrels, ["MRR@10"])
    with pytest.raises(ValueError, match="needs a cutoff"):
        parse_measure("R")
    assert parse_measure("nDCG@20") == ("nDCG", 20)
    assert evaluate(run, qrels, "AP") == {"AP": 1.0}  # a single name is fine


def test_bad_inputs():
    with pytest.raises(ValueError, match="no judgements"):
        evaluate({"q": {"a": 1.0}}, {})
    with pytest.raises(ValueError, match="no judgements"):
        evaluate({"q": {"a": 1.0}}, {"q": {}})
    with pytest.raises(ValueError, match="integer grade"):
        evaluate({"q": {"a": 1.0}}, {"q": {"a": 0.5}})
    with pytest.raises(ValueError, match="NaN"):
        evaluate({"q": {"a": float("nan")}}, {"q": {"a": 1}})
    with pytest.raises(ValueError, match="measures is empty"):
        evaluate({"q": {"a": 1.0}}, {"q": {"a": 1}}, [])
