"""The teacher a distilled experiment learns from: the trained teacher experiment of its own
seed when that has a run, else the first seed's (:func:`ensure_teacher`). A finished run keeps
no checkpoint, so on a fresh clone the teacher is fitted again with its recorded seed and
overrides (:func:`refit_teacher`); its validation nDCG@10 is checked against the recorded one
and kept beside the checkpoint (``teacher.json``) and in each student's ``metrics.json``
(:func:`teacher_record`). A student never falls back to its YAML's untrained teacher.

Students of one teacher in two lanes: one refits it, the other waits for it
(:func:`~research.report.locks.run_lock`).
"""

from __future__ import annotations

import functools
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from research.report.evaluations import written_evaluation
from research.report.fitting import fit_command, is_finished, run_dir
from research.report.locks import lock_path, run_lock
from research.report.pipelines import teacher_path
from research.report.records import TEACHER_OPTION, read_json, write_json
from research.report.registry import Registry

__all__ = [
    "REFIT_TOLERANCE",
    "SELECTION_MEASURE",
    "TEACHER_RECORD",
    "ensure_teacher",
    "refit_teacher",
    "teacher_record",
]

#: the validation measure the best checkpoint is chosen by (the YAMLs' ModelCheckpoint)
SELECTION_MEASURE = "nDCG@10"
#: a refitted teacher's validation nDCG@10 beside the recorded one, next to teacher.pt
TEACHER_RECORD = "teacher.json"
#: how far a refitted teacher's validation nDCG@10 may be from its record before a warning
#: (a CPU refit has reproduced it exactly; another device or library build may not)
REFIT_TOLERANCE = 1e-3


def teacher_record(options: Sequence[str]) -> dict[str, Any] | None:
    """The refit record of the teacher checkpoint named in a student's fit ``options``."""
    for option in options:
        if found := TEACHER_OPTION.match(option):
            record = Path(found.group(2)).with_name(TEACHER_RECORD)
            if record.is_file():
                return dict(read_json(record))
    return None


def ensure_teacher(
    registry: Registry, name: str, seed: int, work: Path, runs_dir: Path | None = None
) -> Path | None:
    """The teacher checkpoint (``name``, ``seed``) will learn from, fitted again first when its
    run finished but left no checkpoint in ``work``: the teacher experiment's run of ``seed``
    if it has one, else that of the first seed. None when ``name`` has no teacher, or when the
    teacher has no finished run to refit (``fit_overrides`` then says what to run)."""
    runs_dir = runs_dir or registry.runs_dir
    teacher = registry.experiments[name].teacher
    if teacher is None:
        return None
    for candidate in dict.fromkeys((seed, registry.first_seed)):
        if teacher_path(work, teacher, candidate).is_file():
            return teacher_path(work, teacher, candidate)
        if is_finished(runs_dir, teacher, candidate):
            # the students of one teacher in two lanes: one refits it, the other waits
            lock = lock_path(work, teacher, candidate)
            waiting = f"=== {teacher} seed {candidate}: waiting for the lane that holds {lock}"
            with run_lock(work, teacher, candidate, True, functools.partial(print, waiting)):
                if teacher_path(work, teacher, candidate).is_file():  # the other lane's
                    return teacher_path(work, teacher, candidate)
                return refit_teacher(registry, teacher, candidate, work, runs_dir)
    return None


def refit_teacher(
    registry: Registry, name: str, seed: int, work: Path, runs_dir: Path | None = None
) -> Path:
    """Fit the finished teacher run (``name``, ``seed``) again with its recorded overrides,
    keep its best checkpoint at :func:`teacher_path` and, beside it, ``teacher.json``: the
    refit's validation nDCG@10 and the recorded one (a warning when they differ by more than
    :data:`REFIT_TOLERANCE`). The run's own files are not touched."""
    from lightning_mlsr.training.cli import main

    runs_dir = runs_dir or registry.runs_dir
    recorded = read_json(run_dir(runs_dir, name, seed) / "metrics.json")
    root = work / name / f"seed{seed}-refit"
    shutil.rmtree(root, ignore_errors=True)
    print(f"=== {name} seed {seed}: fitting the teacher again (its checkpoint is gone)", flush=True)
    cli = main([*fit_command(registry, name, seed, root), *recorded.get("overrides", [])])
    trainer: Any = cli.trainer
    best = trainer.checkpoint_callback.best_model_path
    if not best:
        raise RuntimeError(f"the refit of {name} seed {seed} saved no checkpoint under {root}")
    trainer.validate(cli.model, datamodule=cli.datamodule, ckpt_path=best, weights_only=True)
    measure = SELECTION_MEASURE
    refit = written_evaluation(trainer, "validation").figures[measure]
    was = recorded["validation"][measure]
    record = {"experiment": name, "seed": seed, "measure": measure, "refit": refit, "recorded": was}
    if abs(refit - was) > REFIT_TOLERANCE:
        print(
            f"WARNING: the refitted {name} seed {seed} scores validation {measure} "
            f"{refit:.4f}, its recorded run {was:.4f}; its students learn from the refit",
            flush=True,
        )
    target = teacher_path(work, name, seed)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(best, target)
    write_json(target.with_name(TEACHER_RECORD), record)
    shutil.rmtree(root, ignore_errors=True)
    return target
