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
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats

__all__ = [
    "bootstrap_mean_ci",
    "coactivation_finding",
    "holm",
    "independent_test",
    "paired_test",
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
    """BCa bootstrap interval of the mean of ``values`` (``scipy.stats.bootstrap``).

    A constant sample has the degenerate interval ``(v, v)`` (BCa is undefined there).
    Shape: ``(N,)`` -> two floats.
    """
    x = np.asarray(values, dtype=float)
    if x.ndim != 1 or x.size < 2:
        raise ValueError(
            f"bootstrap_mean_ci needs at least 2 values in a flat array, got {x.shape}"
        )
    if np.ptp(x) == 0:
        return float(x[0]), float(x[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)
        res = stats.bootstrap(
            (x,),
            np.mean,
            n_resamples=n_resamples,
            confidence_level=confidence,
            method="BCa",
            rng=np.random.default_rng(seed),
        )
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


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
) -> dict[str, Any]:
    """Two-level bootstrap over queries and training seeds of ``mean(a)`` or of
    ``mean(a) - mean(b)``: each resample draws the queries with replacement (the same
    draw for both systems: paired) and, independently for each system, its seeds with
    replacement, so the interval carries both the query sample and the seed spread.

    Returns ``estimate``, the percentile interval ``ci`` and, with ``b``, a two-sided ``p``
    (twice the smaller share of resamples on either side of 0, with the usual +1 so a
    Monte Carlo p is never 0). A system with one seed (a deterministic baseline)
    contributes no seed spread.

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
    rng = np.random.default_rng(seed)
    queries = rng.integers(0, n_queries, size=(n_resamples, n_queries))  # (R, Q)

    def resampled_means(m: np.ndarray) -> np.ndarray:
        seeds = rng.integers(0, m.shape[0], size=(n_resamples, m.shape[0]))  # (R, S)
        per_query = m[seeds].mean(axis=1)  # (R, Q)
        return np.take_along_axis(per_query, queries, axis=1).mean(axis=1)  # (R,)

    draws = resampled_means(a)
    estimate = float(a.mean())
    if b is not None:
        draws = draws - resampled_means(b)
        estimate -= float(b.mean())
    alpha = 1 - confidence
    low, high = np.quantile(draws, [alpha / 2, 1 - alpha / 2])
    out: dict[str, Any] = {"estimate": estimate, "ci": (float(low), float(high))}
    if b is not None:
        if not np.any(draws != 0):
            out["p"] = 1.0
        else:
            side = min(int(np.sum(draws <= 0)), int(np.sum(draws >= 0)))
            out["p"] = min(1.0, 2 * (side + 1) / (n_resamples + 1))
    return out


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
