"""Statistics behind RESULTS.md: confidence intervals, paired tests and corrections.

Every test compares two systems on the same queries (paired). The inputs are per-query
values, either one value per query (a deterministic baseline, or a model's values averaged
over its seeds) or a ``(seeds, queries)`` matrix when the spread over training seeds has to
enter the answer. The work is done by scipy (``ttest_rel``, ``wilcoxon``, ``bootstrap``,
``permutation_test``); what is written here is the bookkeeping around it, Holm's step-down
correction (not in scipy) and a two-level bootstrap over queries and seeds.

Pure numpy/scipy: no torch, no Lightning.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from lightning_mlsr.retrieval.evaluation import mean_interval

__all__ = [
    "MonteCarloRule",
    "bootstrap_mean_ci",
    "bootstrap_p_error",
    "coactivation_finding",
    "holm",
    "holm_within_mc_error",
    "independent_test",
    "paired_test",
    "resample_until_decided",
    "seed_query_bootstrap",
]

#: confidence level of every interval in the report
CONFIDENCE = 0.95


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error control), in input order.

    The i-th smallest of m p-values is multiplied by ``m - i`` (i from 0), the running
    maximum taken so that adjusted values keep the order of the raw ones, capped at 1.
    """
    p = np.asarray(pvalues, dtype=float)
    if p.ndim != 1:
        raise ValueError(f"holm expects a flat list of p-values, got shape {p.shape}")
    if p.size == 0:
        return []
    if np.any((p < 0) | (p > 1) | np.isnan(p)):
        raise ValueError(f"p-values must lie in [0, 1], got {p.tolist()}")
    order = np.argsort(p, kind="stable")
    scaled = p[order] * (p.size - np.arange(p.size))
    adjusted = np.minimum(1.0, np.maximum.accumulate(scaled))
    out = np.empty_like(adjusted)
    out[order] = adjusted
    return [float(v) for v in out]


def bootstrap_mean_ci(
    values: Sequence[float] | np.ndarray,
    *,
    confidence: float = CONFIDENCE,
    n_resamples: int = 9999,
    seed: int = 0,
) -> tuple[float, float]:
    """BCa bootstrap interval of the mean of ``values``: the package's one interval of a
    mean, :func:`lightning_mlsr.retrieval.evaluation.mean_interval` (model cards and
    ``score`` give the same).

    Shape: ``(N,)`` -> two floats.
    """
    return mean_interval(values, confidence=confidence, n_resamples=n_resamples, seed=seed)


def paired_test(
    a: Mapping[str, float],
    b: Mapping[str, float],
    *,
    confidence: float = CONFIDENCE,
    n_resamples: int = 9999,
    seed: int = 0,
) -> dict[str, Any]:
    """Is ``mean(a - b)`` over the queries both scored different from 0?

    Returns ``n``, ``mean_a``, ``mean_b``, ``diff`` (mean of a - b), ``diff_ci`` (BCa
    bootstrap interval of that mean), the paired t-test's ``t`` and two-sided ``p``
    (``scipy.stats.ttest_rel``) and Wilcoxon's signed-rank ``wilcoxon_p``
    (``scipy.stats.wilcoxon``, zero differences dropped). Both p are 1 when every
    difference is 0.
    """
    qids = sorted(set(a) & set(b))
    if len(qids) < 2:
        raise ValueError(f"paired_test needs at least 2 shared queries, got {len(qids)}")
    x = np.array([a[q] for q in qids], dtype=float)
    y = np.array([b[q] for q in qids], dtype=float)
    diff = x - y
    if not np.any(diff != 0):
        t, p, w = 0.0, 1.0, 1.0
    else:
        result = stats.ttest_rel(x, y)
        t, p = float(result.statistic), float(result.pvalue)
        w = float(stats.wilcoxon(x, y, zero_method="wilcox").pvalue)
    return {
        "n": len(qids),
        "mean_a": float(x.mean()),
        "mean_b": float(y.mean()),
        "diff": float(diff.mean()),
        "diff_ci": bootstrap_mean_ci(
            diff, confidence=confidence, n_resamples=n_resamples, seed=seed
        ),
        "t": t,
        "p": p,
        "wilcoxon_p": w,
    }


