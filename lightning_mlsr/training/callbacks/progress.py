"""Progress output for places where a live bar cannot be seen: cluster job logs, ``nohup``,
CI, ``| tee``.

An interactive terminal keeps Lightning's own live bar (Rich or tqdm). When stdout or stderr
is not a terminal, a live bar prints nothing until the end (or a wall of carriage returns),
so :class:`ProgressLines` — a Lightning :class:`~lightning.pytorch.callbacks.ProgressBar`,
so the Trainer adds no other bar — prints one plain line every ``every_n_steps`` optimizer
steps and one after every validation::

    [train] epoch 0 step 50/615 | loss 2.913 rank_loss 2.871 | q_reg_weight 6.3e-05 ... | 1.9 steps/s
    [val] epoch 0 step 123 | nDCG@10 0.3125 AP 0.2410 ... | 14.2 s

The CLI picks it automatically (see :func:`wants_log_lines`); put
``lightning_mlsr.training.callbacks.progress.ProgressLines`` in ``trainer.callbacks`` to force it.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Mapping
from typing import Any, TextIO, cast

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ProgressBar

__all__ = ["ProgressLines", "format_metrics", "wants_log_lines"]

#: metrics shown on a training line, in this order, when they have been logged
TRAIN_KEYS = (
    "train/loss",
    "train/rank_loss",
    "train/q_reg_weight",
    "train/d_reg_weight",
    "train/q_nnz",
    "train/d_nnz",
    "train/lr",
)
#: evaluation metrics shown on a validation line (and the latest nDCG@10 on training lines)
EVAL_KEYS = ("nDCG@10", "AP", "RR@10", "R@1000", "q_nnz", "d_nnz", "flops_per_query")


def wants_log_lines(stdout: TextIO | None = None, stderr: TextIO | None = None) -> bool:
    """True unless both stdout and stderr are terminals.

    ``LIGHTNING_MLSR_PROGRESS=lines`` or ``=bar`` overrides the guess.
    """
    forced = os.environ.get("LIGHTNING_MLSR_PROGRESS", "").strip().lower()
    if forced in ("lines", "bar"):
        return forced == "lines"
    streams = (stdout or sys.stdout, stderr or sys.stderr)
    return not all(_isatty(s) for s in streams)


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # closed or replaced streams
        return False


def _number(value: Any) -> float | None:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def format_metrics(metrics: Mapping[str, Any], keys: tuple[str, ...], strip: str = "") -> str:
    """``name value`` pairs for the ``keys`` present in ``metrics`` (scalars only)."""
    parts = []
    for key in keys:
        if key not in metrics:
            continue
        x = _number(metrics[key])
        if x is None:
            continue
        name = key[len(strip) :] if strip and key.startswith(strip) else key
        text = f"{x:.3g}" if (x != 0 and (abs(x) < 1e-2 or abs(x) >= 1e4)) else f"{x:.4g}"
        parts.append(f"{name} {text}")
    return " ".join(parts)


class ProgressLines(ProgressBar):
    """One plain, flushed line per ``every_n_steps`` training steps and per evaluation.

    Args:
        every_n_steps: optimizer steps between training lines (``None``: the Trainer's
            ``log_every_n_steps``). The last step of every epoch is always printed.
        stream: where to write (default: stdout).
    """

    def __init__(self, every_n_steps: int | None = None, stream: TextIO | None = None) -> None:
        super().__init__()
        if every_n_steps is not None and every_n_steps < 1:
            raise ValueError(f"every_n_steps must be >= 1, got {every_n_steps}")
        self.every_n_steps = every_n_steps
        self._stream = stream
        self._enabled = True
        self._last_line_time = 0.0
        self._last_line_step = 0
        self._eval_start = 0.0

    # ProgressBar's interface ---------------------------------------------------------
    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    @property
    def is_enabled(self) -> bool:
        return self._enabled

    # hooks ------------------------------------------------------------------------------
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if not trainer.is_global_zero:
            self.disable()  # one rank speaks for all (metrics are synced)

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._last_line_time = time.perf_counter()
        self._last_line_step = trainer.global_step
        total = trainer.estimated_stepping_batches
        total_text = str(int(total)) if math.isfinite(total) else "?"
        self._print(
            f"[train] starting: {total_text} optimizer steps, "
            f"{trainer.max_epochs} epoch(s), {self.total_train_batches} batches per epoch"
        )

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        last_in_epoch = batch_idx + 1 >= self.total_train_batches
        every = self.every_n_steps or max(1, int(cast(Any, trainer).log_every_n_steps))
        if trainer.global_step % every == 0 or last_in_epoch:
            self._train_line(trainer)

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._eval_start = time.perf_counter()

    def on_test_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._eval_start = time.perf_counter()

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking:
            return
        self._eval_line(trainer, "val")

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._eval_line(trainer, "test")

    # output -----------------------------------------------------------------------------
    def _train_line(self, trainer: Trainer) -> None:
        now, step = time.perf_counter(), trainer.global_step
        total = trainer.estimated_stepping_batches
        total_text = str(int(total)) if math.isfinite(total) else "?"
        metrics = trainer.callback_metrics
        rate = (step - self._last_line_step) / max(now - self._last_line_time, 1e-9)
        self._last_line_time, self._last_line_step = now, step
        parts = [f"[train] epoch {trainer.current_epoch} step {step}/{total_text}"]
        train = format_metrics(metrics, TRAIN_KEYS, strip="train/")
        if train:
            parts.append(train)
        latest = format_metrics(metrics, ("val/nDCG@10",))
        if latest:
            parts.append(f"latest {latest}")
        parts.append(f"{rate:.2f} steps/s")
        self._print(" | ".join(parts))

    def _eval_line(self, trainer: Trainer, prefix: str) -> None:
        metrics = trainer.callback_metrics
        keys = tuple(f"{prefix}/{k}" for k in EVAL_KEYS)
        values = format_metrics(metrics, keys, strip=f"{prefix}/") or "(no retrieval metrics)"
        seconds = time.perf_counter() - self._eval_start
        self._print(
            f"[{prefix}] epoch {trainer.current_epoch} step {trainer.global_step} | "
            f"{values} | {seconds:.1f} s"
        )

    def _print(self, line: str) -> None:
        if not self._enabled:
            return
        stream = self._stream or sys.stdout
        print(line, file=stream, flush=True)
