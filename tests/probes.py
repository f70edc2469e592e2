"""Callbacks that tests attach to CLI runs in subprocesses (``--trainer.callbacks+=...``)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import lightning as L


class StepLog(L.Callback):
    """Appends one JSON line per training batch: the global step the batch trained at, the
    regularizer weights it used and its query rows; optionally sleeps after each batch so
    a test can signal the process mid-training."""

    def __init__(self, path: str, sleep: float = 0.0) -> None:
        self.path = Path(path)
        self.sleep = sleep
        self._step = 0

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        self._step = trainer.global_step

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, *_: Any
    ) -> None:
        metrics = trainer.callback_metrics
        line = {
            "step": self._step,
            "q_reg_weight": float(metrics["train/q_reg_weight"]),
            "d_reg_weight": float(metrics["train/d_reg_weight"]),
            "query_idx": batch["query_idx"].tolist(),
        }
        with self.path.open("a") as f:
            f.write(json.dumps(line) + "\n")
        time.sleep(self.sleep)


class StartLog(L.Callback):
    """Writes the global step a fit starts training at and a digest of the weights it
    starts from, as one JSON object (one file per fit)."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        import hashlib

        digest = hashlib.sha256()
        for name, tensor in sorted(pl_module.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(-1).numpy().tobytes())
        line = {"step": trainer.global_step, "weights": digest.hexdigest()}
        self.path.write_text(json.dumps(line))
