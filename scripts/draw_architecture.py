"""Draw the README's architecture figure: the path of a fit from a YAML config to metrics.

    python scripts/draw_architecture.py            # writes docs/figures/architecture.png
    python scripts/draw_architecture.py --check    # only checks the names it shows

Every class, function and file the figure names is listed in ``REFERENCES`` and checked
against the source (``--check``, and ``tests/scripts/test_draw_architecture.py``), so a
rename in the package fails a test instead of leaving the picture stale.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "figures" / "architecture.png"


@dataclass(frozen=True)
class Box:
    """A component: where it is drawn (figure units: 0..100 wide, 0..56 high), its name,
    the folder or file it lives in, and what it does, one line each."""

    x: float
    y: float
    w: float
    h: float
    title: str
    where: str
    lines: tuple[str, ...] = ()
    colour: str = "#e8eef7"


@dataclass(frozen=True)
class Arrow:
    start: tuple[float, float]
    end: tuple[float, float]
    label: str = ""
    label_at: tuple[float, float] | None = None
    dashed: bool = False
    rad: float = 0.0


@dataclass(frozen=True)
class Figure:
    boxes: list[Box] = field(default_factory=list)
    arrows: list[Arrow] = field(default_factory=list)
    bands: list[tuple[float, float, float, float, str]] = field(default_factory=list)


#: (file, name defined there) for every name the figure shows; ``--check`` verifies each
REFERENCES: tuple[tuple[str, str], ...] = (
    ("experiments/paper/m2_mlp_mlm_caption.yaml", ""),
    ("lightning_mlsr/configs/base.yaml", ""),
    ("lightning_mlsr/training/cli/trainer_cli.py", "MLSRCLI"),
    ("lightning_mlsr/data/datamodule.py", "RetrievalDataModule"),
    ("lightning_mlsr/data/collection/load.py", "load_collection"),
    ("lightning_mlsr/data/training/pairs.py", "RelevantPairs"),
    ("lightning_mlsr/data/training/sampler.py", "ResumableSampler"),
    ("lightning_mlsr/data/training/batches.py", "Collator"),
    ("lightning_mlsr/data/features/store.py", "FeatureStore"),
    ("lightning_mlsr/training/system/module.py", "SparseBiEncoder"),
    ("lightning_mlsr/training/system/module.py", "batch_inputs"),
    ("lightning_mlsr/models/text.py", "MLPHead"),
    ("lightning_mlsr/models/text.py", "MLMHead"),
    ("lightning_mlsr/models/image.py", "ImageMLMHead"),
    ("lightning_mlsr/objectives/ranking.py", "InfoNCE"),
    ("lightning_mlsr/objectives/regularizers.py", "FLOPS"),
    ("lightning_mlsr/training/callbacks/evaluator.py", "RetrievalEvaluator"),
    ("lightning_mlsr/training/callbacks/split_encoding.py", "encode_split"),
    ("lightning_mlsr/retrieval/index/inverted.py", "InvertedIndex"),
    ("lightning_mlsr/retrieval/evaluation.py", "retrieve"),
    ("lightning_mlsr/retrieval/evaluation.py", "score"),
    ("lightning_mlsr/retrieval/metrics.py", "evaluate"),
    ("lightning_mlsr/retrieval/evaluation.py", "write_evaluation"),
    ("lightning_mlsr/training/callbacks/checkpointing.py", "RunCheckpoint"),
)


def check_references(root: Path = ROOT) -> list[str]:
    """What the figure names that the source lacks (empty when everything is there)."""
    problems = []
    for rel, name in REFERENCES:
        path = root / rel
        if not path.is_file():
            problems.append(f"{rel}: no such file")
            continue
        if name and not re.search(
            rf"^\s*(class|def)\s+{re.escape(name)}\b", path.read_text("utf-8"), re.M
        ):
            problems.append(f"{rel}: defines no class or function {name!r}")
    return problems


def figure() -> Figure:
    """The components and the arrows between them."""
    top, mid, low = 44.0, 24.0, 1.0
    boxes = [
        Box(
            2,
            top,
            30,
            10,
            "YAML config",
            "experiments/, lightning_mlsr/configs/base.yaml",
            (
                "experiments/paper/m2_mlp_mlm_caption.yaml",
                "states only what differs from base.yaml;",
                "every part a class_path + init_args",
            ),
            "#fdf1d6",
        ),
        Box(
            38,
            top,
            28,
            10,
            "CLI: MLSRCLI",
            "training/cli/trainer_cli.py",
            (
                "python -m lightning_mlsr fit --config ...",
                "builds the Trainer, its callbacks, the",
                "model and the data from the YAML",
            ),
            "#fdf1d6",
        ),
        Box(
            72,
            top,
            26,
            10,
            "Lightning Trainer",
            "lightning",
            (
                "DDP, bf16, backward, AdamW steps;",
                "callbacks: RetrievalEvaluator,",
                "RunCheckpoint (best val/nDCG@10)",
            ),
            "#fdf1d6",
        ),
        Box(
            2,
            mid,
            29,
            14,
            "RetrievalDataModule",
            "data/datamodule.py",
            (
                "load_collection: images, captions,",
                "  queries, TREC qrels (data/collection/)",
                "RelevantPairs, ResumableSampler (data/training/)",
                "Collator: tokenize; image features from",
                "  the FeatureStore cache (data/features/)",
            ),
        ),
        Box(
            39,
            mid,
            27,
            14,
            "SparseBiEncoder",
            "training/system/module.py",
            (
                "query_encoder, doc_encoder: a backbone +",
                "  a sparse head (models/), e.g. M2: MLPHead",
                "  (query), MLMHead (document); ImageMLMHead",
                "each returns (B, V) non-negative term",
                "  weights, V = 30522 wordpieces",
            ),
        ),
        Box(
            72,
            mid,
            26,
            14,
            "loss",
            "objectives/",
            (
                "InfoNCE over in-batch negatives (ranking.py)",
                "+ FLOPS on each side (regularizers.py):",
                "  sum_j (mean_i |w_ij|)^2, weighted",
                "  lambda * min(1, t/T)^2,",
                "  t = trainer.global_step",
            ),
        ),
    ]
    # the evaluator's steps, inside its band
    ev_y, ev_h = low + 5.5, 10.5
    steps = [
        (
            "encode",
            "callbacks/split_encoding.py",
            ("encode_split: corpus and", "judged queries, sharded", "over ranks, gathered"),
        ),
        (
            "InvertedIndex",
            "retrieval/index/",
            ("scipy CSC postings,", "exact top-k", "(numba kernel)"),
        ),
        (
            "search",
            "retrieval/evaluation.py",
            ("retrieve: top 1000", "per query -> run;", "score(run, qrels)"),
        ),
        (
            "trec_eval metrics",
            "retrieval/metrics.py",
            ("evaluate: nDCG@10, AP,", "RR@10, R@10/100/1000,", "as trec_eval -c"),
        ),
    ]
    step_w, gap, x = 16.0, 2.5, 4.0
    for title, where, lines in steps:
        boxes.append(Box(x, ev_y, step_w, ev_h, title, where, lines, "#e6f4ea"))
        x += step_w + gap
    out_x = x + 1.0
    boxes.append(
        Box(
            out_x,
            low,
            98 - out_x,
            17.0,
            "outputs",
            "logs/lightning_mlsr/<run id>/",
            (
                "val/nDCG@10 ... logged",
                "  (W&B, offline)",
                "checkpoints/: best and last",
                "validate and test write",
                "  (write_evaluation):",
                "  runs/<split>.trec",
                "  runs/<split>.metrics.json",
            ),
            "#f3e8f7",
        )
    )

    arrows = [
        Arrow((32, top + 5), (38, top + 5)),
        Arrow((66, top + 5), (72, top + 5)),
        Arrow((45, top), (17, mid + 14), "data:", (30.0, 42.7)),
        Arrow((52, top), (52, mid + 14), "model:", (55.5, 41.0)),
        Arrow((85, mid + 14), (85, top), "returned by training_step", (91.5, 41.0)),
        Arrow((31, mid + 10), (39, mid + 10), "batches", (35, mid + 11.6)),
        Arrow((39, mid + 3), (31, mid + 3), "batch_inputs()", (35, mid + 1.4), dashed=True),
        Arrow((66, mid + 7), (72, mid + 7), "q, d", (69, mid + 8.6)),
        Arrow((14, mid), (9, ev_y + ev_h), "corpus, queries", (9.0, 20.5)),
        Arrow((52, mid), (16, ev_y + ev_h), "encoders", (36.0, 20.6)),
    ]
    x = 4.0
    for _ in steps[:-1]:
        arrows.append(Arrow((x + step_w, ev_y + ev_h / 2), (x + step_w + gap, ev_y + ev_h / 2)))
        x += step_w + gap
    arrows.append(Arrow((x + step_w, ev_y + ev_h / 2), (out_x, ev_y + ev_h / 2)))
    bands = [
        (
            1.0,
            low,
            out_x - 2.0,
            17.0,
            "RetrievalEvaluator (training/callbacks/evaluator.py): every validation epoch, "
            "and at validate / test",
        ),
    ]
    return Figure(boxes, arrows, bands)


def draw(path: Path = OUT) -> None:
    """Render :func:`figure` as a PNG at ``path``, without a timestamp (same input, same file)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyBboxPatch

    spec = figure()
    fig = plt.figure(figsize=(14, 7.9), dpi=110)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, 100)
    ax.set_ylim(0, 56)
    ax.axis("off")

    for x, y, w, h, label in spec.bands:
        ax.add_patch(
            FancyBboxPatch(
                (x, y),
                w,
                h,
                boxstyle="round,pad=0.2,rounding_size=0.8",
                facecolor="#f7fbf8",
                edgecolor="#5b8a68",
                linewidth=1.2,
                linestyle="--",
            )
        )
        ax.text(
            x + 1.0, y + 1.2, label, fontsize=10, fontweight="bold", va="bottom", color="#2f5d3a"
        )

    for b in spec.boxes:
        ax.add_patch(
            FancyBboxPatch(
                (b.x, b.y),
                b.w,
                b.h,
                boxstyle="round,pad=0.2,rounding_size=0.6",
                facecolor=b.colour,
                edgecolor="#445",
                linewidth=1.0,
            )
        )
        ax.text(b.x + 0.8, b.y + b.h - 0.9, b.title, fontsize=10.5, fontweight="bold", va="top")
        ax.text(
            b.x + 0.8,
            b.y + b.h - 3.2,
            b.where,
            fontsize=8,
            family="monospace",
            color="#335",
            va="top",
        )
        ax.text(
            b.x + 0.8, b.y + b.h - 5.3, "\n".join(b.lines), fontsize=8.3, va="top", linespacing=1.35
        )

    for a in spec.arrows:
        ax.annotate(
            "",
            xy=a.end,
            xytext=a.start,
            arrowprops={
                "arrowstyle": "-|>",
                "color": "#333",
                "lw": 1.2,
                "linestyle": "--" if a.dashed else "-",
                "connectionstyle": f"arc3,rad={a.rad}",
                "shrinkA": 0,
                "shrinkB": 0,
            },
        )
        if a.label and a.label_at is not None:
            ax.text(
                *a.label_at,
                a.label,
                fontsize=8.3,
                ha="center",
                va="center",
                style="italic",
                color="#222",
                bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.6},
            )

    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, metadata={"Software": None})
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT, help="the PNG to write")
    parser.add_argument("--check", action="store_true", help="check the names only, draw nothing")
    args = parser.parse_args(argv)
    problems = check_references()
    if problems:
        print(
            "the figure names what the source lacks:\n  " + "\n  ".join(problems), file=sys.stderr
        )
        return 1
    if not args.check:
        draw(args.out)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
