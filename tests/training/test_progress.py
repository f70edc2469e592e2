"""Progress output when stdout is a log file, not a terminal."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest

from lightning_mlsr.training.callbacks.progress import (
    ProgressLines,
    format_metrics,
    wants_log_lines,
)
from lightning_mlsr.training.cli import main

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"


class _Stream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty


@pytest.mark.parametrize(
    ("out_tty", "err_tty", "lines"),
    [(True, True, False), (False, True, True), (True, False, True), (False, False, True)],
)
def test_lines_unless_both_streams_are_terminals(
    out_tty: bool, err_tty: bool, lines: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LIGHTNING_MLSR_PROGRESS", raising=False)
    assert wants_log_lines(_Stream(out_tty), _Stream(err_tty)) is lines
    monkeypatch.setenv("LIGHTNING_MLSR_PROGRESS", "bar")
    assert wants_log_lines(_Stream(False), _Stream(False)) is False
    monkeypatch.setenv("LIGHTNING_MLSR_PROGRESS", "lines")
    assert wants_log_lines(_Stream(True), _Stream(True)) is True


def test_format_metrics_keeps_order_and_skips_missing_and_non_finite() -> None:
    metrics = {"train/loss": 2.5, "train/q_reg_weight": 0.00025, "train/d_nnz": float("nan")}
    text = format_metrics(
        metrics, ("train/q_reg_weight", "train/loss", "train/d_nnz", "x"), "train/"
    )
    assert text == "q_reg_weight 0.00025 loss 2.5"


def test_fit_into_a_log_file_prints_a_line_per_n_steps_and_per_validation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LIGHTNING_MLSR_PROGRESS", raising=False)
    cli = main(
        [
            "fit",
            "--config",
            str(EXPERIMENTS / "paper" / "m3_mlp_mlp_caption.yaml"),
            "--trainer.logger=false",
            f"--trainer.default_root_dir={tmp_path}",
            "--trainer.max_epochs=1",
            "--trainer.limit_train_batches=6",
            "--trainer.log_every_n_steps=2",
            "--data.batching.batch_size=8",
            "--test_after_fit=false",
        ]
    )
    assert sum(isinstance(c, ProgressLines) for c in cli.trainer.callbacks) == 1
    out = capsys.readouterr().out
    steps = [int(m) for m in re.findall(r"^\[train\] epoch 0 step (\d+)/6 \|", out, re.M)]
    assert steps == [2, 4, 6]
    train_lines = [line for line in out.splitlines() if line.startswith("[train] epoch")]
    names = ["loss", "rank_loss", "d_reg_weight", "q_nnz", "d_nnz", "lr", "steps/s"]
    if cli.model.query_regularizer is not None:  # m3 has none on its MLP queries
        names.append("q_reg_weight")
    else:
        assert " q_reg_weight " not in train_lines[-1]
    for name in names:
        assert f" {name} " in train_lines[-1] or train_lines[-1].endswith(name), name
    val = re.findall(r"^\[val\] epoch 0 step 6 \| nDCG@10 ([0-9.]+) ", out, re.M)
    assert len(val) == 1
    assert float(val[0]) == pytest.approx(
        float(cli.trainer.callback_metrics["val/nDCG@10"]), abs=5e-5
    )
