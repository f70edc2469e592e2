"""The report's opening figure: the main comparison's test nDCG@10 with 95% intervals over
queries and seeds, one bar per model, coloured by text backbone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from research.report.records import Runs, has_split, per_query_matrix, shared_queries
from research.report.registry import Registry
from research.report.statistics import seed_count
from research.significance import seed_query_bootstrap

__all__ = ["main_figure_rows", "write_main_figure"]

_COLOURS = ("tab:orange", "tab:blue", "tab:green", "tab:purple", "tab:gray")


def main_figure_rows(
    registry: Registry, runs: Runs, measure: str = "nDCG@10"
) -> list[dict[str, Any]]:
    """The figure's models that have test numbers, in the registry's order: label, backbone,
    mean and 95% interval (:func:`seed_query_bootstrap`, as the report's CI tables) and the
    number of seeds behind them."""
    rows = []
    for name in registry.figure.get("models", []):
        if not has_split(runs, name, "test"):
            continue
        qids = shared_queries(runs, [name], "test", measure, None)
        got = seed_query_bootstrap(per_query_matrix(runs, name, "test", measure, qids))
        backbone = registry.backbone(name)
        rows.append(
            {
                "label": registry.label(name),
                "backbone": backbone.name if backbone is not None else "no text model",
                "dense": registry.is_dense(name),
                "estimate": float(got["estimate"]),
                "ci": (float(got["ci"][0]), float(got["ci"][1])),
                "seeds": seed_count(registry, runs, name),  # None: a baseline
            }
        )
    return rows


def write_main_figure(path: Path, rows: list[dict[str, Any]], title: str) -> None:
    """A horizontal bar chart of ``rows`` (:func:`main_figure_rows`) as a PNG at ``path``;
    dense models hatched, each bar labelled with its mean and number of seeds. Written
    without a timestamp, so the same rows give the same file."""
    import textwrap

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    backbones = list(dict.fromkeys(r["backbone"] for r in rows))
    colour = {b: _COLOURS[i % len(_COLOURS)] for i, b in enumerate(backbones)}
    fig, ax = plt.subplots(figsize=(7.5, 0.38 * len(rows) + 1.4), dpi=110)
    y = np.arange(len(rows))[::-1]
    for yi, row in zip(y, rows, strict=True):
        low, high = row["ci"]
        ax.barh(
            yi,
            row["estimate"],
            color=colour[row["backbone"]],
            hatch="//" if row["dense"] else None,
            edgecolor="black",
            linewidth=0.4,
        )
        ax.errorbar(
            row["estimate"],
            yi,
            xerr=[[row["estimate"] - low], [high - row["estimate"]]],
            color="black",
            capsize=3,
            linewidth=1,
        )
        seeds = row.get("seeds")
        note = f"{row['estimate']:.3f}" + (f" ({seeds} seed{'s' * (seeds != 1)})" if seeds else "")
        ax.text(high + 0.006, yi, note, va="center", fontsize=6.5)
    ax.set_yticks(y, [r["label"] for r in rows], fontsize=8)
    ax.set_xlabel("test nDCG@10 (95% interval over queries and seeds)")
    fig.suptitle(textwrap.fill(title, 90), fontsize=9)
    ax.set_xlim(0, max([r["ci"][1] for r in rows], default=0.5) * 1.25 + 0.01)
    handles = [plt.Rectangle((0, 0), 1, 1, color=colour[b]) for b in backbones]
    handles.append(plt.Rectangle((0, 0), 1, 1, facecolor="white", hatch="//", edgecolor="black"))
    ax.legend(handles, [*backbones, "dense"], fontsize=7, loc="upper right")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, metadata={"Software": None})
    plt.close(fig)
