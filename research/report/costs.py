"""What a query costs beside the quality it buys: the report's section and figure from a
committed ``bench/bench_query_cost.py`` result (``query_cost.json``), never a live measurement,
so the same committed files give the same RESULTS.md.

The registry names the file (``query_cost.file``, relative to the checkout) and the figure it
draws (``query_cost.figure``, under the results folder)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from research.report.registry import REPO, Registry

__all__ = ["cost_section", "load_later_costs", "load_query_cost", "write_cost_figure"]

_COLOURS = {"splade-tiny": "tab:orange", "minilm-l6": "tab:blue"}


def load_query_cost(registry: Registry) -> dict[str, Any] | None:
    """The committed benchmark result the registry names, or None where it names none.
    A named file that is missing or lacks the benchmark's keys is an error naming it."""
    spec = registry.query_cost
    if not spec:
        return None
    return _load(spec["file"], "file")


def load_later_costs(registry: Registry) -> list[dict[str, Any]]:
    """The later runs the registry names (``query_cost.later``): models measured after the
    main run, each file with its own baseline rows measured beside them."""
    return [_load(file, "later") for file in registry.query_cost.get("later", [])]


def _load(file: str, key: str) -> dict[str, Any]:
    path = REPO / file
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: results registry's query_cost.{key} names it (the output of "
            "bench/bench_query_cost.py)"
        )
    data = json.loads(path.read_text("utf-8"))
    for key in ("meta", "emoji"):
        if key not in data:
            raise ValueError(f"{path}: no {key!r} (not a bench/bench_query_cost.py result?)")
    return data


def _ms(span: dict[str, float]) -> str:
    return f"{_num(span['p50'])} / {_num(span['p95'])}"


def _num(x: float) -> str:
    return f"{x:.3g}" if x < 10 else f"{x:,.1f}"


def _count(x: float | None) -> str:
    return "–" if x is None else f"{x:,.0f}"


def _terms(x: float | None) -> str:
    """Active terms per text; dense rows have none (the bench writes None)."""
    return "–" if x is None else f"{x:.1f}"


def _backbone(row: dict[str, Any]) -> str:
    return str(row.get("backbone", "–"))


def _loads(meta: dict[str, Any]) -> dict[str, str]:
    """A run's load averages before and after, as the report's texts print them."""
    return {
        f"load_{when}": "/".join(f"{x:.1f}" for x in meta[f"load_average_{when}"])
        for when in ("before", "after")
    }


def _later_rows(data: dict[str, Any], later: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows of the ``later`` runs that the main run ``data`` has not measured (each later
    run repeats the baselines beside its new models)."""
    known = {row["name"] for row in data["emoji"]}
    return [row for run in later for row in run["emoji"] if row["name"] not in known]


def _style(row: dict[str, Any]) -> tuple[str, str]:
    """Colour (by backbone) and marker (dense rows square) of a row's point."""
    colour = _COLOURS.get(_backbone(row).split(" ")[0].lower(), "tab:gray")
    return colour, "s" if row.get("postings_per_query") is None else "o"


def cost_section(registry: Registry, text: Any) -> list[str]:
    """The section's lines: intro (with the run's date, machine, load and command), the
    per-query cost table on the collection's test queries, the search-only table on the
    larger corpus where the run has one, and the figure."""
    data = load_query_cost(registry)
    if data is None:
        return []
    meta = data["meta"]
    lines = [
        *text.lines(
            "query_cost_intro",
            file=registry.query_cost["file"],
            date=meta["date"],
            machine=meta["machine"],
            threads=meta["threads"],
            rounds=meta["rounds"],
            k=meta["k"],
            baseline=meta["baseline"],
            command=meta["command"],
            **_loads(meta),
        ),
        "",
        *_emoji_table(data["emoji"]),
    ]
    if data.get("wordnet"):
        lines += _wordnet_table(data, text)
    for later in load_later_costs(registry):
        meta = later["meta"]
        lines += [
            *text.lines(
                "query_cost_later",
                date=meta["date"],
                models=", ".join(row["name"] for row in _later_rows(data, [later])),
                command=meta["command"],
                baseline=meta["baseline"],
                **_loads(meta),
            ),
            "",
            *_emoji_table(later["emoji"]),
        ]
        if later.get("wordnet"):
            lines += _wordnet_table(later, text)
    figure = registry.query_cost.get("figure")
    if figure:
        image = os.path.relpath(registry.results_dir / figure, registry.report_path.parent)
        lines += [f"![nDCG@10 against end-to-end CPU time per query]({Path(image).as_posix()})", ""]
    return lines


def _emoji_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| model | backbone | search | nDCG@10 | encode p50 / p95 (ms) | search p50 / p95 (ms) "
        "| end to end p50 / p95 (ms) | ÷ baseline (end to end) | postings / query "
        "| multiply-adds / query | index bytes | ÷ baseline (bytes) | terms / query "
        "| terms / image text |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['name']} | {_backbone(row)} | {row.get('search_kind', '–')} "
            f"| {row['ndcg10']:.4f} | {_ms(row['encode_cpu_ms'])} | {_ms(row['search_cpu_ms'])} "
            f"| {_ms(row['e2e_cpu_ms'])} | {row['e2e_ratio']:.2f} "
            f"| {_count(row.get('postings_per_query'))} | {_count(row['flops_per_query'])} "
            f"| {row['index_bytes']:,} | {row['bytes_ratio']:.2f} "
            f"| {_terms(row.get('q_nnz'))} | {_terms(row.get('d_nnz'))} |"
        )
    return [*lines, ""]


