"""Run files that agree with the logged metrics, and run files that never overwrite another
run's: the per-query JSON next to ``runs/test.trec`` is scored back with pytrec_eval."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from lightning_mlsr.data.datamodule import RetrievalDataModule
from lightning_mlsr.data.settings import BatchingSettings
from lightning_mlsr.models import MLPHead
from lightning_mlsr.retrieval.trec import read_trec_run
from lightning_mlsr.training.callbacks.evaluator import RetrievalEvaluator
from lightning_mlsr.training.cli import main
from lightning_mlsr.training.system.module import SparseBiEncoder
from tests.helpers import quiet_trainer

pytrec_eval = pytest.importorskip("pytrec_eval")

REPO = Path(__file__).resolve().parents[2]
TREC = {"nDCG@10": "ndcg_cut_10", "AP": "map", "R@10": "recall_10", "R@100": "recall_100"}
MEASURES = (*TREC, "RR@10")


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def info_lines():
    """What Lightning's ``rank_zero_info`` prints (its logger need not propagate)."""
    logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    handler, level = _Lines(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler.lines
    logger.removeHandler(handler)
    logger.setLevel(level)


@pytest.mark.slow  # encodes the whole emoji corpus (~40 s on 2 busy cores)
def test_metrics_json_and_trec_eval_on_the_run_file_reproduce_the_logged_values(
    tmp_path: Path, info_lines: list[str]
) -> None:
    torch.manual_seed(0)  # untrained MLP heads: most test queries retrieve nothing
    model = SparseBiEncoder(MLPHead(pooling="sum"), MLPHead(pooling="max")).eval()
    dm = RetrievalDataModule("emoji", batching=BatchingSettings(batch_size=2, eval_batch_size=512))
    evaluator = RetrievalEvaluator(measures=MEASURES, run_dir=str(tmp_path), log_samples=0)
    trainer = quiet_trainer(tmp_path, [evaluator], limit_test_batches=1)
    trainer.test(model, datamodule=dm, verbose=False)
    logged = {k: float(v) for k, v in trainer.callback_metrics.items()}

    run_file = tmp_path / "runs" / "test.trec"
    report = json.loads((tmp_path / "runs" / "test.metrics.json").read_text())
    run = read_trec_run(run_file)
    qrels = {q: dict(d) for q, d in dm.qrels("test").items()}
    missing = sorted(set(qrels) - set(run))
    assert missing and set(run) & set(qrels)  # the case that made the two disagree
    assert report["queries_without_results"] == missing
    assert report["judged_queries"] == len(qrels) == len(report["per_query"])
    assert report["run_file"] == "test.trec"

    # trec_eval -c: every judged query, the absent ones with an empty ranking
    filled = {q: run.get(q, {}) for q in qrels}
    trec = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "map", "recall.10,100"})
    per_query = trec.evaluate(filled)
    for ours, theirs in TREC.items():
        values = [per_query[q][theirs] for q in sorted(qrels)]
        assert [report["per_query"][q][ours] for q in sorted(qrels)] == values, ours
        mean = math.fsum(values) / len(values)
        assert report["aggregate"][ours] == mean, ours
        assert logged[f"test/{ours}"] == np.float32(mean), ours  # logged as float32
    assert report["trec_eval_command"] == (
        "trec_eval -c -m ndcg_cut.10 -m map -m recall.10 -m recall.100 QRELS test.trec"
    )
    # RR@10 (no trec_eval cutoff): recip_rank of each ranking cut at the file's 10th line
    top10 = {q: dict(list(docs.items())[:10]) for q, docs in filled.items()}
    rr = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(top10)
    rr_values = [rr[q]["recip_rank"] for q in sorted(qrels)]
    assert [report["per_query"][q]["RR@10"] for q in sorted(qrels)] == rr_values
    assert report["aggregate"]["RR@10"] == math.fsum(rr_values) / len(rr_values)

    # every logged figure is in the file, unrounded (the log keeps float32)
    figures = report["figures"]
    assert {m: figures[m] for m in MEASURES} == report["aggregate"]
    assert {"q_nnz", "d_nnz", "empty_docs", "empty_queries", "eval_seconds"} <= set(figures)
    assert {k: np.float32(v) for k, v in figures.items()} == {
        k[len("test/") :]: np.float32(v) for k, v in logged.items() if k[5:] in figures
    }

    # plain trec_eval (no -c) scores only the queries in the file: a higher figure
    plain = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10"}).evaluate(run)
    assert np.mean([v["ndcg_cut_10"] for v in plain.values()]) > report["aggregate"]["nDCG@10"]

    # the log line says what the figures are and where the files went
    (line,) = [s for s in info_lines if "trec_eval -c" in s]
    assert f"over all {len(qrels)} judged queries" in line
    assert f"{len(missing)} retrieved nothing" in line
    assert str(run_file) in line and "test.metrics.json" in line
    assert f"nDCG@10={report['aggregate']['nDCG@10']:.4f}" in line


