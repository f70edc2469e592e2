"""Benchmark training throughput of the Lightning path against a plain PyTorch loop.

For each configuration (M2, M1, built from ``experiments/`` by the project's CLI parser)
and precision, on the same fixed list of seeded training batches and from the same initial
weights (deep copies of one freshly built model):

- lightning: ``Trainer.fit`` of the ``SparseBiEncoder`` (no logger, checkpointing, progress
  bar, model summary or validation; its only callback is this benchmark's timer);
- plain: the same work by hand — both encoders, InfoNCE with the batch's false-negative
  mask, the FLOPS penalties at the same step, backward, AdamW step, LR-scheduler step,
  ``zero_grad`` — under ``torch.autocast(device, dtype=torch.bfloat16)`` for bf16.

``--accelerator cuda`` runs both paths on the GPU (the plain model and its batches moved
there by hand; Lightning moves its own). Each timed region then ends in a host read of the
step's loss, which waits for every kernel queued before it, so CPU clocks time GPU work.
Both steps include their own host-to-device batch copy: in lockstep the plain step moves
the CPU batch itself rather than reusing the one Lightning has already moved (on the CPU no
copy is made at all).

Batches are built once, before any timing, so tokenising and the python-built
false-negative mask cost nothing here and are identical for both paths. Each run does
``W`` untimed warm-up steps, then ``N`` timed steps, plus one more step so that the last
timed Lightning step is complete (a step is timed from one ``on_train_batch_start`` to the
next, so Lightning's per-step bookkeeping, logging and scheduler are inside it).

Two ways to interleave the paths (``--mode``):

- ``lockstep`` (default): the plain loop's step ``i`` runs inside the Lightning run, in the
  timer callback just before Lightning's step ``i``, on the same batch. Each pair of steps
  is seconds apart, so load from other processes hits both sides alike; with separate RNG
  states both sides still see the same dropout masks.
- ``alternate``: whole runs, lightning then plain, then plain then lightning, ...

Either way each cell is repeated ``--repeats`` times with fresh models, and the table
reports medians: pairs/s per path (over repeats), lightning ÷ plain from total times (over
repeats) and from single step pairs (over every timed pair), the median per-step difference,
and the largest loss difference between the paths (0 means both did the same arithmetic).

M1's frozen image features are computed once by the datamodule at ``image_size=64`` and
cached on disk (``--feature-cache-dir``, default the project's feature cache). Training only
reads the cached ``(B, 1280)`` features, so the image size does not change the timed work.

Threads: one intra-op thread by default. On a machine shared with other jobs, every
multi-threaded op waits at its barrier for whichever thread the OS descheduled (about 20 ms
per op on a 2-core box at load 7), so the timing measures the scheduler rather than the
work. ``--threads 0`` keeps torch's default (one per core) for a quiet machine.

Usage::

    python bench/bench_train.py [--steps 12] [--batch-size 64] [--configs m2 m1]
                                [--precision 32-true bf16-mixed] [--threads 1]
                                [--mode lockstep] [--accelerator cpu] [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import functools
import logging
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from lightning.fabric.utilities.apply_func import move_data_to_device  # noqa: E402

from lightning_mlsr.training.cli import BASE_CONFIG, main  # noqa: E402
from lightning_mlsr.training.module import SparseBiEncoder, lr_schedule  # noqa: E402

Batch = dict[str, Any]

#: name -> (experiment file, extra CLI overrides)
CONFIGS: dict[str, tuple[str, list[str]]] = {
    "m2": ("experiments/paper/m2_mlp_mlm_caption.yaml", []),
    "m1": (
        "experiments/paper/m1_mlm_mlm_image.yaml",
        ["--model.doc_encoder.init_args.image_size=64"],  # only the feature cache sees it
    ),
}
Precision = Literal["32-true", "bf16-mixed"]
PRECISIONS: tuple[Precision, ...] = ("32-true", "bf16-mixed")
PATHS = ("lightning", "plain")


def _parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=12, help="timed steps per run (N)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per run (W)")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each cell")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--configs", nargs="+", default=["m2", "m1"], choices=sorted(CONFIGS))
    parser.add_argument("--precision", nargs="+", default=list(PRECISIONS), choices=PRECISIONS)
    parser.add_argument("--mode", choices=["lockstep", "alternate"], default="lockstep")
    parser.add_argument(
        "--accelerator", choices=["cpu", "cuda"], default="cpu", help="where both paths run"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (0: torch's default). 1 by default: on a busy machine "
        "every multi-threaded op waits for a descheduled sibling thread (see bench/README.md)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra config override for every model, e.g. model.optimizer.init_args.fused=true",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--feature-cache-dir", default=None, help="M1 image-feature cache")
    parser.add_argument("--quick", action="store_true", help="smoke run: W=1, N=3, 1 repeat")
    parser.add_argument(
        "--profile",
        default=None,
        metavar="DIR",
        help="also profile one Lightning run and one plain run per cell (torch.profiler): "
        "top ops and host syncs per step, written to DIR/profile_<config>_<precision>.txt",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.warmup, args.steps, args.repeats = 1, 3, 1
    if args.steps < 1 or args.warmup < 0 or args.repeats < 1 or args.batch_size < 2:
        parser.error("need --steps >= 1, --warmup >= 0, --repeats >= 1, --batch-size >= 2")
    if args.accelerator == "cuda" and not torch.cuda.is_available():
        parser.error("--accelerator cuda: torch sees no CUDA device")
    return args


# --------------------------------------------------------------------------------------------
# Model and batches
# --------------------------------------------------------------------------------------------


def build(name: str, args: argparse.Namespace) -> tuple[SparseBiEncoder, list[Batch]]:
    """The experiment's untrained model and ``W + N + 1`` seeded training batches."""
    path, overrides = CONFIGS[name]
    cli_args = [
        "--config", str(BASE_CONFIG),  # without a subcommand the CLI does not add it itself
        "--config", str(ROOT / path),
        "--trainer.logger=false",
        "--trainer.callbacks=[]",
        "--trainer.enable_checkpointing=false",
        f"--data.batching.batch_size={args.batch_size}",
        *overrides,
        *(f"--{kv}" for kv in args.set),
    ]  # fmt: skip
    if args.feature_cache_dir:
        cli_args.append(f"--data.features.cache_dir={args.feature_cache_dir}")
    cli = main(cli_args, run=False)
    model, datamodule = cli.model, cli.datamodule
    datamodule.set_batch_inputs(model.batch_inputs())
    datamodule.setup("fit")  # fills the image-feature cache on first use
    n_batches = args.warmup + args.steps + 1
    torch.manual_seed(args.seed)
    batches: list[Batch] = []
    while len(batches) < n_batches:  # the emoji train split has 44 batches of 64
        for batch in datamodule.train_dataloader():
            batches.append(batch)
            if len(batches) == n_batches:
                break
    return model, batches


