"""Class paths that moved: what a run's ``config.yaml`` or a checkpoint saved before a move
names still builds.

A saved run configuration names its callbacks and logger by ``class_path`` (say
``lightning_mlsr.training.evaluator.RetrievalEvaluator``), and a checkpoint may name the
training module. When a module moves, :data:`MOVED_MODULES` says where to; the CLI reads
every configuration through :func:`current_class_paths`, and the allow-list
(:mod:`~lightning_mlsr.training.trusted_classes`) resolves the names it checks with
:func:`current_class_path`. Nothing is left at the old place: the old names are only
translated here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["MOVED_MODULES", "current_class_path", "current_class_paths"]

#: old module -> the module that holds its classes now (class names are unchanged)
MOVED_MODULES: dict[str, str] = {
    **{
        f"lightning_mlsr.training.{name}": f"lightning_mlsr.training.system.{name}"
        for name in ("module", "optimization", "teacher_checkpoint")
    },
    **{
        f"lightning_mlsr.training.{name}": f"lightning_mlsr.training.callbacks.{name}"
        for name in (
            "evaluator",
            "gather",
            "vector_writer",
            "checkpointing",
            "fault_tolerance",
            "progress",
            "wandb_panels",
            "loggers",
        )
    },
    "lightning_mlsr.training.features_cli": "lightning_mlsr.training.cli.features",
}


def current_class_path(name: Any) -> Any:
    """``name`` with a moved module replaced by its new place (anything else unchanged):
    ``lightning_mlsr.training.evaluator.RetrievalEvaluator`` ->
    ``lightning_mlsr.training.callbacks.evaluator.RetrievalEvaluator``."""
    if not isinstance(name, str):
        return name
    module, _, attribute = name.rpartition(".")
    if module in MOVED_MODULES:
        return f"{MOVED_MODULES[module]}.{attribute}"
    return name


def current_class_paths(value: Any) -> Any:
    """A loaded configuration (dicts, lists, strings) with every moved ``class_path`` (and
    a moved name given alone, as a command-line value) replaced by its new place."""
    if isinstance(value, str):
        return current_class_path(value)
    if isinstance(value, Mapping):
        return {
            key: current_class_path(item) if key == "class_path" else current_class_paths(item)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [current_class_paths(item) for item in value]
    return value
