"""A run's configuration files: how the CLI reads them and where it saves the resolved one.

Every configuration (the base config, ``--config`` files, values given on the command line)
is read in :data:`PARSER_MODE`: YAML, with the class paths of moved modules replaced by their
new place (:func:`~lightning_mlsr.training.moved_classes.current_class_paths`), so a run's
``config.yaml`` saved before a move still builds. :class:`RunConfigCallback` saves the
resolved configuration into the run's own directory.
"""

from __future__ import annotations

import contextlib
from typing import Any, cast

import yaml
from jsonargparse import get_loader, set_loader
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.cli import LightningArgumentParser, SaveConfigCallback
from lightning.pytorch.loggers import Logger

from lightning_mlsr.training.moved_classes import current_class_paths
from lightning_mlsr.training.runs import run_dir

__all__ = ["PARSER_MODE", "RunConfigCallback"]

#: the parser mode of every configuration the CLI reads: YAML, with the class paths of
#: moved modules replaced by their new place (a run's ``config.yaml`` saved before a move)
PARSER_MODE = "lightning_mlsr"
set_loader(
    PARSER_MODE,
    lambda text: current_class_paths(get_loader("yaml")(text)),
    (yaml.YAMLError,),
)


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
