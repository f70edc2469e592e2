"""The development targets, met or missed: the thresholds of the registry (``targets``)
against the numbers, worded by the report text."""

from __future__ import annotations

import numpy as np

from research.report.findings import pseudo_summary
from research.report.records import Runs, mean_metric, teacher_seed
from research.report.registry import Registry
from research.report.text import ReportText

__all__ = ["targets"]


def targets(registry: Registry, text: ReportText, runs: Runs) -> list[str]:
    """The development targets, met or missed, from the numbers."""
    spec = registry.targets
    out = []
    image_only = [n for n, e in registry.experiments.items() if e.image_only]
    dense_image = mean_metric(runs, spec["image_vs_dense"]["dense"])
    best_image = max(
        (v for v in (mean_metric(runs, n) for n in image_only) if v is not None), default=None
    )
    if dense_image is not None and best_image is not None:
        fraction = spec["image_vs_dense"]["fraction"]
        bound = fraction * dense_image
        verdict = "met" if best_image >= bound else "missed"
        out.append(
            text(
                "target_image_vs_dense",
                best=best_image,
                fraction=fraction,
                dense=registry.experiments[spec["image_vs_dense"]["dense"]].label,
                bound=bound,
                verdict=verdict,
            )
        )
    limit = spec["max_empty_image_vectors"]
    for name in image_only:
        if name in runs:
            shares = [100 * r["test"]["empty_docs"] for r in runs[name]]
            mean = float(np.mean(shares))
            out.append(
                text(
                    "target_empty_vectors",
                    label=registry.label(name),
                    mean=mean,
                    n=len(shares),
                    limit=limit,
                    verdict="met" if mean <= limit else "missed",
                    per_seed=", ".join(f"{v:.1f}%" for v in shares),
                )
            )
    out += _distilled_targets(registry, text, runs)
    recall = spec["recall"]
    model, other = (
        mean_metric(runs, n, recall["measure"]) for n in (recall["model"], recall["above"])
    )
    if model is not None and other is not None:
        verdict = "met" if model > other else "missed"
        out.append(text("target_recall", model=model, other=other, verdict=verdict))
    return out


def _distilled_targets(registry: Registry, text: ReportText, runs: Runs) -> list[str]:
    """Each distilled model against the test nDCG@10 target (a mean over enough seeds), and
    the account of what was tried, missed or met."""
    spec = registry.targets["distilled"]
    target, seeds_needed = spec["min_ndcg"], spec["seeds"]
    distilled = [n for n, e in registry.experiments.items() if e.teacher]
    out, met = [], False
    for name in distilled:
        value = mean_metric(runs, name)
        if value is None:
            continue
        pairs = ", ".join(
            f"seed {r['seed']} from {'MiniLM as shipped' if t is None else f'seed {t}'}"
            for r, t in ((r, teacher_seed(r)) for r in runs[name])
        )
        n = len(runs[name])
        q_nnz, d_nnz, flops = (
            mean_metric(runs, name, key) or 0.0 for key in ("q_nnz", "d_nnz", "flops_per_query")
        )
        if value < target:
            verdict = text("target_distilled_missed", by=target - value)
        elif n >= seeds_needed:
            verdict, met = "met", True
        else:
            verdict = text("target_distilled_too_few_seeds", n=n, seeds=seeds_needed)
        out.append(
            text(
                "target_distilled",
                label=registry.label(name),
                value=value,
                n=n,
                target=target,
                verdict=verdict,
                teachers=pairs,
                q_nnz=q_nnz,
                d_nnz=d_nnz,
                flops=flops,
            )
        )
    if any(n in runs for n in distilled):  # missed or met, the account stays
        gains = []
        for name, base in registry.targets["distillation_steps"]:
            a, b = (mean_metric(runs, n, split="validation") for n in (name, base))
            if a is not None and b is not None:
                gains.append(
                    f"{registry.label(name)} {a:.4f} vs {registry.label(base)} {b:.4f} "
                    f"({a - b:+.4f})"
                )
        outcome = "met" if met else "missed"
        out.append(
            text(
                "distillation_account",
                lead=text(f"distillation_{outcome}"),
                untried=text(f"distillation_untried_{outcome}"),
                gains="; ".join(gains) or text("distillation_no_gains"),
                pseudo=pseudo_summary(registry, text, runs),
            )
        )
    return out
