"""Where a collection's files are: the two on-disk layouts, ``collection.json`` defaults.

- **AToMiC layout** (what ``scripts/build_emoji_collection.py`` writes)::

      images/*.parquet   image_id, image, language, caption_* (list columns)
      texts/*.parquet    text_id, page_title, section_title, context_* ...
      qrels/*.trec       "text_id Q0 image_id rel", one file per split (train.trec, ...)
      qrels/*.parquet    text_id, image_id, rel (+ optional Q0, split)
      collection.json    optional defaults (name, query_fields, caption_fields, ...) and
                         ``folders``: any of the three taken from another collection

- **Hugging Face download layout**: a root holding ``AToMiC-Images-v0.2/data/*.parquet``,
  ``AToMiC-Texts-v0.2.1/data/*.parquet`` and ``AToMiC-Qrels-v0.2/data/*.parquet``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lightning_mlsr.data.errors import DataError, format_ids
from lightning_mlsr.data.features.cache_dir import default_cache_dir

__all__ = [
    "BUILT_ON_THIS_MACHINE",
    "BUNDLED_DIR",
    "UNUSABLE_IMAGES_FILE",
    "Layout",
    "built_collections_dir",
    "bundled_collections",
    "describe",
    "field_names",
    "find_layout",
    "languages",
    "read_defaults",
    "resolve_root",
]

BUNDLED_DIR = Path(__file__).resolve().parents[1] / "bundled"
#: written by ``python -m lightning_mlsr.data check``; later loads skip the ids it lists
UNUSABLE_IMAGES_FILE = "unusable_images.tsv"


#: Collections built on the user's machine from sources that may not be redistributed (the
#: GPL-2 Tux Paint stamps), with the command that builds each into :func:`built_collections_dir`.
BUILT_ON_THIS_MACHINE = {
    "stamps": "sudo apt-get install tuxpaint-stamps-default && python scripts/build_stamps.py",
}


def built_collections_dir() -> Path:
    """Where collections built on this machine live: ``$LIGHTNING_MLSR_CACHE/collections``."""
    return default_cache_dir() / "collections"


def bundled_collections() -> list[str]:
    """Names of the collections shipped inside the package."""
    if not BUNDLED_DIR.is_dir():
        return []
    return sorted(p.name for p in BUNDLED_DIR.iterdir() if (p / "collection.json").is_file())


@dataclass(frozen=True)
class Layout:
    kind: str
    image_files: list[Path]
    text_files: list[Path]
    qrels_files: list[Path]


def resolve_root(path_or_name: str | os.PathLike[str]) -> Path:
    path = Path(path_or_name).expanduser()
    if path.is_dir():
        return path.resolve()
    name = str(path_or_name)
    if name in bundled_collections():
        return BUNDLED_DIR / name
    if name in BUILT_ON_THIS_MACHINE:
        built = built_collections_dir() / name
        if (built / "collection.json").is_file():
            return built
        raise DataError(
            f"the collection {name!r} is built on this machine and is not built yet (looked in "
            f"{built}); build it with `{BUILT_ON_THIS_MACHINE[name]}` (DATA.md, '{name}')"
        )
    if path.exists():
        raise DataError(f"{path} is a file; give the directory that holds the collection")
    raise DataError(
        f"no collection at {str(path)!r}: it is neither a directory nor the name of a bundled "
        f"collection (bundled: {', '.join(bundled_collections()) or 'none'})"
    )


def _visible_parquet(folder: Path) -> list[Path]:
    """``*.parquet`` under ``folder``, recursively, skipping hidden folders (HF cache)."""
    return sorted(
        p
        for p in folder.rglob("*.parquet")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def _folders(root: Path) -> dict[str, Path]:
    """The AToMiC-layout folders, where ``collection.json``'s ``folders`` may point one at
    another collection's (``{"images": "../emoji/images"}``) so variants share files."""
    given = read_defaults(root).get("folders", {})
    where = f"{root / 'collection.json'}"
    if not isinstance(given, dict) or not set(given) <= {"images", "texts", "qrels"}:
        raise DataError(
            f"'folders' in {where} must map some of images, texts, qrels to paths, got {given!r}"
        )
    out = {d: root / d for d in ("images", "texts", "qrels")}
    for name, rel in given.items():
        if not isinstance(rel, str) or not (root / rel).is_dir():
            raise DataError(
                f"'folders' in {where} points {name} at {rel!r}, which is not a folder under "
                f"{root}; fix the path or rebuild the collection it shares files with"
            )
        out[name] = (root / rel).resolve()
    return out


