"""RESULTS.md rebuilt from the committed runs exactly, written whole under the runs
folder's lock, and the report text it is worded by."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from research.report.builder import DATE_LINE, build_report, write_report
from research.report.records import write_json
from research.report.registry_file import load_registry
from research.report.text import ReportText
from tests.research.helpers import (
    REPO,
)


@pytest.mark.parametrize("folder", ["results", "results/emoji-describe"])
def test_results_md_is_rebuilt_from_the_committed_runs_exactly_but_its_date(folder: str) -> None:
    """The oracle: the committed results folder alone (no work folder, no pseudo-query
    collections) renders its committed RESULTS.md byte for byte, the date line aside."""
    registry = load_registry(REPO / folder)
    want = registry.report_path.read_text("utf-8").split("\n")
    got = build_report(registry).split("\n")
    assert len(got) == len(want)
    differ = [i for i, (g, w) in enumerate(zip(got, want, strict=True)) if g != w]
    assert all(got[i].startswith(DATE_LINE) and want[i].startswith(DATE_LINE) for i in differ)
    assert len(differ) <= 1


def test_write_report_replaces_the_old_report_whole_or_not_at_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two lanes of ``report run`` rebuild RESULTS.md as each run finishes: a writer that
    dies half-way leaves the old report whole, one that finishes replaces it and leaves
    the report alone in its folder."""
    registry = load_registry(REPO / "results" / "emoji-describe")
    out = tmp_path / "RESULTS.md"
    out.write_text("a stale report\n")

    def dies_before_the_rename(fd: int) -> None:  # the text is in the temporary file
        raise OSError("disk full")

    with monkeypatch.context() as patch:
        patch.setattr(os, "fsync", dies_before_the_rename)
        with pytest.raises(OSError, match="disk full"):
            write_report(out, registry)
    assert out.read_text() == "a stale report\n"
    assert [p.name for p in tmp_path.iterdir()] == ["RESULTS.md"]

    written = write_report(out, registry)
    assert out.read_text() == written
    rebuilt = build_report(registry).split("\n")
    assert [a for a, b in zip(written.split("\n"), rebuilt, strict=True) if a != b] in (
        [],
        [line for line in written.split("\n") if line.startswith(DATE_LINE)],
    )
    assert [p.name for p in tmp_path.iterdir()] == ["RESULTS.md"]


@pytest.mark.skipif(os.name != "posix", reason="the report lock is an fcntl lock")
def test_the_report_written_last_is_the_one_read_last(tmp_path: Path) -> None:
    """Two lanes: one renders while the other's run lands. The writer waits for the lock
    the rendering lane holds on the runs folder and reads the runs only once it has it,
    so the report it leaves holds the run that landed meanwhile (before the lock, the
    lane that started first could overwrite the newer report with its older one)."""
    import fcntl
    import threading

    registry = load_registry(REPO / "results" / "emoji-describe")
    runs = tmp_path / "runs"
    shutil.copytree(registry.runs_dir, runs)
    late = runs / "dense_image_epochs80"
    aside = tmp_path / "dense_image_epochs80"
    late.rename(aside)
    out = tmp_path / "RESULTS.md"
    errors: list[BaseException] = []

    def lane() -> None:
        try:
            write_report(out, registry, runs)
        except BaseException as error:  # handed to the test thread
            errors.append(error)

    held = os.open(runs, os.O_RDONLY)
    fcntl.flock(held, fcntl.LOCK_EX)  # the other lane is rendering
    writer = threading.Thread(target=lane)
    writer.start()
    writer.join(timeout=1.0)
    assert writer.is_alive() and not out.exists()
    aside.rename(late)  # the other lane's run lands
    os.close(held)
    writer.join(timeout=600)
    assert not writer.is_alive() and not errors
    report = out.read_text()
    label = registry.label("dense_image_epochs80")  # marked †: its schedule was test-informed
    assert any(line.startswith(f"| {label} | ") and "| 3 |" in line for line in report.split("\n"))
    unfinished = [line.partition("Not finished yet")[2] for line in report.split("\n")]
    assert not any("dense image, 80 epochs" in line for line in unfinished)
    assert [p.name for p in tmp_path.iterdir() if p.is_file()] == ["RESULTS.md"]


def test_write_json_leaves_one_whole_file_ending_in_a_newline(tmp_path: Path) -> None:
    path = tmp_path / "seed42" / "metrics.json"
    record = {"test": {"nDCG@10": np.float32(0.25)}, "seed": 42}
    write_json(path, record)
    text = path.read_text()
    assert text.endswith("}\n") and text.count("\n}") == 1
    assert json.loads(text) == {"seed": 42, "test": {"nDCG@10": 0.25}}
    assert [p.name for p in path.parent.iterdir()] == ["metrics.json"]


def test_report_text_joins_wrapped_paragraphs_and_names_missing_fields(tmp_path: Path) -> None:
    path = tmp_path / "text.md"
    path.write_text(
        "ignored preamble\n<!-- a -->\n  first {x:.2f}\nwrapped\n\nsecond\n<!-- b -->\nplain\n"
    )
    text = ReportText.read(path)
    assert text("a", x=1.0) == "  first 1.00 wrapped\n\nsecond"
    assert text.lines("a", x=2) == ["  first 2.00 wrapped", "", "second"]
    with pytest.raises(KeyError, match="snippet 'a' needs the field 'x'"):
        text("a")
    with pytest.raises(KeyError, match="has no snippet 'c'"):
        text("c")


def test_incomplete_names_the_final_experiments_without_runs_and_only_those(
    tmp_path: Path,
) -> None:
    """A final experiment whose runs are missing makes the report say so, by its label; an
    experiment that is registered but not declared final (a design withdrawn before any test
    number, as D2S/D2S · MiniLM on emoji) never runs on test and is not missing."""
    registry = load_registry(REPO / "results" / "emoji-describe")
    runs = tmp_path / "runs"
    shutil.copytree(registry.runs_dir, runs)
    shutil.rmtree(runs / "dense_image_epochs80")
    label = registry.experiments["dense_image_epochs80"].label
    lines = build_report(registry, runs).split("\n")
    incomplete = [line for line in lines if line.startswith("**Incomplete:**")]
    assert len(incomplete) == 1 and label in incomplete[0]

    withdrawn = dataclasses.replace(
        registry, final=tuple(n for n in registry.final if n != "dense_image_epochs80")
    )
    lines = build_report(withdrawn, runs).split("\n")
    assert not any(line.startswith("**Incomplete:**") for line in lines)

    # a final experiment whose only run has no test numbers (it ran on validation before it
    # was declared) is named too, saying so
    for metrics in (runs / "dense_caption").glob("seed*/metrics.json"):
        record = json.loads(metrics.read_text())
        del record["test"]
        metrics.write_text(json.dumps(record))
    lines = build_report(withdrawn, runs).split("\n")
    incomplete = [line for line in lines if line.startswith("**Incomplete:**")]
    dense = registry.experiments["dense_caption"].label
    assert len(incomplete) == 1 and f"{dense} (validation only: run it again)" in incomplete[0]
