"""``python -m research.report``: train what the registry lists, make the data its
distilled experiments train on, and render RESULTS.md.

    python -m research.report run                       # every experiment, 3 seeds
    python -m research.report run --seeds 5 --experiments m2_mlp_mlm_caption
    python -m research.report build                     # RESULTS.md from results/runs
    python -m research.report unseen-queries            # rewrite results/unseen_queries.tsv
    python -m research.report prepare pseudo_queries --seed 42
        # the teacher (fitted again if its checkpoint is gone), its pseudo-queries and hard
        # negatives for that run, then its fit command

``run`` goes on after a failed (experiment, seed) and exits with status 1 at the end when
any failed. Several ``run`` lanes may share the work and runs folders: each (experiment,
seed) is locked by the lane that trains it (``<work>/<experiment>/seed<k>.lock``), and the
other lanes skip it with a message.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from research.report.records import RunRecordError
from research.report.registry import RegistryError
from research.report.registry_file import load_registry

__all__ = ["main"]


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--registry", default=None, help="results folder (default: results/)")
    parser.add_argument(
        "--results",
        default=None,
        help="report to write (default: RESULTS.md for results/, else <registry>/RESULTS.md)",
    )
    parser.add_argument("--runs", default=None, help="where finished runs are kept")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m research.report", description=__doc__.split("\n\n")[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="train and evaluate what has not finished, then build")
    _common(run)
    run.add_argument("--experiments", nargs="*", default=None, help="default: all, teachers first")
    run.add_argument("--seeds", type=int, default=None, help="seeds per experiment (42, 43, ...)")
    run.add_argument("--seed-list", type=int, nargs="+", default=None, help="these seeds instead")
    run.add_argument(
        "--work",
        default=None,
        help="logs, ckpts (default: outputs/results, or outputs/results-<registry folder>)",
    )
    run.add_argument("--no-baselines", action="store_true")
    run.add_argument(
        "--restart-unfinished",
        action="store_true",
        help="start an interrupted (experiment, seed) fit over instead of resuming it",
    )
    run.add_argument(
        "--keep-best",
        default=None,
        help="keep each finished fit's best checkpoint as <DIR>/<experiment>/seed<N>.ckpt "
        "(default: removed once its numbers are kept); a finished run's cross-domain tests "
        "then use the checkpoint kept there instead of fitting it again (a refit that does "
        "not reproduce the recorded run is kept apart as seed<N>.refit.ckpt)",
    )
    run.add_argument(
        "--cli-args",
        default="",
        help="extra `fit` overrides in one string: --cli-args='--trainer.limit_train_batches=5'",
    )
    build = commands.add_parser("build", help="render RESULTS.md from the finished runs")
    _common(build)
    unseen = commands.add_parser("unseen-queries", help="rewrite results/unseen_queries.tsv")
    unseen.add_argument("--registry", default=None, help="results folder (default: results/)")
    prepare = commands.add_parser(
        "prepare", help="make one run's teacher-labelled data and print its fit command"
    )
    prepare.add_argument("experiment")
    prepare.add_argument("--seed", type=int, required=True)
    prepare.add_argument("--registry", default=None, help="results folder (default: results/)")
    prepare.add_argument(
        "--work",
        default=None,
        help="teachers, data (default: outputs/results, or outputs/results-<registry folder>)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _command(args)
    except (RegistryError, RunRecordError) as err:  # bad input: its file and key, no trace
        raise SystemExit(f"error: {err}") from None


def _command(args: argparse.Namespace) -> int:
    registry = load_registry(args.registry) if args.registry else load_registry()
    if getattr(args, "work", "unset") is None:
        args.work = str(registry.default_work)
    if getattr(args, "work", None) is not None:  # teacher paths in the fit options: absolute
        args.work = str(Path(args.work).resolve())
    if args.command == "unseen-queries":
        from research.report.queries import write_unseen_queries

        print(f"wrote {write_unseen_queries(registry)}")
        return 0
    if args.command == "prepare":
        from research.report.fitting import fit_command
        from research.report.pipelines import fit_overrides
        from research.report.teachers import ensure_teacher

        name, work = args.experiment, Path(args.work)
        if name not in registry.experiments:
            known = ", ".join(registry.experiments)
            raise SystemExit(f"unknown experiment {name!r}; results/registry.yaml has {known}")
        try:
            ensure_teacher(registry, name, args.seed, work)  # a finished one is fitted again
            made = fit_overrides(registry, name, args.seed, work)
        except FileNotFoundError as missing:  # no teacher has finished yet
            raise SystemExit(str(missing)) from None
        options = [*registry.experiments[name].overrides, *made]
        command = fit_command(registry, name, args.seed, work / name / f"seed{args.seed}")
        print(shlex.join(["python", "-m", "lightning_mlsr", *command, *options]))
        return 0

    from research.report.builder import write_report

    runs_dir = Path(args.runs) if args.runs else None
    out = Path(args.results) if args.results else registry.report_path
    failed: list[tuple[str, int]] = []
    if args.command == "run":
        from research.report.runner import run_all, run_baselines

        os.environ.setdefault("WANDB_MODE", "offline")
        if not args.no_baselines:
            run_baselines(registry, runs_dir)
        count = args.seeds or registry.seed_count
        seeds = args.seed_list or range(registry.first_seed, registry.first_seed + count)
        failed = run_all(
            registry,
            args.experiments or registry.training_order(),
            list(seeds),
            Path(args.work),
            shlex.split(args.cli_args),
            not args.restart_unfinished,
            runs_dir,
            after_each=lambda: write_report(out, registry, runs_dir),
            keep_best=Path(args.keep_best) if args.keep_best else None,
        )
    print(write_report(out, registry, runs_dir))
    if failed:  # a scheduler learns it from the exit status
        names = ", ".join(f"{name} seed {seed}" for name, seed in failed)
        print(
            f"{len(failed)} run(s) FAILED: {names} (their tracebacks are above); run the "
            "same command again to retry them",
            file=sys.stderr,
        )
        return 1
    return 0
