"""``python -m lightning_mlsr fit|validate|test|predict --config experiments/<name>.yaml``.

A LightningCLI over :class:`~lightning_mlsr.module.SparseBiEncoder` and
:class:`~lightning_mlsr.data.datamodule.RetrievalDataModule`. The shared defaults in
``lightning_mlsr/configs/base.yaml`` are always loaded first, so an experiment file states
only what differs. W&B logs offline unless ``WANDB_MODE`` says otherwise.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import warnings
import weakref
from pathlib import Path
from typing import Any, cast

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger, WandbLogger
from lightning.pytorch.utilities.exceptions import SIGTERMException

BASE_CONFIG = Path(__file__).resolve().parent / "configs" / "base.yaml"

__all__ = ["BASE_CONFIG", "MLSRCLI", "RunConfigCallback", "main", "quiet_startup_noise"]


class _DropMessages(logging.Filter):
    """Drops log records whose message starts with one of ``prefixes``."""

    def __init__(self, *prefixes: str) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith(self.prefixes)


def quiet_startup_noise() -> None:
    """Silence start-up output that tells a researcher nothing, and only that.

    - Lightning's advertisement for litlogger (an info record, every run);
    - PyTorch's ``LeafSpec`` deprecation raised from inside Lightning's own pytree helper
      (nothing a user can act on; other deprecations stay visible);
    - transformers' "Loading weights" bars for the 2-layer backbones (instant here).

    The W&B "anonymous" warning is avoided at its source by
    :class:`lightning_mlsr.loggers.WandbLogger`.
    """
    rank_zero = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _DropMessages) for f in rank_zero.filters):
        rank_zero.addFilter(_DropMessages("💡 Tip: For seamless cloud logging"))
    warnings.filterwarnings(
        "ignore", message=r".*isinstance\(treespec, LeafSpec\).*", category=FutureWarning
    )
    with contextlib.suppress(ImportError):
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()


def run_dir(trainer: Trainer) -> Path:
    """A directory that belongs to this run only (versioned), for config and run files.

    CSV/TensorBoard loggers have a versioned ``log_dir``; for others (W&B) the
    ``save_dir/name/version`` layout that ModelCheckpoint also uses. ``trainer.log_dir``
    would be W&B's shared ``save_dir``, where two runs clash. Without a logger: a new
    ``<default_root_dir>/lightning_mlsr/version_<N>`` per Trainer.
    """
    logger = trainer.logger
    if logger is None:
        return _unlogged_run_dir(trainer)
    if isinstance(logger, CSVLogger | TensorBoardLogger):
        return Path(logger.log_dir)
    save_dir = logger.save_dir or trainer.default_root_dir
    version = logger.version if isinstance(logger.version, str) else f"version_{logger.version}"
    return Path(save_dir) / str(logger.name) / version


_UNLOGGED_RUN_DIRS: weakref.WeakKeyDictionary[Trainer, Path] = weakref.WeakKeyDictionary()


def _unlogged_run_dir(trainer: Trainer) -> Path:
    """``<default_root_dir>/lightning_mlsr/version_<N>``, a new N per Trainer, for runs
    without a logger (``--trainer.logger=false``): their run files and exports never
    overwrite another run's. Rank 0 picks the directory; every rank gets the same one."""
    if trainer not in _UNLOGGED_RUN_DIRS:
        path = None
        if trainer.is_global_zero:
            root = Path(trainer.default_root_dir) / "lightning_mlsr"
            root.mkdir(parents=True, exist_ok=True)
            taken = [int(p.name[8:]) for p in root.glob("version_*") if p.name[8:].isdigit()]
            version = max(taken, default=-1) + 1
            while True:  # another process may take a number at the same time
                try:
                    (root / f"version_{version}").mkdir()
                    break
                except FileExistsError:
                    version += 1
            path = str(root / f"version_{version}")
        _UNLOGGED_RUN_DIRS[trainer] = Path(cast(str, trainer.strategy.broadcast(path)))
    return _UNLOGGED_RUN_DIRS[trainer]


