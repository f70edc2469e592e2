"""Test-session settings: offline W&B, the test suite's own probe callbacks allowed in run
configurations, a private image-feature cache, and the stamps collection built once per
session where its Debian package is installed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# the suite's probes (tests/probes.py and callbacks defined in test modules) are named in CLI
# overrides; the person running pytest allows them as a user allows their own module
os.environ.setdefault("LIGHTNING_MLSR_ALLOW_CLASSES", "tests")

STAMPS_DIR = Path("/usr/share/tuxpaint/stamps")


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


@pytest.fixture(scope="session")
def stamps_collection(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The stamps collection built from the installed Debian package by
    ``scripts/build_stamps.py`` (DATA.md), once per session; skipped without the package."""
    if not STAMPS_DIR.is_dir():
        pytest.skip(
            f"the Debian package tuxpaint-stamps-default is not installed ({STAMPS_DIR} is "
            "missing): sudo apt-get install tuxpaint-stamps-default"
        )
    out = tmp_path_factory.mktemp("stamps") / "stamps"
    script = Path(__file__).resolve().parents[1] / "scripts" / "build_stamps.py"
    subprocess.run([sys.executable, str(script), f"--out={out}"], check=True, timeout=600)
    return out
