"""``python -m lightning_mlsr features --config experiments/<name>.yaml [--trainer.devices=8]``.

Fills the frozen image-feature cache of an experiment before its ``fit``: the image
backbone(s) the model reads with frozen features run on the ``trainer:`` config's
accelerator, devices and nodes (``--trainer.accelerator/devices/num_nodes/strategy``),
each process computing a disjoint share of the missing rows
(:func:`~lightning_mlsr.data.features.fill.fill_features`), under ``--trainer.precision``
(``bf16-mixed`` for bf16 on GPUs). DataLoader workers (``--data.batching.num_workers``) only
read and decode; ``--data.features.batch_size`` sets the images per forward pass. The same
``--config`` / ``--data.*`` / ``--model.*`` as ``fit`` apply, so the fill writes exactly the
cache the fit then reads. Interrupted, it keeps every finished shard; run it again to go on.

The processes are launched by Lightning Fabric from the ``trainer:`` settings (no Trainer,
callbacks or logger are built: nothing is trained or logged).
"""

from __future__ import annotations

import functools
import logging
import os
import time
import warnings
from typing import Any, Literal

import numpy as np

from lightning_mlsr.training.cli.trainer_cli import (
    BASE_CONFIG,
    MLSRCLI,
    PARSER_MODE,
    quiet_startup_noise,
)

__all__ = ["FeaturesCLI", "main"]

log = logging.getLogger("lightning_mlsr.data")

#: strategies whose launch and process group suit a fill (the model itself is not wrapped)
_LAUNCHERS = ("ddp", "ddp_spawn", "ddp_fork", "ddp_notebook")


class FeaturesCLI(MLSRCLI):
    """The fit's parser (base config, ``--config``, ``--trainer.*``, ``--data.*``,
    ``--model.*``) plus ``--rows``; builds the model and the DataModule, not a Trainer."""

    def add_arguments_to_parser(self, parser: Any) -> None:
        super().add_arguments_to_parser(parser)
        parser.add_argument(
            "--rows",
            type=Literal["run", "all"],
            default="run",
            help="which images: 'run' (those a fit of this config reads: the train pairs' "
            "images and the evaluation corpora) or 'all' (every image of the collection)",
        )

    def instantiate_classes(self) -> None:
        config = self.config
        config.trainer.callbacks = None  # a fill trains and logs nothing
        config.trainer.logger = False
        self.config_init = self.parser.instantiate_classes(config)
        self.datamodule = self._get(self.config_init, "data")
        self.model = self._get(self.config_init, "model")
        self.datamodule.set_batch_inputs(self.model.batch_inputs())  # no Trainer runs setup


def fabric_strategy(strategy: Any) -> str:
    """The Fabric launch for a Trainer ``strategy`` setting: DDP flavours keep their
    launcher (``ddp_spawn``, ``ddp_fork``, ...), sharding strategies become ``ddp`` (the
    frozen backbone is not sharded), anything else lets Fabric choose."""
    if not isinstance(strategy, str):
        return "auto"
    if strategy in _LAUNCHERS:
        return strategy
    if strategy.startswith(("ddp", "fsdp", "deepspeed")):
        return "ddp"
    return "auto"


def main(args: list[str] | None = None) -> None:
    """Entry point of ``python -m lightning_mlsr features``."""
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    quiet_startup_noise()
    # the subcommand's own arguments are passed explicitly (sys.argv also holds "features")
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
    from lightning.fabric import Fabric

    from lightning_mlsr.data.datamodule import RetrievalDataModule
    from lightning_mlsr.training.system.module import SparseBiEncoder

    cli = FeaturesCLI(
        SparseBiEncoder,
        RetrievalDataModule,
        args=args,
        run=False,
        auto_configure_optimizers=False,
        parser_kwargs={
            "default_config_files": [str(BASE_CONFIG)],
            "parser_mode": PARSER_MODE,
            "prog": "python -m lightning_mlsr features",
            "description": "Fill the frozen image-feature cache on the trainer's devices.",
        },
    )
    trainer = cli.config.trainer
    fabric = Fabric(
        accelerator=trainer.accelerator or "auto",
        devices=trainer.devices if trainer.devices is not None else "auto",
        num_nodes=trainer.num_nodes or 1,
        strategy=fabric_strategy(trainer.strategy),
        precision=trainer.precision,
    )
    fabric.launch(functools.partial(_fill, datamodule=cli.datamodule, rows=cli.config.rows))


def _fill(fabric: Any, datamodule: Any, rows: str) -> None:
    if not log.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
    which = None if rows == "run" else np.arange(len(datamodule.collection.images))
    start = time.perf_counter()
    reports = datamodule.fill_features(which, device=fabric.device, autocast=fabric.autocast)
    seconds = time.perf_counter() - start
    if not reports:
        fabric.print("this configuration reads no frozen image features: nothing to fill")
    for report in reports:
        fabric.print(
            f"filled {report.missing} missing image features with {report.world_size} "
            f"process(es) in {seconds:.1f} s ({report.missing / max(seconds, 1e-9):.1f} "
            "images/s overall)"
        )