def test_validate_writes_what_it_evaluated_and_the_epochs_of_fit_do_not(tmp_path: Path) -> None:
    """``validate`` leaves ``runs/validation.trec`` and ``.metrics.json`` as ``test`` does: the
    run read back scores to the figures in the file, which are the logged ones. The
    validation epochs of ``fit`` write nothing (one file per epoch would pile up)."""
    from lightning_mlsr.models import MLMHead
    from lightning_mlsr.retrieval.evaluation import score
    from tests.helpers import write_atomic

    torch.manual_seed(0)
    model = SparseBiEncoder(MLMHead(), MLMHead())
    dm = RetrievalDataModule(
        str(write_atomic(tmp_path / "atomic")),
        batching=BatchingSettings(batch_size=2, eval_batch_size=256),
    )
    out = tmp_path / "out" / "runs"
    evaluator = RetrievalEvaluator(measures=MEASURES, run_dir=str(out.parent), log_samples=0)
    trainer = quiet_trainer(tmp_path, [evaluator], max_steps=1, enable_checkpointing=False)
    trainer.fit(model, datamodule=dm)
    assert "val/nDCG@10" in trainer.callback_metrics and not out.exists()

    trainer.validate(model, datamodule=dm, verbose=False)
    logged = {k: float(v) for k, v in trainer.callback_metrics.items()}
    report = json.loads((out / "validation.metrics.json").read_text())
    figures = report["figures"]
    assert report["run_file"] == "validation.trec" and not (out / "test.trec").exists()
    run = read_trec_run(out / "validation.trec")
    assert score(run, dm.qrels("validation"), MEASURES).means == report["aggregate"]
    assert {m: figures[m] for m in MEASURES} == report["aggregate"]
    for name, value in figures.items():
        assert logged[f"val/{name}"] == np.float32(value), name
    assert figures["eval_docs"] == len(dm.corpus_rows("validation"))


def test_trec_eval_command_names_the_measures() -> None:
    from lightning_mlsr.retrieval.metrics import trec_eval_command

    command = trec_eval_command(("nDCG@10", "AP", "RR@10", "R@10", "R@1000", "P@5"), "t.trec")
    assert command == (
        "trec_eval -c -m ndcg_cut.10 -m map -m recall.10 -m recall.1000 -m P.5 QRELS t.trec"
    )


def _test_args(tmp_path: Path) -> list[str]:
    return [
        "--config",
        str(REPO / "experiments" / "paper" / "m3_mlp_mlp_caption.yaml"),
        "--trainer.logger=false",
        f"--trainer.default_root_dir={tmp_path}",
        "--trainer.limit_test_batches=1",
        "--trainer.enable_progress_bar=false",
        "--data.batching.eval_batch_size=512",
    ]


@pytest.mark.slow  # two `test` runs over the emoji corpus
def test_runs_without_a_logger_write_run_files_to_their_own_directories(
    tmp_path: Path,
) -> None:
    for _ in range(2):
        main(["test", *_test_args(tmp_path)])
    paths = [tmp_path / "lightning_mlsr" / f"version_{i}" / "runs" / "test.trec" for i in (0, 1)]
    assert all(p.is_file() and p.with_suffix(".metrics.json").is_file() for p in paths)
    assert sorted(tmp_path.rglob("*.trec")) == paths  # nowhere else
    assert not (tmp_path / "runs").exists()  # where both used to go