class FixedBatches(Dataset):
    """Pre-built batches, returned as they are (use with ``batch_size=None``)."""

    def __init__(self, batches: list[Batch]) -> None:
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> Batch:
        return self.batches[i]


def _loader(batches: list[Batch]) -> DataLoader:
    return DataLoader(FixedBatches(batches), batch_size=None, shuffle=False, num_workers=0)


# --------------------------------------------------------------------------------------------
# The two paths
# --------------------------------------------------------------------------------------------


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
    trainer.fit(model, train_dataloaders=_loader(batches))
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
    for batch in _loader(batches):
        run.losses.append(step(batch))
        now = time.perf_counter()
        run.seconds.append(now - started)
        started = now
    return run


# --------------------------------------------------------------------------------------------
# Profile
# --------------------------------------------------------------------------------------------

#: profiler events where the host reads a device value or copies (a sync on a GPU, except
#: an asynchronous copy from pinned memory)
SYNC_EVENTS = (
    "aten::item",
    "aten::_local_scalar_dense",
    "cudaStreamSynchronize",
    "cudaDeviceSynchronize",
    "cudaEventSynchronize",
    "cudaMemcpy",
    "cudaMemcpyAsync",
)


def _profiled(fn: Any, accelerator: str) -> Any:
    """Run ``fn()`` under torch.profiler (CPU, and CUDA on a GPU); the profile."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU]
    if accelerator == "cuda":
        activities.append(ProfilerActivity.CUDA)
    with profile(activities=activities) as prof:
        fn()
    return prof


def profile_cell(
    name: str,
    precision: Precision,
    pristine: SparseBiEncoder,
    batches: list[Batch],
    args: argparse.Namespace,
) -> str:
    """Profile a whole Lightning run and a whole plain run of the cell's batches (set-up
    and warm-up included); write the top ops (by self GPU time on a GPU, else self CPU
    time) and the host-sync and copy events per step of each to a text file, and return a
    one-line summary of them."""
    out = Path(args.profile)
    out.mkdir(parents=True, exist_ok=True)
    steps = len(batches)
    sections, summary = [], []
    counts_by_path: dict[str, dict[str, tuple[int, float]]] = {}
    sort = "self_device_time_total" if args.accelerator == "cuda" else "self_cpu_time_total"
    for path in PATHS:
        with _quiet():
            run: Any = (
                functools.partial(
                    run_lightning, pristine, batches, precision, args.seed, False, args.accelerator
                )
                if path == "lightning"
                else functools.partial(
                    run_plain, pristine, batches, precision, args.seed, args.accelerator
                )
            )
            prof = _profiled(run, args.accelerator)
        averages = prof.key_averages()
        time_of = "self_device_time_total" if args.accelerator == "cuda" else "self_cpu_time_total"
        counts_by_path[path] = {e.key: (e.count, getattr(e, time_of)) for e in averages}
        counts = {e.key: e.count for e in averages if e.key in SYNC_EVENTS}
        per_step = ", ".join(f"{k} {v / steps:.1f}" for k, v in sorted(counts.items())) or "none"
        total_ops = sum(e.count for e in averages)
        summary.append(
            f"{path}: {total_ops / steps:.0f} profiled events/step, syncs/step: {per_step}"
        )
        sections.append(
            f"## {path} — {steps} steps (warm-up included)\n\n"
            f"host syncs and copies per step: {per_step}\n"
            f"profiled events per step: {total_ops / steps:.0f}\n\n"
            + averages.table(sort_by=sort, row_limit=25)
        )
    light, plain = counts_by_path["lightning"], counts_by_path["plain"]
    extra = sorted(
        ((k, c - plain.get(k, (0, 0.0))[0], t) for k, (c, t) in light.items()),
        key=lambda x: -x[1],
    )
    rows = [
        f"{k:70s} {d / steps:+8.2f}/step  (Lightning run self time {t / 1000:10.1f} ms)"
        for k, d, t in extra[:30]
        if d > 0
    ]
    sections.append(
        "## events the Lightning run has more of than the plain run (per step; the whole "
        "run, so Trainer set-up is spread over the steps)\n\n" + ("\n".join(rows) or "none")
    )
    file = out / f"profile_{name}_{precision}.txt"
    header = f"# {name} {precision}, batch {args.batch_size}, {_device_name(args.accelerator)}\n\n"
    file.write_text(header + "\n\n".join(sections) + "\n", encoding="utf-8")
    return f"{name} {precision}: " + " | ".join(summary) + f" ({file})"


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


@dataclass
class Cell:
    """Timed step seconds of every repeat of one (config, precision), per path."""

    seconds: dict[str, list[list[float]]] = field(default_factory=lambda: {p: [] for p in PATHS})
    max_loss_diff: float = 0.0  # max |loss_lightning - loss_plain| over steps and repeats

    def pairs_per_s(self, path: str, batch_size: int) -> float:
        """Median over repeats of pairs / total timed seconds."""
        return statistics.median(len(s) * batch_size / sum(s) for s in self.seconds[path])

    def ratio_total(self) -> float:
        """Lightning ÷ plain throughput: median over repeats of plain / lightning total time."""
        pairs = zip(self.seconds["lightning"], self.seconds["plain"])
        return statistics.median(sum(p) / sum(a) for a, p in pairs)

    def _step_pairs(self) -> list[tuple[float, float]]:
        pairs = zip(self.seconds["lightning"], self.seconds["plain"])
        return [sp for a, p in pairs for sp in zip(a, p)]

    def ratio_step(self) -> float:
        """Lightning ÷ plain throughput: median over every timed step pair."""
        return statistics.median(p / a for a, p in self._step_pairs())

    def extra_ms(self) -> float:
        """Median of (lightning - plain) seconds over every timed step pair, in ms."""
        return 1000 * statistics.median(a - p for a, p in self._step_pairs())


def markdown(results: dict[tuple[str, str], Cell], batch_size: int) -> str:
    lines = [
        "| config | precision | lightning pairs/s | plain pairs/s | lightning ÷ plain (total) "
        "| lightning ÷ plain (step pairs) | lightning − plain ms/step | max loss diff |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for (name, precision), cell in results.items():
        lines.append(
            f"| {name.upper()} | {precision} | {cell.pairs_per_s('lightning', batch_size):.1f} "
            f"| {cell.pairs_per_s('plain', batch_size):.1f} | {cell.ratio_total():.3f} "
            f"| {cell.ratio_step():.3f} | {cell.extra_ms():+.1f} | {cell.max_loss_diff:.1e} |"
        )
    names = list(dict.fromkeys(n for n, _ in results))
    if all((n, p) in results for n in names for p in PRECISIONS):
        lines += ["", "| config | path | bf16 ÷ fp32 pairs/s |", "|---|---|---:|"]
        for name in names:
            for path in PATHS:
                bf16 = results[(name, "bf16-mixed")].pairs_per_s(path, batch_size)
                fp32 = results[(name, "32-true")].pairs_per_s(path, batch_size)
                lines.append(f"| {name.upper()} | {path} | {bf16 / fp32:.2f} |")
    return "\n".join(lines)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Hide Lightning's and transformers' start-up chatter (not the results)."""
    names = ("lightning", "lightning.pytorch", "lightning.fabric", "transformers")
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels):
                lg.setLevel(level)


