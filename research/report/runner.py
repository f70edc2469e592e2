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
(experiment, seed) is trained under an exclusive lock (:func:`run_lock`,
``<work>/<experiment>/seed<k>.lock``); a lane that finds it held skips that run with a message
(the holder reports how it ends), and a teacher another lane is refitting is waited for. A
failed run is reported and the others go on; :func:`run_all` returns the failures, and the
CLI exits with status 1 when there are any.

Cross-domain (``cross_domain`` in the registry): the best checkpoint of a final experiment
is also tested on each other collection that lists it, with the same DataModule settings
but that collection, and ``cross_domain.json`` beside the run keeps the means, the
per-query values and the same checkpoint's test on the training collection. A run that
finished before its experiment was listed is fitted again with the same seed for it
(:func:`refit_for_cross_domain`): its ``metrics.json`` is left as it is, and the comparison
is always between the in-domain and cross-domain numbers of one checkpoint.

Teachers: a distilled experiment learns from the trained teacher experiment of its own seed
when that has a run, else from the first seed's (:func:`ensure_teacher`). A finished run keeps
no checkpoint, so on a fresh clone the teacher is fitted again with its recorded seed and
overrides (:func:`refit_teacher`); its validation nDCG@10 is checked against the recorded one
and kept beside the checkpoint (``teacher.json``) and in each student's ``metrics.json``. A
student never falls back to its YAML's untrained teacher.
"""

from __future__ import annotations

import functools
import shutil
import time
import traceback
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from research.report.evaluations import evaluated_corpus, written_evaluation
from research.report.locks import exclusive
from research.report.pipelines import fit_overrides, teacher_path
from research.report.records import TEACHER_OPTION, read_json, write_json
from research.report.registry import Registry

__all__ = [
    "CROSS_DOMAIN_FILE",
    "cross_domain_missing",
    "ensure_teacher",
    "is_finished",
    "lock_path",
    "refit_for_cross_domain",
    "refit_teacher",
    "run_all",
    "run_baselines",
    "run_lock",
    "test_on_collections",
    "train_and_evaluate",
    "unfinished_checkpoint",
]

#: beside a run's metrics.json: its best checkpoint tested on other collections
CROSS_DOMAIN_FILE = "cross_domain.json"
#: the validation measure the best checkpoint is chosen by (the YAMLs' ModelCheckpoint)
SELECTION_MEASURE = "nDCG@10"
#: a refitted teacher's validation nDCG@10 beside the recorded one, next to teacher.pt
TEACHER_RECORD = "teacher.json"
#: how far a refitted teacher's validation nDCG@10 may be from its record before a warning
#: (a CPU refit has reproduced it exactly; another device or library build may not)
REFIT_TOLERANCE = 1e-3


def run_dir(runs_dir: Path, name: str, seed: int) -> Path:
    return runs_dir / name / f"seed{seed}"


def lock_path(work: Path, name: str, seed: int) -> Path:
    """The lock file of (``name``, ``seed``) in the work folder, beside its run folder
    (which a fresh attempt removes, so the lock cannot live inside it)."""
    return work / name / f"seed{seed}.lock"


def run_lock(
    work: Path,
    name: str,
    seed: int,
    wait: bool = False,
    on_wait: Callable[[], None] | None = None,
) -> AbstractContextManager[bool]:
    """An exclusive lock on (``name``, ``seed``) in ``work`` for as long as one lane trains,
    evaluates or refits it (:func:`~research.report.locks.exclusive` on
    :func:`lock_path`); yields whether this lane holds it (without ``wait``: False at once
    when another lane does)."""
    return exclusive(lock_path(work, name, seed), wait=wait, on_wait=on_wait)


def is_finished(runs_dir: Path, name: str, seed: int) -> bool:
    return (run_dir(runs_dir, name, seed) / "metrics.json").is_file()


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

    trainer = cli.trainer
    out: dict[str, Any] = {}
    for collection in collections:
        settings = {**dict(cli.datamodule.hparams), "collection": collection, "negatives": {}}
        datamodule = RetrievalDataModule.from_hparams(settings)
        print(f"=== testing on {collection}", flush=True)
        trainer.test(cli.model, datamodule=datamodule, ckpt_path=best)
        tested = written_evaluation(trainer, "test")
        out[collection] = {
            "test": tested.figures,
            "per_query": tested.per_query(datamodule.qrels("test"), registry.measures),
        }
    return out


def _write_cross_domain(
    registry: Registry,
    runs_dir: Path,
    name: str,
    seed: int,
    in_domain: dict[str, Any],
    results: dict[str, Any],
    refit: bool,
) -> None:
    path = run_dir(runs_dir, name, seed) / CROSS_DOMAIN_FILE
    record = read_json(path) if path.is_file() else {"collections": {}}
    record.update(
        experiment=name,
        seed=seed,
        trained_on=registry.collection,
        # the checkpoint these numbers come from: the recorded run's, or a refit's
        refit=refit,
        in_domain=in_domain,
    )
    record["collections"].update(results)
    write_json(path, record)


def unfinished_checkpoint(root: Path) -> Path | None:
    """The newest intact checkpoint an interrupted fit left under ``root``:
    ``on_exception.ckpt`` (a fit stopped by SIGTERM or an error saves it at the step it
    reached) or ``last.ckpt`` (saved at each epoch's end); a damaged one (empty, truncated:
    a full disk) is skipped with a message. None when there is none."""
    from lightning_mlsr.io.checkpoints import newest_resumable

    def report(path: Path) -> None:
        print(f"=== skipping the damaged checkpoint {path}", flush=True)

    return newest_resumable([root], on_damaged=report)


def _coactivation(registry: Registry, docs: Any, datamodule: Any) -> dict[str, Any]:
    from lightning_mlsr.analysis import compare_models
    from lightning_mlsr.io.pretrained import load_tokenizer

    tokenizer = load_tokenizer(registry.wordpiece_tokenizer)
    vocab = tokenizer.convert_ids_to_tokens(list(range(tokenizer.vocab_size)))
    captions = datamodule.collection.images.captions()
    stats = compare_models({"m": docs}, vocab, captions=captions, tokenize=tokenizer)["m"]
    return {k: (v if isinstance(v, str) else float(v)) for k, v in stats.items()}


def fit_command(registry: Registry, name: str, seed: int, root: Path) -> list[str]:
    """The ``python -m lightning_mlsr`` arguments that train (``name``, ``seed``) into ``root``
    (before the run's teacher and data overrides)."""
    return [
        "fit",
        "--config",
        str(registry.config_path(name)),
        # the registry's collection (a pseudo-query or visual-concept run names its own later)
        f"--data.collection={registry.collection}",
        f"--seed_everything={seed}",
        f"--trainer.default_root_dir={root}",
        "--trainer.logger=lightning.pytorch.loggers.CSVLogger",
        f"--trainer.logger.save_dir={root}",
        "--trainer.enable_progress_bar=false",
        "--test_after_fit=false",
    ]


def train_and_evaluate(
    registry: Registry,
    name: str,
    seed: int,
    work: Path,
    extra: list[str],
    resume_unfinished: bool = True,
    runs_dir: Path | None = None,
) -> None:
    """Train one (experiment, seed), evaluate its best checkpoint, keep what the report needs.

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
    }
    if resume is not None:
        metrics["resumed_from"] = str(resume.relative_to(root))
    teacher = _teacher_record(extra)
    if teacher is not None:
        metrics["teacher_refit"] = teacher
    per_query: dict[str, Any] = {}
    evaluations: list[tuple[str, Callable[..., Any]]] = [("validation", trainer.validate)]
    if name in registry.final:  # test numbers for frozen configurations only
        evaluations.append(("test", trainer.test))
    for split, run_eval in evaluations:
        run_eval(cli.model, datamodule=cli.datamodule, ckpt_path=best)
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
        _write_cross_domain(registry, runs_dir, name, seed, in_domain, results, refit=False)
    students = {e.teacher for e in registry.experiments.values()}
    if name in students and best:  # the teacher of the distilled models, same seed
        shutil.copyfile(best, teacher_path(work, name, seed))
        teacher_path(work, name, seed).with_name(TEACHER_RECORD).unlink(missing_ok=True)
    for ckpt in root.rglob("*.ckpt"):  # hundreds of MB per run; the numbers are kept
        ckpt.unlink()


def _teacher_record(options: Sequence[str]) -> dict[str, Any] | None:
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
    trainer.validate(cli.model, datamodule=cli.datamodule, ckpt_path=best)
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


def refit_for_cross_domain(
    registry: Registry,
    name: str,
    seed: int,
    work: Path,
    extra: list[str],
    runs_dir: Path | None = None,
) -> None:
    """Fit (``name``, ``seed``) again, as its recorded run was, for the cross-domain tests it
    lacks (its checkpoints were removed when it finished): test the best checkpoint on the
    training collection and on each missing collection, into ``cross_domain.json``. The run's
    ``metrics.json`` and ``per_query.json`` are not touched."""
    from lightning_mlsr.training.cli import main

    runs_dir = runs_dir or registry.runs_dir
    missing = cross_domain_missing(registry, runs_dir, name, seed)
    if not missing or name not in registry.final:
        return
    root = work / name / f"seed{seed}-cross_domain"
    shutil.rmtree(root, ignore_errors=True)
    cli = main([*fit_command(registry, name, seed, root), *extra])
    trainer: Any = cli.trainer
    best = trainer.checkpoint_callback.best_model_path or None
    trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path=best)
    tested = written_evaluation(trainer, "test")
    in_domain = {
        "test": tested.figures,
        "per_query": tested.per_query(cli.datamodule.qrels("test"), registry.measures),
    }
    results = test_on_collections(registry, cli, best, missing)
    _write_cross_domain(registry, runs_dir, name, seed, in_domain, results, refit=True)
    shutil.rmtree(root, ignore_errors=True)


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
                    if finished:
                        refit_for_cross_domain(registry, name, seed, work, options, runs_dir)
                    else:
                        train_and_evaluate(
                            registry, name, seed, work, options, resume_unfinished, runs_dir
                        )
                except Exception:  # one failed run must not stop the regeneration
                    traceback.print_exc()
                    print(f"=== {name} seed {seed} FAILED; continuing", flush=True)
                    failed.append((name, seed))
            if after_each is not None:
                after_each()
    return failed
