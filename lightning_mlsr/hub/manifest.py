"""What an exported folder's manifest (``lightning_mlsr.json``) records, and the check that
every file it pins is there, unchanged.

The manifest holds the sha256 of every file of the folder but itself and the model card, so
a ``config.json`` edited to another depth is refused instead of loading with other vectors.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

__all__ = [
    "EXTRA_WEIGHTS",
    "FORMAT",
    "MANIFEST",
    "VERSION",
    "ExportError",
    "file_hashes",
    "verify_files",
]

MANIFEST = "lightning_mlsr.json"
EXTRA_WEIGHTS = "lightning_mlsr_head.safetensors"
FORMAT = "lightning_mlsr-encoder"
VERSION = 1
#: files of a folder its manifest does not pin: the manifest itself and the model card
_UNPINNED = (MANIFEST, "README.md")


class ExportError(ValueError):
    """A head (or folder) this module cannot write (or read)."""


def file_hashes(folder: Path) -> dict[str, str]:
    """``relative path -> sha256`` of every file in ``folder`` but its manifests and card."""
    return {
        path.relative_to(folder).as_posix(): _sha256(path)
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name not in _UNPINNED
    }


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_files(folder: Path, manifest: dict[str, Any], manifest_file: Path) -> None:
    """Every file the manifest pins is there, unchanged (folders exported before the hashes
    were recorded have none to check)."""
    pinned = manifest.get("sha256") or {}
    if not isinstance(pinned, dict):
        raise ExportError(f"{str(manifest_file)!r}: sha256 is not a mapping of file -> hash")
    for name, expected in pinned.items():
        path = (folder / str(name)).resolve()
        if not path.is_relative_to(folder):
            raise ExportError(f"{str(manifest_file)!r}: sha256 names {name!r}, outside the folder")
        if not path.is_file():
            raise ExportError(
                f"{str(path)!r} is missing: {MANIFEST} lists it as part of the export. Copy or "
                "download the whole folder again"
            )
        if _sha256(path) != expected:
            raise ExportError(
                f"{str(path)!r} is not the file that was exported (its sha256 differs from the "
                f"one {MANIFEST} records): it was edited or damaged since. Restore the "
                "exported file (download or copy the folder again, or re-export the checkpoint)"
            )
