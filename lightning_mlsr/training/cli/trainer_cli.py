"""``python -m lightning_mlsr fit|validate|test|predict|features --config experiments/<name>.yaml``.

A LightningCLI over :class:`~lightning_mlsr.training.system.module.SparseBiEncoder` and
:class:`~lightning_mlsr.data.datamodule.RetrievalDataModule`. The shared defaults in
``lightning_mlsr/configs/base.yaml`` are always loaded first, so an experiment file states
only what differs. W&B logs offline unless ``WANDB_MODE`` says otherwise.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any, cast

from lightning.fabric.plugins import CheckpointIO
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities.exceptions import SIGTERMException

from lightning_mlsr.io.checkpoints import CheckpointError, load_checkpoint, newest_resumable
from lightning_mlsr.training.callbacks.checkpointing import AtomicCheckpointIO
from lightning_mlsr.training.cli.config_files import PARSER_MODE, RunConfigCallback
from lightning_mlsr.training.cli.features import (
    FEATURES,
    FEATURES_HELP,
    add_features_arguments,
    fill,
)
from lightning_mlsr.training.cli.startup import quiet_startup_noise
from lightning_mlsr.training.moved_classes import current_class_paths
from lightning_mlsr.training.runs import evaluate_into_checkpoint_run
from lightning_mlsr.training.trusted_classes import UntrustedClassError, check_checkpoint_hparams

BASE_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "base.yaml"

__all__ = ["BASE_CONFIG", "MLSRCLI", "main"]


_SPECIAL_CKPT_PATHS = ("best", "last", "hpc", "registry")
_MISSING = object()


def _with_atomic_checkpoints(plugins: Any) -> list[Any]:
    """The configured Trainer plugins, plus atomic checkpoint writes unless one of them
    already is a CheckpointIO."""
    given = [] if plugins is None else list(plugins if isinstance(plugins, list) else [plugins])
    if not any(isinstance(p, CheckpointIO) for p in given):
        given.append(AtomicCheckpointIO())
    return given


def _run_roots(trainer_config: Any) -> list[Path]:
    """Directories a run's checkpoints live under: ``default_root_dir`` and the logger's
    ``save_dir``."""
    trainer_config = trainer_config or {}
    roots = [Path(trainer_config.get("default_root_dir") or ".")]
    logger = trainer_config.get("logger")
    loggers = logger if isinstance(logger, list) else [logger]
    for item in loggers:
        init_args = item.get("init_args") if hasattr(item, "get") else None
        save_dir = init_args.get("save_dir") if init_args is not None else None
        if save_dir and Path(save_dir) not in roots:
            roots.append(Path(save_dir))
    return roots


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted keys -> leaf values of a nested config (jsonargparse Namespaces, dicts, lists)."""
    if hasattr(value, "as_dict"):
        value = value.as_dict()
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if key == "__path__":
                continue
            out.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    if isinstance(value, list | tuple) and any(
        hasattr(v, "as_dict") or isinstance(v, dict) for v in value
    ):
        out = {}
        for i, item in enumerate(value):
            out.update(_flatten(item, f"{prefix}[{i}]"))
        return out
    return {prefix: value}


def _show(value: Any) -> str:
    return "(not set)" if value is _MISSING else repr(value)


def _run_config_hint(ckpt_path: Path) -> str:
    """`` (<run dir>/config.yaml)`` when the checkpoint sits in a run directory with one."""
    config = ckpt_path.resolve().parent.parent / "config.yaml"
    return f" ({config})" if config.is_file() else ""


#: every parser reads the base config first, and reads configurations in :data:`PARSER_MODE`
_PARSER_DEFAULTS: dict[str, Any] = {
    "default_config_files": [str(BASE_CONFIG)],
    "parser_mode": PARSER_MODE,
}


