"""The model card (``README.md`` in the Hugging Face layout: YAML front matter, then
Markdown) written beside every exported encoder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from lightning_mlsr.hub.manifest import ExportError
from lightning_mlsr.retrieval.evaluation import INTERVAL_METHOD, mean_interval

__all__ = ["interval_of_mean", "metrics_with_intervals", "model_card"]


def interval_of_mean(values: list[float]) -> tuple[float, float, float]:
    """Mean of per-query values and its 95% interval from the package's one bootstrap,
    :func:`~lightning_mlsr.retrieval.evaluation.mean_interval` (seeded: a card is
    reproducible, and its intervals are those every other report of the package gives)."""
    x = np.asarray(values, dtype=np.float64)
    if x.size < 2:
        raise ExportError(
            f"an interval needs per-query values of at least 2 judged queries, got {x.size}; "
            "give the runs/<split>.metrics.json of a split with more queries"
        )
    return (float(x.mean()), *mean_interval(x))


def metrics_with_intervals(metrics_file: str | Path) -> dict[str, Any]:
    """``{"split", "queries", "measures": {name: (mean, low, high)}}`` from a run's
    ``runs/<split>.metrics.json`` (written by the evaluator with per-query values)."""
    path = Path(metrics_file)
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ExportError(
            f"cannot read the metrics file {str(path)!r} ({err}); give a run's "
            "runs/<split>.metrics.json with --metrics, or rerun `test` to write it again"
        ) from err
    per_query = report.get("per_query") if isinstance(report, dict) else None
    if not per_query:
        raise ExportError(f"{str(path)!r} has no per-query values; give a runs/*.metrics.json")
    names = list(report.get("aggregate") or next(iter(per_query.values())))
    measures = {m: interval_of_mean([q[m] for q in per_query.values()]) for m in names}
    return {
        "split": path.name.split(".")[0],
        "queries": len(per_query),
        "measures": measures,
    }


def _yaml_value(value: Any) -> str:
    return json.dumps(value)  # JSON scalars and lists are valid YAML


def model_card(
    *,
    name: str,
    side: str,
    manifest: dict[str, Any],
    training: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    license: str = "apache-2.0",
) -> str:
    """The card of one exported side: what it is, how it was trained, its metrics (with
    95% bootstrap intervals where per-query values exist), its license, how to load it."""
    head = str(manifest["class_path"]).rsplit(".", 1)[-1]
    st = manifest.get("sentence_transformers") == "SparseEncoder"
    tags = ["lightning_mlsr", "learned-sparse-retrieval", "sparse", side]
    if st:
        tags += ["sentence-transformers", "sparse-encoder"]
    if "image" in manifest.get("modalities", []):
        tags.append("image-text-retrieval")
    front = [
        "---",
        f"license: {license}",
        f"library_name: {'sentence-transformers' if st else 'lightning_mlsr'}",
        f"pipeline_tag: {'feature-extraction' if st else 'other'}",
        f"tags: {_yaml_value(tags)}",
    ]
    if training and training.get("collection"):
        front.append(f"datasets: {_yaml_value([str(training['collection'])])}")
    if metrics:
        front += [
            "model-index:",
            f"- name: {_yaml_value(name)}",
            "  results:",
            "  - task: {type: text-to-image-retrieval}",
            f"    dataset: {{name: {_yaml_value(str((training or {}).get('collection', 'unknown')))}, "
            f"split: {metrics['split']}, type: retrieval}}",
            "    metrics:",
        ]
        for m, (mean, _, _) in metrics["measures"].items():
            front.append(f"    - {{type: {_yaml_value(m)}, value: {mean:.6f}}}")
    front.append("---")

    inputs = " and ".join(manifest.get("modalities", []))
    lines = [
        f"# {name}: {side} encoder ({head})",
        "",
        f"The {side} side of a learned sparse bi-encoder trained with "
        "lightning_mlsr (multimodal learned sparse retrieval). It maps "
        f"{inputs} to a non-negative weight per term of a {manifest.get('vocab_size')}-term "
        "wordpiece vocabulary; the score of a query and a document is the dot product of "
        "their vectors, searched with an inverted index.",
        "",
        "## Architecture",
        "",
        f"- head: `{manifest['class_path']}`",
        f"- constructor arguments: `{json.dumps(manifest.get('init_args', {}))}`",
    ]
    image = manifest.get("image_backbone")
    if image:
        lines.append(
            f"- image backbone: `{image['name']}` ({image['num_features']}-d pooled features), "
            f"preprocessing `{json.dumps(image['preprocessing'])}`"
        )
    lines += ["", "## Training", ""]
    if training:
        for key, value in training.items():
            lines.append(f"- {key}: `{json.dumps(value) if not isinstance(value, str) else value}`")
    else:
        lines.append("Not recorded (exported from a head built in Python).")
    lines += ["", "## Evaluation", ""]
    if metrics:
        lines += [
            f"On the {metrics['split']} split ({metrics['queries']} judged queries; trec_eval "
            f"semantics, a query that retrieves nothing counts as 0). Intervals: 95% "
            f"{INTERVAL_METHOD}.",
            "",
            "| measure | value | 95% CI |",
            "|---|---|---|",
        ]
        for m, (mean, low, high) in metrics["measures"].items():
            lines.append(f"| {m} | {mean:.4f} | [{low:.4f}, {high:.4f}] |")
    else:
        lines.append("No metrics file was given with the export.")
    lines += [
        "",
        "## How to load",
        "",
        "```python",
        "from lightning_mlsr.hub import load_encoder",
        "",
        'encoder = load_encoder("PATH/TO/THIS/FOLDER")  # a lightning_mlsr head, eval mode',
        "```",
    ]
    if st:
        lines += [
            "",
            "It is also a sentence-transformers `SparseEncoder`, with the same vectors:",
            "",
            "```python",
            "from sentence_transformers import SparseEncoder",
            "",
            'model = SparseEncoder("PATH/TO/THIS/FOLDER")',
            'vectors = model.encode(["a red apple"])',
            "```",
        ]
    else:
        lines += [
            "",
            "**It loads in lightning_mlsr only.** sentence-transformers has no module for its "
            'term scorer or image input, so `SparseEncoder("PATH/TO/THIS/FOLDER")` refuses '
            "it (its `modules.json` names a lightning_mlsr class); building a SPLADE model "
            "from its `config.json` by hand would give an untrained MLM head and wrong vectors.",
        ]
    lines += [
        "",
        "`lightning_mlsr.json` records the sha256 of every other file but this card; "
        "`load_encoder` refuses a file that differs.",
        "",
        "To publish it: `huggingface_hub.HfApi().upload_folder(folder_path=PATH, "
        "repo_id=USER/NAME)` (or `python -m lightning_mlsr.hub push PATH USER/NAME`).",
        "",
        "## License",
        "",
        f"{license}, as the pretrained weights it starts from (see the training backbone).",
        "",
    ]
    return "\n".join(front + [""] + lines)
