"""The text backbone of every reported model: the registry's ``backbones`` section, read into
typed records, so that every table can say which encoder a number comes from."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Backbone", "read_backbones"]


@dataclass(frozen=True)
class Backbone:
    """A text backbone as the report names it (the figures are checked against the models
    by the tests)."""

    key: str  # the backbone alias the experiments use (``splade-tiny``, ``minilm-l6``)
    name: str
    layers: int
    hidden: int
    parameters: float  # millions, embeddings included
    source: str

    @property
    def cell(self) -> str:
        """The table cell: ``SPLADE-tiny (2L/128, 4.4M)``."""
        return f"{self.name} ({self.layers}L/{self.hidden}, {self.parameters:.1f}M)"


def read_backbones(
    spec: Mapping[str, Any], where: str, error: type[Exception]
) -> tuple[dict[str, Backbone], str]:
    """The ``backbones`` section: ``default`` (the backbone of a model that names none) and
    one entry per backbone. Raises ``error`` naming the key for anything malformed."""
    allowed = {"name", "layers", "hidden", "parameters", "source"}
    default = spec.get("default")
    out: dict[str, Backbone] = {}
    for key, entry in spec.items():
        if key == "default":
            continue
        at = f"{where}: backbones.{key}"
        if not isinstance(entry, Mapping) or set(entry) != allowed:
            raise error(f"{at}: expected exactly the keys {sorted(allowed)}")
        try:
            out[str(key)] = Backbone(
                key=str(key),
                name=str(entry["name"]),
                layers=int(entry["layers"]),
                hidden=int(entry["hidden"]),
                parameters=float(entry["parameters"]),
                source=str(entry["source"]),
            )
        except (TypeError, ValueError) as err:
            raise error(f"{at}: layers, hidden and parameters must be numbers ({err})") from None
    if default not in out:
        raise error(f"{where}: backbones.default must name one of {sorted(out)}, got {default!r}")
    return out, str(default)
