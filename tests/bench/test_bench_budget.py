"""``bench/bench_budget.py``: its cut is the model's own (``keep_top_terms``), and its grid's
figures match a hand computation."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType, SimpleNamespace

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from lightning_mlsr.models.pooling import keep_top_terms

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "bench_budget.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_budget", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("k", [1, 3, 7, 40, None])
def test_top_terms_cuts_as_the_model_does(bench: ModuleType, k: int | None) -> None:
    rng = np.random.default_rng(0)
    dense = rng.random((6, 30)).astype(np.float32)
    dense[dense < 0.6] = 0  # rows of different lengths, some shorter than k
    dense[5] = 0  # an empty row
    expected = keep_top_terms(torch.from_numpy(dense), k).numpy()
    got = bench.top_terms(sp.csr_matrix(dense), k)
    np.testing.assert_array_equal(got.toarray(), expected)
    assert got.nnz == np.count_nonzero(expected)


def test_the_grid_scores_each_budget_pair_as_computed_by_hand(bench: ModuleType) -> None:
    # query a: terms 0 (1.0) and 1 (0.9), relevant d0; query b: term 2, relevant d2
    queries = sp.csr_matrix(np.array([[1.0, 0.9, 0, 0], [0, 0, 1.0, 0]], dtype=np.float32))
    # d0 = {1: 1.0, 3: 2.0}: cut to one term it keeps only term 3, which no query has
    docs = sp.csr_matrix(
        np.array([[0, 1.0, 0, 2.0], [0.5, 0, 0, 0], [0, 0, 1.0, 0]], dtype=np.float32)
    )
    encoded = SimpleNamespace(
        doc_ids=["d0", "d1", "d2"], docs=docs, query_ids=["a", "b"], queries=queries
    )
    qrels = {"a": {"d0": 1}, "b": {"d2": 1}}
    rows = bench.budget_grid(encoded, qrels, [1, None], [1, None])
    got = {(r["doc_budget"], r["query_budget"]): r for r in rows}
    # no cut: a ranks d0 (0.9) above d1 (0.5): nDCG@10 1; b finds d2: 1
    assert got[(None, None)]["nDCG@10"] == pytest.approx(1.0)
    # a cut to term 0 retrieves d1 only: nDCG@10 0 for a, mean 0.5
    assert got[(None, 1)]["nDCG@10"] == pytest.approx(0.5)
    assert got[(None, 1)]["q_nnz"] == pytest.approx(1.0)
    # d0 cut to term 3: a retrieves d1 only, d0 is lost (R@1000 0.5)
    assert got[(1, None)]["nDCG@10"] == pytest.approx(0.5)
    assert got[(1, None)]["R@1000"] == pytest.approx(0.5)
    assert got[(1, None)]["d_nnz"] == pytest.approx(1.0)
    # pairs (a, d0) and (b, d2): unmatched when d0 keeps only term 3, or a only term 0
    assert got[(None, None)]["unmatched"] == 0.0
    assert got[(1, None)]["unmatched"] == pytest.approx(0.5)
    assert got[(None, 1)]["unmatched"] == pytest.approx(0.5)
    assert got[(1, 1)]["unmatched"] == pytest.approx(0.5)
    # postings touched: a's terms 0 and 1 have one posting each, b's term 2 one -> (2 + 1) / 2
    assert got[(None, None)]["flops_per_query"] == pytest.approx(1.5)


def test_budgets_are_ordered_and_checked(bench: ModuleType) -> None:
    assert bench._ordered([64, None, 8, 32, 8]) == [8, 32, 64, None]
    assert bench._budgets([0, 16]) == [None, 16]
    with pytest.raises(SystemExit, match="positive"):
        bench._budgets([-1])
