"""Which classes a file may ask the package to build: an allow-list, checked before anything
is imported.

A model folder's ``lightning_mlsr.json`` and a checkpoint's hyperparameters name classes by
``class_path``; building them imports a module and calls what it names. Folders and
checkpoints are shared and downloaded, so those names are resolved against the package's own
classes only, never imported: a registered head (:data:`~lightning_mlsr.models.HEADS`), and
for a checkpoint of the training module also the package's losses, regularizers and
distillation losses, its dense teacher, and torch's optimizers. Anything else is refused with
the file and the key that named it. A run's configuration (experiment YAMLs, overrides) may
name the package's classes, torch's optimizers and Lightning's trainer parts; anything else
only when the person running the command allows its module in the environment
(:func:`check_run_config`).
"""

from __future__ import annotations

import functools
import inspect
import os
from collections.abc import Iterable, Mapping
from types import ModuleType
from typing import Any

import torch
from torch import nn

import lightning_mlsr.models as models
import lightning_mlsr.objectives as objectives
from lightning_mlsr.models.encoder import Encoder
from lightning_mlsr.models.registry import HEADS
from lightning_mlsr.models.teacher import DenseTeacher
from lightning_mlsr.objectives import distillation, ranking, regularizers
from lightning_mlsr.training.moved_classes import current_class_path

__all__ = [
    "UntrustedClassError",
    "ALLOW_ENV",
    "check_checkpoint_hparams",
    "check_run_config",
    "check_head_config",
    "head_class",
]

#: the training module's own class and Lightning's instantiator, as a LightningCLI checkpoint
#: records them (``_class_path``, ``_instantiator``)
_MODULE_CLASS_PATH = "lightning_mlsr.training.system.module.SparseBiEncoder"
_INSTANTIATORS = (
    "lightning.pytorch.cli.instantiate_module",
    "pytorch_lightning.cli.instantiate_module",
)
#: hyperparameters of the training module typed as a callable: jsonargparse imports a plain
#: dotted string given there as well as a ``class_path``
_CALLABLE_KEYS = ("optimizer",)


class UntrustedClassError(ValueError):
    """A folder or checkpoint names a class (or function) the package does not build."""


def _names(classes: Iterable[type], namespaces: Iterable[ModuleType]) -> dict[str, type]:
    """Every dotted name a config may give one of ``classes`` by: its defining module and
    qualname, and any of ``namespaces`` that re-exports it."""
    classes = set(classes)
    names = {f"{c.__module__}.{c.__qualname__}": c for c in classes}
    for namespace in namespaces:
        for attribute, value in vars(namespace).items():
            if isinstance(value, type) and value in classes:
                names[f"{namespace.__name__}.{attribute}"] = value
    return names


def _heads() -> dict[str, type]:
    # not cached: heads registered after the first call (a user's own) count as well
    return _names(HEADS.values(), (models,))


@functools.cache
def _training_classes() -> dict[str, type]:
    own = [
        value
        for module in (ranking, regularizers, distillation)
        for value in vars(module).values()
        if inspect.isclass(value)
        and issubclass(value, nn.Module)
        and value.__module__ == module.__name__
    ]
    optimizers = [
        value
        for value in vars(torch.optim).values()
        if inspect.isclass(value) and issubclass(value, torch.optim.Optimizer)
    ]
    return _names([*own, DenseTeacher, *optimizers], (objectives, models, torch.optim))


def _resolve(name: Any, allowed: Mapping[str, type], source: str, key: str, what: str) -> type:
    if isinstance(name, str) and name in allowed:
        return allowed[name]
    if isinstance(name, str) and "." not in name:  # a bare class name, as jsonargparse takes
        matches = {c for c in allowed.values() if c.__name__ == name}
        if len(matches) == 1:
            return matches.pop()
    shortest: dict[type, str] = {}
    for dotted, cls in sorted(allowed.items(), key=lambda item: (len(item[0]), item[0])):
        shortest.setdefault(cls, dotted)
    raise UntrustedClassError(
        f"{source}: {key} names {name!r}, which is not {what}; refusing to import or call it "
        "(only the package's own classes are built from a folder or checkpoint). If you wrote "
        "this file yourself, name one of: " + ", ".join(sorted(shortest.values()))
    )


