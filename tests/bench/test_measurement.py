"""``on_cores``: every thread of the process (those that exist and those started inside) and
of the processes named is held to n CPUs for the block, and given back its CPUs after."""

from __future__ import annotations

import multiprocessing
import os
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from measurement import on_cores

sys.path.pop(0)


def _sleep(seconds: float) -> None:
    time.sleep(seconds)


def _affinities(pid: int) -> dict[int, set[int]]:
    return {int(t): os.sched_getaffinity(int(t)) for t in os.listdir(f"/proc/{pid}/task")}


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="Linux CPU affinity only")
def test_on_cores_holds_every_thread_and_child_to_n_cpus_and_restores_them() -> None:
    allowed = os.sched_getaffinity(0)
    if len(allowed) < 2:
        pytest.skip(f"needs 2 CPUs to restrict a process to fewer; this one may use {allowed}")
    stop = threading.Event()
    before = threading.Thread(target=stop.wait)  # a pool thread that already exists
    before.start()
    child = multiprocessing.get_context("spawn").Process(target=_sleep, args=(30,))
    child.start()
    try:
        time.sleep(0.5)  # the child's interpreter is up
        with on_cores(1, (child.pid,)) as cpus:
            assert len(cpus) == 1 and cpus <= allowed
            inside = threading.Thread(target=stop.wait)  # started in the block: inherits
            inside.start()
            assert all(a == set(cpus) for a in _affinities(os.getpid()).values())
            assert all(a == set(cpus) for a in _affinities(child.pid).values())
        assert all(a == allowed for a in _affinities(os.getpid()).values())
        assert all(a == allowed for a in _affinities(child.pid).values())
        with pytest.raises(ValueError, match="may use"), on_cores(len(allowed) + 1):
            pass
    finally:
        stop.set()
        child.kill()
        child.join()
    before.join()
    inside.join()