class MLSRCLI(LightningCLI):
    """LightningCLI with the project's base config loaded first, and one subcommand beside
    the Trainer's: ``features`` (:mod:`~lightning_mlsr.training.cli.features`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        defaults = _PARSER_DEFAULTS
        parser_kwargs: dict[str, Any] = (
            {cmd: dict(defaults) for cmd in ("fit", "validate", "test", "predict")}
            if kwargs.get("run", True)
            else dict(defaults)  # no subcommand (run=False): the main parser reads it
        )
        parser_kwargs.update(prog="python -m lightning_mlsr", parser_mode=PARSER_MODE)
        kwargs.setdefault("parser_kwargs", parser_kwargs)
        kwargs.setdefault("save_config_callback", RunConfigCallback)
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        super().__init__(*args, **kwargs)

    def _add_subcommands(self, parser: LightningArgumentParser, **kwargs: Any) -> None:
        """Lightning's subcommands, one per Trainer method, then ``features``: the same
        arguments as ``fit`` (base config, ``--config``, ``--trainer.*``, ``--model.*``,
        ``--data.*``) and ``--rows``; it builds the model and the DataModule, no Trainer."""
        super()._add_subcommands(parser, **kwargs)
        features = self.init_parser(**_PARSER_DEFAULTS, description=FEATURES_HELP)
        self._add_arguments(features)
        add_features_arguments(features)
        self._subcommand_parsers[FEATURES] = features
        self._subcommand_method_arguments[FEATURES] = []
        # the subcommands action Lightning's call added (jsonargparse allows one per parser)
        subcommands = parser._subcommands_action
        assert subcommands is not None
        subcommands.add_subcommand(FEATURES, features, help=FEATURES_HELP)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument(
            "--test_after_fit",
            type=bool,
            default=True,
            help="after `fit`, run `test` on the best checkpoint (writes the TREC run file)",
        )

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        """The configured Trainer, plus plain progress lines when output goes to a file.

        A live bar prints nothing useful into a job log, so when stdout/stderr is not a
        terminal (and no progress bar was configured, and bars are not switched off) the
        Trainer gets :class:`~lightning_mlsr.training.callbacks.progress.ProgressLines` instead.
        """
        from lightning_mlsr.training.callbacks.progress import ProgressLines, wants_log_lines

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
        if "plugins" not in kwargs:
            kwargs["plugins"] = _with_atomic_checkpoints(trainer_config.get("plugins"))
        return super().instantiate_trainer(**kwargs)

    def instantiate_classes(self) -> None:
        if self.subcommand != FEATURES:
            return super().instantiate_classes()
        config = self.config[FEATURES]
        config.trainer.callbacks = None  # a fill trains and logs nothing
        config.trainer.logger = False
        self.config_init = self.parser.instantiate_classes(self.config)
        self.datamodule = self._get(self.config_init, "data")
        self.model = self._get(self.config_init, "model")
        self.datamodule.set_batch_inputs(self.model.batch_inputs())  # no Trainer runs setup

    def _run_subcommand(self, subcommand: str) -> None:
        if subcommand != FEATURES:
            return super()._run_subcommand(subcommand)
        config = self.config[FEATURES]
        fill(config.trainer, self.datamodule, config.rows)

    def before_instantiate_classes(self) -> None:
        """Refuse a configuration that would build a class from outside the package before
        anything is built (:func:`~lightning_mlsr.training.trusted_classes.check_run_config`)."""
        from lightning_mlsr.training.trusted_classes import check_run_config

        config = self.config[self.subcommand] if self.subcommand else self.config
        try:
            check_run_config(config.as_dict(), "the run's configuration (--config and overrides)")
        except UntrustedClassError as err:
            raise SystemExit(f"error: {err}") from err

    def _parse_ckpt_path(self) -> None:
        """Checks ``--ckpt_path`` before Lightning replaces the model config with its own.

        - ``--ckpt_path=last`` (fit) resumes from the newest intact ``last``/``on_exception``
          checkpoint under the run's root directory; a fit without ``--ckpt_path`` starts
          fresh (the run directories are versioned, so nothing is resumed by accident).
        - The file is loaded without running code from it, here and by Lightning (its
          ``weights_only`` is set to True; ``--weights_only=false`` is refused), and a damaged
          one is named.
        - Lightning's CLI builds the model from the checkpoint's own hyperparameters; when
          the config states model settings that differ from them, the run is refused with
          the differences listed, instead of evaluating or resuming another model than the
          config describes while the overrides are silently dropped.
        """
        subcommand = self.config.get("subcommand")
        if not subcommand:
            return
        config = self.config[subcommand]
        ckpt_path = config.get("ckpt_path")
        if ckpt_path == "last" and subcommand == "fit":
            roots = _run_roots(config.get("trainer"))
            found = newest_resumable(roots)
            if found is None:
                raise SystemExit(
                    "--ckpt_path=last: no intact last.ckpt or on_exception.ckpt under "
                    f"{', '.join(str(r) for r in roots)}; pass the checkpoint's path, or leave "
                    "--ckpt_path out to start a fresh fit"
                )
            print(f"--ckpt_path=last: resuming from {found}", flush=True)
            config["ckpt_path"] = ckpt_path = str(found)
        if config.get("weights_only") is False:
            raise SystemExit(
                f"{subcommand} --weights_only=false: refused, a checkpoint is loaded as data "
                "only (torch.load weights_only=True), never as a pickle that runs code"
            )
        if "weights_only" in config:  # Lightning's own load of the file, not only our check
            config["weights_only"] = True
        if not ckpt_path or ckpt_path in _SPECIAL_CKPT_PATHS:
            return
        try:
            checkpoint = load_checkpoint(ckpt_path)
        except (CheckpointError, FileNotFoundError) as err:
            raise SystemExit(f"--ckpt_path: {err}") from err
        hparams = dict(checkpoint.get("hyper_parameters") or {})
        try:
            check_checkpoint_hparams(hparams, str(ckpt_path))
        except UntrustedClassError as err:
            raise SystemExit(f"--ckpt_path: {err}") from err
        hparams.pop("_instantiator", None)
        if not hparams:
            return
        hparams = current_class_paths(hparams)
        if "_class_path" in hparams:
            hparams = {"class_path": hparams.pop("_class_path"), "dict_kwargs": hparams}
        stated = _flatten(config.get("model"))
        defaults = _flatten(self._subcommand_parsers[subcommand].get_defaults().get("model"))
        self.config = self.parser.parse_object({subcommand: {"model": hparams}}, self.config)
        saved = _flatten(self.config[subcommand].get("model"))
        differing = sorted(
            key
            for key in set(stated) | set(saved)
            if stated.get(key, _MISSING) != saved.get(key, _MISSING)
            and stated.get(key, _MISSING) != defaults.get(key, _MISSING)
        )
        if differing:
            lines = [
                f"  model.{key}: config {_show(stated.get(key, _MISSING))}, "
                f"checkpoint {_show(saved.get(key, _MISSING))}"
                for key in differing[:12]
            ]
            more = f"\n  ... and {len(differing) - 12} more" if len(differing) > 12 else ""
            hint = _run_config_hint(Path(ckpt_path))
            raise SystemExit(
                f"{subcommand} --ckpt_path={ckpt_path}: the checkpoint was trained with other "
                "model settings than the config states, and Lightning would build the "
                "checkpoint's model and ignore the config's:\n" + "\n".join(lines) + more + "\n"
                f"Use the config the checkpoint was trained with{hint}, or a checkpoint of this "
                "configuration."
            )

    def after_fit(self) -> None:
        config = self.config.get(self.subcommand, self.config)
        callback = self.trainer.checkpoint_callback
        best = getattr(callback, "best_model_path", "") if callback is not None else ""
        if config.get("test_after_fit", True) and not cast(Any, self.trainer).fast_dev_run:
            self.trainer.test(
                self.model, datamodule=self.datamodule, ckpt_path=best or None, weights_only=True
            )
        self._print_checkpoints()
        self._finish_logger_run()

    def _print_checkpoints(self) -> None:
        """Where the fit's checkpoints are, as the last lines of its output."""
        callback = self.trainer.checkpoint_callback
        if callback is None or cast(Any, self.trainer).fast_dev_run:
            return
        best = getattr(callback, "best_model_path", "")
        last = getattr(callback, "last_model_path", "")
        score = getattr(callback, "best_model_score", None)
        monitor = getattr(callback, "monitor", None)
        if best:
            shown = f" ({monitor} {float(score):.4f})" if score is not None and monitor else ""
            print(f"best checkpoint{shown}: {best}", flush=True)
        if last:
            print(f"last checkpoint: {last}", flush=True)

    def before_validate(self) -> None:
        self._evaluate_into_checkpoint_run()

    def before_test(self) -> None:
        self._evaluate_into_checkpoint_run()

    def before_predict(self) -> None:
        self._evaluate_into_checkpoint_run()

    def _evaluate_into_checkpoint_run(self) -> None:
        ckpt_path = self.config[self.subcommand].get("ckpt_path")
        if ckpt_path and ckpt_path not in _SPECIAL_CKPT_PATHS:
            target = evaluate_into_checkpoint_run(self.trainer, ckpt_path)
            if target is not None:
                print(f"{self.subcommand}: writing into {target}", flush=True)

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
    from lightning_mlsr.training.system.module import SparseBiEncoder

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