def _measure(
    cell: Cell,
    pristine: SparseBiEncoder,
    batches: list[Batch],
    precision: Precision,
    rep: int,
    args: argparse.Namespace,
) -> str:
    """One repeat of one cell; returns a progress line."""
    with _quiet():
        if args.mode == "lockstep":
            runs = dict(
                zip(
                    PATHS,
                    run_lightning(pristine, batches, precision, args.seed, True, args.accelerator),
                )
            )
        else:  # alternate whole runs, and which goes first
            runs = {}
            for path in PATHS if rep % 2 == 0 else PATHS[::-1]:
                if path == "lightning":
                    runs[path] = run_lightning(
                        pristine, batches, precision, args.seed, False, args.accelerator
                    )[0]
                else:
                    runs[path] = run_plain(
                        pristine, batches, precision, args.seed, args.accelerator
                    )
    for path in PATHS:
        cell.seconds[path].append(runs[path].timed(args.warmup, args.steps))
    diffs = [abs(a - b) for a, b in zip(runs["lightning"].losses, runs["plain"].losses)]
    cell.max_loss_diff = max(cell.max_loss_diff, *diffs)
    return "  ".join(
        f"{path} {len(s) * args.batch_size / sum(s):6.1f} pairs/s"
        for path in PATHS
        for s in [cell.seconds[path][-1]]
    )


