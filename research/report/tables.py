"""The report's markdown tables, each a list of lines, from finished runs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from research.report.records import Runs, has_split, per_query_matrix, shared_queries
from research.report.registry import Registry
from research.report.statistics import mean_std, seed_average, seed_count
from research.report.text import ReportText
from research.significance import holm, paired_test, seed_query_bootstrap

__all__ = [
    "backbone_table",
    "breakdown_table",
    "category_table",
    "ci_table",
    "cross_domain_rows",
    "cross_domain_tables",
    "metrics_table",
    "row_order",
    "runs_table",
    "significance_table",
    "sparsity_table",
]


def backbone_table(registry: Registry) -> list[str]:
    """Each text backbone: its size, where its weights come from, and the reported models
    on it."""
    lines = [
        "| backbone | layers | hidden | parameters | weights | models |",
        "|---|---:|---:|---:|---|---|",
    ]
    names = [*registry.experiments, *registry.baselines]
    for backbone in registry.backbones.values():
        models = [registry.label(n) for n in names if registry.backbone(n) == backbone]
        lines.append(
            f"| {backbone.name} | {backbone.layers} | {backbone.hidden} | "
            f"{backbone.parameters:.2f}M | {backbone.source} | {'; '.join(models)} |"
        )
    return lines


def row_order(registry: Registry, runs: Runs) -> list[str]:
    """Rows in registry order, then the baselines, then anything else that finished."""
    known = [n for n in registry.experiments if n in runs]
    known += [b for b in registry.baselines if b in runs]
    return known + sorted(set(runs) - set(known))


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _pm(values: Sequence[float | None], digits: int = 4) -> str:
    kept = [float(v) for v in values if v is not None]
    if not kept:
        return "–"
    mean, std = mean_std(kept)
    return f"{mean:.{digits}f}" if len(kept) == 1 else f"{mean:.{digits}f} ± {std:.{digits}f}"


def _model(registry: Registry, name: str) -> str:
    """The first two cells of a model's row: its label and its text backbone."""
    return f"{registry.label(name)} | {registry.backbone_cell(name)}"


def _seeds_cell(n: int | None) -> str:
    return "–" if n is None else str(n)


def metrics_table(registry: Registry, runs: Runs, split: str) -> list[str]:
    """Every measure, sparsity and empty-vector share: mean ± standard deviation over seeds."""
    cols = [*registry.measures, "q_nnz", "d_nnz", "flops_per_query", "empty_docs"]
    lines = [
        "| model | backbone | seeds | " + " | ".join(cols) + " |",
        "|---|---|---:|" + "---:|" * len(cols),
    ]
    for name in (n for n in row_order(registry, runs) if has_split(runs, n, split)):
        cells = []
        for col in cols:
            values = [r[split].get(col) for r in runs[name]]
            digits = 0 if col == "flops_per_query" else 1 if col.endswith("nnz") else 4
            if col == "empty_docs":
                values = [None if v is None else 100 * v for v in values]
                digits = 1
            cells.append(_pm(values, digits))
        n = _seeds_cell(seed_count(registry, runs, name))
        lines.append(f"| {_model(registry, name)} | {n} | " + " | ".join(cells) + " |")
    return lines


