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

A subcommand of :class:`~lightning_mlsr.training.cli.trainer_cli.MLSRCLI`, which builds the
model and the DataModule for it but no Trainer (nothing is trained or logged); the processes
are launched by Lightning Fabric from the ``trainer:`` settings.
"""

from __future__ import annotations

import functools
import logging
import time
from typing import Any, Literal

import numpy as np

__all__ = ["FEATURES", "FEATURES_HELP", "add_features_arguments", "fabric_strategy", "fill"]

log = logging.getLogger("lightning_mlsr.data")

#: the subcommand's name and its one-line help
FEATURES = "features"
FEATURES_HELP = "Fill the frozen image-feature cache on the trainer's devices."

#: strategies whose launch and process group suit a fill (the model itself is not wrapped)
_LAUNCHERS = ("ddp", "ddp_spawn", "ddp_fork", "ddp_notebook")


def add_features_arguments(parser: Any) -> None:
    """The subcommand's own argument beside the fit's: ``--rows``."""
    parser.add_argument(
        "--rows",
        type=Literal["run", "all"],
        default="run",
        help="which images: 'run' (those a fit of this config reads: the train pairs' "
        "images and the evaluation corpora) or 'all' (every image of the collection)",
    )


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


def fill(trainer: Any, datamodule: Any, rows: str) -> None:
    """Fill ``datamodule``'s frozen image features (``rows``: ``"run"`` or ``"all"``) on the
    devices the ``trainer:`` settings name, one process per device."""
    from lightning.fabric import Fabric

    fabric = Fabric(
        accelerator=trainer.accelerator or "auto",
        devices=trainer.devices if trainer.devices is not None else "auto",
        num_nodes=trainer.num_nodes or 1,
        strategy=fabric_strategy(trainer.strategy),
        precision=trainer.precision,
    )
    fabric.launch(functools.partial(_fill, datamodule=datamodule, rows=rows))


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
