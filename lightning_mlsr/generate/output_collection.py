"""What every generated collection shares: its output folders and its ``collection.json``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lightning_mlsr.data.collection.layout import read_defaults
from lightning_mlsr.data.collection.tables import Collection
from lightning_mlsr.io.atomic import atomic_write_text

__all__ = ["empty_output", "write_defaults"]


def empty_output(out: Path) -> None:
    """``out/images``, ``out/texts`` and ``out/qrels``, created or emptied."""
    for sub in ("images", "texts", "qrels"):
        (out / sub).mkdir(parents=True, exist_ok=True)
        for old in (out / sub).iterdir():
            old.unlink()


def write_defaults(collection: Collection, out: Path, suffix: str, **made: Any) -> None:
    """``out/collection.json``: the source's defaults (its shared folders dropped: the output
    has its own), named ``<source>+<suffix>``, with the fields and languages the source was
    read with and ``made`` (how the collection was generated)."""
    defaults = read_defaults(collection.root)
    defaults.pop("folders", None)
    defaults.update(
        name=f"{collection.name}+{suffix}",
        caption_fields=list(collection.caption_fields),
        caption_languages=(
            "all" if collection.caption_languages is None else list(collection.caption_languages)
        ),
        **made,
    )
    atomic_write_text(out / "collection.json", json.dumps(defaults, indent=2) + "\n")