def seed_query_bootstrap(
    a: np.ndarray,
    b: np.ndarray | None = None,
    *,
    confidence: float = CONFIDENCE,
    n_resamples: int = 4999,
    seed: int = 0,
    rounds: int = 1,
) -> dict[str, Any]:
    """Two-level bootstrap over queries and training seeds of ``mean(a)`` or of
    ``mean(a) - mean(b)``: each resample draws the queries with replacement (the same
    draw for both systems: paired) and, independently for each system, its seeds with
    replacement, so the interval carries both the query sample and the seed spread.

    Returns ``estimate``, the percentile interval ``ci``, the number of ``resamples`` and,
    with ``b``, a two-sided ``p`` (twice the smaller share of resamples on either side of 0,
    with the usual +1 so a Monte Carlo p is never 0). A system with one seed (a
    deterministic baseline) contributes no seed spread.

    ``rounds`` draws ``rounds × n_resamples`` resamples, ``n_resamples`` at a time from one
    generator (memory stays that of one round): the first round is the one ``rounds=1``
    draws, so a larger ``rounds`` extends the same stream rather than replacing it.

    Shape: ``a`` ``(S_a, Q)``, ``b`` ``(S_b, Q)`` over the same queries in the same order.
    """
    a = np.atleast_2d(np.asarray(a, dtype=float))
    if b is not None:
        b = np.atleast_2d(np.asarray(b, dtype=float))
        if b.shape[1] != a.shape[1]:
            raise ValueError(f"a and b must score the same queries: {a.shape} vs {b.shape}")
    n_queries = a.shape[1]
    if n_queries < 2:
        raise ValueError(f"seed_query_bootstrap needs at least 2 queries, got {n_queries}")
    if rounds < 1:
        raise ValueError(f"seed_query_bootstrap needs rounds >= 1, got {rounds}")
    rng = np.random.default_rng(seed)

    def one_round() -> np.ndarray:
        queries = rng.integers(0, n_queries, size=(n_resamples, n_queries))  # (R, Q)

        def resampled_means(m: np.ndarray) -> np.ndarray:
            seeds = rng.integers(0, m.shape[0], size=(n_resamples, m.shape[0]))  # (R, S)
            per_query = m[seeds].mean(axis=1)  # (R, Q)
            return np.take_along_axis(per_query, queries, axis=1).mean(axis=1)  # (R,)

        means = resampled_means(a)
        return means if b is None else means - resampled_means(b)

    draws = np.concatenate([one_round() for _ in range(rounds)])  # (rounds * R,)
    estimate = float(a.mean()) - (0.0 if b is None else float(b.mean()))
    alpha = 1 - confidence
    low, high = np.quantile(draws, [alpha / 2, 1 - alpha / 2])
    total = draws.size
    out: dict[str, Any] = {
        "estimate": estimate,
        "ci": (float(low), float(high)),
        "resamples": total,
    }
    if b is not None:
        if not np.any(draws != 0):
            out["p"] = 1.0
        else:
            side = min(int(np.sum(draws <= 0)), int(np.sum(draws >= 0)))
            out["p"] = min(1.0, 2 * (side + 1) / (total + 1))
    return out


def bootstrap_p_error(p: float, resamples: int) -> float:
    """Monte Carlo standard error of a two-sided bootstrap ``p`` from ``resamples`` draws.

    The p is twice a share ``q = p / 2`` of the draws, so its error is
    ``2 * sqrt(q (1 - q) / B) = sqrt(p (2 - p) / B)`` (larger than the ``sqrt(p (1 - p) / B)``
    of a one-sided share: the doubling doubles the error too).
    """
    if resamples < 1:
        raise ValueError(f"bootstrap_p_error needs resamples >= 1, got {resamples}")
    q = min(max(p, 0.0), 1.0)
    return float(np.sqrt(q * (2 - q) / resamples))


