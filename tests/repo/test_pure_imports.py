"""Pure modules import no Lightning (and the numeric ones no torch), checked in a fresh process.

The model parts (heads, losses, regularizers), search, metrics, run files, encoding,
analysis and the baselines are plain Python, usable from notebooks and other trainers; only
the module, the DataModule, the callbacks and the CLI may import Lightning. Every submodule
of a listed package is checked, so a new file is covered without editing this list.
"""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys

import pytest

#: package or module -> top-level modules it must not pull in
PURE = {
    "lightning_mlsr.models": ("lightning", "pytorch_lightning"),
    "lightning_mlsr.objectives.ranking": ("lightning", "pytorch_lightning"),
    "lightning_mlsr.objectives.distillation": ("lightning", "pytorch_lightning"),
    "lightning_mlsr.objectives.regularizers": ("lightning", "pytorch_lightning"),
    "lightning_mlsr.retrieval.batch_encoding": ("lightning", "pytorch_lightning"),
    "lightning_mlsr.retrieval.evaluation": ("torch", "lightning", "pytorch_lightning"),
    "lightning_mlsr.baselines": ("lightning", "pytorch_lightning"),
    "lightning_mlsr.retrieval.index": ("torch", "lightning", "pytorch_lightning"),
    "lightning_mlsr.retrieval.metrics": ("torch", "lightning", "pytorch_lightning"),
    "lightning_mlsr.retrieval.trec": ("torch", "lightning", "pytorch_lightning"),
    "lightning_mlsr.io.atomic": ("torch", "lightning", "pytorch_lightning"),
    "lightning_mlsr.io.checkpoints": ("lightning", "pytorch_lightning"),
    "lightning_mlsr.analysis": ("torch", "lightning", "pytorch_lightning", "matplotlib"),
    "lightning_mlsr.analysis.plots": ("torch", "lightning", "pytorch_lightning", "matplotlib"),
}


def _modules(name: str) -> list[str]:
    """``name`` and, for a package, every module below it."""
    module = importlib.import_module(name)
    if not hasattr(module, "__path__"):
        return [name]
    return [name] + [m.name for m in pkgutil.walk_packages(module.__path__, prefix=f"{name}.")]


@pytest.mark.parametrize("package", sorted(PURE))
def test_pure_module_imports_no_lightning(package: str) -> None:
    modules = [m for m in _modules(package) if not m.endswith(".__main__")]
    # one fresh interpreter per package; checking after every import names the first
    # module that pulls a forbidden one in (sys.modules only grows)
    script = (
        "import importlib, sys\n"
        "modules, forbidden = sys.argv[1].split(','), set(sys.argv[2].split(','))\n"
        "for name in modules:\n"
        "    importlib.import_module(name)\n"
        "    bad = sorted(forbidden & set(sys.modules))\n"
        "    assert not bad, f'{name} imports {bad}'\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, ",".join(modules), ",".join(PURE[package])],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_the_lists_reach_the_submodules() -> None:
    """The lists above cover the new packages' files (a typo would silently check nothing)."""
    found = {m for package in PURE for m in _modules(package)}
    for expected in (
        "lightning_mlsr.retrieval.index.topk_kernel",
        "lightning_mlsr.retrieval.index.inverted",
        "lightning_mlsr.retrieval.index.seismic",
        "lightning_mlsr.retrieval.index.dense",
        "lightning_mlsr.analysis.coactivation",
        "lightning_mlsr.models.dense",
        "lightning_mlsr.baselines.splade",
    ):
        assert expected in found