def head_class(class_path: Any, source: str, key: str = "class_path") -> type[Encoder]:
    """The registered head named by ``class_path`` (its module and class name, a re-export
    such as ``lightning_mlsr.models.MLMHead``, or a bare class name); nothing is imported.

    Raises:
        UntrustedClassError: anything else, naming ``source`` and ``key``.
    """
    cls = _resolve(class_path, _heads(), source, key, "a registered lightning_mlsr head")
    return cls  # type: ignore[return-value]


def _config_class_paths(value: Any, key: str = "") -> Iterable[tuple[str, Any]]:
    if isinstance(value, Mapping):
        if "class_path" in value:
            yield f"{key}.class_path" if key else "class_path", value["class_path"]
        for name, item in value.items():
            if name != "class_path":
                yield from _config_class_paths(item, f"{key}.{name}" if key else str(name))
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            yield from _config_class_paths(item, f"{key}[{i}]")


def _check(value: Any, allowed: Mapping[str, type], source: str, key: str, what: str) -> None:
    for at, class_path in _config_class_paths(value, key):
        _resolve(class_path, allowed, source, at, what)


def check_head_config(config: Any, source: str, key: str) -> None:
    """Refuse a head configuration (``{class_path, init_args}``, nested heads included) that
    names anything but registered heads."""
    _check(config, _heads(), source, key, "a registered lightning_mlsr head")


def check_checkpoint_hparams(hparams: Mapping[str, Any], source: str) -> None:
    """Refuse a training checkpoint's ``hyper_parameters`` when they name a class or function
    other than the package's heads, losses, regularizers, distillation losses and teacher, or
    torch's optimizers (before jsonargparse or Lightning would import it)."""
    allowed = {**_heads(), **_training_classes()}
    what = "a lightning_mlsr head, loss, regularizer or teacher, or a torch optimizer"
    module_path = hparams.get("_class_path")  # as saved: before or after a move
    if module_path is not None and current_class_path(module_path) != _MODULE_CLASS_PATH:
        raise UntrustedClassError(
            f"{source}: hyper_parameters._class_path names {module_path!r}, not "
            f"{_MODULE_CLASS_PATH}; refusing to build it. Load only checkpoints written by "
            "`python -m lightning_mlsr fit`"
        )
    instantiator = hparams.get("_instantiator")
    if instantiator is not None and instantiator not in _INSTANTIATORS:
        raise UntrustedClassError(
            f"{source}: hyper_parameters._instantiator names {instantiator!r}, not Lightning's "
            "own; refusing to import or call it"
        )
    for name in _CALLABLE_KEYS:
        if isinstance(hparams.get(name), str):
            _resolve(hparams[name], allowed, source, f"hyper_parameters.{name}", what)
    _check(
        {k: v for k, v in hparams.items() if k not in ("_class_path", "_instantiator")},
        allowed,
        source,
        "hyper_parameters",
        what,
    )


#: where the classes of a parsed run configuration may come from without asking: the package
#: itself, torch's optimizers and schedulers, and Lightning's own trainer parts
_CONFIG_PREFIXES = (
    "lightning_mlsr.",
    "torch.optim.",
    "lightning.pytorch.",
    "lightning.fabric.",
)
#: module prefixes the person running the command trusts beyond those (comma-separated); read
#: from the environment, never from a config file, so that a file cannot widen its own rights
ALLOW_ENV = "LIGHTNING_MLSR_ALLOW_CLASSES"


def check_run_config(config: Mapping[str, Any], source: str) -> None:
    """Refuse a parsed run configuration (experiment YAMLs and command-line overrides) that
    would build a class from outside the package, torch's optimizers and Lightning, before
    anything is built. A user's own module is allowed by naming its prefix in the
    ``LIGHTNING_MLSR_ALLOW_CLASSES`` environment variable.

    Raises:
        UntrustedClassError: naming the key, the class and the variable to set.
    """
    extra = tuple(p.strip() for p in os.environ.get(ALLOW_ENV, "").split(",") if p.strip())
    prefixes = _CONFIG_PREFIXES + tuple(p if p.endswith(".") else f"{p}." for p in extra)
    for key, class_path in _config_class_paths(config):
        if not isinstance(class_path, str) or not class_path.startswith(prefixes):
            raise UntrustedClassError(
                f"{source}: {key} names {class_path!r}, which is neither lightning_mlsr's, "
                "torch.optim's nor Lightning's; refusing to build it. If it is your own code, "
                f"allow its module by name: {ALLOW_ENV}={str(class_path).rsplit('.', 1)[0]}"
            )