@dataclass(frozen=True)
class MonteCarloRule:
    """How many resamples a bootstrap p gets before the report states its decision.

    Every p starts with ``n_resamples`` resamples; its Monte Carlo interval is
    ``p ± z · SE`` (:func:`bootstrap_p_error`), clipped to [0, 1]. Holm's correction is applied
    to the interval's lower ends and to its upper ends (the adjusted p is non-decreasing in
    each raw p, so the adjusted p of any value inside the intervals lies between the two).
    A decision at ``alpha`` is taken when both adjusted ends fall on the same side of it;
    while one straddles ``alpha``, the p that can move it get ``growth`` times as many
    resamples, up to ``max_rounds × n_resamples``; a decision still straddling at that cap is
    reported as undecided within Monte Carlo error (and counted as no rejection).
    """

    n_resamples: int = 4999
    z: float = 3.0
    growth: int = 4
    max_rounds: int = 64

    @property
    def max_resamples(self) -> int:
        return self.n_resamples * self.max_rounds


def holm_within_mc_error(
    pvalues: Sequence[float],
    resamples: Sequence[int],
    alpha: float,
    z: float = MonteCarloRule.z,
) -> dict[str, list[Any]]:
    """Holm's decisions at ``alpha`` for a family of Monte Carlo p-values, each from its own
    number of ``resamples``: ``p_holm`` (Holm of the p themselves), ``low`` and ``high`` (Holm
    of the ends of ``p ± z · SE``), the raw interval ends ``raw_low``/``raw_high``, and
    ``reject``: True (rejects at ``alpha`` anywhere in the intervals), False (nowhere) or None
    (undecided: the Monte Carlo error straddles ``alpha``)."""
    p = [float(v) for v in pvalues]
    if len(p) != len(resamples):
        raise ValueError(f"{len(p)} p-values but {len(resamples)} resample counts")
    errors = [z * bootstrap_p_error(v, n) for v, n in zip(p, resamples, strict=True)]
    raw_low = [max(0.0, v - e) for v, e in zip(p, errors, strict=True)]
    raw_high = [min(1.0, v + e) for v, e in zip(p, errors, strict=True)]
    low, high = holm(raw_low), holm(raw_high)
    reject = [True if h < alpha else False if lo >= alpha else None for lo, h in zip(low, high)]
    return {
        "p_holm": holm(p),
        "low": low,
        "high": high,
        "raw_low": raw_low,
        "raw_high": raw_high,
        "reject": reject,
    }


def resample_until_decided(
    draw: Callable[[int, int], tuple[float, int]],
    size: int,
    alpha: float,
    rule: MonteCarloRule = MonteCarloRule(),
) -> dict[str, list[Any]]:
    """Apply :class:`MonteCarloRule` to a Holm family of ``size`` bootstrap p-values.

    ``draw(i, rounds)`` returns member ``i``'s ``(p, resamples)`` from ``rounds`` rounds of
    ``rule.n_resamples`` resamples (seeded, so the same call gives the same p). Every member
    starts at one round; while some decision is undecided, each undecided member is drawn
    again with ``rule.growth`` times the rounds, up to ``rule.max_rounds``. Once every
    undecided member is at the cap, the members whose intervals overlap an undecided one's
    (the two may swap places in Holm's order) are grown the same way. A member wholly below
    an undecided one cannot keep it undecided: were its own adjusted interval below
    ``alpha`` it would add nothing above ``alpha`` to the other's running maximum, were it
    above, the other would be decided too. So members whose decision is clear keep the p
    of their first round.

    Returns :func:`holm_within_mc_error`'s lists plus ``p``, ``resamples`` and ``rounds``
    per member; ``reject`` is None only where the cap left a decision within Monte Carlo
    error.
    """
    rounds = [1] * size
    got = [draw(i, 1) for i in range(size)]
    while True:
        decided = holm_within_mc_error([p for p, _ in got], [n for _, n in got], alpha, rule.z)
        open_ = [i for i, r in enumerate(decided["reject"]) if r is None]
        if not open_:
            break
        low, high = decided["raw_low"], decided["raw_high"]
        grow = [i for i in open_ if rounds[i] < rule.max_rounds] or [
            j
            for j in range(size)
            if rounds[j] < rule.max_rounds
            and any(low[j] <= high[i] and low[i] <= high[j] for i in open_)
        ]
        if not grow:
            break
        for j in grow:
            rounds[j] = min(rounds[j] * rule.growth, rule.max_rounds)
            got[j] = draw(j, rounds[j])
    return decided | {
        "p": [p for p, _ in got],
        "resamples": [n for _, n in got],
        "rounds": rounds,
    }


