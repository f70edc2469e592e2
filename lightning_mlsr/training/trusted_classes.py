"""Which classes a file may ask the package to build: an allow-list, checked before anything
is imported.

A model folder's ``lightning_mlsr.json`` and a checkpoint's hyperparameters name classes by
``class_path``; building them imports a module and calls what it names. Folders and
checkpoints are shared and downloaded, so those names are resolved against the package's own
classes only, never imported: a registered head (:data:`~lightning_mlsr.models.HEADS`), and
for a checkpoint of the training module also the package's losses, regularizers and
distillation losses, its dense teacher, and torch's optimizers. Anything else is refused with
the file and the key that named it. (An experiment YAML a user runs is their own code and is
not checked here.)
"""

from __future__ import annotations

import functools
import inspect
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

__all__ = [
    "UntrustedClassError",
    "check_checkpoint_hparams",
    "check_head_config",
    "head_class",
]

#: the training module's own class and Lightning's instantiator, as a LightningCLI checkpoint
#: records them (``_class_path``, ``_instantiator``)
_MODULE_CLASS_PATH = "lightning_mlsr.training.module.SparseBiEncoder"
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


def _check(value: Any, allowed: Mapping[str, type], source: str, key: str, what: str) -> None:
    if isinstance(value, Mapping):
        if "class_path" in value:
            _resolve(value["class_path"], allowed, source, f"{key}.class_path", what)
        for name, item in value.items():
            if name != "class_path":
                _check(item, allowed, source, f"{key}.{name}" if key else str(name), what)
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _check(item, allowed, source, f"{key}[{i}]", what)


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
    module_path = hparams.get("_class_path")
    if module_path is not None and module_path != _MODULE_CLASS_PATH:
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
