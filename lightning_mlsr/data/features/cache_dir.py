"""Where derived data (image features, content keys) is cached: ``$LIGHTNING_MLSR_CACHE``."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["default_cache_dir"]


def default_cache_dir() -> Path:
    """``$LIGHTNING_MLSR_CACHE`` or ``~/.cache/lightning_mlsr``."""
    env = os.environ.get("LIGHTNING_MLSR_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "lightning_mlsr"
