"""Evaluation as functions: retrieve and score against brute-force oracles, one bootstrap,
and the callback, a baseline and the functions giving identical figures for the same vectors."""

from __future__ import annotations

import itertools
import json
import types
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from lightning_mlsr.retrieval.evaluation import mean_interval, retrieve, score
from lightning_mlsr.retrieval.metrics import DEFAULT_MEASURES, evaluate
from tests.helpers import brute_force_run, quiet_trainer, write_atomic


def _vectors(seed: int, dense: bool) -> types.SimpleNamespace:
    """5 documents and 4 queries over 6 terms, no tied scores; sparse ones with zero rows."""
    rng = np.random.default_rng(seed)
    keep_docs, keep_queries = rng.random((5, 6)) < 0.5, rng.random((4, 6)) < 0.7
    docs = (rng.random((5, 6)) * (keep_docs | dense)).astype(np.float32)  # (5, 6)
    queries = (rng.random((4, 6)) * (keep_queries | dense)).astype(np.float32)  # (4, 6)
    if not dense:
        docs[3] = 0.0  # a document that no query retrieves
        queries[2] = 0.0  # a query that retrieves nothing
    return types.SimpleNamespace(
        doc_ids=[f"D{i}" for i in range(5)],
        docs=docs if dense else sp.csr_matrix(docs),
        query_ids=[f"Q{i}" for i in range(4)],
        queries=queries if dense else sp.csr_matrix(queries),
    )


@pytest.mark.parametrize(("dense", "k"), itertools.product([False, True], [1, 3, 1000]))
def test_retrieve_equals_brute_force(dense: bool, k: int) -> None:
    v = _vectors(0, dense)
    run = retrieve(v.docs, v.doc_ids, v.queries, v.query_ids, k)
    expected = brute_force_run(v, k, dense=dense)
    assert {q: list(d) for q, d in run.items() if d} == {
        q: list(d) for q, d in expected.items() if d
    }
    for qid, docs in expected.items():
        assert run.get(qid, {}) == pytest.approx(docs, abs=1e-6), qid


def test_retrieve_refuses_mixed_vectors_and_bad_k() -> None:
    v = _vectors(0, dense=False)
    with pytest.raises(TypeError, match="both be sparse"):
        retrieve(v.docs, v.doc_ids, v.queries.toarray(), v.query_ids)
    with pytest.raises(ValueError):
        retrieve(v.docs, v.doc_ids, v.queries, v.query_ids, k=0)


def test_score_is_evaluate_with_per_query_values_and_the_shared_interval() -> None:
    v = _vectors(1, dense=False)
    run = retrieve(v.docs, v.doc_ids, v.queries, v.query_ids, 3)
    qrels = {"Q0": {"D1": 1, "D2": 0}, "Q1": {"D0": 2}, "Q2": {"D4": 1}, "Q3": {"D3": 1}}
    scores = score(run, qrels, DEFAULT_MEASURES, intervals=True)
    assert scores.means == evaluate(run, qrels, DEFAULT_MEASURES)  # to the last digit
    assert list(scores.means) == list(evaluate(run, qrels, DEFAULT_MEASURES))
    assert scores.per_query == evaluate(run, qrels, DEFAULT_MEASURES, per_query=True)
    assert scores.judged == ["Q0", "Q1", "Q2", "Q3"]
    for m, (low, high) in scores.intervals.items():
        values = list(scores.per_query[m].values())
        assert low <= scores.means[m] <= high, m
        assert (low, high) == mean_interval(values), m
    assert score(run, qrels, ("nDCG@10",)).intervals == {}  # only when asked for


def test_mean_interval_is_seeded_and_degenerate_on_a_constant_sample() -> None:
    values = np.random.default_rng(3).random(40)
    assert mean_interval(values) == mean_interval(values)
    assert mean_interval([0.3] * 5) == (0.3, 0.3)
    with pytest.raises(ValueError, match="at least 2"):
        mean_interval([0.5])


def test_callback_baseline_and_functions_agree_on_the_same_vectors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SPLADE-tiny zero-shot on both sides of the tiny AToMiC collection: the callback's
    vectors, handed to the zero-shot SPLADE baseline in place of its own encoding and to
    retrieve + score, give the same run and the same figures, to the last digit; the
    notebook loader's encode_corpus gives the same document vectors."""
    from lightning_mlsr.baselines import run_baseline
    from lightning_mlsr.baselines import splade as splade_baseline
    from lightning_mlsr.data.datamodule import RetrievalDataModule
    from lightning_mlsr.data.settings import BatchingSettings
    from lightning_mlsr.models import MLMHead
    from lightning_mlsr.retrieval.trec import read_trec_run
    from lightning_mlsr.training.callbacks.evaluator import RetrievalEvaluator
    from lightning_mlsr.training.callbacks.split_encoding import encode_split
    from lightning_mlsr.training.system.module import SparseBiEncoder

    torch.manual_seed(0)
    model = SparseBiEncoder(MLMHead(), MLMHead()).eval()
    dm = RetrievalDataModule(
        str(write_atomic(tmp_path / "atomic")),
        batching=BatchingSettings(batch_size=2, eval_batch_size=256),
    )
    evaluator = RetrievalEvaluator(run_dir=str(tmp_path / "out"))
    quiet_trainer(tmp_path, [evaluator]).test(model, datamodule=dm)
    # what the callback evaluated: its run and figures as written, its vectors encoded again
    # by its own function
    written = read_trec_run(tmp_path / "out" / "runs" / "test.trec")
    figures = json.loads((tmp_path / "out" / "runs" / "test.metrics.json").read_text())["figures"]
    encoded, collection = encode_split(model, dm, "test"), dm.collection
    assert encoded.doc_ids == list(collection.images.ids)
    assert encoded.query_ids == list(collection.query_ids("test"))

    # the functions
    run = retrieve(encoded.docs, encoded.doc_ids, encoded.queries, encoded.query_ids, 1000)
    scores = score(run, collection.qrels["test"], DEFAULT_MEASURES)
    assert {q: docs for q, docs in run.items() if docs} == written  # a file has no empty rows
    assert scores.means == {m: figures[m] for m in scores.means}

    # the notebook's loader encodes the same document vectors
    from lightning_mlsr.training.model_loading import encode_corpus

    ids, docs = encode_corpus(model, dm)
    assert ids == encoded.doc_ids and (docs != encoded.docs).nnz == 0

    # the baseline, encoding nothing itself: it is handed the callback's vectors
    handed = iter([encoded.docs, encoded.queries])
    monkeypatch.setattr(splade_baseline, "encode", lambda *args, **kwargs: next(handed))
    result = run_baseline("splade-zero-shot", collection, "test", progress=False)
    assert result.run == run
    assert result.metrics == {m: scores.means[m] for m in DEFAULT_MEASURES}
