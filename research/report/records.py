"""Finished runs as kept under ``results/runs/<experiment>/seed<k>/`` (baselines under
``results/runs/baselines/<method>/``): ``metrics.json`` (means per split, sparsity, fit time,
the overrides it ran with) and ``per_query.json`` (every measure per query and split).

A run is finished once its ``metrics.json`` exists; both files are written aside and renamed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lightning_mlsr.io.atomic import atomic_write_text

__all__ = [
    "RunRecordError",
    "Runs",
    "has_split",
    "load_runs",
    "mean_metric",
    "per_query_matrix",
    "read_json",
    "read_pseudo_manifest",
    "shared_queries",
    "teacher_seed",
    "write_json",
]

#: ``{experiment: [metrics.json + {"per_query": per_query.json}, ...]}``
Runs = dict[str, list[dict[str, Any]]]

#: the ``fit`` option that named a distilled run's teacher checkpoint: ``model.teacher``'s,
#: or ``model.distillation``'s in a YAML that declares the teacher inside the loss
TEACHER_OPTION = re.compile(r"^--model\.(teacher|distillation)\.init_args\.checkpoint=(.*)$")
#: what the report says about each pseudo-query collection, in the results folder (the
#: collections themselves stay in the work folder)
PSEUDO_MANIFEST = "pseudo_queries.json"


def write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as JSON, atomically (:func:`~lightning_mlsr.io.atomic.atomic_write_text`):
    never half a file."""
    atomic_write_text(path, json.dumps(obj, indent=1, sort_keys=True, default=float) + "\n")


class RunRecordError(ValueError):
    """A run's JSON file that cannot be read (the message names the file and what to do)."""


def read_json(path: Path, remedy: str | None = None) -> Any:
    """The JSON value in ``path``; a missing or damaged file (truncated, edited by hand) is a
    :class:`RunRecordError` that names it and says what to do: ``remedy``, by default that of
    a file in a run folder (restore it, or remove the run folder to train the run again)."""
    if remedy is None:
        remedy = (
            f"restore it (git checkout -- {path}), or remove its run folder {path.parent} so "
            "that `python -m research.report run` trains the run again"
        )
    try:
        text = path.read_text("utf-8")
    except FileNotFoundError:
        raise RunRecordError(f"{path} is missing: {remedy}") from None
    try:
        return json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        where = (
            f"{err.msg} at line {err.lineno}, column {err.colno}"
            if isinstance(err, json.JSONDecodeError)
            else "not UTF-8 text"
        )
        raise RunRecordError(
            f"{path} is not valid JSON ({where}; truncated or edited?): {remedy}"
        ) from None


def read_pseudo_manifest(results_dir: Path) -> dict[str, Any]:
    """The results folder's :data:`PSEUDO_MANIFEST` (``{}`` while there is none)."""
    path = results_dir / PSEUDO_MANIFEST
    if not path.is_file():
        return {}
    return dict(
        read_json(
            path,
            f"restore it (git checkout -- {path}); `python -m research.report prepare` "
            "of a pseudo-query run records its collection again",
        )
    )


def load_runs(runs_dir: Path) -> Runs:
    """Every finished run under ``runs_dir`` (baselines included), by experiment."""
    runs: Runs = {}
    for path in sorted(Path(runs_dir).glob("*/*/metrics.json")):
        record = read_json(path)
        if not isinstance(record, dict) or "experiment" not in record:
            raise RunRecordError(
                f"{path} has no `experiment` key: it is not a run's metrics.json; restore it "
                f"(git checkout -- {path}) or remove its run folder {path.parent}"
            )
        record["per_query"] = read_json(path.parent / "per_query.json")
        elsewhere = path.parent / "cross_domain.json"
        if elsewhere.is_file():  # the same checkpoint tested on other collections
            record["cross_domain"] = read_json(elsewhere)
        runs.setdefault(record["experiment"], []).append(record)
    return runs


def teacher_seed(run: dict[str, Any]) -> int | None:
    """The seed of the dense model a distilled run learnt from (None: MiniLM as shipped)."""
    for option in run.get("overrides", []):
        if found := TEACHER_OPTION.match(option):
            return int(Path(found.group(2)).parent.name.removeprefix("seed"))
    return None


def has_split(runs: Runs, name: str, split: str) -> bool:
    """``name`` has finished runs, every one of them with ``split`` evaluated."""
    return name in runs and all(split in r and split in r["per_query"] for r in runs[name])


def mean_metric(runs: Runs, name: str, key: str = "nDCG@10", split: str = "test") -> float | None:
    """The mean of ``key`` over ``name``'s seeds on ``split`` (None: not evaluated there)."""
    if name not in runs or not all(split in r for r in runs[name]):
        return None
    return float(np.mean([r[split][key] for r in runs[name]]))


def per_query_matrix(
    runs: Runs, name: str, split: str, measure: str, qids: Sequence[str]
) -> np.ndarray:
    """Per-seed per-query values. Shape: ``(seeds, len(qids))``."""
    return np.array([[r["per_query"][split][measure][q] for q in qids] for r in runs[name]])


def shared_queries(
    runs: Runs, names: Sequence[str], split: str, measure: str, subset: Sequence[str] | None
) -> list[str]:
    """The queries every run of ``names`` scored (within ``subset`` when given), sorted."""
    shared = set.intersection(
        *(set(r["per_query"][split][measure]) for n in names for r in runs[n])
    )
    return sorted(shared if subset is None else shared & set(subset))
