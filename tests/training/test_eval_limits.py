"""How much a limited run's retrieval evaluation encodes, and what its figures mean.

``fast_dev_run=n`` encodes ``n`` batches of the corpus and of the queries (counted on the
loaders the evaluator reads); with ``follow_batch_limits`` so do ``limit_val_batches`` /
``limit_test_batches``. The figures are those of what was encoded, checked against a
brute-force ranking of exactly those documents for exactly those queries.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch

from lightning_mlsr.data.datamodule import RetrievalDataModule
from lightning_mlsr.data.settings import BatchingSettings
from lightning_mlsr.models import MLPHead
from lightning_mlsr.retrieval.metrics import evaluate
from lightning_mlsr.training.callbacks.evaluator import RetrievalEvaluator
from lightning_mlsr.training.callbacks.split_encoding import batch_limit
from lightning_mlsr.training.system.module import SparseBiEncoder
from tests.helpers import quiet_trainer

EVAL_BATCH = 128
MEASURES = ("nDCG@10", "AP", "R@100")


class _Counted:
    """A loader that counts the batches drawn from it."""

    def __init__(self, loader: Any, drawn: list[int]) -> None:
        self.loader, self.drawn = loader, drawn

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for batch in self.loader:
            (rows,) = [v for k, v in batch.items() if k.endswith("_idx")]
            self.drawn.append(len(rows))
            yield batch


class CountingDataModule(RetrievalDataModule):
    """Records the size of every corpus and query batch the evaluator draws."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.doc_batches: list[int] = []
        self.query_batches: list[int] = []

    def corpus_dataloader(self, *args: Any, **kwargs: Any) -> Any:
        return _Counted(super().corpus_dataloader(*args, **kwargs), self.doc_batches)

    def query_dataloader(self, *args: Any, **kwargs: Any) -> Any:
        return _Counted(super().query_dataloader(*args, **kwargs), self.query_batches)


@pytest.fixture(scope="module")
def model() -> SparseBiEncoder:
    torch.manual_seed(0)  # random MLP scorers over the tiny SPLADE backbone: cheap, real
    return SparseBiEncoder(MLPHead(pooling="sum"), MLPHead(pooling="max")).eval()


def _datamodule() -> CountingDataModule:
    return CountingDataModule(
        "emoji", batching=BatchingSettings(batch_size=64, eval_batch_size=EVAL_BATCH)
    )


def _oracle(model: SparseBiEncoder, dm: RetrievalDataModule, split: str, n_docs: int, n_q: int):
    """Metrics of the first ``n_docs`` corpus rows ranked for the first ``n_q`` judged
    queries, from the full score matrix (no index), over those queries' judgments."""
    images, texts = dm.collection.images, dm.collection.texts
    d_rows = dm.corpus_rows(split)[:n_docs].tolist()
    q_rows = dm.query_rows(split)[:n_q].tolist()
    with torch.no_grad():
        docs = model.encode_docs(dm.collator.doc_batch(d_rows)["doc"])  # (D, V)
        queries = model.encode_queries(dm.collator.query_batch(q_rows)["query"])  # (Q, V)
    scores = (queries @ docs.T).numpy()  # (Q, D)
    run = {
        texts.ids[q]: {images.ids[d]: float(s) for d, s in zip(d_rows, row) if s > 0}
        for q, row in zip(q_rows, scores)
    }
    qrels = dm.qrels(split)
    return evaluate(run, {q: qrels[q] for q in run if q in qrels}, MEASURES)


def _check(logged: dict, prefix: str, expected: dict, n_docs: int, n_q: int) -> None:
    assert logged[f"{prefix}/eval_docs"] == n_docs
    assert logged[f"{prefix}/eval_queries"] == n_q
    for name, value in expected.items():
        assert logged[f"{prefix}/{name}"] == pytest.approx(value, abs=1e-6), name


