"""The two paths ``bench_train.py`` times: Lightning's ``Trainer.fit`` of the
``SparseBiEncoder`` and a plain PyTorch loop doing the same work, from deep copies of one
model on the same pre-built batches; in lockstep the plain step runs inside the Lightning run,
just before Lightning's step on the same batch, each side with its own dropout stream."""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import lightning as L
import torch
from lightning.fabric.utilities.apply_func import move_data_to_device
from torch.utils.data import DataLoader, Dataset

from lightning_mlsr.training.system.module import SparseBiEncoder, lr_schedule

Batch = dict[str, Any]
Precision = Literal["32-true", "bf16-mixed"]
PRECISIONS: tuple[Precision, ...] = ("32-true", "bf16-mixed")
PATHS = ("lightning", "plain")


class FixedBatches(Dataset):
    """Pre-built batches, returned as they are (use with ``batch_size=None``)."""

    def __init__(self, batches: list[Batch]) -> None:
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> Batch:
        return self.batches[i]


def fixed_loader(batches: list[Batch]) -> DataLoader:
    return DataLoader(FixedBatches(batches), batch_size=None, shuffle=False, num_workers=0)


@dataclass
class Run:
    """Seconds and loss of every step of one run of one path."""

    seconds: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)

    def timed(self, warmup: int, steps: int) -> list[float]:
        return self.seconds[warmup : warmup + steps]


class PlainStep:
    """One optimizer step of the plain PyTorch loop on a private copy of the model."""

    def __init__(
        self, pristine: SparseBiEncoder, total_steps: int, precision: Precision, device: str
    ) -> None:
        model = copy.deepcopy(pristine).to(device).train()
        self.device = torch.device(device)
        self.model = model
        self.regularizers = (model.query_regularizer, model.doc_regularizer)
        self.optimizer = model.optimizer_factory(model.optimizer_parameters())  # YAML's groups
        self.scheduler = lr_schedule(
            self.optimizer,
            total_steps,
            model.optimization.lr_warmup_ratio,
            model.optimization.lr_decay,
        )
        self.total_steps = total_steps  # the regularizers' warm-up is a ratio of it
        self.bf16 = precision == "bf16-mixed"
        self.step = 0  # optimizer steps taken, as trainer.global_step

    def __call__(self, batch: Batch) -> float:
        model = self.model
        batch = move_data_to_device(batch, self.device)  # no copy where it is already there
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            q = model.query_encoder(batch["query"])  # (B, V)
            d = model.doc_encoder(batch["doc"])  # (B, V)
            loss = model.loss(q, d, batch["false_negatives"])
            for reg, w in zip(self.regularizers, (q, d)):
                if reg is not None:
                    loss = loss + reg(w, self.step, self.total_steps)[0]
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return float(loss)  # a host read: waits for every queued kernel of this step


def _rng_state() -> list[torch.Tensor]:
    """The CPU generator's state and, where CUDA is set up, the current GPU's (dropout)."""
    states = [torch.get_rng_state()]
    if torch.cuda.is_initialized():
        states.append(torch.cuda.get_rng_state())
    return states


def _set_rng_state(states: list[torch.Tensor]) -> None:
    torch.set_rng_state(states[0])
    if len(states) > 1:
        torch.cuda.set_rng_state(states[1])


class _Timer(L.Callback):
    """Times Lightning's steps; in lockstep mode runs the plain step just before each."""

    def __init__(
        self, lightning: Run, plain: PlainStep | None, plain_run: Run, batches: list[Batch]
    ) -> None:
        self.lightning, self.plain, self.plain_run = lightning, plain, plain_run
        self.batches = batches  # on the host: the plain step pays its own copy to the device
        self.started: float | None = None
        self.plain_rng: list[torch.Tensor] | None = None  # the plain side's own dropout stream

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        now = time.perf_counter()
        if self.started is not None:
            self.lightning.seconds.append(now - self.started)
        if self.plain is not None:
            if self.plain_rng is None:  # both sides start from the RNG state of step 0
                self.plain_rng = _rng_state()
            lightning_rng = _rng_state()
            _set_rng_state(self.plain_rng)
            t0 = time.perf_counter()
            loss = self.plain(self.batches[batch_idx])
            self.plain_run.seconds.append(time.perf_counter() - t0)
            self.plain_run.losses.append(loss)
            self.plain_rng = _rng_state()
            _set_rng_state(lightning_rng)
        self.started = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.lightning.losses.append(float(outputs["loss"]))


def run_lightning(
    pristine: SparseBiEncoder,
    batches: list[Batch],
    precision: Precision,
    seed: int,
    lockstep: bool,
    accelerator: str = "cpu",
) -> tuple[Run, Run]:
    """Lightning's run and, in lockstep mode, the plain run interleaved with it."""
    lightning, plain = Run(), Run()
    plain_step = PlainStep(pristine, len(batches), precision, accelerator) if lockstep else None
    timer = _Timer(lightning, plain_step, plain, batches)
    model = copy.deepcopy(pristine)
    trainer = L.Trainer(
        accelerator=accelerator,
        devices=1,
        max_steps=len(batches),
        precision=precision,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        callbacks=[timer],
    )
    torch.manual_seed(seed)  # the same dropout stream as the plain side
    trainer.fit(model, train_dataloaders=fixed_loader(batches))
    return lightning, plain


def run_plain(
    pristine: SparseBiEncoder,
    batches: list[Batch],
    precision: Precision,
    seed: int,
    accelerator: str = "cpu",
) -> Run:
    """The plain loop on its own (``--mode alternate``); a step includes its batch fetch."""
    run, step = Run(), PlainStep(pristine, len(batches), precision, accelerator)
    torch.manual_seed(seed)
    started = time.perf_counter()
    for batch in fixed_loader(batches):
        run.losses.append(step(batch))
        now = time.perf_counter()
        run.seconds.append(now - started)
        started = now
    return run
