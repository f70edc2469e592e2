"""Two-process DDP on CPU (gloo) through the CLI, exactly as a user launches it.

Retrieval metrics under DDP must equal the single-process values: the corpus and the
queries are sharded across ranks and gathered back exactly, so the index is the same.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "experiments" / "paper" / "m3_mlp_mlp_caption.yaml"
RETRIEVAL = ("val/nDCG@10", "val/AP", "val/RR@10", "val/R@10", "val/R@100", "val/R@1000")

pytestmark = pytest.mark.slow


def _cli(*args: str, cwd: Path) -> None:
    env = dict(os.environ, WANDB_MODE="offline", TOKENIZERS_PARALLELISM="false")
    proc = subprocess.run(
        [sys.executable, "-m", "lightning_mlsr", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, f"{args[0]} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"


def _csv_logger(save_dir: Path) -> list[str]:
    return [
        "--trainer.logger=lightning.pytorch.loggers.CSVLogger",
        f"--trainer.logger.save_dir={save_dir}",
    ]


def _last_metrics(save_dir: Path) -> dict[str, float]:
    (metrics_file,) = save_dir.rglob("metrics.csv")
    merged: dict[str, float] = {}
    with metrics_file.open() as f:
        for row in csv.DictReader(f):
            merged.update({k: float(v) for k, v in row.items() if v not in ("", None)})
    return merged


def test_ddp_fit_and_validation_equal_single_process(tmp_path: Path) -> None:
    common = [
        "--config",
        str(CONFIG),
        "--data.batching.batch_size=8",
        "--trainer.enable_progress_bar=false",
    ]
    ddp = ["--trainer.accelerator=cpu", "--trainer.strategy=ddp", "--trainer.devices=2"]

    # 2-process training: two optimizer steps, a validation with retrieval metrics, a checkpoint
    _cli(
        "fit",
        *common,
        *ddp,
        *_csv_logger(tmp_path / "fit"),
        "--trainer.max_epochs=1",
        "--trainer.limit_train_batches=2",
        "--trainer.limit_val_batches=1",
        "--test_after_fit=false",
        cwd=tmp_path,
    )
    fit_metrics = _last_metrics(tmp_path / "fit")
    assert fit_metrics["step"] >= 1
    (ckpt,) = (tmp_path / "fit").rglob("last.ckpt")

    # the same checkpoint validated by 1 and by 2 processes gives identical metrics
    _cli("validate", *common, *_csv_logger(tmp_path / "one"), f"--ckpt_path={ckpt}", cwd=tmp_path)
    _cli(
        "validate",
        *common,
        *ddp,
        *_csv_logger(tmp_path / "two"),
        f"--ckpt_path={ckpt}",
        cwd=tmp_path,
    )
    one, two = _last_metrics(tmp_path / "one"), _last_metrics(tmp_path / "two")
    for name in (*RETRIEVAL, "val/q_nnz", "val/d_nnz", "val/index_postings"):
        assert two[name] == pytest.approx(one[name], abs=1e-6), name
        # the 2-process validation inside fit saw the weights the checkpoint holds
        assert fit_metrics[name] == pytest.approx(one[name], abs=1e-6), name
