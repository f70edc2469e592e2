"""The report's judgements: BRIEF.md's findings, the sparse-vs-dense summary and the open
questions, each from the test results and the thresholds of the registry (``findings``),
worded by the report text (the development targets: :mod:`.targets`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from research.report.records import (
    PSEUDO_MANIFEST,
    Runs,
    mean_metric,
    read_pseudo_manifest,
    teacher_seed,
)
from research.report.registry import Registry, dense_families
from research.report.statistics import difference_text, find_test, mean_std, significant
from research.report.tables import row_order
from research.report.text import ReportText
from research.significance import FINDING3, coactivation_finding

__all__ = [
    "best_on_validation",
    "coactivation_pair",
    "dense_comparisons",
    "findings",
    "open_questions",
    "pseudo_summary",
]

Tests = list[dict[str, Any]]


def findings(
    registry: Registry,
    text: ReportText,
    runs: Runs,
    tests: Tests,
    co_tests: Tests,
    spec: dict[str, Any] | None = None,
) -> list[str]:
    """BRIEF.md's findings on the test split, each judged by its own Holm-corrected family.

    ``spec`` names the experiments (``image_vs_captions``, ``image_and_caption`` and the
    ``coactivation`` pair): by default the registry's ``findings``; an entry of its
    ``restated`` list states the same findings for other experiments (another schedule).
    """
    out = []
    alpha = registry.findings["alpha"]
    spec = spec or registry.findings
    first, second = spec["image_vs_captions"], spec["image_and_caption"]
    image = mean_metric(runs, first["image"])
    captions = [mean_metric(runs, n) for n in first["captions"]]
    caption_only = [mean_metric(runs, n) for n in second["captions"]]
    model = mean_metric(runs, second["model"])
    if image is not None and model is not None and None not in captions + caption_only:
        values = [v for v in captions if v is not None]
        tests1 = [find_test(tests, first["image"], c) for c in first["captions"]]
        below = all(significant(t, alpha) and t is not None and t["diff"] < 0 for t in tests1)
        holds = image < first["below"] * min(values) and below
        out.append(
            text(
                "finding_1",
                verdict="holds" if holds else "does not hold",
                image=image,
                captions="/".join(f"{v:.4f}" for v in values),
                tests="; ".join(difference_text(t) for t in tests1),
            )
        )
        tests2 = [find_test(tests, second["model"], c) for c in second["captions"]]
        gain = second["gain"]
        better = any(significant(t, alpha) and t is not None and t["diff"] > gain for t in tests2)
        best = max(v for v in caption_only if v is not None)
        out.append(
            text(
                "finding_2",
                verdict="does not hold" if better else "holds",
                model=model,
                best=best,
                tests="; ".join(difference_text(t) for t in tests2),
                gain=gain,
            )
        )
        expanding = mean_metric(runs, second["expanding"])
        if expanding is not None:
            against = second["captions"][1]
            ndcg = find_test(tests, second["expanding"], against)
            recall = find_test(tests, second["expanding"], against, "R@1000")
            out.append(
                text(
                    "finding_2_expanding",
                    model=expanding,
                    ndcg_test=difference_text(ndcg),
                    recall_test=difference_text(recall),
                )
            )
    by_key = {t["measure"]: t for t in co_tests}
    if len(by_key) == 2:
        co, ov = by_key["coactivation"], by_key["caption_overlap@10"]
        verdict = coactivation_finding(
            {k: by_key[k]["a"] for k in FINDING3}, {k: by_key[k]["b"] for k in FINDING3}
        )["verdict"]
        if verdict == "not shown":
            verdict = text("finding_3_not_shown")
        mlp = coactivation_pair(registry, spec)[0]
        out.append(
            text(
                "finding_3",
                verdict=verdict,
                co=co,
                ov=ov,
                seeds_a=len(co["a"]),
                seeds_b=len(co["b"]),
                co_low=co["diff_ci"][0],
                co_high=co["diff_ci"][1],
                ov_low=ov["diff_ci"][0],
                ov_high=ov["diff_ci"][1],
                empty=100 * mean_std([r["test"]["empty_docs"] for r in runs[mlp]])[0],
            )
        )
    return out


def coactivation_pair(registry: Registry, spec: dict[str, Any]) -> tuple[str, str]:
    """Finding 3's (MLP-query model, MLM-query model) of a findings ``spec``: its own
    ``coactivation`` pair, else the registry's."""
    pair = spec.get("coactivation")
    return (pair["a"], pair["b"]) if pair else registry.coactivation


