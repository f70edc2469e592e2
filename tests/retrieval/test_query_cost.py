"""The query-cost figures of ``bench/bench_query_cost.py`` against hand computations."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import scipy.sparse as sp

from lightning_mlsr.retrieval.cost import (
    COLUMNS,
    cost_report,
    cost_table,
    csc_bytes,
    dense_bytes,
    dense_multiply_adds,
    percentiles,
    postings_touched,
)
from lightning_mlsr.retrieval.index import InvertedIndex

# 4 documents over 5 terms; column t is term t's posting list
DOCS = np.array(
    [
        [1.0, 0.0, 2.0, 0.0, 0.0],
        [0.0, 0.5, 1.0, 0.0, 0.0],
        [3.0, 0.0, 0.0, 0.0, 0.0],
        [0.0, 0.0, 4.0, 0.0, 1.5],
    ],
    dtype=np.float32,
)  # posting lengths: 2, 1, 3, 0, 1


def test_postings_touched_is_the_sum_of_the_query_terms_posting_lengths() -> None:
    queries = sp.csr_matrix(
        np.array(
            [
                [1.0, 0.0, 1.0, 0.0, 0.0],  # terms 0, 2: 2 + 3
                [0.0, 0.0, 0.0, 7.0, 0.0],  # term 3 is in no document
                [0.0, 2.0, 0.0, 0.0, 1.0],  # terms 1, 4: 1 + 1
                [0.0, 0.0, 0.0, 0.0, 0.0],  # empty query
            ],
            dtype=np.float32,
        )
    )
    index = InvertedIndex.from_matrix(DOCS)
    touched = postings_touched(index.posting_lengths, queries)
    assert touched.tolist() == [5, 0, 2, 0]
    # the index's own FLOPS figure (the evaluator's flops_per_query) counts the same thing
    assert touched.tolist() == index.expected_flops(queries).tolist()


def test_postings_touched_ignores_zero_weights_and_counts_a_repeated_term_once() -> None:
    lengths = np.array([2, 1, 3, 0, 1])
    # row 0 stores term 2 twice (summed to one entry) and an explicit zero for term 0
    q = sp.csr_matrix(
        (np.array([0.0, 0.5, 0.5], np.float32), np.array([0, 2, 2]), np.array([0, 3])),
        shape=(1, 5),
    )
    assert postings_touched(lengths, q).tolist() == [3]


def test_csc_bytes_counts_weights_row_indices_and_column_pointers() -> None:
    csc = sp.csc_matrix(DOCS)  # 7 non-zeros, 5 columns
    expected = 7 * 4 + 7 * csc.indices.itemsize + 6 * csc.indptr.itemsize
    assert csc_bytes(csc) == expected
    assert csc_bytes(sp.csr_matrix(DOCS)) == expected  # converted to CSC first
    # the inverted index holds exactly these postings
    assert csc_bytes(InvertedIndex.from_matrix(DOCS).postings) == expected


def test_dense_bytes_and_multiply_adds() -> None:
    assert dense_bytes(1911, 384) == 1911 * 384 * 4
    assert dense_multiply_adds(1911, 384) == 733_824


def test_percentiles_are_in_milliseconds() -> None:
    got = percentiles([0.001 * i for i in range(1, 101)])  # 1..100 ms
    assert got["p50"] == pytest.approx(50.5)
    assert got["p95"] == pytest.approx(95.05)
    assert np.isnan(percentiles([])["p50"])


def test_cost_table_has_one_row_per_record_and_dashes_for_what_does_not_apply() -> None:
    record = {
        "name": "dense",
        "backbone": "minilm-l6",
        "search_kind": "faiss IndexFlatIP",
        "ndcg10": 0.41921,
        "e2e_cpu_ms": {"p50": 9.861, "p95": 10.74},
        "postings_per_query": None,
        "index_bytes": 2_935_296,
    }
    table = cost_table([record, {**record, "name": "other"}]).splitlines()
    assert len(table) == 4
    assert table[0].count("|") == len(COLUMNS) + 1
    row = [c.strip() for c in table[2].strip("|").split("|")]
    assert row[:4] == ["dense", "minilm-l6", "faiss IndexFlatIP", "0.4192"]
    headers = [h for h, _, _ in COLUMNS]
    assert row[headers.index("end-to-end p50 / p95")] == "9.86 / 10.7"
    assert row[headers.index("postings / query")] == "–"
    assert row[headers.index("index bytes")] == "2,935,296"


def test_cost_report_names_date_machine_and_load() -> None:
    meta = {
        "date": "2026-12-06 21:00 UTC",
        "machine": "x86_64, 2 CPUs",
        "threads": 1,
        "split": "test",
        "k": 1000,
        "rounds": 3,
        "baseline": "dense",
        "load_average_before": [1.0, 2.0, 3.0],
        "load_average_after": [4.0, 5.0, 6.0],
    }
    report = cost_report({"meta": meta, "emoji": [{"name": "dense"}], "wordnet": []})
    assert "2026-12-06 21:00 UTC" in report and "x86_64, 2 CPUs" in report
    assert "1.0/2.0/3.0 before, 4.0/5.0/6.0 after" in report
    assert "WordNet" not in report


def test_cost_module_imports_neither_torch_nor_lightning() -> None:
    code = (
        "import sys, lightning_mlsr.retrieval.cost; "
        "print(sorted(m for m in ('torch', 'lightning') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