def ci_table(
    registry: Registry, runs: Runs, split: str, unseen: list[str], measure: str = "nDCG@10"
) -> list[str]:
    """Each model's mean over all queries and over the unseen ones, with 95% intervals of a
    bootstrap over queries and seeds (:func:`seed_query_bootstrap`)."""
    lines = [
        f"| model | backbone | seeds | all queries | 95% CI | unseen queries ({len(unseen)}) "
        "| 95% CI |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for name in (n for n in row_order(registry, runs) if has_split(runs, n, split)):
        cells = []
        for subset in (None, unseen):
            qids = shared_queries(runs, [name], split, measure, subset)
            if len(qids) < 2:
                cells += ["–", "–"]
                continue
            got = seed_query_bootstrap(per_query_matrix(runs, name, split, measure, qids))
            cells += [f"{got['estimate']:.4f}", f"[{got['ci'][0]:.4f}, {got['ci'][1]:.4f}]"]
        n = _seeds_cell(seed_count(registry, runs, name))
        lines.append(f"| {_model(registry, name)} | {n} | " + " | ".join(cells) + " |")
    return lines


def significance_table(
    registry: Registry, text: ReportText, tests: list[dict[str, Any]]
) -> list[str]:
    """One table per family of :func:`~research.report.statistics.significance` rows."""
    lines: list[str] = []
    for family in dict.fromkeys(t["finding"] for t in tests):
        title = registry.family_titles.get(family, family)
        n = sum(t["finding"] == family for t in tests)
        lines += [
            text("family_heading", title=title, n=n),
            "",
            "| A | B | backbones A/B | measure | queries | seeds A/B | A | B | A − B [95% CI] | t "
            "| p | p_holm | Wilcoxon p | queries × seeds: 95% CI | p | p_holm |",
            "|---|---|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for t in (t for t in tests if t["finding"] == family):
            seeds = f"{_seeds_cell(t['seeds_a'])}/{_seeds_cell(t['seeds_b'])}"
            if not t["equal_seeds"]:
                seeds += " ≠"
            lines.append(
                f"| {registry.label(t['a'])} | {registry.label(t['b'])} | "
                f"{_backbones(registry, t['a'], t['b'])} | {t['measure']} | "
                f"{t['queries']} ({t['n']}) | {seeds} | {t['mean_a']:.4f} | {t['mean_b']:.4f} | "
                f"{t['diff']:+.4f} [{t['diff_ci'][0]:+.4f}, {t['diff_ci'][1]:+.4f}] | "
                f"{t['t']:.2f} | {t['p']:.2g} | {t['p_holm']:.2g} | {t['wilcoxon_p']:.2g} | "
                f"[{t['seed_ci'][0]:+.4f}, {t['seed_ci'][1]:+.4f}] | {t['p_seed']:.2g} | "
                f"{t['p_seed_holm']:.2g} |"
            )
        lines.append("")
    return lines[:-1]


def _backbones(registry: Registry, a: str, b: str) -> str:
    """``same: X`` when both sides share their backbone, else ``X / Y``."""
    backbone_a, backbone_b = registry.backbone(a), registry.backbone(b)
    if backbone_a == backbone_b:
        return "same" if backbone_a is None else f"same: {backbone_a.name}"
    names = [x.name if x is not None else "–" for x in (backbone_a, backbone_b)]
    return " / ".join(names)


def breakdown_table(
    registry: Registry, runs: Runs, groups: dict[str, set[str]], names: Sequence[str] | None = None
) -> list[str]:
    """Test nDCG@10 per group of queries (e.g. seen / unseen wordpieces), per model."""
    lines = [
        "| model | backbone | "
        + " | ".join(f"{g} ({len(ids)} queries)" for g, ids in groups.items())
        + " |",
        "|---|---" + "|---:" * len(groups) + "|",
    ]
    for name in names or row_order(registry, runs):
        if not has_split(runs, name, "test"):
            continue
        per = seed_average([r["per_query"]["test"]["nDCG@10"] for r in runs[name]])
        cells = [
            _fmt(float(np.mean([per[q] for q in group if q in per])) if group else None)
            for group in groups.values()
        ]
        lines.append(f"| {_model(registry, name)} | " + " | ".join(cells) + " |")
    return lines


def category_table(
    registry: Registry,
    runs: Runs,
    category: dict[str, str],
    split: str = "test",
    measure: str = "nDCG@10",
) -> list[str]:
    """Each model and baseline not marked test-informed, per query category (``category``:
    query id -> its category): mean over the category's queries and its 95% interval over
    queries and seeds."""
    groups: dict[str, list[str]] = {}
    for qid, name in sorted(category.items()):
        groups.setdefault(name, []).append(qid)
    order = sorted(groups, key=lambda g: -len(groups[g]))
    lines = [
        "| model | backbone | " + " | ".join(f"{g} ({len(groups[g])})" for g in order) + " |",
        "|---|---" + "|---:" * len(order) + "|",
    ]
    for name in row_order(registry, runs):
        if name in registry.test_informed or not has_split(runs, name, split):
            continue
        cells = []
        for g in order:
            qids = shared_queries(runs, [name], split, measure, groups[g])
            if len(qids) < 2:
                cells.append("–")
                continue
            got = seed_query_bootstrap(per_query_matrix(runs, name, split, measure, qids))
            cells.append(f"{got['estimate']:.3f} [{got['ci'][0]:.3f}, {got['ci'][1]:.3f}]")
        lines.append(f"| {_model(registry, name)} | " + " | ".join(cells) + " |")
    return lines


def runs_table(registry: Registry, runs: Runs) -> list[str]:
    """Every trained (experiment, seed): epochs, optimizer steps and fit time."""
    lines = [
        "| model | backbone | seed | epochs | optimizer steps | fit time |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for name in row_order(registry, runs):
        for r in runs[name]:
            if "seed" in r:
                lines.append(
                    f"| {_model(registry, name)} | {r['seed']} | {r['epochs']} | {r['steps']} | "
                    f"{r['fit_seconds'] / 60:.1f} min"
                    + (" (resumed: this attempt only)" if "resumed_from" in r else "")
                    + " |"
                )
    return lines


def _interval(per_seed: list[dict[str, float]]) -> str:
    """Mean over queries and seeds [95% bootstrap interval over both]."""
    qids = sorted(set.intersection(*(set(r) for r in per_seed)))
    got = seed_query_bootstrap(np.array([[r[q] for q in qids] for r in per_seed]))
    return f"{got['estimate']:.4f} [{got['ci'][0]:.4f}, {got['ci'][1]:.4f}]"


def cross_domain_rows(
    registry: Registry, runs: Runs, measure: str = "nDCG@10"
) -> dict[str, list[dict[str, Any]]]:
    """Per cross-domain collection, one row per model tested there: its seeds' per-query
    ``measure`` there (``there``) and on the training collection (``here``), for the same
    checkpoints; where both collections have the same queries, ``test`` is the paired test on
    seed means (:func:`paired_test`) with ``p_holm``, Holm over the collection's paired rows
    (None for other queries)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for collection, spec in registry.cross_domain.items():
        rows: list[dict[str, Any]] = []
        for name in spec.experiments:
            records = [
                r["cross_domain"]
                for r in runs.get(name, [])
                if collection in r.get("cross_domain", {}).get("collections", {})
            ]
            if not records:
                continue
            there = [r["collections"][collection]["per_query"][measure] for r in records]
            # each collection against the in-domain test of the checkpoint it was tested from
            here = [
                r["collections"][collection].get("in_domain", r["in_domain"])["per_query"][measure]
                for r in records
            ]
            same = set(there[0]) == set(here[0])
            test: dict[str, Any] | None = (
                paired_test(seed_average(there), seed_average(here)) if same else None
            )
            rows.append(
                {"name": name, "seeds": len(records), "here": here, "there": there, "test": test}
            )
        paired: list[dict[str, Any]] = [r["test"] for r in rows if r["test"] is not None]
        for test, adjusted in zip(paired, holm([t["p"] for t in paired]), strict=True):
            test["p_holm"] = adjusted
        out[collection] = rows
    return out


def cross_domain_tables(
    registry: Registry, text: ReportText, cross: dict[str, list[dict[str, Any]]]
) -> list[str]:
    """Per cross-domain collection, its rows of :func:`cross_domain_rows` (``cross``): each
    model's test measure there and on the training collection, for the same checkpoints
    (mean [95% CI over queries and seeds]); where both collections have the same queries, the
    paired difference on seed means with its BCa interval, t-test p and Holm's correction over
    the table's rows."""
    lines: list[str] = []
    for collection, rows in cross.items():
        spec = registry.cross_domain[collection]
        lines += [text("cross_domain_heading", collection=collection, what=spec.what), ""]
        if not rows:
            lines += [text("cross_domain_none", collection=collection), ""]
            continue
        lines += [
            f"| model | backbone | seeds | {registry.collection} (same checkpoints) | {collection} "
            f"| difference [95% CI] | t | p | p_holm |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for row in rows:
            t = row["test"]
            if t is None:
                paired = "– (other queries) | – | – | –"
            else:
                paired = (
                    f"{t['diff']:+.4f} [{t['diff_ci'][0]:+.4f}, {t['diff_ci'][1]:+.4f}] | "
                    f"{t['t']:.2f} | {t['p']:.2g} | {t['p_holm']:.2g}"
                )
            lines.append(
                f"| {_model(registry, row['name'])} | {row['seeds']} | {_interval(row['here'])} "
                f"| {_interval(row['there'])} | {paired} |"
            )
        lines.append("")
    return lines[:-1]


def _t_interval(values: Sequence[float], digits: int) -> str:
    """Mean [95% t-interval over seeds] (``scipy.stats.t``, its lower end clipped at 0); the
    mean alone for one value or equal values."""
    from scipy import stats

    arr = np.asarray(values, dtype=float)
    mean = float(arr.mean())
    if arr.size < 2 or float(arr.std()) == 0.0:
        return f"{mean:.{digits}f}"
    low, high = stats.t.interval(0.95, arr.size - 1, loc=mean, scale=stats.sem(arr))
    low = max(float(low), 0.0)  # every quantity here is non-negative
    return f"{mean:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def sparsity_table(registry: Registry, runs: Runs, split: str = "test") -> list[str]:
    """Every sparse model's non-zeros and FLOPS per query, and the image-only models'
    co-activation and caption overlap of their top terms: mean [95% t-interval over seeds]."""
    cols = ["q_nnz", "d_nnz", "flops_per_query"]
    co = ["coactivation", "caption_overlap@10"]
    lines = [
        "| model | backbone | seeds | " + " | ".join([*cols, *co]) + " |",
        "|---|---|---:|" + "---:|" * (len(cols) + len(co)),
    ]
    for name in (n for n in row_order(registry, runs) if has_split(runs, n, split)):
        if registry.is_dense(name):
            continue
        records = runs[name]
        cells = [
            _t_interval([r[split][c] for r in records], 0 if c == "flops_per_query" else 1)
            for c in cols
        ]
        for key in co:
            values = [r["coactivation"][key] for r in records if "coactivation" in r]
            cells.append(_t_interval(values, 4) if len(values) == len(records) else "–")
        n = _seeds_cell(seed_count(registry, runs, name))
        lines.append(f"| {_model(registry, name)} | {n} | " + " | ".join(cells) + " |")
    return lines