def _load() -> str:
    """The 1/5/15-minute load averages: other processes competing for the cores."""
    with contextlib.suppress(OSError):
        return " ".join(f"{x:.1f}" for x in os.getloadavg())
    return "unknown"


def _device_name(accelerator: str) -> str:
    if accelerator == "cuda":
        return f"GPU {torch.cuda.get_device_name()} (CUDA {torch.version.cuda})"
    return "CPU"


def main_bench(args: argparse.Namespace) -> dict[tuple[str, str], Cell]:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # "Loading weights" bars of every model build
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    print(
        f"# bench_train — {time.strftime('%Y-%m-%d')}, {platform.machine()}, "
        f"{os.cpu_count()} CPUs, torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"lightning {L.__version__}; {_device_name(args.accelerator)}; "
        f"batch {args.batch_size}, {args.warmup} warm-up + {args.steps} timed steps, "
        f"{args.repeats} repeats, mode {args.mode}, seed {args.seed}; "
        f"load average {_load()}\n",
        flush=True,
    )
    started = time.perf_counter()
    results: dict[tuple[str, str], Cell] = {}
    for name in args.configs:
        t0 = time.perf_counter()
        with _quiet():
            pristine, batches = build(name, args)
        print(f"{name}: model and {len(batches)} batches built in {time.perf_counter() - t0:.1f}s")
        for precision in args.precision:
            results[(name, precision)] = Cell()
        for rep in range(args.repeats):  # precisions interleaved too, for the bf16/fp32 ratio
            for precision in args.precision:
                line = _measure(results[(name, precision)], pristine, batches, precision, rep, args)
                print(f"  {name} {precision:10s} repeat {rep}: {line}", flush=True)
        if args.profile:
            for precision in args.precision:
                print("  profile " + profile_cell(name, precision, pristine, batches, args))
        del pristine, batches
    print(f"\ntotal {time.perf_counter() - started:.0f}s, load average {_load()}\n")
    print(markdown(results, args.batch_size))
    return results


if __name__ == "__main__":
    main_bench(_parse_args())
