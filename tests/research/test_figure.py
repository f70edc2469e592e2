"""The report's opening figure: its numbers are the CI table's, and the same runs give the
same file."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from research.report.figures import main_figure_rows, write_main_figure
from research.report.records import load_runs
from research.report.registry_file import load_registry
from research.report.tables import ci_table

RESULTS = Path(__file__).resolve().parents[2] / "results"


def test_the_figure_shows_the_ci_tables_numbers_and_rebuilds_byte_for_byte(
    tmp_path: Path,
) -> None:
    registry = load_registry(RESULTS)
    runs = load_runs(registry.runs_dir)
    rows = main_figure_rows(registry, runs)
    names = [n for n in registry.figure["models"] if n in runs]
    assert [r["label"] for r in rows] == [registry.label(n) for n in names]
    table = {
        line.split(" | ")[0].strip("| "): line for line in ci_table(registry, runs, "test", [])
    }
    for row in rows:
        cells = table[row["label"]].split(" | ")
        assert cells[2] == (
            "–" if row["seeds"] is None else str(row["seeds"])
        )  # model | backbone | seeds | all | CI
        assert cells[3] == f"{row['estimate']:.4f}"
        assert cells[4] == f"[{row['ci'][0]:.4f}, {row['ci'][1]:.4f}]"
    dense = [r for r in rows if r["dense"]]
    assert dense and all(r["backbone"] == "MiniLM-L6" for r in dense)
    first, second = tmp_path / "a.png", tmp_path / "b.png"
    write_main_figure(first, rows, "t")
    write_main_figure(second, rows, "t")
    assert first.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert first.read_bytes() == second.read_bytes()
    assert np.isfinite([r["estimate"] for r in rows]).all()
