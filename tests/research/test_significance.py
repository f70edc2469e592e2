"""research.significance against hand-computed answers and scipy on seeded data."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from lightning_mlsr.retrieval.evaluation import mean_interval
from research.significance import (
    MonteCarloRule,
    bootstrap_mean_ci,
    bootstrap_p_error,
    holm,
    holm_within_mc_error,
    independent_test,
    paired_test,
    resample_until_decided,
    seed_query_bootstrap,
)


def _t_sf_two_sided_df3(t: float) -> float:
    """Two-sided p of Student's t with 3 degrees of freedom, from its closed-form CDF."""
    cdf = 0.5 + (t / (math.sqrt(3) * (1 + t * t / 3)) + math.atan(t / math.sqrt(3))) / math.pi
    return 2 * (1 - cdf)


def test_holm_by_hand() -> None:
    # sorted: 0.01 x4 = 0.04; 0.03 x3 = 0.09; 0.04 x2 = 0.08 -> running max 0.09; 0.2 x1
    assert holm([0.01, 0.04, 0.03, 0.2]) == pytest.approx([0.04, 0.09, 0.09, 0.2])
    assert holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])  # capped
    assert holm([0.02]) == pytest.approx([0.02]) and holm([]) == []
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        holm([0.1, 1.5])


def test_holm_is_stricter_than_benjamini_hochberg_on_the_same_family() -> None:
    p = np.random.default_rng(0).uniform(0, 0.1, size=12)
    bh = stats.false_discovery_control(p, method="bh")
    assert np.all(np.asarray(holm(p)) >= bh - 1e-12)


def test_paired_test_on_two_synthetic_runs_with_a_known_answer() -> None:
    a = {"q1": 0.5, "q2": 0.6, "q3": 0.9, "q4": 1.0}
    b = {"q1": 0.4, "q2": 0.4, "q3": 0.6, "q4": 0.6, "only_b": 0.0}  # differences .1 .2 .3 .4
    got = paired_test(a, b)
    diffs = [0.1, 0.2, 0.3, 0.4]
    sd = math.sqrt(sum((d - 0.25) ** 2 for d in diffs) / 3)
    t = 0.25 / (sd / 2)  # 3.873
    assert got["n"] == 4
    assert got["diff"] == pytest.approx(0.25)
    assert got["t"] == pytest.approx(t)
    assert got["p"] == pytest.approx(_t_sf_two_sided_df3(t), rel=1e-6)  # 0.0305
    # Wilcoxon, exact: all 4 signed ranks positive is 1 of 2^4 sign patterns, two-sided
    assert got["wilcoxon_p"] == pytest.approx(2 / 16)
    low, high = got["diff_ci"]
    assert 0.1 <= low < 0.25 < high <= 0.4  # a bootstrap mean never leaves the sample's range
    swapped = paired_test(b, a)
    assert swapped["t"] == pytest.approx(-t) and swapped["p"] == pytest.approx(got["p"])
    same = paired_test(a, dict(a))
    assert (same["diff"], same["p"], same["wilcoxon_p"], same["diff_ci"]) == (
        0.0,
        1.0,
        1.0,
        (0.0, 0.0),
    )
    with pytest.raises(ValueError, match="at least 2 shared"):
        paired_test({"q1": 1.0}, {"q1": 0.0})


def test_bootstrap_mean_ci_is_scipys_bca_interval() -> None:
    x = np.random.default_rng(1).beta(0.5, 2.0, size=200)
    got = bootstrap_mean_ci(x, seed=3, n_resamples=2000)
    ref = stats.bootstrap((x,), np.mean, n_resamples=2000, rng=np.random.default_rng(3))
    assert got == pytest.approx((ref.confidence_interval.low, ref.confidence_interval.high))
    # and it behaves like a 95% interval: t-interval of the same sample is close
    t_low, t_high = stats.t.interval(0.95, len(x) - 1, x.mean(), stats.sem(x))
    assert got[0] == pytest.approx(t_low, abs=0.01) and got[1] == pytest.approx(t_high, abs=0.01)
    assert bootstrap_mean_ci([0.3, 0.3, 0.3]) == (0.3, 0.3)
    # the report's intervals are the package's one bootstrap (model cards, evaluation)
    values = list(x[:40])
    assert bootstrap_mean_ci(values) == mean_interval(values)


