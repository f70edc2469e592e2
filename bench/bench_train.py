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

The two paths are in ``train_paths.py``, the table in ``train_report.py``, ``--profile`` in
``train_profile.py`` (all beside this script).

Usage::

    python bench/bench_train.py [--steps 12] [--batch-size 64] [--configs m2 m1]
                                [--precision 32-true bf16-mixed] [--threads 1]
                                [--mode lockstep] [--accelerator cpu] [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import sys
import time
from pathlib import Path

import lightning as L
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from measurement import device_name, quiet_logs  # noqa: E402
from train_paths import (  # noqa: E402
    PATHS,
    PRECISIONS,
    Batch,
    Precision,
    run_lightning,
    run_plain,
)
from train_profile import profile_cell  # noqa: E402
from train_report import Cell, markdown  # noqa: E402

from lightning_mlsr.training.cli import BASE_CONFIG, main  # noqa: E402
from lightning_mlsr.training.system.module import SparseBiEncoder  # noqa: E402

#: name -> (experiment file, extra CLI overrides)
CONFIGS: dict[str, tuple[str, list[str]]] = {
    "m2": ("experiments/paper/m2_mlp_mlm_caption.yaml", []),
    "m1": (
        "experiments/paper/m1_mlm_mlm_image.yaml",
        ["--model.doc_encoder.init_args.image_size=64"],  # only the feature cache sees it
    ),
}


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


def _measure(
    cell: Cell,
    pristine: SparseBiEncoder,
    batches: list[Batch],
    precision: Precision,
    rep: int,
    args: argparse.Namespace,
) -> str:
    """One repeat of one cell; returns a progress line."""
    with quiet_logs():
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


def main_bench(args: argparse.Namespace) -> dict[tuple[str, str], Cell]:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # "Loading weights" bars of every model build
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    print(
        f"# bench_train — {time.strftime('%Y-%m-%d')}, {platform.machine()}, "
        f"{os.cpu_count()} CPUs, torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"lightning {L.__version__}; {device_name(args.accelerator)}; "
        f"batch {args.batch_size}, {args.warmup} warm-up + {args.steps} timed steps, "
        f"{args.repeats} repeats, mode {args.mode}, seed {args.seed}; "
        f"load average {_load()}\n",
        flush=True,
    )
    started = time.perf_counter()
    results: dict[tuple[str, str], Cell] = {}
    for name in args.configs:
        t0 = time.perf_counter()
        with quiet_logs():
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