def independent_test(
    x: Sequence[float],
    y: Sequence[float],
    *,
    confidence: float = CONFIDENCE,
    seed: int = 0,
) -> dict[str, Any]:
    """Two independent groups of a few values (one per training seed): is mean(x) - mean(y)
    different from 0?

    Returns ``diff``, its percentile bootstrap interval ``diff_ci``
    (``scipy.stats.bootstrap``, groups resampled separately), the exact two-sided
    permutation ``p`` over every relabelling (``scipy.stats.permutation_test``; with 3 and 3
    values it cannot fall below 0.1) and Welch's ``welch_p`` (``scipy.stats.ttest_ind``).
    """
    xs, ys = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if xs.size < 2 or ys.size < 2:
        raise ValueError(f"independent_test needs 2+ values per group, got {xs.size}, {ys.size}")

    def mean_diff(u: np.ndarray, v: np.ndarray, axis: int = -1) -> np.ndarray:
        return np.mean(u, axis=axis) - np.mean(v, axis=axis)

    perm = stats.permutation_test(
        (xs, ys), mean_diff, permutation_type="independent", n_resamples=np.inf, vectorized=True
    )
    boot = stats.bootstrap(
        (xs, ys),
        mean_diff,
        method="percentile",
        confidence_level=confidence,
        n_resamples=9999,
        vectorized=True,
        rng=np.random.default_rng(seed),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # equal constant groups: nan
        welch = float(stats.ttest_ind(xs, ys, equal_var=False).pvalue)
    return {
        "diff": float(xs.mean() - ys.mean()),
        "diff_ci": (float(boot.confidence_interval.low), float(boot.confidence_interval.high)),
        "p": float(perm.pvalue),
        "welch_p": 1.0 if np.isnan(welch) else welch,
    }


#: finding 3's two statistics and which way is better for the MLP query head
FINDING3 = {"coactivation": "lower", "caption_overlap@10": "higher"}


def coactivation_finding(
    mlp: Mapping[str, Sequence[float]],
    mlm: Mapping[str, Sequence[float]],
    alpha: float = 0.05,
) -> dict[str, Any]:
    """BRIEF.md's finding 3 tested on per-seed values: is the MLP-query image model less
    co-activated (``coactivation``) and more interpretable (``caption_overlap@10``) than the
    MLM-query one (M1)?

    Each statistic gets :func:`independent_test` over seeds, Holm-adjusted over the two
    (``p_holm``). ``verdict``: ``"holds"`` when both differ in the finding's direction and
    both reject at ``alpha``; ``"not shown"`` when the direction agrees but the test does not
    support it; ``"does not hold"`` when a direction is against it. ``rows``: one dict per
    statistic (``measure``, ``better``, per-seed ``a``/``b``, means, the test's fields).
    """
    rows = []
    for key, better in FINDING3.items():
        a, b = list(mlp.get(key, [])), list(mlm.get(key, []))
        if len(a) < 2 or len(b) < 2:
            raise ValueError(
                f"finding 3 needs 2+ seeds per model for {key}: got {len(a)} and {len(b)}"
            )
        rows.append(
            {"measure": key, "better": better, "a": a, "b": b}
            | {"mean_a": float(np.mean(a)), "mean_b": float(np.mean(b))}
            | independent_test(a, b)
        )
    for row, value in zip(rows, holm([r["p"] for r in rows]), strict=True):
        row["p_holm"] = value
    direction = all((r["diff"] < 0) if r["better"] == "lower" else (r["diff"] > 0) for r in rows)
    if not direction:
        verdict = "does not hold"
    elif all(r["p_holm"] < alpha for r in rows):
        verdict = "holds"
    else:
        verdict = "not shown"
    return {"verdict": verdict, "rows": rows}
