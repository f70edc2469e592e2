"""Test-session settings: offline W&B, and a private image-feature cache."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(autouse=True, scope="session")
def _feature_cache(tmp_path_factory: pytest.TempPathFactory):
    """Keep the test session's frozen image features out of the user's cache."""
    old = os.environ.get("LIGHTNING_MLSR_CACHE")
    os.environ["LIGHTNING_MLSR_CACHE"] = str(tmp_path_factory.mktemp("mlsr_cache"))
    yield
    if old is None:
        os.environ.pop("LIGHTNING_MLSR_CACHE", None)
    else:
        os.environ["LIGHTNING_MLSR_CACHE"] = old
