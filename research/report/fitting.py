"""One (experiment, seed) of the registry as a fit through the CLI: where its finished run is
kept, the ``python -m lightning_mlsr fit`` arguments that train it, and the checkpoint an
interrupted fit left to resume from."""

from __future__ import annotations

from pathlib import Path

from research.report.registry import Registry

__all__ = ["fit_command", "is_finished", "run_dir", "unfinished_checkpoint"]


def run_dir(runs_dir: Path, name: str, seed: int) -> Path:
    return runs_dir / name / f"seed{seed}"


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
