"""Baselines against brute-force references on a hand-made three-image collection."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from lightning_mlsr.baselines import (
    DEFAULT_MEASURES,
    BaselineResult,
    format_table,
    main,
    run_baseline,
    word_tokenize,
)
from lightning_mlsr.data import Collection, ImageTable, TextTable
from lightning_mlsr.io.pretrained import load_tokenizer
from lightning_mlsr.models import MLMHead
from lightning_mlsr.models.backbones import load_text_encoder
from lightning_mlsr.retrieval.metrics import evaluate
from lightning_mlsr.retrieval.trec import read_trec_qrels, read_trec_run, write_trec_qrels

CAPTIONS = {"D0": "a red apple", "D1": "Red red car", "D2": "blue car on the road"}
QUERIES = {"T1": "apple", "T2": "red car", "T3": "road trip", "T4": "zebra"}
QRELS = {
    "test": {"T1": {"D0": 1}, "T2": {"D1": 1, "D0": 1}, "T3": {"D2": 1}, "T4": {"D2": 1}},
    "train": {"T2": {"D1": 1}},
}


@pytest.fixture(scope="module")
def tiny() -> Collection:
    return Collection(
        name="tiny",
        root=Path("."),
        images=ImageTable(list(CAPTIONS), [None] * len(CAPTIONS), list(CAPTIONS.values())),
        texts=TextTable(list(QUERIES), list(QUERIES.values())),
        qrels=QRELS,
    )


def ranking(docs: dict[str, float]) -> list[str]:
    return [d for d, _ in sorted(docs.items(), key=lambda item: -item[1])]


# ------------------------------------------------------------------------------ BM25


def bm25_by_hand(query: str, k1: float, b: float) -> dict[str, float]:
    """Lucene BM25, term by term, straight from the formula (repeated query terms count)."""
    docs = {d: word_tokenize(c) for d, c in CAPTIONS.items()}
    n, avgdl = len(docs), sum(map(len, docs.values())) / len(docs)
    scores = {}
    for d, tokens in docs.items():
        score = 0.0
        for term in word_tokenize(query):
            df = sum(term in other for other in docs.values())
            tf = tokens.count(term)
            if tf:
                idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
                score += idf * tf / (tf + k1 * (1 - b + b * len(tokens) / avgdl))
        if score > 0:
            scores[d] = score
    return scores


def test_word_tokenize() -> None:
    assert word_tokenize("Flag: United States") == ["flag", "united", "states"]
    assert word_tokenize("10:30 a.m. +1 !") == ["10", "30", "a", "m", "1"]
    assert word_tokenize("the red cars", stopwords=["the"], stemmer=lambda t: t.rstrip("s")) == [
        "red",
        "car",
    ]


@pytest.mark.parametrize(("k1", "b"), [(0.9, 0.4), (1.2, 0.75)])
def test_bm25_scores_match_the_formula(tiny: Collection, k1: float, b: float) -> None:
    result = run_baseline("bm25", tiny, "test", k1=k1, b=b, progress=False)
    assert set(result.run) == set(QUERIES)
    for qid, query in QUERIES.items():
        expected = bm25_by_hand(query, k1, b)
        assert result.run[qid].keys() == expected.keys(), qid  # no zero-score images
        for doc, score in expected.items():
            assert result.run[qid][doc] == pytest.approx(score, rel=1e-5), (qid, doc)
    # one value written out: "apple" is in D0 only (df 1 of N 3), |D0| = 3, avgdl = 11/3
    by_hand = math.log(1 + 2.5 / 1.5) / (1 + k1 * (1 - b + b * 3 / (11 / 3)))
    assert result.run["T1"] == {"D0": pytest.approx(by_hand, rel=1e-5)}


def test_bm25_ranks_the_caption_with_the_query_word_first(tiny: Collection) -> None:
    result = run_baseline("bm25", tiny, "test", progress=False)
    assert ranking(result.run["T1"]) == ["D0"]
    assert ranking(result.run["T2"]) == ["D1", "D0", "D2"]  # "red" twice beats once
    assert ranking(result.run["T3"]) == ["D2"]
    assert result.run["T4"] == {}  # no shared word: nothing retrieved, scored as a miss
    assert result.metrics["RR@10"] == pytest.approx(0.75)  # T1-T3 first, T4 nothing
    # sparsity in the corpus vocabulary: queries have 1, 2, 1 and 0 known terms
    assert result.q_nnz == pytest.approx(4 / 4)
    assert result.d_nnz == pytest.approx((3 + 2 + 5) / 3)
    # postings touched: apple 1; red 2 + car 2; road 1; zebra 0
    assert result.flops_per_query == pytest.approx((1 + 4 + 1 + 0) / 4)


def test_bm25_options(tiny: Collection) -> None:
    plural = Collection(
        "plural", Path("."), tiny.images, TextTable(["Q"], ["apples"]), {"test": {"Q": {"D0": 1}}}
    )
    assert run_baseline("bm25", plural, "test", progress=False).run["Q"] == {}
    stem = run_baseline("bm25", plural, "test", stemmer=lambda t: t.rstrip("s"), progress=False)
    assert ranking(stem.run["Q"]) == ["D0"]
    top1 = run_baseline("bm25", tiny, "test", k=1, progress=False)
    assert max(len(docs) for docs in top1.run.values()) == 1


# ------------------------------------------------------------------------------ SPLADE


@pytest.fixture(scope="module")
def results(tiny: Collection) -> dict[str, BaselineResult]:
    """Each method once on the test split (model loading dominates the test time)."""
    return {
        "bm25": run_baseline("bm25", tiny, "test", progress=False),
        "splade-zero-shot": run_baseline(
            "splade-zero-shot", tiny, "test", batch_size=2, progress=False
        ),
        "dense-zero-shot": run_baseline("dense-zero-shot", tiny, "test", batch_size=2),
        "dense-cls-top2": run_baseline(
            "dense-zero-shot", tiny, "test", k=2, pooling="cls", progress=False
        ),
    }


def test_splade_zero_shot_equals_brute_force_dot_products(
    results: dict[str, BaselineResult],
) -> None:
    result = results["splade-zero-shot"]
    head = MLMHead("splade-tiny").eval()
    tokenizer = load_tokenizer("splade-tiny")

    def vector(text: str) -> np.ndarray:  # one text at a time: no padding
        enc = tokenizer([text], truncation=True, max_length=32, return_tensors="pt")
        with torch.no_grad():
            return head(dict(enc))[0].numpy().astype(np.float64)  # (V,)

    docs = np.stack([vector(c) for c in CAPTIONS.values()])  # (3, V)
    queries = np.stack([vector(q) for q in QUERIES.values()])  # (4, V)
    scores = queries @ docs.T  # (4, 3)
    assert (docs > 0).sum(1).min() > 0  # the pretrained head fires on every caption
    for qid, row in zip(QUERIES, scores):
        expected = {d: s for d, s in zip(CAPTIONS, row) if s > 1e-6}
        assert set(expected) <= set(result.run[qid]), qid
        assert set(result.run[qid]) <= {d for d, s in zip(CAPTIONS, row) if s > 0}, qid
        for doc, score in result.run[qid].items():
            assert score == pytest.approx(row[list(CAPTIONS).index(doc)], rel=1e-4, abs=1e-6)
    assert result.q_nnz == pytest.approx((queries > 0).sum(1).mean())
    assert result.d_nnz == pytest.approx((docs > 0).sum(1).mean())
    shared_terms = (queries > 0).astype(int) @ (docs > 0).T.astype(int)  # (4, 3)
    assert result.flops_per_query == pytest.approx(shared_terms.sum(1).mean())


# ------------------------------------------------------------------------------ dense


def test_dense_zero_shot_equals_brute_force_cosine(results: dict[str, BaselineResult]) -> None:
    encoder = load_text_encoder("minilm-l6").eval()
    tokenizer = load_tokenizer("minilm-l6")

    def cosine(pooling: str) -> np.ndarray:
        def embed(text: str) -> np.ndarray:  # unpadded, so every position is a real token
            enc = tokenizer([text], truncation=True, max_length=256, return_tensors="pt")
            with torch.no_grad():
                hidden = encoder(**enc).last_hidden_state[0].numpy().astype(np.float64)  # (L, H)
            return hidden.mean(0) if pooling == "mean" else hidden[0]  # (H,)

        docs = np.stack([embed(c) for c in CAPTIONS.values()])  # (3, H)
        queries = np.stack([embed(q) for q in QUERIES.values()])  # (4, H)
        docs /= np.linalg.norm(docs, axis=1, keepdims=True)
        queries /= np.linalg.norm(queries, axis=1, keepdims=True)
        return queries @ docs.T  # (4, 3)

    for name, pooling, k in [("dense-zero-shot", "mean", 3), ("dense-cls-top2", "cls", 2)]:
        run = results[name].run
        for qid, row in zip(QUERIES, cosine(pooling)):
            assert ranking(run[qid]) == [list(CAPTIONS)[i] for i in np.argsort(-row)[:k]], qid
            for doc, score in run[qid].items():
                assert score == pytest.approx(row[list(CAPTIONS).index(doc)], abs=1e-5)
    assert results["dense-zero-shot"].q_nnz is None and results["dense-zero-shot"].d_nnz is None
    # mean and CLS pooling are different embeddings
    assert results["dense-zero-shot"].run["T2"]["D1"] != pytest.approx(
        results["dense-cls-top2"].run["T2"]["D1"], abs=1e-3
    )


# ------------------------------------------------------------------------------ API


@pytest.mark.parametrize("name", ["bm25", "splade-zero-shot", "dense-zero-shot"])
def test_metrics_are_evaluate_of_the_run(results: dict[str, BaselineResult], name: str) -> None:
    result = results[name]
    assert result.name == name and result.split == "test"
    assert set(result.run) == set(QRELS["test"])  # every judged query of the split, no others
    assert result.metrics == evaluate(result.run, QRELS["test"], DEFAULT_MEASURES)
    assert list(result.metrics) == list(DEFAULT_MEASURES)
    assert result.seconds > 0


def test_other_split_and_measures(tiny: Collection) -> None:
    train = run_baseline("bm25", tiny, "train", measures=["AP", "nDCG@10"], progress=False)
    assert set(train.run) == {"T2"} and list(train.metrics) == ["AP", "nDCG@10"]
    assert train.metrics == evaluate(train.run, QRELS["train"], ["AP", "nDCG@10"])


def test_bad_requests_say_what_is_wrong(tiny: Collection) -> None:
    with pytest.raises(ValueError, match="unknown baseline 'bm52'.*bm25"):
        run_baseline("bm52", tiny, "test")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"no option\(s\) \['pooling'\].*k1"):
        run_baseline("bm25", tiny, "test", pooling="mean")
    with pytest.raises(KeyError, match="dev"):
        run_baseline("bm25", tiny, "dev")
    with pytest.raises(ValueError, match="k must be a positive integer"):
        run_baseline("bm25", tiny, "test", k=0)
    with pytest.raises(ValueError, match="PyStemmer|not a known"):
        run_baseline("bm25", tiny, "test", stemmer="no-such-language", progress=False)


def test_format_table() -> None:
    rows = [
        BaselineResult({}, {"nDCG@10": 0.5, "AP": 0.25}, 1.5, 3.0, 2.0, "bm25", "test", 4.0),
        BaselineResult(
            {}, {"nDCG@10": 0.75, "AP": 0.5}, None, None, 1.0, "dense-zero-shot", "test"
        ),
    ]
    table = format_table(rows).splitlines()
    assert table[0] == "| method | split | nDCG@10 | AP | q_nnz | d_nnz | FLOPS/query | seconds |"
    assert table[2] == "| bm25 | test | 0.5000 | 0.2500 | 1.5 | 3.0 | 4 | 2.0 |"
    assert table[3] == "| dense-zero-shot | test | 0.7500 | 0.5000 | – | – | – | 1.0 |"


def write_tiny_atomic(root: Path) -> Path:
    """The tiny collection in AToMiC layout, so the CLI can load it by path."""
    png = io.BytesIO()
    Image.new("RGB", (4, 4), (255, 0, 0)).save(png, format="PNG")
    (root / "images").mkdir(parents=True)
    (root / "texts").mkdir()
    (root / "qrels").mkdir()
    images = {
        "image_id": list(CAPTIONS),
        "image": [png.getvalue()] * len(CAPTIONS),
        "language": [["en"]] * len(CAPTIONS),
        "caption_reference_description": [[c] for c in CAPTIONS.values()],
    }
    pq.write_table(pa.table(images), root / "images" / "images.parquet")
    texts = {"text_id": list(QUERIES), "section_title": list(QUERIES.values())}
    pq.write_table(pa.table(texts), root / "texts" / "texts.parquet")
    write_trec_qrels(root / "qrels" / "test.trec", QRELS["test"])
    (root / "collection.json").write_text(json.dumps({"query_fields": ["section_title"]}))
    return root


def test_cli_prints_the_table_and_writes_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = write_tiny_atomic(tmp_path / "tiny")
    argv = ["--collection", str(root), "--split", "test", "--methods", "bm25"]
    results = main([*argv, "--run-dir", str(tmp_path / "runs"), "--no-progress"])
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("| method | split | nDCG@10 | AP | RR@10 |")
    assert out.splitlines()[2] == format_table(results).splitlines()[2]
    # the written run, re-scored from the files alone, gives the printed figures; and the
    # run is BM25 by hand (what test_bm25_scores_match_the_formula checks in memory)
    written = read_trec_run(tmp_path / "runs" / "test.bm25.trec")
    assert written == {q: docs for q, docs in results[0].run.items() if docs}
    rescored = evaluate(written, read_trec_qrels(root / "qrels" / "test.trec"), DEFAULT_MEASURES)
    assert results[0].metrics == pytest.approx(rescored, abs=1e-12)
    for qid, query in QUERIES.items():
        expected = bm25_by_hand(query, k1=0.9, b=0.4)
        assert written.get(qid, {}) == pytest.approx(expected, rel=1e-5), qid
    with pytest.raises(SystemExit, match="no split"):
        main(["--collection", str(root), "--split", "validation", "--methods", "bm25"])
