"""The data some experiments train on, made by a teacher: teacher -> pseudo-query collection
-> hard negatives, each step a command of the CLI; and the collection whose images carry
their ImageNet class names (``visual_concepts``), made once by the frozen classifier.

1. the teacher: the best checkpoint of the teacher experiment's fit (``dense_caption``),
   kept as ``WORK/<teacher>/seed<k>/teacher.pt``; a distilled run takes that of its own seed,
   else that of the first seed (a finished teacher whose checkpoint is gone, as on a fresh
   clone, is fitted again by :func:`~.teachers.ensure_teacher`; never the YAML's untrained one);
2. ``python -m lightning_mlsr.generate.pseudo_queries`` with the experiment's
   ``pseudo_queries`` options, once per teacher and options, into ``WORK/pseudo/``;
3. ``python -m lightning_mlsr.generate.hard_negatives`` over that collection, beside it.

Every output is written aside and renamed, so queues running side by side never read half
of one. :func:`fit_overrides` runs the steps an experiment needs and returns the options
that point its ``fit`` at what they made.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from research.report.records import PSEUDO_MANIFEST, read_pseudo_manifest, write_json
from research.report.registry import PSEUDO_QUERY_FLAGS, Experiment, Registry

__all__ = [
    "fit_overrides",
    "teacher_option",
    "hard_negatives",
    "pseudo_collection",
    "pseudo_query_argv",
    "teacher_for",
    "teacher_path",
    "visual_concept_collection",
]


def teacher_path(work: Path, teacher: str, seed: int) -> Path:
    """Where the trained ``teacher`` experiment of ``seed`` is kept for its students."""
    return work / teacher / f"seed{seed}" / "teacher.pt"


def teacher_for(registry: Registry, experiment: Experiment, seed: int, work: Path) -> Path | None:
    """The teacher ``experiment`` of ``seed`` learns from: that of its own seed when that run
    finished in ``work``, else that of the first seed (the student's spread then leaves out
    the teacher's), else None (:func:`~.teachers.ensure_teacher` fits a missing one first)."""
    if experiment.teacher is None:
        return None
    for candidate in (seed, registry.first_seed):
        path = teacher_path(work, experiment.teacher, candidate)
        if path.is_file():
            return path
    return None


def teacher_option(registry: Registry, name: str) -> str:
    """The ``fit`` option that sets the teacher checkpoint in ``name``'s YAML:
    ``model.teacher``'s, or ``model.distillation``'s where the YAML declares the teacher
    inside the loss."""
    config = yaml.safe_load(registry.config_path(name).read_text("utf-8")) or {}
    owner = "teacher" if "teacher" in (config.get("model") or {}) else "distillation"
    return f"--model.{owner}.init_args.checkpoint="


def pseudo_query_argv(options: Mapping[str, Any]) -> list[str]:
    """``options`` (an experiment's ``pseudo_queries``) as flags of
    ``python -m lightning_mlsr.generate.pseudo_queries``."""
    argv = []
    for key, value in options.items():
        flag = PSEUDO_QUERY_FLAGS[key]
        if key == "include_evaluation_queries":
            argv += [flag] if value else []
        else:  # max_queries None keeps every word: 0 on the command line
            argv += [flag, str(0 if value is None else value)]
    return argv


def _folder_name(experiment: Experiment, teacher: Path) -> str:
    """``seed<k>-<options>-<heldout|transductive>``: one folder per teacher and options; the
    kind is in the name so a transductive folder is never taken for a held-out one."""
    options = experiment.pseudo_queries or {}
    kind = "transductive" if experiment.transductive else "heldout"
    tag = "-".join(
        f"{k}{v}" for k, v in sorted(options.items()) if k != "include_evaluation_queries"
    )
    return f"{teacher.parent.name}-{tag}-{kind}"


def pseudo_collection(
    registry: Registry, experiment: Experiment, teacher: Path, work: Path
) -> Path:
    """The collection plus pseudo-queries labelled by ``teacher``, built once per teacher and
    options under ``work/pseudo/`` by ``python -m lightning_mlsr.generate.pseudo_queries``."""
    from lightning_mlsr.generate import pseudo_queries

    out = work / "pseudo" / _folder_name(experiment, teacher)
    if not (out / "collection.json").is_file():
        tmp = out.with_name(f"{out.name}.tmp{os.getpid()}")
        argv = [registry.collection, "--teacher", str(teacher), "--out", str(tmp)]
        argv += pseudo_query_argv(experiment.pseudo_queries or {})
        print(
            f"=== python -m lightning_mlsr.generate.pseudo_queries {shlex.join(argv)}", flush=True
        )
        pseudo_queries.main(argv)
        try:
            tmp.rename(out)
        except OSError:  # another queue finished first: keep its copy
            shutil.rmtree(tmp)
    record_pseudo_collection(registry, out)
    return out


def record_pseudo_collection(registry: Registry, collection: Path) -> None:
    """Keep what the report says about a pseudo-query collection (how many candidates, how
    many became queries) in the committed ``results/pseudo_queries.json``: the collection
    itself stays under the work folder."""
    made = json.loads((collection / "collection.json").read_text("utf-8"))["pseudo_queries"]
    path = registry.results_dir / PSEUDO_MANIFEST
    manifest = read_pseudo_manifest(registry.results_dir)
    keep = ("candidates", "evaluation_queries", "pseudo_queries", "passed_min_score", "words")
    manifest[collection.name] = {k: made[k] for k in keep if k in made}
    write_json(path, manifest)


def hard_negatives(collection: Path, teacher: Path, depth: int) -> Path:
    """The teacher's top ``depth`` non-relevant captions of every training query of
    ``collection``, mined once beside it by ``python -m lightning_mlsr.generate.hard_negatives``."""
    from lightning_mlsr.generate import hard_negatives as mining

    out = collection / f"hard_negatives-depth{depth}.tsv"
    if not out.is_file():
        argv = [str(collection), "--teacher", str(teacher), "--depth", str(depth)]
        argv += ["--out", str(out)]
        print(
            f"=== python -m lightning_mlsr.generate.hard_negatives {shlex.join(argv)}", flush=True
        )
        mining.main(argv)
    return out


def visual_concept_collection(registry: Registry, experiment: Experiment, work: Path) -> Path:
    """The collection whose images carry their top ImageNet class names as a caption field,
    built once per options under ``work/visual/`` by
    ``python -m lightning_mlsr.generate.visual_concepts`` (no seed: the classifier is frozen)."""
    from lightning_mlsr.generate import visual_concepts

    options = dict(experiment.visual_concepts or {})
    tag = "-".join(f"{k}{v}" for k, v in sorted(options.items())) or "defaults"
    out = work / "visual" / f"{Path(registry.collection).name}-{tag}"
    if not (out / "collection.json").is_file():
        tmp = out.with_name(f"{out.name}.tmp{os.getpid()}")
        argv = [registry.collection, "--out", str(tmp)]
        for key, value in sorted(options.items()):
            argv += [f"--{key.replace('_', '-')}", str(value)]
        print(
            f"=== python -m lightning_mlsr.generate.visual_concepts {shlex.join(argv)}",
            flush=True,
        )
        visual_concepts.main(argv)
        try:
            tmp.rename(out)
        except OSError:  # another queue finished first: keep its copy
            shutil.rmtree(tmp)
    return out


def fit_overrides(registry: Registry, name: str, seed: int, work: Path) -> list[str]:
    """The ``fit`` options that make (``name``, ``seed``) learn from its teacher and train on
    the data that teacher makes, running the pipeline's missing steps; none for an experiment
    without a teacher. A missing teacher is a FileNotFoundError (the runner fits it first:
    :func:`research.report.teachers.ensure_teacher`)."""
    experiment = registry.experiments[name]
    if experiment.visual_concepts is not None:
        return [f"--data.collection={visual_concept_collection(registry, experiment, work)}"]
    if experiment.teacher is None:
        return []
    teacher = teacher_for(registry, experiment, seed, work)
    if teacher is None:  # never the YAML's untrained teacher in its place
        what = "label its pseudo-queries" if experiment.pseudo_queries else "learn from"
        raise FileNotFoundError(
            f"{name} needs a trained {experiment.teacher} teacher to {what}; none at "
            f"{teacher_path(work, experiment.teacher, seed)} or of seed {registry.first_seed}: "
            f"run `python -m research.report run --experiments {experiment.teacher} "
            f"{name}` (it trains the teacher, or fits a finished one's checkpoint again)"
        )
    options = [f"{teacher_option(registry, name)}{teacher}"]
    if experiment.pseudo_queries is not None:
        collection = pseudo_collection(registry, experiment, teacher, work)
        options.append(f"--data.collection={collection}")
        if experiment.hard_negatives is not None:
            negatives = hard_negatives(collection, teacher, experiment.hard_negatives)
            options.append(f"--data.negatives.file={negatives}")
    return options
