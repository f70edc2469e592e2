"""One (experiment, seed) of the registry as a fit through the CLI: where its finished run is
kept, the ``python -m lightning_mlsr fit`` arguments that train it, and the checkpoint an
interrupted fit left to resume from."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from pathlib import Path
from typing import Any

from research.report.registry import Registry

__all__ = [
    "fit_command",
    "fit_environment",
    "is_finished",
    "keep_checkpoint",
    "kept_checkpoint",
    "run_dir",
    "unfinished_checkpoint",
]


def run_dir(runs_dir: Path, name: str, seed: int) -> Path:
    return runs_dir / name / f"seed{seed}"


def kept_checkpoint(keep_best: Path, name: str, seed: int, refit: bool = False) -> Path:
    """Where ``report run --keep-best`` keeps (``name``, ``seed``)'s best checkpoint; with
    ``refit``, where it keeps the best checkpoint of a refit that did NOT reproduce the
    recorded run (``seed<N>.refit.ckpt``: the same configuration and seed, another model, for
    what does not depend on the exact weights, such as query cost; never used as the run's)."""
    return keep_best / name / (f"seed{seed}.refit.ckpt" if refit else f"seed{seed}.ckpt")


def keep_checkpoint(best: str, keep_best: Path, name: str, seed: int, refit: bool = False) -> Path:
    """``best`` kept as :func:`kept_checkpoint`, a hard link where the file system allows
    (the same file, no copy of hundreds of MB), replacing an earlier one."""
    kept = kept_checkpoint(keep_best, name, seed, refit)
    kept.parent.mkdir(parents=True, exist_ok=True)
    kept.unlink(missing_ok=True)
    try:
        os.link(best, kept)
    except OSError:
        shutil.copyfile(best, kept)
    print(f"=== {name} seed {seed}: best checkpoint kept as {kept}", flush=True)
    return kept


def is_finished(runs_dir: Path, name: str, seed: int) -> bool:
    return (run_dir(runs_dir, name, seed) / "metrics.json").is_file()


def unfinished_checkpoint(root: Path) -> Path | None:
    """The newest intact checkpoint an interrupted fit left under ``root``:
    ``on_exception.ckpt`` (a fit stopped by SIGTERM or an error saves it at the step it
    reached) or ``last.ckpt`` (saved at each epoch's end); a damaged one (empty, truncated:
    a full disk) is skipped with a message. None when there is none."""
    from lightning_mlsr.io.checkpoints import newest_resumable

    def report(path: Path) -> None:
        print(f"=== skipping the damaged checkpoint {path}", flush=True)

    return newest_resumable([root], on_damaged=report)


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


def fit_environment(repo: Path | None = None) -> dict[str, Any]:
    """What decides a fit's floating-point path besides its seed: the checkout's commit (and
    whether it had uncommitted changes), the intra-op thread count and the library versions.
    The same seed on another thread count or commit differs in the seventh digit after a few
    steps, which a full fit grows like a change of seed (docs/evaluation.md).

    Changes under ``results/`` do not count: the pipeline itself rewrites the reports and run
    records there after every run, which would mark every later run of a lane as uncommitted.
    ``repo``: the checkout (default: this one)."""
    import lightning
    import torch

    repo = repo or Path(__file__).resolve().parents[2]

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    status = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)results")
    return {
        "commit": git("rev-parse", "HEAD"),
        "uncommitted_changes": None if status is None else bool(status),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "lightning": lightning.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
    }