def test_seed_query_bootstrap_with_one_seed_is_the_paired_query_bootstrap() -> None:
    rng = np.random.default_rng(2)
    a = rng.uniform(0, 1, size=(1, 300))
    b = a - rng.normal(0.03, 0.2, size=(1, 300))  # a better by 0.018 here: t-test p 0.16
    got = seed_query_bootstrap(a, b, n_resamples=4000, seed=0)
    ref = stats.bootstrap(
        (a[0], b[0]),
        lambda u, v, axis=-1: np.mean(u - v, axis=axis),
        paired=True,
        method="percentile",
        n_resamples=4000,
        rng=np.random.default_rng(5),
    ).confidence_interval
    width = ref.high - ref.low
    assert got["estimate"] == pytest.approx(float(a.mean() - b.mean()))
    assert got["ci"][0] == pytest.approx(ref.low, abs=0.1 * width)
    assert got["ci"][1] == pytest.approx(ref.high, abs=0.1 * width)
    t_p = stats.ttest_rel(a[0], b[0]).pvalue
    assert 0.05 < t_p < 0.5 and t_p / 1.5 < got["p"] < 1.5 * t_p  # large-sample agreement
    assert seed_query_bootstrap(a, a)["p"] == 1.0


def test_seed_query_bootstrap_carries_the_seed_spread() -> None:
    """With no spread over queries, the interval is the bootstrap over seeds alone."""
    seeds_a = np.array([0.30, 0.34, 0.41])
    seeds_b = np.array([0.28, 0.29, 0.33])
    a = np.repeat(seeds_a[:, None], 50, axis=1)  # (3, 50): each seed scores every query alike
    b = np.repeat(seeds_b[:, None], 50, axis=1)
    got = seed_query_bootstrap(a, b, n_resamples=6000, seed=0)
    ref = stats.bootstrap(
        (seeds_a, seeds_b),
        lambda u, v, axis=-1: np.mean(u, axis=axis) - np.mean(v, axis=axis),
        method="percentile",
        n_resamples=6000,
        rng=np.random.default_rng(1),
    ).confidence_interval
    assert got["ci"][0] == pytest.approx(ref.low, abs=0.01)
    assert got["ci"][1] == pytest.approx(ref.high, abs=0.01)
    single = seed_query_bootstrap(a[:1], b[:1])  # one seed each: no spread left
    assert single["ci"] == pytest.approx((0.02, 0.02))
    mean_only = seed_query_bootstrap(a)
    assert "p" not in mean_only and mean_only["estimate"] == pytest.approx(seeds_a.mean())
    with pytest.raises(ValueError, match="same queries"):
        seed_query_bootstrap(a, b[:, :10])


def test_independent_test_is_exact_over_every_relabelling() -> None:
    x, y = [0.03, 0.025, 0.031], [0.09, 0.08, 0.1]
    got = independent_test(x, y)
    assert got["p"] == pytest.approx(2 / 20)  # separated groups: 2 of C(6,3) relabellings
    assert got["welch_p"] == pytest.approx(stats.ttest_ind(x, y, equal_var=False).pvalue)
    assert got["diff"] == pytest.approx(np.mean(x) - np.mean(y))
    assert got["diff_ci"][0] <= got["diff"] <= got["diff_ci"][1] < 0
    mixed = independent_test([1.0, 3.0, 5.0], [2.0, 4.0, 6.0])
    assert mixed["p"] > 0.5


def test_finding_three_needs_the_test_not_just_the_direction() -> None:
    from research.significance import coactivation_finding

    def seeds(co: list[float], overlap: list[float]) -> dict[str, list[float]]:
        return {"coactivation": co, "caption_overlap@10": overlap}

    mlp3, m13 = seeds([0.03, 0.02, 0.025], [0.04, 0.05, 0.03]), seeds([0.09, 0.1, 0.08], [0.01] * 3)
    three = coactivation_finding(mlp3, m13)
    assert three["verdict"] == "not shown"  # separated, but 3 vs 3 seeds: exact p >= 0.1
    assert [r["p_holm"] for r in three["rows"]] == pytest.approx([0.2, 0.2])
    mlp5 = seeds([0.03, 0.02, 0.025, 0.028, 0.022], [0.04, 0.05, 0.03, 0.045, 0.035])
    m15 = seeds([0.09, 0.1, 0.08, 0.085, 0.095], [0.01, 0.012, 0.011, 0.009, 0.013])
    five = coactivation_finding(mlp5, m15)
    assert five["verdict"] == "holds"  # 2 of C(10,5) = 252 relabellings, x2 for Holm
    assert [r["p_holm"] for r in five["rows"]] == pytest.approx([4 / 252, 4 / 252])
    assert coactivation_finding(m15, mlp5)["verdict"] == "does not hold"
    with pytest.raises(ValueError, match="2\\+ seeds"):
        coactivation_finding(seeds([0.1], [0.1]), m13)


