"""The report's cost section and figure come from a committed bench_query_cost.py JSON: every
cell is that file's figure, nothing is timed when the report is built, and a missing or
foreign file is an error naming it."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from research.report.costs import (
    cost_section,
    load_later_costs,
    load_query_cost,
    write_cost_figure,
)
from research.report.registry_file import load_registry
from research.report.text import ReportText
from tests.research.helpers import REPO


def _row(name: str, ndcg: float, e2e: float, postings: float | None) -> dict:
    span = {"p50": e2e, "p95": 2 * e2e}
    return {
        "name": name,
        "backbone": "splade-tiny (4.4M params)" if postings else "minilm-l6 (22.6M params)",
        "search_kind": "exact inverted index" if postings else "faiss IndexFlatIP",
        "ndcg10": ndcg,
        "encode_cpu_ms": {"p50": e2e - 0.25, "p95": 2 * e2e - 0.5},
        "search_cpu_ms": {"p50": 0.25, "p95": 0.5},
        "e2e_cpu_ms": span,
        "e2e_ratio": e2e / 7.0,
        "postings_per_query": postings,
        "flops_per_query": postings if postings else 733824.0,
        "index_bytes": 354588 if postings else 2935296,
        "bytes_ratio": 354588 / 2935296 if postings else 1.0,
        "q_nnz": 13.0 if postings else None,
        "d_nnz": 15.25 if postings else None,
    }


@pytest.fixture
def cost_file(tmp_path: Path) -> Path:
    data = {
        "meta": {
            "date": "2026-12-07 03:00 UTC",
            "machine": "x86_64, 2 CPUs",
            "threads": 1,
            "k": 1000,
            "rounds": 3,
            "baseline": "dense",
            "load_average_before": [1.0, 1.5, 2.0],
            "load_average_after": [1.25, 1.5, 2.0],
            "command": "python bench/bench_query_cost.py",
        },
        "emoji": [_row("sparse", 0.35, 0.875, 67.0), _row("dense", 0.42, 7.0, None)],
    }
    path = tmp_path / "query_cost.json"
    path.write_text(json.dumps(data))
    return path


def test_the_cost_table_is_the_committed_json_cell_for_cell(
    cost_file: Path, tmp_path: Path
) -> None:
    registry = dataclasses.replace(
        load_registry(REPO / "results"),
        query_cost={"file": str(cost_file), "figure": "figures/query_cost.png"},
        results_dir=tmp_path,
    )
    text = ReportText.read(REPO / "results" / "report_text.md")
    lines = cost_section(registry, text)
    rows = [line for line in lines if line.startswith("| sparse") or line.startswith("| dense")]
    sparse = [cell.strip() for cell in rows[0].split("|")[1:-1]]
    dense = [cell.strip() for cell in rows[1].split("|")[1:-1]]
    # model, backbone, search, nDCG@10, encode, search, end to end, ratio, postings,
    # multiply-adds, bytes, bytes ratio, terms/query, terms/text
    assert sparse[3] == "0.3500" and sparse[6] == "0.875 / 1.75" and sparse[7] == "0.12"
    assert sparse[8] == "67" and sparse[10] == "354,588" and sparse[12:] == ["13.0", "15.2"]
    assert dense[8] == "–" and dense[9] == "733,824" and dense[12:] == ["–", "–"]
    assert "load average 1.0/1.5/2.0 before" in "\n".join(lines)
    assert any("query_cost.png" in line for line in lines)
    figure = tmp_path / "figures" / "query_cost.png"
    write_cost_figure(figure, load_query_cost(registry) or {})
    first = figure.read_bytes()
    assert first.startswith(b"\x89PNG")
    write_cost_figure(figure, load_query_cost(registry) or {})
    assert figure.read_bytes() == first  # no timestamp: the same JSON, the same file


def test_the_wordnet_table_names_the_models_it_could_not_index(
    cost_file: Path, tmp_path: Path
) -> None:
    data = json.loads(cost_file.read_text())
    wordnet = {k: v for k, v in _row("sparse", 0.35, 0.875, 908.0).items() if "ms" not in k}
    wordnet |= {"n_docs": 20480, "search_cpu_ms": {"p50": 0.06, "p95": 0.2}, "search_ratio": 0.07}
    data["wordnet"] = [wordnet]
    data["meta"]["wordnet_skipped"] = ["M1 · MiniLM", "M4x · MiniLM"]
    cost_file.write_text(json.dumps(data))
    registry = dataclasses.replace(
        load_registry(REPO / "results"), query_cost={"file": str(cost_file)}, results_dir=tmp_path
    )
    lines = cost_section(registry, ReportText.read(REPO / "results" / "report_text.md"))
    assert any(line.startswith("| sparse | 0.06 / 0.2 | 0.070 | 908 |") for line in lines)
    assert "Not in this table: M1 · MiniLM, M4x · MiniLM (their documents need images" in "\n".join(
        lines
    )
    data["meta"]["wordnet_skipped"] = []
    cost_file.write_text(json.dumps(data))
    assert not any(
        "Not in this table" in line
        for line in cost_section(registry, ReportText.read(REPO / "results" / "report_text.md"))
    )


def test_a_missing_or_foreign_cost_file_is_an_error_naming_it(tmp_path: Path) -> None:
    registry = load_registry(REPO / "results")
    gone = dataclasses.replace(registry, query_cost={"file": str(tmp_path / "nope.json")})
    with pytest.raises(FileNotFoundError, match="nope.json"):
        load_query_cost(gone)
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"rows": []}))
    with pytest.raises(ValueError, match="other.json"):
        load_query_cost(dataclasses.replace(registry, query_cost={"file": str(other)}))
    assert load_query_cost(dataclasses.replace(registry, query_cost={})) is None


def test_a_later_run_is_its_own_table_and_an_open_marker_placed_by_its_ratio(
    cost_file: Path, tmp_path: Path
) -> None:
    """A model measured after the main run (its checkpoint did not exist then) comes in a
    file of its own, beside the baselines measured again: its rows are a second table with
    that run's date, load and command, and the figure places it at its ratio to that run's
    baseline times the main run's baseline, never at its absolute time from another run."""
    later = json.loads(cost_file.read_text())
    later["meta"] |= {"date": "2026-12-08 01:00 UTC", "command": "python bench/later.py"}
    later["emoji"] = [_row("new", 0.44, 14.0, 40.0), _row("dense", 0.42, 10.0, None)]
    later["emoji"][0]["e2e_ratio"] = 1.4  # 14 / 10 in its own run
    later_file = tmp_path / "later.json"
    later_file.write_text(json.dumps(later))
    spec = {"file": str(cost_file), "figure": "figures/query_cost.png", "later": [str(later_file)]}
    registry = dataclasses.replace(
        load_registry(REPO / "results"), query_cost=spec, results_dir=tmp_path
    )
    text = "\n".join(cost_section(registry, ReportText.read(REPO / "results" / "report_text.md")))
    assert (
        "Measured in a later run (2026-12-08 01:00 UTC" in text and "python bench/later.py" in text
    )
    assert "\n| new | " in text and "| 14.0 / 28.0 | 1.40 |" in text
    assert text.index("| sparse |") < text.index("later run") < text.index("| new |")

    import matplotlib.pyplot as plt

    placed: list[tuple] = []
    real_plot = plt.Axes.plot

    def spy(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        placed.append(args[:2])
        return real_plot(self, *args, **kwargs)

    plt.Axes.plot = spy  # type: ignore[method-assign]
    try:
        figure = tmp_path / "figures" / "query_cost.png"
        write_cost_figure(figure, load_query_cost(registry) or {}, load_later_costs(registry))
    finally:
        plt.Axes.plot = real_plot  # type: ignore[method-assign]
    assert placed == [(7.0 * 1.4, 0.44)]  # the main run's dense p50 (7.0) x its own ratio
    with pytest.raises(ValueError, match="query_cost.later must be a list"):
        from research.report.registry_file import _query_cost

        _query_cost({"file": "a.json", "later": "b.json"}, "registry.yaml")


def test_labels_of_close_points_do_not_overlap() -> None:
    """Six models at almost the same cost and quality (the MiniLM cluster of the real figure):
    each label still stands clear of every other label, of every marker and of the legend,
    inside the axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from research.report.costs import _overlap, _place_labels, _words

    fig, ax = plt.subplots(figsize=(7.6, 4.6), dpi=110)
    points = [
        (8.0 + 0.3 * i, 0.44 + 0.004 * i, f"model {i} · MiniLM, heads at 0.2x") for i in range(6)
    ]
    points.append((1.0, 0.1, "far away"))
    for x, y, _ in points:
        ax.plot(x, y, "o")
    ax.set_xscale("log")
    ax.set_xlim(0.6, 30)
    ax.set_ylim(0.0, 0.6)
    legend = ax.legend(["a"], loc="lower left")
    fig.tight_layout()
    _place_labels(fig, ax, points, [], legend)
    renderer = fig.canvas.get_renderer()
    boxes = [_words(t, renderer) for t in ax.texts]  # words, not lines
    assert sorted(t.get_text() for t in ax.texts) == sorted(text for _, _, text in points)
    inside = ax.get_window_extent(renderer)
    markers = [ax.transData.transform((x, y)) for x, y, _ in points]
    for i, box in enumerate(boxes):
        assert _overlap(box, inside) == box.width * box.height
        assert _overlap(box, legend.get_window_extent(renderer)) == 0
        assert all(_overlap(box, other) == 0 for other in boxes[i + 1 :])
        assert not any(box.contains(px, py) for px, py in markers)
    plt.close(fig)