def _wordnet_table(data: dict[str, Any], text: Any) -> list[str]:
    first = data["wordnet"][0]
    lines = [
        *text.lines("query_cost_wordnet", docs=f"{first['n_docs']:,}"),
        "",
        "| model | search p50 / p95 (ms) | ÷ baseline (search) | postings / query "
        "| multiply-adds / query | index bytes | terms / document |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in data["wordnet"]:
        lines.append(
            f"| {row['name']} | {_ms(row['search_cpu_ms'])} | {row['search_ratio']:.3f} "
            f"| {_count(row.get('postings_per_query'))} | {_count(row['flops_per_query'])} "
            f"| {row['index_bytes']:,} | {_terms(row.get('d_nnz'))} |"
        )
    lines.append("")
    skipped = data["meta"].get("wordnet_skipped") or []
    if skipped:
        lines += [text("query_cost_wordnet_skipped", models=", ".join(skipped)), ""]
    return lines


def write_cost_figure(
    path: Path, data: dict[str, Any], later: list[dict[str, Any]] | None = None
) -> None:
    """Test nDCG@10 against end-to-end CPU time per query (p50, bar to p95), one labelled
    point per model, coloured by backbone, dense models as squares. A model measured only in
    a ``later`` run is an open marker placed by its ratio to that run's baseline times the
    main run's baseline p50 (absolute times of two runs on a shared machine do not compare;
    ratios to a baseline measured beside them do). No timestamp in the file, so the same JSON
    gives the same PNG."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = data["emoji"]
    fig, ax = plt.subplots(figsize=(8.6, 4.6), dpi=110)
    labels: list[tuple[float, float, str]] = []  # (x, y, text) of each point
    bars: list[tuple[float, float, float]] = []  # (p50, p95, y) of each error bar
    for row in rows:
        colour, marker = _style(row)
        p50, p95 = row["e2e_cpu_ms"]["p50"], row["e2e_cpu_ms"]["p95"]
        ax.errorbar(
            p50,
            row["ndcg10"],
            xerr=[[0], [p95 - p50]],
            fmt=marker,
            color=colour,
            capsize=3,
            markersize=7,
        )
        labels.append((p50, row["ndcg10"], row["name"]))
        bars.append((p50, p95, row["ndcg10"]))
    base = next(r for r in rows if r["name"] == data["meta"]["baseline"])["e2e_cpu_ms"]["p50"]
    placed = [(row, base * row["e2e_ratio"]) for row in _later_rows(data, later or [])]
    for row, x in placed:
        colour, marker = _style(row)
        ax.plot(x, row["ndcg10"], marker, mfc="none", color=colour, markersize=7)
        labels.append((x, row["ndcg10"], f"{row['name']} (later)"))
    ax.set_xscale("log")
    lows = [r["e2e_cpu_ms"]["p50"] for r in rows] + [x for _, x in placed]
    highs = [r["e2e_cpu_ms"]["p95"] for r in rows] + [x for _, x in placed]
    ax.set_xlim(min(lows) / 1.6, max(highs) * 1.6)
    ticks = [t for t in (0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100) if ax.get_xlim()[0] <= t]
    ticks = [t for t in ticks if t <= ax.get_xlim()[1]]
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    scores = [r["ndcg10"] for r in rows] + [r["ndcg10"] for r, _ in placed]
    span = max(scores) - min(scores) or 0.1
    ax.set_ylim(min(scores) - 0.15 * span, max(scores) + 0.15 * span)
    ax.set_xlabel("end-to-end CPU time per query, ms (1 thread; p50, bar to p95; log)")
    ax.set_ylabel("test nDCG@10")
    meta = data["meta"]
    ax.set_title(
        f"One query at a time: quality against cost ({meta['date']}, load "
        f"{meta['load_average_before'][0]:.1f})",
        fontsize=9,
    )
    handles = [
        plt.Line2D([], [], color=c, marker="o", linestyle="", label=b) for b, c in _COLOURS.items()
    ]
    handles.append(plt.Line2D([], [], color="black", marker="s", linestyle="", label="dense"))
    if placed:
        handles.append(
            plt.Line2D([], [], color="black", marker="o", mfc="none", linestyle="",
                       label="later run, placed by its ratio")
        )  # fmt: skip
    legend = ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    _place_labels(fig, ax, labels, bars, legend)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, metadata={"Software": None})
    plt.close(fig)


# where a label may stand around its point: offset in points, then its alignment; the first
# that overlaps nothing wins, so the nearer places come first
_PLACES = [
    ((6, 3), "left", "bottom"), ((6, -3), "left", "top"), ((-6, 3), "right", "bottom"),
    ((-6, -3), "right", "top"), ((0, 7), "center", "bottom"), ((0, -7), "center", "top"),
    ((8, 11), "left", "bottom"), ((8, -11), "left", "top"), ((-8, 11), "right", "bottom"),
    ((-8, -11), "right", "top"), ((0, 16), "center", "bottom"), ((0, -16), "center", "top"),
    *(((dx, dy * sign), ha, "bottom" if sign > 0 else "top")
      for dy in (22, 30, 38) for sign in (1, -1)
      for dx, ha in ((10, "left"), (-10, "right"), (0, "center"))),
]  # fmt: skip
_NEAR = 6  # the places after these are joined to their point by a thin line


def _place_labels(
    fig: Any,
    ax: Any,
    labels: list[tuple[float, float, str]],
    bars: list[tuple[float, float, float]],
    legend: Any,
) -> None:
    """Write each label beside its point where it overlaps no other label, marker, error bar
    or the legend and stays inside the axes; where every place overlaps, the place that
    overlaps least. Labels are placed top to bottom, so the result depends only on the data."""
    from matplotlib.transforms import Bbox

    renderer = fig.canvas.get_renderer()
    to_px = ax.transData.transform
    inside = ax.get_window_extent(renderer)
    taken = [legend.get_window_extent(renderer)]
    r = 5.0  # a marker's half width, pixels
    for x, y, _ in labels:
        (px, py) = to_px((x, y))
        taken.append(Bbox([[px - r, py - r], [px + r, py + r]]))
    for p50, p95, y in bars:
        (a, b), (c, _) = to_px((p50, y)), to_px((p95, y))
        taken.append(Bbox([[a, b - 3], [c + 3, b + 3]]))

    def cost(box: Any) -> float:
        out = box.width * box.height - _overlap(box, inside)
        return out * 10 + sum(_overlap(box, other) for other in taken)

    for x, y, text in sorted(labels, key=lambda item: (-item[1], item[0], item[2])):
        best: tuple[float, Any] | None = None
        for i, (offset, ha, va) in enumerate(_PLACES):
            line = None if i < _NEAR else {"arrowstyle": "-", "lw": 0.5, "color": "0.5"}
            note = ax.annotate(
                text, (x, y), textcoords="offset points", xytext=offset, ha=ha, va=va,
                fontsize=7, arrowprops=line,
            )  # fmt: skip
            here = cost(_words(note, renderer))
            if best is None or here < best[0]:
                if best is not None:
                    best[1].remove()
                best = (here, note)
            else:
                note.remove()
            if here == 0:
                break
        assert best is not None
        taken.append(_words(best[1], renderer))


def _words(note: Any, renderer: Any) -> Any:
    """The box of an annotation's words, without its line to the point."""
    from matplotlib.text import Text

    note.update_positions(renderer)
    return Text.get_window_extent(note, renderer)


def _overlap(a: Any, b: Any) -> float:
    """Area (pixels) that two boxes share."""
    w = min(a.x1, b.x1) - max(a.x0, b.x0)
    h = min(a.y1, b.y1) - max(a.y0, b.y0)
    return max(w, 0.0) * max(h, 0.0)
