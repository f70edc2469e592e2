"""``bench_train.py --profile``: a whole Lightning run and a whole plain run of a cell under
torch.profiler; the top ops and the host syncs and copies per step of each, and the events the
Lightning run has more of."""

from __future__ import annotations

import argparse
import functools
from pathlib import Path
from typing import Any

from measurement import device_name, quiet_logs
from train_paths import PATHS, Batch, Precision, run_lightning, run_plain

from lightning_mlsr.training.system.module import SparseBiEncoder

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
        with quiet_logs():
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
    header = f"# {name} {precision}, batch {args.batch_size}, {device_name(args.accelerator)}\n\n"
    file.write_text(header + "\n\n".join(sections) + "\n", encoding="utf-8")
    return f"{name} {precision}: " + " | ".join(summary) + f" ({file})"
