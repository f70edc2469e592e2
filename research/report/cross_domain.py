"""Cross-domain tests (``cross_domain`` in the registry): the best checkpoint of a final
experiment is also tested on each other collection that lists it, with the same DataModule
settings but that collection, and ``cross_domain.json`` beside the run keeps the means, the
per-query values and the same checkpoint's test on the training collection. A run that
finished before its experiment was listed is tested from the best checkpoint it kept, or
fitted again with the same seed (:func:`complete_cross_domain`): its ``metrics.json`` is left
as it is, and each collection is compared with the in-domain numbers of its own checkpoint.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from research.report.evaluations import written_evaluation
from research.report.fitting import fit_command, keep_checkpoint, run_dir
from research.report.records import read_json, write_json
from research.report.registry import Registry

__all__ = [
    "CROSS_DOMAIN_FILE",
    "checkpoint_test",
    "complete_cross_domain",
    "cross_domain_missing",
    "differs_from_recorded",
    "test_on_collections",
    "write_cross_domain",
]

#: the arguments of a fit command that only ``fit`` takes
FIT_ONLY = ("fit", "--test_after_fit=false")

#: beside a run's metrics.json: its best checkpoint tested on other collections
CROSS_DOMAIN_FILE = "cross_domain.json"


def cross_domain_missing(registry: Registry, runs_dir: Path, name: str, seed: int) -> list[str]:
    """The registry's cross-domain collections of ``name`` that (``name``, ``seed``) has not
    been tested on yet."""
    wanted = registry.cross_domain_of(name)
    path = run_dir(runs_dir, name, seed) / CROSS_DOMAIN_FILE
    done = read_json(path).get("collections", {}) if path.is_file() else {}
    return [c for c in wanted if c not in done]


def test_on_collections(
    registry: Registry, cli: Any, best: str | None, collections: Sequence[str]
) -> dict[str, Any]:
    """``best`` (the CLI's model) tested on each of ``collections`` with the CLI DataModule's
    settings but that collection: ``{collection: {"test": means, "per_query": {...}}}``."""
    from lightning_mlsr.data.datamodule import RetrievalDataModule

    out: dict[str, Any] = {}
    for collection in collections:
        settings = {**dict(cli.datamodule.hparams), "collection": collection, "negatives": {}}
        print(f"=== testing on {collection}", flush=True)
        datamodule = RetrievalDataModule.from_hparams(settings)
        out[collection] = checkpoint_test(registry, cli, best, datamodule)
    return out


def write_cross_domain(
    registry: Registry,
    runs_dir: Path,
    name: str,
    seed: int,
    in_domain: dict[str, Any],
    results: dict[str, Any],
    checkpoint: str,
) -> None:
    """Add ``results`` ({collection: {"test", "per_query"}}) to (``name``, ``seed``)'s
    ``cross_domain.json``, each marked with the ``checkpoint`` it was tested from: ``"run"``
    (the recorded fit's best), ``"refit"`` (a fit again with its seed) or ``"kept"`` (the run's
    best checkpoint kept by ``--keep-best``). ``in_domain`` is that checkpoint's test on the
    training collection. A collection tested from another checkpoint whose in-domain test
    differs keeps that test as its own ``in_domain``, so every collection is always compared
    with the in-domain numbers of its own checkpoint."""
    path = run_dir(runs_dir, name, seed) / CROSS_DOMAIN_FILE
    record = read_json(path) if path.is_file() else {"collections": {}}
    earlier = record.get("in_domain")
    earlier_source = record.pop("checkpoint", "refit" if record.pop("refit", False) else "run")
    for entry in record["collections"].values():
        entry.setdefault("checkpoint", earlier_source)
        if earlier is not None and earlier["per_query"] != in_domain["per_query"]:
            entry.setdefault("in_domain", earlier)
    record.update(experiment=name, seed=seed, trained_on=registry.collection)
    record["in_domain"] = in_domain  # the checkpoint of the latest collections
    record["checkpoint"] = checkpoint
    record["collections"].update({c: {**r, "checkpoint": checkpoint} for c, r in results.items()})
    write_json(path, record)


def checkpoint_test(
    registry: Registry, cli: Any, ckpt: str | None, datamodule: Any = None
) -> dict[str, Any]:
    """``ckpt`` (the CLI's model) tested on ``datamodule``'s test split (default: the CLI's,
    the training collection): ``{"test": means, "per_query": {measure: {qid: value}}}``."""
    datamodule = datamodule or cli.datamodule
    cli.trainer.test(cli.model, datamodule=datamodule, ckpt_path=ckpt, weights_only=True)
    tested = written_evaluation(cli.trainer, "test")
    return {
        "test": tested.figures,
        "per_query": tested.per_query(datamodule.qrels("test"), registry.measures),
    }


def differs_from_recorded(
    registry: Registry, runs_dir: Path, name: str, seed: int, figures: dict[str, Any]
) -> dict[str, tuple[Any, Any]]:
    """The measures where ``figures`` (a test on the training collection) differ from the
    recorded run's test in ``metrics.json``: {measure: (these, recorded)}; empty when equal."""
    recorded = read_json(run_dir(runs_dir, name, seed) / "metrics.json")["test"]
    measures = [m for m in registry.measures if m in recorded] or list(registry.measures)
    return {
        m: (figures.get(m), recorded.get(m))
        for m in measures
        if not math.isclose(figures.get(m, math.nan), recorded.get(m, math.nan), abs_tol=1e-9)
    }


def complete_cross_domain(
    registry: Registry,
    name: str,
    seed: int,
    work: Path,
    extra: list[str],
    runs_dir: Path | None = None,
    kept: Path | None = None,
    keep_best: Path | None = None,
) -> None:
    """The cross-domain tests a finished (``name``, ``seed``) lacks, into ``cross_domain.json``
    (its ``metrics.json`` and ``per_query.json`` are not touched), from one checkpoint tested
    on the training collection and on each missing collection:

    - ``kept``: the best checkpoint the recorded run kept (``report run --keep-best``), no
      fit. It must be that run's: tested on the training collection it reproduces every
      measure of the run's recorded test, else a ValueError naming both and nothing written.
    - otherwise the run is fitted again with its seed (its checkpoints were removed when it
      finished). With ``keep_best``, the refit's best checkpoint is kept as the run's
      (:func:`keep_checkpoint`) only where it reproduces the recorded test, so a kept
      checkpoint is always the run's model; each collection says whether it did
      (``reproduces_recorded``). One that does not is kept apart, as ``seed<N>.refit.ckpt``."""
    from lightning_mlsr.training.cli import main

    runs_dir = runs_dir or registry.runs_dir
    missing = cross_domain_missing(registry, runs_dir, name, seed)
    if not missing or name not in registry.final:
        return
    root = work / name / f"seed{seed}-cross_domain"
    shutil.rmtree(root, ignore_errors=True)
    if kept is None:
        cli = main([*fit_command(registry, name, seed, root), *extra])
        trainer: Any = cli.trainer
        ckpt = trainer.checkpoint_callback.best_model_path or None
    else:  # the fit's settings without fitting: no subcommand, nothing of fit's own options
        args = [a for a in fit_command(registry, name, seed, root) if a not in FIT_ONLY]
        cli = main([*args, *extra], run=False)
        ckpt = str(kept)
    in_domain = checkpoint_test(registry, cli, ckpt)  # on the training collection
    differ = differs_from_recorded(registry, runs_dir, name, seed, in_domain["test"])
    if kept is not None and differ:
        raise ValueError(
            f"{kept} is not the best checkpoint of {name} seed {seed}: tested on "
            f"{registry.collection} it gives (this checkpoint, the recorded run) {differ}. "
            "Remove it to refit instead."
        )
    results = test_on_collections(registry, cli, ckpt, missing)
    if kept is None:
        for entry in results.values():
            entry["reproduces_recorded"] = not differ
    source = "refit" if kept is None else "kept"
    write_cross_domain(registry, runs_dir, name, seed, in_domain, results, source)
    if kept is None and keep_best is not None and ckpt:
        if differ:
            print(f"=== {name} seed {seed}: the refit is not the recorded run {differ}")
            keep_checkpoint(ckpt, keep_best, name, seed, refit=True)
        else:
            keep_checkpoint(ckpt, keep_best, name, seed)
    shutil.rmtree(root, ignore_errors=True)
