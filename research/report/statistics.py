"""The registry's comparisons tested on finished runs (the tests themselves are
:mod:`research.significance`): per-query paired tests on seed means, a
bootstrap over queries and seeds whose p gets resamples until its Holm decision cannot flip
within Monte Carlo error (:class:`MonteCarloRule`), Holm's correction within each family."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from research.report.records import Runs, has_split, per_query_matrix, shared_queries
from research.report.registry import Comparison, Registry
from research.significance import (
    FINDING3,
    MonteCarloRule,
    coactivation_finding,
    holm,
    paired_test,
    resample_until_decided,
    seed_query_bootstrap,
)

__all__ = [
    "coactivation_tests",
    "find_test",
    "mean_std",
    "seed_average",
    "seed_count",
    "significance",
    "significant",
    "difference_text",
]


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    arr = np.asarray(values, dtype=float)
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0


def seed_average(per_query: Sequence[dict[str, float]]) -> dict[str, float]:
    """Per-query values averaged over seeds (queries every seed scored)."""
    shared = set.intersection(*(set(r) for r in per_query))
    return {q: float(np.mean([r[q] for r in per_query])) for q in sorted(shared)}


def seed_count(registry: Registry, runs: Runs, name: str) -> int | None:
    """How many seeds a row averages (None: a deterministic baseline, no seed)."""
    return None if name in registry.baselines else len(runs[name])


def significance(
    registry: Registry,
    runs: Runs,
    split: str = "test",
    unseen: list[str] | None = None,
    comparisons: Sequence[Comparison] | None = None,
    rule: MonteCarloRule = MonteCarloRule(),
) -> list[dict[str, Any]]:
    """Every comparison of the registry whose two sides have finished runs on ``split``: the
    paired t-test, Wilcoxon and a bootstrap interval over queries on seed means
    (:func:`paired_test`), and a bootstrap over queries and seeds
    (:func:`seed_query_bootstrap`); both p Holm-adjusted within each family. Comparisons on
    the unseen queries are left out when ``unseen`` is None.

    The bootstrap's p follows ``rule`` at the registry's ``findings.alpha``
    (:func:`resample_until_decided`): each row keeps its ``seed_resamples`` (``seed_ci`` and
    ``p_seed`` come from them) and ``p_seed_undecided``, True where even the cap left its Holm
    decision within Monte Carlo error."""
    alpha = float(registry.findings["alpha"])
    rows = []
    matrices = []
    for c in registry.comparisons if comparisons is None else comparisons:
        if not (has_split(runs, c.a, split) and has_split(runs, c.b, split)):
            continue
        if c.queries == "unseen" and unseen is None:
            continue
        subset = unseen if c.queries == "unseen" else None
        qids = shared_queries(runs, [c.a, c.b], split, c.measure, subset)
        if len(qids) < 2:
            continue
        per_a, per_b = (
            seed_average([{q: r["per_query"][split][c.measure][q] for q in qids} for r in runs[n]])
            for n in (c.a, c.b)
        )
        pair = (
            per_query_matrix(runs, c.a, split, c.measure, qids),
            per_query_matrix(runs, c.b, split, c.measure, qids),
        )
        matrices.append(pair)
        seeded = seed_query_bootstrap(*pair, n_resamples=rule.n_resamples)
        seeds_a, seeds_b = seed_count(registry, runs, c.a), seed_count(registry, runs, c.b)
        rows.append(
            {"finding": c.family, "a": c.a, "b": c.b, "measure": c.measure, "queries": c.queries}
            | paired_test(per_a, per_b)
            | {
                "seed_ci": seeded["ci"],
                "p_seed": seeded["p"],
                "seed_resamples": seeded["resamples"],
                "seeds_a": seeds_a,
                "seeds_b": seeds_b,
                # a deterministic baseline has no seed spread to match
                "equal_seeds": seeds_a is None or seeds_b is None or seeds_a == seeds_b,
            }
        )
    for family in dict.fromkeys(r["finding"] for r in rows):
        index = [i for i, r in enumerate(rows) if r["finding"] == family]
        members = [rows[i] for i in index]
        for row, value in zip(members, holm([r["p"] for r in members]), strict=True):
            row["p_holm"] = value
        _seed_p_by_rule(members, [matrices[i] for i in index], alpha, rule)
    return rows


def _seed_p_by_rule(
    members: list[dict[str, Any]],
    matrices: list[tuple[np.ndarray, np.ndarray]],
    alpha: float,
    rule: MonteCarloRule,
) -> None:
    """Holm-adjust one family's bootstrap p under ``rule`` (:func:`resample_until_decided`),
    in place: a member drawn again keeps the larger draw's ``seed_ci``, ``p_seed`` and
    ``seed_resamples``; each gets ``p_seed_holm`` and ``p_seed_undecided``."""
    drawn: dict[tuple[int, int], dict[str, Any]] = {}

    def draw(k: int, rounds: int) -> tuple[float, int]:
        if rounds == 1:  # the first round is the draw every row already has
            return members[k]["p_seed"], members[k]["seed_resamples"]
        drawn[k, rounds] = seed_query_bootstrap(
            *matrices[k], n_resamples=rule.n_resamples, rounds=rounds
        )
        return drawn[k, rounds]["p"], drawn[k, rounds]["resamples"]

    decided = resample_until_decided(draw, len(members), alpha, rule)
    for k, row in enumerate(members):
        if decided["rounds"][k] > 1:
            more = drawn[k, decided["rounds"][k]]
            row |= {"seed_ci": more["ci"], "p_seed": more["p"], "seed_resamples": more["resamples"]}
        row["p_seed_holm"] = decided["p_holm"][k]
        row["p_seed_undecided"] = decided["reject"][k] is None


def significant(test: dict[str, Any] | None, alpha: float) -> bool:
    """Both the t-test and the seed-aware bootstrap reject at ``alpha`` after Holm (a
    bootstrap decision left within Monte Carlo error is no rejection)."""
    return (
        test is not None
        and test["p_holm"] < alpha
        and test["p_seed_holm"] < alpha
        and not test.get("p_seed_undecided", False)
    )


def coactivation_tests(
    registry: Registry, runs: Runs, pair: tuple[str, str] | None = None
) -> list[dict[str, Any]]:
    """Finding 3's family (:func:`coactivation_finding`): the MLP-query image model against
    the MLM-query one (``pair``, by default the registry's), one value per seed; empty when
    either has fewer than 2 seeds with the statistics."""
    mlp, mlm = (
        [r["coactivation"] for r in runs.get(n, []) if r.get("coactivation")]
        for n in (pair or registry.coactivation)
    )
    if len(mlp) < 2 or len(mlm) < 2:
        return []
    mlp_seeds, mlm_seeds = (
        {key: [r[key] for r in rows] for key in FINDING3} for rows in (mlp, mlm)
    )
    return list(coactivation_finding(mlp_seeds, mlm_seeds)["rows"])


def find_test(
    tests: list[dict[str, Any]], a: str, b: str, measure: str = "nDCG@10", queries: str = "all"
) -> dict[str, Any] | None:
    """The row of ``tests`` comparing ``a`` with ``b`` on ``measure`` and ``queries``."""
    wanted = (a, b, measure, queries)
    return next((t for t in tests if (t["a"], t["b"], t["measure"], t["queries"]) == wanted), None)


def difference_text(t: dict[str, Any] | None) -> str:
    """A difference with its interval and both Holm-adjusted p."""
    if t is None:
        return "no test"
    low, high = t["diff_ci"]
    undecided = ", undecided within Monte Carlo error" if t.get("p_seed_undecided") else ""
    return (
        f"{t['diff']:+.4f} [{low:+.4f}, {high:+.4f}], p_holm {t['p_holm']:.2g} (t-test), "
        f"{t['p_seed_holm']:.2g} (queries × seeds{undecided})"
    )
