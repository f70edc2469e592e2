"""RetrievalEvaluator against independent oracles: brute-force dense scoring and trec_eval."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from lightning_mlsr.data.datamodule import RetrievalDataModule
from lightning_mlsr.data.settings import BatchingSettings
from lightning_mlsr.models import MLMHead, MLPHead
from lightning_mlsr.retrieval.metrics import evaluate
from lightning_mlsr.retrieval.trec import read_trec_run
from lightning_mlsr.training.callbacks.evaluator import RetrievalEvaluator
from lightning_mlsr.training.callbacks.split_encoding import encode_split
from lightning_mlsr.training.system.module import SparseBiEncoder

pytrec_eval = pytest.importorskip("pytrec_eval")
from tests.helpers import brute_force_run, quiet_trainer, write_atomic  # noqa: E402

MEASURES = ("nDCG@10", "AP", "RR@10", "R@10", "R@100", "R@1000")
TREC = {"nDCG@10": "ndcg_cut_10", "AP": "map", "R@10": "recall_10", "R@100": "recall_100"}


def _brute_force_run(model: SparseBiEncoder, dm: RetrievalDataModule, split: str) -> dict:
    """Dense (n_queries, n_docs) scores from the encoders, no index, no sharding."""
    images, texts = dm.collection.images, dm.collection.texts
    q_rows = dm.query_rows(split).tolist()
    with torch.no_grad():
        docs = torch.cat(
            [
                model.encode_docs(
                    dm.collator.doc_batch(list(range(s, min(s + 128, len(images)))))["doc"]
                )
                for s in range(0, len(images), 128)
            ]
        )  # (D, V)
        queries = model.encode_queries(dm.collator.query_batch(q_rows)["query"])  # (Q, V)
    scores = (queries @ docs.T).numpy()  # (Q, D)
    return {
        texts.ids[q]: {images.ids[d]: float(s) for d, s in enumerate(row) if s > 0}
        for q, row in zip(q_rows, scores)
    }


@pytest.mark.parametrize("collection", ["tiny", "emoji"])
def test_logged_metrics_equal_brute_force_and_trec_eval(collection: str, tmp_path: Path) -> None:
    if collection == "tiny":
        source = str(write_atomic(tmp_path / "atomic"))
        split = "test"
    else:
        source, split = "emoji", "test"
    torch.manual_seed(0)
    if collection == "tiny":  # pretrained SPLADE-tiny, zero-shot, with expansion
        model = SparseBiEncoder(MLMHead(), MLMHead()).eval()
    else:  # the whole emoji corpus: cheaper MLP heads (random scorer), many exact ties
        model = SparseBiEncoder(MLPHead(pooling="sum"), MLPHead(pooling="max")).eval()
    dm = RetrievalDataModule(source, batching=BatchingSettings(batch_size=2, eval_batch_size=256))
    evaluator = RetrievalEvaluator(run_dir=str(tmp_path / "out"), run_tag="zero shot")
    # limit_test_batches: the held-out pair loss; retrieval always uses every query
    trainer = quiet_trainer(tmp_path, [evaluator], limit_test_batches=1)
    trainer.test(model, datamodule=dm)
    logged = {k: float(v) for k, v in trainer.callback_metrics.items()}
    qrels = dm.qrels(split)

    # 1. the index + gathering path returns the brute-force dense ranking's metrics
    dm.set_batch_inputs(model.batch_inputs())
    brute = _brute_force_run(model.eval(), dm, split)
    expected = evaluate(brute, qrels, MEASURES)
    for name in MEASURES:
        assert logged[f"test/{name}"] == pytest.approx(expected[name], abs=1e-6), name

    # 2. the TREC run file read back and scored by trec_eval itself gives the logged values
    path = tmp_path / "out" / "runs" / f"{split}.trec"  # under the evaluator's run_dir
    assert path.is_file()
    first = path.read_text().splitlines()[0].split()
    assert len(first) == 6 and first[1] == "Q0" and first[3] == "1" and first[5] == "zeroshot"
    run = read_trec_run(path)
    judged = {q: {d: int(r) for d, r in docs.items()} for q, docs in qrels.items()}
    trec = pytrec_eval.RelevanceEvaluator(judged, set(TREC.values())).evaluate(run)
    for ours, theirs in TREC.items():
        # trec_eval -c: judged queries absent from the run count as zero
        values = [
            trec[q][theirs] if q in trec else 0.0
            for q in judged
            if any(r > 0 for r in judged[q].values())
        ]
        assert logged[f"test/{ours}"] == pytest.approx(float(np.mean(values)), abs=1e-4), ours

    # 3. efficiency numbers: mean non-zeros of what was indexed and searched
    assert logged["test/q_nnz"] == pytest.approx(
        np.mean([len(v) for v in _nnz_rows(model, dm, split, "query")])
    )
    assert logged["test/d_nnz"] > 0


def _nnz_rows(model, dm, split, side):
    rows = dm.query_rows(split).tolist()
    with torch.no_grad():
        q = model.encode_queries(dm.collator.query_batch(rows)["query"])
    return [torch.nonzero(r).flatten().tolist() for r in q]


def test_dense_baseline_metrics_equal_brute_force_inner_products(tmp_path: Path) -> None:
    from lightning_mlsr.models.dense import DenseTextHead

    torch.manual_seed(0)
    model = SparseBiEncoder(DenseTextHead(), DenseTextHead()).eval()
    dm = RetrievalDataModule("emoji", batching=BatchingSettings(batch_size=2, eval_batch_size=256))
    evaluator = RetrievalEvaluator(k=100)
    trainer = quiet_trainer(tmp_path, [evaluator], limit_val_batches=1)
    trainer.validate(model, datamodule=dm)
    logged = {k: float(v) for k, v in trainer.callback_metrics.items()}
    assert "val/q_nnz" not in logged  # sparsity means nothing for dense vectors

    encoded = encode_split(model, dm, "validation", trainer)  # the evaluator's encoding
    brute = brute_force_run(encoded, k=100, dense=True)  # (Q, N) scores, numpy, no faiss
    expected = evaluate(brute, dm.qrels("validation"), ("nDCG@10", "AP", "R@100"))
    for name, value in expected.items():
        assert logged[f"val/{name}"] == pytest.approx(value, abs=1e-5), name
    # unit vectors: cosine scores
    np.testing.assert_allclose(np.linalg.norm(encoded.docs, axis=1), 1.0, rtol=1e-4)
