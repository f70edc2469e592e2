"""The registry of encoder heads, filled by :func:`register_head` (as timm's
``@register_model``): a head class registers itself where it is defined, and
:func:`list_heads` drives the contract test over every one of them.

YAML configs name a head by ``class_path``; the short names are for tests and tooling.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from lightning_mlsr.models.encoder import Encoder

__all__ = ["HEADS", "list_heads", "register_head"]

HEADS: dict[str, type[Encoder]] = {}
"""Short name -> head class, for every registered sparse and dense head."""

E = TypeVar("E", bound=type[Encoder])


def register_head(name: str) -> Callable[[E], E]:
    """Class decorator: add the head to :data:`HEADS` under ``name``."""

    def register(cls: E) -> E:
        if name in HEADS and HEADS[name] is not cls:
            raise ValueError(
                f"head name {name!r} is taken by {HEADS[name].__qualname__}; register "
                f"{cls.__qualname__} under another name"
            )
        HEADS[name] = cls
        return cls

    return register


def list_heads(kind: type[Encoder] = Encoder) -> list[str]:
    """Sorted names of the registered heads that are subclasses of ``kind``."""
    return sorted(name for name, cls in HEADS.items() if issubclass(cls, kind))
