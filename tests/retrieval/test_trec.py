"""TREC run and qrels files, and trec_eval's tie order (lightning_mlsr.retrieval.trec)."""

from __future__ import annotations

import numpy as np
import pytest

from lightning_mlsr.retrieval.trec import (
    parse_trec_qrels,
    read_trec_qrels,
    read_trec_run,
    run_from_topk,
    trec_order,
    write_trec_qrels,
    write_trec_run,
)


def test_run_from_topk_skips_padding():
    scores = np.array([[3.0, 2.0, -np.inf], [-np.inf, -np.inf, -np.inf]], np.float32)
    indices = np.array([[2, 0, -1], [-1, -1, -1]])
    run = run_from_topk(scores, indices, query_ids=[10, "q2"], doc_ids=["d0", "d1", "d2"])
    assert run == {"10": {"d2": 3.0, "d0": 2.0}, "q2": {}}
    with pytest.raises(ValueError, match="query_ids"):
        run_from_topk(scores, indices, ["only one"], ["d0", "d1", "d2"])
    with pytest.raises(ValueError, match="out of range"):
        run_from_topk(scores, indices, ["a", "b"], ["d0"])
    with pytest.raises(ValueError, match="more than once"):
        run_from_topk(scores, indices, ["a", "a"], ["d0", "d1", "d2"])


def test_trec_run_round_trip_and_order(tmp_path):
    run = {
        "q1": {"d1": 0.5, "d3": 2.25, "d2": 0.5, "d9": float(np.float32(0.1))},
        "q2": {"x": -1.0},
        "q3": {},
    }
    path = tmp_path / "run.trec"
    write_trec_run(path, run, tag="m2")
    lines = path.read_text().splitlines()
    # score descending; the 0.5 tie in trec_eval's order (docid descending)
    assert lines[:4] == [
        "q1 Q0 d3 1 2.25 m2",
        "q1 Q0 d2 2 0.5 m2",
        "q1 Q0 d1 3 0.5 m2",
        "q1 Q0 d9 4 0.10000000149011612 m2",
    ]
    assert lines[4] == "q2 Q0 x 1 -1.0 m2" and len(lines) == 5
    assert read_trec_run(path) == {q: d for q, d in run.items() if d}
    with pytest.raises(ValueError, match="tag"):
        write_trec_run(path, run, tag="two words")
    with pytest.raises(ValueError, match="document id"):
        write_trec_run(path, {"q": {"a b": 1.0}})


def test_read_trec_run_errors(tmp_path):
    path = tmp_path / "bad.trec"
    path.write_text("q1 Q0 d1 1 1.0 tag\nq1 Q0 d1 2 0.5 tag\n")
    with pytest.raises(ValueError, match=r"bad.trec:2: document 'd1' repeated"):
        read_trec_run(path)
    path.write_text("q1 Q0 d1 1 1.0\n")
    with pytest.raises(ValueError, match=r":1: expected"):
        read_trec_run(path)
    path.write_text("q1 Q0 d1 1 high tag\n")
    with pytest.raises(ValueError, match="not a number"):
        read_trec_run(path)


def test_trec_order_is_score_then_docid_descending():
    ranking = {"a": 1.0, "c": 2.0, "b": 1.0, "d": 0.5}
    assert trec_order(ranking) == [("c", 2.0), ("b", 1.0), ("a", 1.0), ("d", 0.5)]


def test_trec_qrels_round_trip(tmp_path):
    qrels = {"q1": {"d1": 1, "d2": 0}, "q2": {"d1": 2}, 7: {3: -1}}
    path = tmp_path / "test.trec"
    write_trec_qrels(path, qrels)
    assert path.read_text().splitlines() == [
        "q1 Q0 d1 1",
        "q1 Q0 d2 0",
        "q2 Q0 d1 2",
        "7 Q0 3 -1",
    ]
    assert read_trec_qrels(path) == {"q1": {"d1": 1, "d2": 0}, "q2": {"d1": 2}, "7": {"3": -1}}
    assert parse_trec_qrels(path) == (
        ["q1", "q1", "q2", "7"],
        ["d1", "d2", "d1", "3"],
        [1, 0, 2, -1],
    )
    with pytest.raises(ValueError, match="integer"):
        write_trec_qrels(path, {"q": {"d": 0.5}})
    with pytest.raises(ValueError, match="document id"):
        write_trec_qrels(path, {"q": {"a b": 1}})


def test_trec_qrels_errors_name_file_and_line(tmp_path):
    path = tmp_path / "bad.trec"
    path.write_text("q1 Q0 d1 1\n\nq1 Q0 d2 high\n")
    with pytest.raises(ValueError, match=r"bad.trec:3: malformed qrels line 'q1 Q0 d2 high'"):
        parse_trec_qrels(path)
    path.write_bytes(b"q1 Q0 d1 1\nq2 Q0 d\xe9 1\n")
    with pytest.raises(ValueError, match=r"bad.trec:2: qrels line is not UTF-8"):
        parse_trec_qrels(path)
    path.write_text("q1 Q0 d1 1\nq1 Q0 d1 0\n")
    with pytest.raises(ValueError, match="'d1' judged twice for query 'q1'"):
        read_trec_qrels(path)