def find_layout(root: Path) -> Layout:
    atomic = _folders(root)
    hf_dirs = {
        kind: sorted(p for p in root.glob(f"AToMiC-{kind}*") if p.is_dir())
        for kind in ("Images", "Texts", "Qrels")
    }
    if any(p.is_dir() for p in atomic.values()):
        missing = [f"{d}/" for d, p in atomic.items() if not p.is_dir()]
        if missing:
            raise DataError(
                f"{root} looks like an AToMiC-layout collection but has no {' or '.join(missing)} "
                f"folder; it needs images/*.parquet, texts/*.parquet and qrels/*.trec|*.parquet"
            )
        images = sorted(atomic["images"].glob("*.parquet"))
        texts = sorted(atomic["texts"].glob("*.parquet"))
        qrels = sorted(
            p
            for p in atomic["qrels"].iterdir()
            if p.suffix in (".trec", ".parquet") and p.is_file()
        )
        return Layout(
            "atomic",
            _nonempty(images, atomic["images"], "*.parquet"),
            _nonempty(texts, atomic["texts"], "*.parquet"),
            _nonempty(qrels, atomic["qrels"], "*.trec or *.parquet"),
        )
    if any(hf_dirs.values()):
        missing = [f"AToMiC-{kind}-*" for kind, dirs in hf_dirs.items() if not dirs]
        if missing:
            raise DataError(
                f"{root} looks like a Hugging Face AToMiC download but has no "
                f"{' or '.join(missing)} folder; it needs AToMiC-Images-*, AToMiC-Texts-* and "
                f"AToMiC-Qrels-* folders holding parquet files"
            )
        found = {}
        for kind, dirs in hf_dirs.items():
            if len(dirs) > 1:
                names = ", ".join(d.name for d in dirs)
                raise DataError(
                    f"{root} holds several AToMiC-{kind}-* folders ({names}); "
                    f"keep one version per collection root"
                )
            found[kind] = _nonempty(_visible_parquet(dirs[0]), dirs[0], "*.parquet")
        return Layout("huggingface", found["Images"], found["Texts"], found["Qrels"])
    entries = sorted(p.name + ("/" if p.is_dir() else "") for p in root.iterdir())
    raise DataError(
        f"{root} is not a recognised collection layout. Looked for images/, texts/ and qrels/ "
        f"folders (AToMiC layout) or AToMiC-Images-*/, AToMiC-Texts-*/ and AToMiC-Qrels-*/ "
        f"folders (Hugging Face download layout); found: {format_ids(entries) or 'nothing'}"
    )


def describe(files: list[Path]) -> str:
    return str(files[0]) if len(files) == 1 else f"{files[0].parent} ({len(files)} files)"


def _nonempty(files: list[Path], folder: Path, pattern: str) -> list[Path]:
    if not files:
        raise DataError(f"{folder} holds no {pattern} files")
    return files


def read_defaults(root: Path) -> dict[str, Any]:
    path = root / "collection.json"
    if not path.is_file():
        return {}
    try:
        defaults = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"{path} is not valid JSON ({err}); fix or delete it") from err
    if not isinstance(defaults, dict):
        raise DataError(f"{path} must hold a JSON object of collection defaults")
    return defaults


def field_names(value: Any, what: str, source: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = (value,)
    if (
        not isinstance(value, Sequence)
        or not value
        or not all(isinstance(v, str) and v for v in value)
    ):
        raise DataError(f"{what} from {source} must be a non-empty list of names, got {value!r}")
    return tuple(value)


def languages(value: Any, source: str) -> tuple[str, ...] | None:
    if value is None or value == "all":
        return None
    return field_names(value, "caption_languages", source)
