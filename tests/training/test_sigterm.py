"""A fit terminated with SIGTERM exits non-zero and leaves a checkpoint that resumes at the
same global step and regularizer weight (Lightning's signal handling + OnExceptionCheckpoint)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lightning_mlsr.objectives.regularizers import FLOPS

REPO = Path(__file__).resolve().parents[2]
WARMUP = 10  # a short regularizer ramp: its weight differs at every step of the test


def _fit_command(root: Path, log: Path, sleep: float, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "lightning_mlsr",
        "fit",
        "--config",
        str(REPO / "experiments" / "paper" / "m3_mlp_mlp_caption.yaml"),
        "--trainer.logger=false",
        f"--trainer.default_root_dir={root}",
        "--trainer.enable_progress_bar=false",
        "--trainer.log_every_n_steps=1",  # StepLog reads the logged regularizer weights at every step
        "--trainer.max_steps=500",
        "--data.batching.batch_size=8",
        # a FLOPS penalty on both sides, counted in steps (m3 has none on its MLP queries)
        "--model.query_regularizer=lightning_mlsr.objectives.regularizers.FLOPS",
        "--model.query_regularizer.init_args.weight=0.001",
        f"--model.query_regularizer.init_args.ramp_steps={WARMUP}",
        "--model.doc_regularizer.init_args.ramp_ratio=null",
        f"--model.doc_regularizer.init_args.ramp_steps={WARMUP}",
        "--test_after_fit=false",
        "--trainer.callbacks+=tests.probes.StepLog",
        f"--trainer.callbacks.init_args.path={log}",
        f"--trainer.callbacks.init_args.sleep={sleep}",
        *extra,
    ]


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.slow  # two CLI fits in subprocesses (~1-2 min on 2 busy cores)
def test_sigterm_exits_nonzero_and_the_checkpoint_resumes_step_and_regularizer_weight(
    tmp_path: Path,
) -> None:
    env = dict(os.environ, PYTHONPATH=f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    first_log = tmp_path / "first.jsonl"
    proc = subprocess.Popen(
        _fit_command(tmp_path, first_log, sleep=0.5),
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 600
        while len(_lines(first_log)) < 3:
            assert proc.poll() is None, proc.communicate()[0][-3000:]
            assert time.monotonic() < deadline, "the fit never reached its third step"
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=300)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, output[-3000:]
    # the save says what it writes, a full checkpoint (Lightning's message when a save leaves
    # weights_only unset reads like an unsafe load to anyone who sees it in a log)
    assert "weights_only` was not set" not in output

    done = _lines(first_log)  # every batch that finished before the loop stopped
    steps = len(done)
    assert [line["step"] for line in done] == list(range(steps))
    # in the run's own directory (no logger: <root>/lightning_mlsr/version_<N>/checkpoints)
    found = list(tmp_path.glob("lightning_mlsr/version_*/checkpoints/on_exception.ckpt"))
    assert len(found) == 1, output[-3000:]
    ckpt = found[0]
    assert str(ckpt) in output  # the message says where it went
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert state["global_step"] == steps

    second_log = tmp_path / "second.jsonl"
    resumed = subprocess.run(
        _fit_command(
            tmp_path, second_log, 0.0, f"--ckpt_path={ckpt}", f"--trainer.max_steps={steps + 2}"
        ),
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    after = _lines(second_log)
    assert [line["step"] for line in after] == [steps, steps + 1]
    expected = FLOPS(weight=0.001, ramp_steps=WARMUP).weight_at(steps)
    assert after[0]["d_reg_weight"] == pytest.approx(expected, rel=1e-6)
    assert after[0]["q_reg_weight"] == pytest.approx(expected, rel=1e-6)
    assert after[0]["d_reg_weight"] > done[-1]["d_reg_weight"]  # the warm-up went on, not restarted