def test_holm_is_non_decreasing_in_each_p() -> None:
    """What the Monte Carlo rule rests on: Holm of the intervals' ends bounds Holm of any
    p-values inside them."""
    rng = np.random.default_rng(0)
    for _ in range(300):
        p = rng.uniform(0, 0.2, size=rng.integers(1, 8))
        low, high = p * rng.uniform(0.5, 1, p.size), p * rng.uniform(1, 1.5, p.size)
        inside = rng.uniform(low, high)
        assert np.all(np.array(holm(low)) <= np.array(holm(inside)) + 1e-15)
        assert np.all(np.array(holm(inside)) <= np.array(holm(high)) + 1e-15)


def test_bootstrap_p_error_is_twice_the_error_of_the_share() -> None:
    assert bootstrap_p_error(0.05, 4999) == pytest.approx(2 * math.sqrt(0.025 * 0.975 / 4999))
    assert bootstrap_p_error(0.05, 4 * 4999) == pytest.approx(bootstrap_p_error(0.05, 4999) / 2)
    # the spread of the p over the bootstrap's own seeds is what it estimates
    rng = np.random.default_rng(1)
    a = rng.normal(0.0, 1.0, size=(1, 60))
    a = a - a.mean() + 0.27  # t-test p about 0.04
    ps = [
        seed_query_bootstrap(a, np.zeros_like(a), n_resamples=999, seed=s)["p"] for s in range(60)
    ]
    assert np.std(ps) == pytest.approx(bootstrap_p_error(float(np.mean(ps)), 999), rel=0.35)


def test_seed_query_bootstrap_rounds_extend_the_same_stream() -> None:
    rng = np.random.default_rng(4)
    a, b = rng.uniform(0, 1, size=(3, 40)), rng.uniform(0, 1, size=(2, 40))
    one = seed_query_bootstrap(a, b, n_resamples=500, seed=7)
    assert one == seed_query_bootstrap(a, b, n_resamples=500, seed=7, rounds=1)
    four = seed_query_bootstrap(a, b, n_resamples=500, seed=7, rounds=4)
    assert (one["resamples"], four["resamples"]) == (500, 2000)
    assert four["estimate"] == one["estimate"] and four["p"] != one["p"]
    with pytest.raises(ValueError, match="rounds >= 1"):
        seed_query_bootstrap(a, b, rounds=0)


def _near_alpha() -> tuple[np.ndarray, np.ndarray]:
    """Seeded per-query differences whose bootstrap p lies about 0.06: 4,999 resamples with
    seed 0 give 0.0488 (below 0.05), seeds 1 to 5 give 0.063 to 0.074."""
    rng = np.random.default_rng(3)
    a = rng.normal(0.0, 1.0, size=(1, 100))
    return a - a.mean() + 0.2, np.zeros((1, 100))  # (1, Q) each


def test_monte_carlo_rule_resolves_a_decision_a_fixed_4999_resamples_leave_to_chance() -> None:
    a, b = _near_alpha()
    fixed = [seed_query_bootstrap(a, b, seed=s)["p"] for s in range(6)]
    assert fixed[0] < 0.05 < min(fixed[1:])  # the decision depends on the bootstrap's seed
    assert holm_within_mc_error([fixed[0]], [4999], 0.05)["reject"] == [None]

    def draw(i: int, rounds: int) -> tuple[float, int]:
        got = seed_query_bootstrap(a, b, seed=0, rounds=rounds)
        return got["p"], got["resamples"]

    decided = resample_until_decided(draw, 1, 0.05)
    assert decided["rounds"] == [4] and decided["resamples"] == [4 * 4999]
    assert decided["reject"] == [False] and decided["low"][0] >= 0.05
    assert decided["p"][0] == pytest.approx(0.0589, abs=1e-4)  # with seeds 1-5, not seed 0
    assert decided == resample_until_decided(draw, 1, 0.05)  # seeded: the same every time
    capped = resample_until_decided(draw, 1, 0.05, MonteCarloRule(max_rounds=1))
    assert capped["reject"] == [None] and capped["p"] == [fixed[0]]  # flagged, not decided


def test_monte_carlo_rule_grows_only_what_can_move_a_decision() -> None:
    """A family of three: one p clear of alpha after Holm, two near it. Only the undecided
    ones get more resamples; the clear one keeps its first draw."""
    truth = [0.001, 0.0235, 0.03]  # Holm: 0.003, 0.047, 0.047

    def draw(i: int, rounds: int) -> tuple[float, int]:
        return truth[i], rounds * 4999  # the p a larger draw converges on

    calls: list[tuple[int, int]] = []

    def logged(i: int, rounds: int) -> tuple[float, int]:
        calls.append((i, rounds))
        return draw(i, rounds)

    decided = resample_until_decided(logged, 3, 0.05)
    assert decided["reject"] == [True, True, True]
    assert decided["rounds"][0] == 1 and min(decided["rounds"][1:]) > 1
    assert all(i != 0 for i, rounds in calls if rounds > 1)
    assert decided["p_holm"] == pytest.approx(holm(truth))
