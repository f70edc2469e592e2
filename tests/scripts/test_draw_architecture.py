"""The README's architecture figure names only what the source defines, and is committed."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "scripts" / "draw_architecture.py"


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("draw_architecture", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def test_every_name_in_the_figure_is_defined_in_the_source() -> None:
    script = _script()
    assert script.check_references() == []
    spec = script.figure()
    shown = "\n".join(
        [*(t for b in spec.boxes for t in (b.title, b.where, *b.lines))]
        + [a.label for a in spec.arrows]
        + [band[-1] for band in spec.bands]
    )
    for _, name in script.REFERENCES:
        assert name in shown, f"{name!r} is checked but not drawn"
    # and the other way round: every class-like name drawn (two capitals and a lower-case
    # letter: SparseBiEncoder, MLPHead) is checked, but for torch's optimizer
    drawn = set(re.findall(r"\b(?=\w*[a-z])(?=\w*[A-Z]\w*[A-Z])[A-Z]\w*", shown))
    checked = {name for _, name in script.REFERENCES}
    assert drawn - checked == {"AdamW"}


def test_the_check_reports_a_renamed_class(tmp_path: Path) -> None:
    script = _script()
    for rel, _ in script.REFERENCES:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("class Something:\n    pass\n")
    problems = script.check_references(tmp_path)
    assert any("'SparseBiEncoder'" in p for p in problems)
    assert not any("no such file" in p for p in problems)


def test_the_figure_is_committed_and_linked() -> None:
    assert (REPO_ROOT / "docs" / "figures" / "architecture.png").stat().st_size > 10_000
    assert "docs/figures/architecture.png" in (REPO_ROOT / "README.md").read_text("utf-8")