def dense_comparisons(
    registry: Registry,
    text: ReportText,
    runs: Runs,
    tests: Tests,
    n_unseen: int,
    spec: dict[str, Any] | None = None,
) -> list[str]:
    """Each sparse model of the dense families of ``spec`` (by default the registry's
    ``findings``; ``family`` is one family or a list) against the untrained dense model and
    the dense teacher, on all test queries and on the unseen ones, each with its own
    family's Holm correction."""
    spec = (spec or registry.findings)["dense"]
    untrained, teacher = spec["untrained"], spec["teacher"]
    families = dense_families(spec)
    models = [(c.a, c.family) for c in registry.comparisons if c.family in families]
    out = []
    for model, family in dict.fromkeys(models):
        family_tests = [t for t in tests if t["finding"] == family]  # that family's Holm
        parts = []
        for queries, what in (
            ("all", text("dense_all_queries")),
            ("unseen", text("dense_unseen_queries", n=n_unseen)),
        ):
            zero = find_test(family_tests, model, untrained, queries=queries)
            dense = find_test(family_tests, model, teacher, queries=queries)
            if zero is None or dense is None:
                continue
            parts.append(
                text(
                    "dense_part",
                    queries=what,
                    a=zero["mean_a"],
                    untrained=zero["mean_b"],
                    untrained_test=difference_text(zero),
                    teacher=dense["mean_b"],
                    teacher_diff=dense["diff"],
                    teacher_p=dense["p_holm"],
                )
            )
        if parts:
            out.append(
                text(
                    "dense_model",
                    label=registry.label(model),
                    backbone=registry.backbone_cell(model),
                    parts="; ".join(parts),
                )
            )
    return out


def best_on_validation(registry: Registry, text: ReportText, runs: Runs) -> list[str]:
    """The best sparse model on validation, where designs are chosen, against the untrained
    dense model of the registry's ``findings.dense`` (nothing before both have run)."""
    out = []
    untrained = registry.findings["dense"]["untrained"]
    sparse = {
        n: v
        for n in row_order(registry, runs)
        if not registry.is_dense(n) and (v := mean_metric(runs, n, split="validation")) is not None
    }
    zero_value = mean_metric(runs, untrained, split="validation")
    if sparse and zero_value is not None:
        best = max(sparse, key=lambda n: sparse[n])
        out.append(
            text(
                "dense_best_validation",
                label=registry.label(best),
                value=sparse[best],
                untrained=zero_value,
            )
        )
    return out


def _difference(registry: Registry, t: dict[str, Any]) -> str:
    """``A − B, queries: diff [CI]`` of one test row, its seed counts when they differ."""
    seeds = "" if t["equal_seeds"] else f", seeds {t['seeds_a']}/{t['seeds_b']}"
    low, high = t["diff_ci"]
    return (
        f"{registry.label(t['a'])} − {registry.label(t['b'])} ({t['queries']}{seeds}) "
        f"{t['diff']:+.4f} [{low:+.4f}, {high:+.4f}]"
    )


def open_questions(
    registry: Registry, text: ReportText, tests: Tests, cross: dict[str, list[dict[str, Any]]]
) -> list[str]:
    """The paper's open questions the registry lists under ``findings.questions``, each
    answered from its family's tests (which differences are significant in both tests after
    Holm, and how many are not) or from the cross-domain rows ``cross``
    (:func:`~research.report.tables.cross_domain_rows`: paired t-test, Holm within each
    collection). A question with nothing finished yet is left out."""
    alpha = registry.findings["alpha"]
    out = []
    for question in registry.findings.get("questions", []):
        title = question["title"]
        if "family" in question:
            rows = [t for t in tests if t["finding"] == question["family"]]
            if not rows:
                continue
            hits = [t for t in rows if significant(t, alpha)]
            out.append(
                text(
                    "question_family",
                    title=title,
                    family=question["family"],
                    n=len(rows),
                    significant="; ".join(_difference(registry, t) for t in hits)
                    or text("question_none"),
                    rest=text("question_rest", rest=len(rows) - len(hits))
                    if len(rows) > len(hits)
                    else "",
                )
            )
            continue
        parts = []
        for collection, rows in cross.items():
            paired = [r for r in rows if r["test"] is not None]
            if not paired:
                continue
            moved, still = (
                ", ".join(
                    f"{registry.label(r['name'])} {r['test']['diff']:+.4f} "
                    f"(p_holm {r['test']['p_holm']:.2g})"
                    for r in paired
                    if (r["test"]["p_holm"] < alpha) == changed
                )
                or text("question_none")
                for changed in (True, False)
            )
            parts.append(
                text("question_collection", collection=collection, moved=moved, still=still)
            )
        if parts:
            out.append(text("question_cross_domain", title=title, parts="; ".join(parts)))
    if out:
        out = [text("questions_intro"), "", *out]
    return out


def pseudo_summary(registry: Registry, text: ReportText, runs: Runs) -> str:
    """How many pseudo-queries the first finished pseudo-query run learnt from, as the
    manifest (``results/pseudo_queries.json``) records its collection."""
    name = next((n for n, e in registry.experiments.items() if e.pseudo_queries and n in runs), "")
    if not name:
        return text("pseudo_summary_no_run")
    first = runs[name][0]
    option = next(o for o in first["overrides"] if o.startswith("--data.collection="))
    collection = Path(option.split("=", 1)[1]).name
    path = registry.results_dir / PSEUDO_MANIFEST
    manifest = read_pseudo_manifest(registry.results_dir)
    if collection not in manifest:
        return text("pseudo_summary_not_recorded", collection=collection, manifest=path.name)
    made = manifest[collection]
    return text(
        "pseudo_summary",
        pseudo_queries=made["pseudo_queries"],
        candidates=made["candidates"],
        seed=teacher_seed(first),
    )