def test_fast_dev_run_encodes_n_batches_and_scores_what_it_encoded(
    model: SparseBiEncoder, tmp_path: Path
) -> None:
    dm = _datamodule()
    trainer = quiet_trainer(tmp_path, [RetrievalEvaluator(measures=MEASURES)], fast_dev_run=2)
    with pytest.warns(UserWarning, match=r"limited \(fast_dev_run=2\)"):
        trainer.validate(model, datamodule=dm)
    assert dm.doc_batches == [EVAL_BATCH, EVAL_BATCH]
    assert dm.query_batches == [EVAL_BATCH, EVAL_BATCH]
    logged = {k: float(v) for k, v in trainer.callback_metrics.items()}
    n = 2 * EVAL_BATCH
    _check(logged, "val", _oracle(model, dm, "validation", n, n), n, n)


def test_batch_limits_leave_retrieval_whole_unless_followed(
    model: SparseBiEncoder, tmp_path: Path
) -> None:
    dm = _datamodule()
    trainer = quiet_trainer(tmp_path, [RetrievalEvaluator(measures=MEASURES)], limit_val_batches=1)
    trainer.validate(model, datamodule=dm)
    n_docs, n_q = len(dm.corpus_rows("validation")), len(dm.query_rows("validation"))
    assert dm.doc_batches[-1] == n_docs - EVAL_BATCH * (len(dm.doc_batches) - 1)
    assert len(dm.doc_batches) == math.ceil(n_docs / EVAL_BATCH)
    assert len(dm.query_batches) == math.ceil(n_q / EVAL_BATCH)
    logged = {k: float(v) for k, v in trainer.callback_metrics.items()}
    assert logged["val/eval_docs"] == n_docs and logged["val/eval_queries"] == n_q


def test_followed_limits_count_batches_and_fractions(
    model: SparseBiEncoder, tmp_path: Path
) -> None:
    # a fraction of each loader's batches, rounded down but at least one (as Lightning)
    dm = _datamodule()
    evaluator = RetrievalEvaluator(measures=MEASURES, follow_batch_limits=True)
    trainer = quiet_trainer(tmp_path, [evaluator], limit_val_batches=0.25)
    with pytest.warns(UserWarning, match=r"limit_val_batches=0\.25"):
        trainer.validate(model, datamodule=dm)
    n_doc_batches = math.ceil(len(dm.corpus_rows("validation")) / EVAL_BATCH)  # 15
    assert len(dm.doc_batches) == int(n_doc_batches * 0.25) == 3
    assert len(dm.query_batches) == 1  # 3 query batches: a quarter rounds down to 0 -> 1
    logged = {k: float(v) for k, v in trainer.callback_metrics.items()}
    n_docs, n_q = 3 * EVAL_BATCH, EVAL_BATCH
    _check(logged, "val", _oracle(model, dm, "validation", n_docs, n_q), n_docs, n_q)

    # an int is a number of batches; test follows limit_test_batches
    dm = _datamodule()
    evaluator = RetrievalEvaluator(
        measures=MEASURES, follow_batch_limits=True, run_dir=str(tmp_path / "out")
    )
    trainer = quiet_trainer(tmp_path, [evaluator], limit_test_batches=1)
    with pytest.warns(UserWarning, match=r"limit_test_batches=1\)"):
        trainer.test(model, datamodule=dm)
    assert dm.doc_batches == [EVAL_BATCH] and dm.query_batches == [EVAL_BATCH]
    logged = {k: float(v) for k, v in trainer.callback_metrics.items()}
    n = EVAL_BATCH
    _check(logged, "test", _oracle(model, dm, "test", n, n), n, n)


def test_batch_limit_reads_the_trainer() -> None:
    class T:
        fast_dev_run = 0
        limit_val_batches: int | float = 1.0
        limit_test_batches: int | float = 3

    t: Any = T()
    assert batch_limit(None, "validation", True) is None
    assert batch_limit(t, "validation", True) is None  # 1.0: everything
    assert batch_limit(t, "test", True) == 3
    assert batch_limit(t, "test", False) is None
    t.fast_dev_run = 2
    assert batch_limit(t, "validation", False) == 2
