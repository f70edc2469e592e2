"""Every (experiment, seed) of the registry trained and evaluated through the CLI, resumably.

Each is ``python -m lightning_mlsr fit`` with its YAML and overrides exactly
(``seed_everything`` set to the seed), then its best checkpoint (by ``val/nDCG@10``) is
evaluated on validation, and on test when ``results/protocol.yaml`` lists it as final (the
numbers are read from what the evaluator writes, :mod:`.evaluations`). A finished run leaves
``metrics.json`` and ``per_query.json`` under ``results/runs/<experiment>/seed<k>/`` and is
skipped next time; a fit stopped midway resumes from the newest intact checkpoint it left
under the work folder (``on_exception.ckpt``, which a SIGTERM saves at the step reached, else
``last.ckpt`` from an epoch's end). The baselines are kept the same way under
``results/runs/baselines/``.

Lanes: several ``report run`` processes may share the work and runs folders. Each
(experiment, seed) is trained under an exclusive lock (:func:`~.locks.run_lock`,
``<work>/<experiment>/seed<k>.lock``); a lane that finds it held skips that run with a message
(the holder reports how it ends), and a teacher another lane is refitting is waited for. A
failed run is reported and the others go on; :func:`run_all` returns the failures, and the
CLI exits with status 1 when there are any.

Teachers (:mod:`.teachers`) are fitted before their students, and a final experiment is
also tested on the collections that list it (:mod:`.cross_domain`).
"""

from __future__ import annotations

import shutil
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from research.report.cross_domain import (
    complete_cross_domain,
    cross_domain_missing,
    test_on_collections,
    write_cross_domain,
)
from research.report.evaluations import evaluated_corpus, written_evaluation
from research.report.fitting import (
    fit_command,
    fit_environment,
    is_finished,
    keep_checkpoint,
    kept_checkpoint,
    run_dir,
    unfinished_checkpoint,
)
from research.report.locks import lock_path, run_lock
from research.report.pipelines import fit_overrides, teacher_path
from research.report.records import write_json
from research.report.registry import Registry
from research.report.teachers import TEACHER_RECORD, ensure_teacher, teacher_record

__all__ = ["run_all", "run_baselines", "train_and_evaluate"]


def _coactivation(registry: Registry, docs: Any, datamodule: Any) -> dict[str, Any]:
    from lightning_mlsr.analysis.vectors import coactivation_figures
    from lightning_mlsr.io.pretrained import load_tokenizer

    tokenizer = load_tokenizer(registry.wordpiece_tokenizer)
    return coactivation_figures(docs, tokenizer, datamodule.collection.images.captions())


def train_and_evaluate(
    registry: Registry,
    name: str,
    seed: int,
    work: Path,
    extra: list[str],
    resume_unfinished: bool = True,
    runs_dir: Path | None = None,
    keep_best: Path | None = None,
) -> None:
    """Train one (experiment, seed), evaluate its best checkpoint, keep what the report needs.

    ``keep_best``: a folder where the best checkpoint survives the clean-up, as
    ``<keep_best>/<name>/seed<seed>.ckpt`` (for the query-cost benchmark and exported vectors).

    A fit that an earlier invocation left unfinished (killed, out of time) is resumed from
    its newest checkpoint (:func:`unfinished_checkpoint`) unless ``resume_unfinished`` is
    False; a finished run removes its checkpoints, so it never resumes by mistake.
    """
    from lightning_mlsr.training.cli import main

    runs_dir = runs_dir or registry.runs_dir
    # absolute, as the checkpoint found under it is: a relative --work resumes as well
    root = (work / name / f"seed{seed}").resolve()
    resume = unfinished_checkpoint(root) if resume_unfinished else None
    if resume is None:
        shutil.rmtree(root, ignore_errors=True)  # an unfinished earlier attempt
    else:
        print(f"=== {name} seed {seed}: resuming the unfinished fit from {resume}", flush=True)
    start = time.perf_counter()
    resume_option = [f"--ckpt_path={resume}"] if resume else []
    cli = main([*fit_command(registry, name, seed, root), *resume_option, *extra])
    fit_seconds = time.perf_counter() - start
    trainer: Any = cli.trainer  # the CLI's Trainer, with its callbacks
    best = trainer.checkpoint_callback.best_model_path or None
    metrics: dict[str, Any] = {
        "experiment": name,
        "seed": seed,
        "epochs": int(trainer.current_epoch),
        "steps": int(trainer.global_step),
        "fit_seconds": fit_seconds,  # of this attempt only, when it resumed another
        "overrides": extra,
        # what a bit-identical refit needs besides the seed (docs/evaluation.md)
        "environment": fit_environment(),
    }
    if resume is not None:
        metrics["resumed_from"] = str(resume.relative_to(root))
    teacher = teacher_record(extra)
    if teacher is not None:
        metrics["teacher_refit"] = teacher
    per_query: dict[str, Any] = {}
    evaluations: list[tuple[str, Callable[..., Any]]] = [("validation", trainer.validate)]
    if name in registry.final:  # test numbers for frozen configurations only
        evaluations.append(("test", trainer.test))
    for split, run_eval in evaluations:
        run_eval(cli.model, datamodule=cli.datamodule, ckpt_path=best, weights_only=True)
        evaluated = written_evaluation(trainer, split)
        means: dict[str, Any] = dict(evaluated.figures)
        if "empty_docs" not in means:  # dense models: no sparsity
            means["empty_docs"] = means["empty_queries"] = None
        metrics[split] = means
        per_query[split] = evaluated.per_query(cli.datamodule.qrels(split), registry.measures)
    if registry.experiments[name].image_only:  # the image vectors of the last evaluation
        docs = evaluated_corpus(trainer, cli.model, cli.datamodule, split)
        metrics["coactivation"] = _coactivation(registry, docs, cli.datamodule)
    write_json(run_dir(runs_dir, name, seed) / "per_query.json", per_query)
    write_json(run_dir(runs_dir, name, seed) / "metrics.json", metrics)
    elsewhere = registry.cross_domain_of(name) if name in registry.final else []
    if elsewhere:  # after the run is kept: a failure here leaves it to a refit
        in_domain = {"test": metrics["test"], "per_query": per_query["test"]}
        results = test_on_collections(registry, cli, best, elsewhere)
        write_cross_domain(registry, runs_dir, name, seed, in_domain, results, "run")
    students = {e.teacher for e in registry.experiments.values()}
    if name in students and best:  # the teacher of the distilled models, same seed
        shutil.copyfile(best, teacher_path(work, name, seed))
        teacher_path(work, name, seed).with_name(TEACHER_RECORD).unlink(missing_ok=True)
    if keep_best is not None and best:
        keep_checkpoint(best, keep_best, name, seed)
    for ckpt in root.rglob("*.ckpt"):  # hundreds of MB per run; the numbers are kept
        ckpt.unlink()