class RunConfigCallback(SaveConfigCallback):
    """Saves the resolved config into the run's own directory and into the logger.

    Lightning's default writes ``config.yaml`` to ``trainer.log_dir``, which W&B shares
    between runs — the second run in the same directory then refuses to start.
    """

    def __init__(self, parser: LightningArgumentParser, config: Any, **kwargs: Any) -> None:
        kwargs["save_to_log_dir"] = False
        super().__init__(parser, config, **kwargs)

    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if trainer.logger is None or cast(Any, trainer).fast_dev_run:
            return
        path = run_dir(trainer) / self.config_filename
        path.parent.mkdir(parents=True, exist_ok=True)
        self.parser.save(self.config, str(path), skip_none=False, overwrite=True)
        if isinstance(trainer.logger, Logger):
            config = self.parser.dump(self.config, skip_none=False, format="json")
            trainer.logger.log_hyperparams({"config": config})
        if hasattr(trainer.logger, "experiment") and hasattr(trainer.logger.experiment, "save"):
            # W&B: keep the YAML itself with the run's files (best effort: it is on disk)
            with contextlib.suppress(Exception):
                trainer.logger.experiment.save(str(path), base_path=str(path.parent), policy="now")


class MLSRCLI(LightningCLI):
    """LightningCLI with the project's base config loaded first."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        defaults = {"default_config_files": [str(BASE_CONFIG)]}
        kwargs.setdefault(
            "parser_kwargs",
            {cmd: dict(defaults) for cmd in ("fit", "validate", "test", "predict")},
        )
        kwargs.setdefault("save_config_callback", RunConfigCallback)
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        super().__init__(*args, **kwargs)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument(
            "--test_after_fit",
            type=bool,
            default=True,
            help="after `fit`, run `test` on the best checkpoint (writes the TREC run file)",
        )
        # the DataModule batches what the model's encoders read: given explicitly, when
        # the model is built (before prepare_data, which may fill the feature cache)
        parser.link_arguments("model.encoder_inputs", "data.encoder_inputs", apply_on="instantiate")

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        """The configured Trainer, plus plain progress lines when output goes to a file.

        A live bar prints nothing useful into a job log, so when stdout/stderr is not a
        terminal (and no progress bar was configured, and bars are not switched off) the
        Trainer gets :class:`~lightning_mlsr.progress.ProgressLines` instead.
        """
        from lightning_mlsr.progress import ProgressLines, wants_log_lines

        trainer_config = self._get(self.config_init, "trainer", default={}) or {}
        configured = trainer_config.get("callbacks") or []
        configured = configured if isinstance(configured, list) else [configured]
        if (
            "callbacks" not in kwargs
            and trainer_config.get("enable_progress_bar", True) is not False
            and not any(isinstance(c, ProgressBar) for c in configured)
            and wants_log_lines()
        ):
            kwargs["callbacks"] = [*configured, ProgressLines()]
        return super().instantiate_trainer(**kwargs)

    def after_fit(self) -> None:
        config = self.config.get(self.subcommand, self.config)
        if config.get("test_after_fit", True) and not cast(Any, self.trainer).fast_dev_run:
            callback = self.trainer.checkpoint_callback
            best = getattr(callback, "best_model_path", "") if callback is not None else ""
            self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=best or None)
        self._finish_logger_run()

    def after_validate(self) -> None:
        self._finish_logger_run()

    def after_test(self) -> None:
        self._finish_logger_run()

    def after_predict(self) -> None:
        self._finish_logger_run()

    def _finish_logger_run(self) -> None:
        """Close the W&B run, so a second CLI call in the same process (tests, notebooks)
        starts a new run instead of silently appending to this one."""
        for logger in self.trainer.loggers:
            if isinstance(logger, WandbLogger) and logger._experiment is not None:
                logger.experiment.finish()


def main(args: list[str] | None = None, run: bool = True) -> MLSRCLI:
    """Entry point of ``python -m lightning_mlsr``."""
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    quiet_startup_noise()
    from lightning_mlsr.data.datamodule import RetrievalDataModule
    from lightning_mlsr.module import SparseBiEncoder

    try:
        return MLSRCLI(
            SparseBiEncoder,
            RetrievalDataModule,
            args=args,
            run=run,
            auto_configure_optimizers=False,
        )
    except SIGTERMException as err:
        # Lightning stops the loops with SIGTERMException, a SystemExit without a code, so
        # the process would exit 0; a terminated run must not look like a finished one
        raise SystemExit(128 + signal.SIGTERM) from err
