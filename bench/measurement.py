"""Measurement helpers of the benchmarks: peak resident memory of a step, wall and CPU
time of the fastest of several calls, a step held to a number of cores, the device measured
on, and silenced stdout and logs for libraries that print.

Memory is the peak resident set size (VmHWM, reset through ``/proc/self/clear_refs``) above
the resident size just before the step, so it counts numpy, numba and Rust allocations alike.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import logging
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass


def _rss_kib(field_name: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field_name} not in /proc/self/status")


@dataclass
class Peak:
    mib: float = float("nan")


@contextlib.contextmanager
def peak_rss() -> Iterator[Peak]:
    """Peak RSS during the block, above the RSS at its start (MiB; NaN without /proc)."""
    result = Peak()
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand freed heap back so the baseline is honest
    try:
        base = _rss_kib("VmRSS")
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # reset VmHWM to the current RSS
    except OSError:
        base = None
    yield result
    if base is not None:
        result.mib = (_rss_kib("VmHWM") - base) / 1024


@contextlib.contextmanager
def quiet_stdout() -> Iterator[None]:
    """Silence fd 1 (Seismic's Rust code prints progress with println!)."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 1)
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def timed(fn: Callable[[], object], repeats: int) -> tuple[float, float, object]:
    """Wall and process CPU seconds (all threads) of the fastest of ``repeats`` calls, and
    the last result. CPU time barely moves with load from other jobs; wall time does.
    """
    best, best_cpu, out = float("inf"), float("inf"), None
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        if wall < best:
            best, best_cpu = wall, cpu
    return best, best_cpu, out


@contextlib.contextmanager
def quiet_logs() -> Iterator[None]:
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


def device_name(accelerator: str) -> str:
    """``CPU``, or the GPU's name and CUDA version."""
    import torch

    if accelerator == "cuda":
        return f"GPU {torch.cuda.get_device_name()} (CUDA {torch.version.cuda})"
    return "CPU"


def _tasks(pid: int | str) -> list[int]:
    try:
        return [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        return []


@contextlib.contextmanager
def on_cores(n: int, processes: tuple[int, ...] = ()) -> Iterator[frozenset[int]]:
    """Hold every thread of this process (and of ``processes``, e.g. an engine's search
    process) to ``n`` of the CPUs it may use, for the block; yields the CPUs.

    A library's own thread pool can ignore the thread count it is given (Seismic's search
    ran on 1.8 cores at ``num_threads=1`` here), so "t threads" is made "t cores" for every
    method alike. Threads that exist are moved one by one (an affinity is per thread on
    Linux) and threads started inside the block inherit it. Without ``sched_setaffinity``
    (not Linux) the block runs unrestricted and yields every CPU it could use.
    """
    if not hasattr(os, "sched_setaffinity"):
        yield frozenset(range(os.cpu_count() or 1))
        return
    allowed = sorted(os.sched_getaffinity(0))
    if not 1 <= n <= len(allowed):
        raise ValueError(f"on_cores({n}): this process may use {len(allowed)} CPUs")
    chosen = set(allowed[:n])
    saved: dict[int, set[int]] = {}
    for pid in (os.getpid(), *processes):
        for tid in _tasks(pid):
            with contextlib.suppress(OSError):  # a thread that ended meanwhile
                saved[tid] = os.sched_getaffinity(tid)
                os.sched_setaffinity(tid, chosen)
    try:
        yield frozenset(chosen)
    finally:
        for pid in (os.getpid(), *processes):
            for tid in _tasks(pid):
                with contextlib.suppress(OSError):
                    os.sched_setaffinity(tid, saved.get(tid, set(allowed)))