def run_baselines(registry: Registry, runs_dir: Path | None = None) -> None:
    """Every baseline of the registry on validation and test, once."""
    from lightning_mlsr.baselines import run_baseline
    from lightning_mlsr.data import load_collection
    from lightning_mlsr.retrieval.metrics import evaluate

    runs_dir = runs_dir or registry.runs_dir
    collection = load_collection(registry.collection)
    for method in registry.baselines:
        out = runs_dir / "baselines" / method
        if (out / "metrics.json").is_file():
            continue
        metrics: dict[str, Any] = {"experiment": method}
        per_query: dict[str, Any] = {}
        for split in ("validation", "test"):
            result = run_baseline(method, collection, split)  # type: ignore[arg-type]
            metrics[split] = {
                **result.metrics,
                "q_nnz": result.q_nnz,
                "d_nnz": result.d_nnz,
                "flops_per_query": result.flops_per_query,
                "seconds": result.seconds,
            }
            qrels = collection.qrels[split]
            per_query[split] = evaluate(result.run, qrels, list(registry.measures), per_query=True)
        write_json(out / "per_query.json", per_query)
        write_json(out / "metrics.json", metrics)


def run_all(
    registry: Registry,
    experiments: Sequence[str],
    seeds: Sequence[int],
    work: Path,
    extra: Sequence[str] = (),
    resume_unfinished: bool = True,
    runs_dir: Path | None = None,
    after_each: Callable[[], Any] | None = None,
    keep_best: Path | None = None,
) -> list[tuple[str, int]]:
    """Every unfinished (experiment, seed), seed-major (every experiment gets a first seed
    before any gets a second), in ``experiments``' order; one failed run is reported and the
    rest go on. ``after_each`` runs after every attempt (the CLI rewrites RESULTS.md).
    Returns the (experiment, seed) pairs that failed.

    Lanes (several ``report run`` processes on the same work and runs folders) share the
    work: each (experiment, seed) is attempted under :func:`run_lock`, and one that another
    lane holds is skipped here with a message (that lane reports how it ends). A run found
    finished once the lock is held (the other lane finished it meanwhile) is not redone.
    """
    runs_dir = runs_dir or registry.runs_dir
    unknown = [n for n in experiments if n not in registry.experiments]
    if unknown:
        known = ", ".join(registry.experiments)
        raise ValueError(f"unknown experiments {unknown}; results/registry.yaml has {known}")

    def to_do(name: str, seed: int) -> tuple[bool, bool]:
        """(whether anything is left to do, whether the run itself is finished)."""
        finished = is_finished(runs_dir, name, seed)
        elsewhere = name in registry.final and cross_domain_missing(registry, runs_dir, name, seed)
        return not finished or bool(elsewhere), finished

    failed: list[tuple[str, int]] = []
    for seed in seeds:
        for name in experiments:
            if not to_do(name, seed)[0]:
                continue
            with run_lock(work, name, seed) as held:
                if not held:
                    print(
                        f"=== {name} seed {seed}: skipped, another lane is on it (it holds "
                        f"{lock_path(work, name, seed)})",
                        flush=True,
                    )
                    continue
                left, finished = to_do(name, seed)  # again: the other lane may have finished
                if not left:
                    continue
                print(
                    f"=== {name} seed {seed}" + (" (cross-domain)" if finished else ""), flush=True
                )
                try:
                    ensure_teacher(registry, name, seed, work, runs_dir)
                    options = [
                        *extra,
                        *registry.experiments[name].overrides,
                        *fit_overrides(registry, name, seed, work),
                    ]
                    if finished:  # from the checkpoint it kept, or a refit
                        kept = kept_checkpoint(keep_best, name, seed) if keep_best else None
                        complete_cross_domain(
                            registry,
                            name,
                            seed,
                            work,
                            options,
                            runs_dir,
                            kept if kept is not None and kept.is_file() else None,
                            keep_best,
                        )
                    else:
                        train_and_evaluate(
                            registry,
                            name,
                            seed,
                            work,
                            options,
                            resume_unfinished,
                            runs_dir,
                            keep_best,
                        )
                except Exception:  # one failed run must not stop the regeneration
                    traceback.print_exc()
                    print(f"=== {name} seed {seed} FAILED; continuing", flush=True)
                    failed.append((name, seed))
            if after_each is not None:
                after_each()
    return failed
