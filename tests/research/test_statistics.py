"""The report's statistics against known answers: Monte Carlo resampling near alpha,
seed averaging before Holm, finding 3 per seed."""

from __future__ import annotations

import numpy as np
import pytest

from research.report.statistics import (
    coactivation_tests,
    difference_text,
    mean_std,
    seed_average,
    significance,
    significant,
)
from research.significance import MonteCarloRule
from tests.research.helpers import (
    REGISTRY,
)


def test_significance_resamples_a_bootstrap_p_near_alpha_until_its_decision_is_clear() -> None:
    """The seeded case of test_significance's Monte Carlo rule, through the report: with 4,999
    resamples its bootstrap p is 0.0488, below alpha by less than its Monte Carlo error;
    the rule draws 4 x 4,999 and the comparison is not significant; capped at one round it
    is reported as undecided, and counted as no rejection."""
    rng = np.random.default_rng(3)
    diff = rng.normal(0.0, 1.0, size=100)
    diff = diff - diff.mean() + 0.2
    qids = [f"q{i:03d}" for i in range(100)]  # sorted as drawn

    def run(values: np.ndarray) -> dict:
        return {"test": {}, "per_query": {"test": {"nDCG@10": dict(zip(qids, values))}}}

    runs = {"m1_mlm_mlm_image": [run(0.5 + diff)], "m2_mlp_mlm_caption": [run(np.full(100, 0.5))]}
    (row,) = significance(REGISTRY, runs)
    assert row["seed_resamples"] == 4 * 4999 and not row["p_seed_undecided"]
    assert row["p_seed"] == row["p_seed_holm"] == pytest.approx(0.0589, abs=1e-4)
    assert not significant(row, 0.05) and "undecided" not in difference_text(row)
    (capped,) = significance(REGISTRY, runs, rule=MonteCarloRule(max_rounds=1))
    assert capped["seed_resamples"] == 4999 and capped["p_seed"] == pytest.approx(0.0488)
    assert capped["p_seed_undecided"] and not significant(capped | {"p_holm": 0.0}, 0.05)
    assert "queries × seeds, undecided within Monte Carlo error" in difference_text(capped)


def test_significance_averages_seeds_per_query_then_corrects() -> None:
    def run(values: dict[str, float]) -> dict:
        return {"test": {}, "per_query": {"test": {"nDCG@10": values}}}

    qids = [f"q{i}" for i in range(30)]
    good = [run({q: 0.5 + 0.01 * (i % 3) for i, q in enumerate(qids)}) for _ in range(3)]
    bad = [run({q: 0.1 + 0.01 * ((i + s) % 5) for i, q in enumerate(qids)}) for s in range(3)]
    runs = {"m2_mlp_mlm_caption": good, "m1_mlm_mlm_image": bad}
    rows = significance(REGISTRY, runs)
    assert [(r["a"], r["b"]) for r in rows] == [("m1_mlm_mlm_image", "m2_mlp_mlm_caption")]
    (row,) = rows
    avg_bad = seed_average([r["per_query"]["test"]["nDCG@10"] for r in bad])
    assert row["mean_a"] == pytest.approx(sum(avg_bad.values()) / 30)
    assert row["diff"] < -0.3 and row["p"] < 1e-10 and row["p_holm"] == row["p"]  # family of 1
    assert row["p_seed"] == row["p_seed_holm"] < 0.01 and row["equal_seeds"]
    assert row["seed_ci"][1] < -0.3 and row["diff_ci"][1] < -0.3
    unseen = qids[:10]
    (sub,) = significance(REGISTRY, runs, unseen=unseen)  # finding 1 asks on all queries
    assert sub["n"] == 30
    runs["m4_mlp_mlp_image_caption"] = [run({q: 0.2 for q in qids}) for _ in range(2)]
    rows = [r for r in significance(REGISTRY, runs) if r["finding"] == "1"]
    assert [r["b"] for r in rows] == ["m2_mlp_mlm_caption", "m4_mlp_mlp_image_caption"]
    from research.significance import holm

    assert [r["p_holm"] for r in rows] == pytest.approx(holm([r["p"] for r in rows]))
    assert [r["equal_seeds"] for r in rows] == [True, False]  # 3 seeds vs 2
    assert mean_std([1.0, 2.0, 3.0]) == pytest.approx((2.0, 1.0))


def test_finding_three_is_tested_per_seed() -> None:
    def run(co: float, overlap: float) -> dict:
        return {"coactivation": {"coactivation": co, "caption_overlap@10": overlap}}

    runs = {
        "mlp_mlm_image": [run(0.03, 0.04), run(0.02, 0.05), run(0.035, 0.03)],
        "m1_mlm_mlm_image": [run(0.09, 0.01), run(0.08, 0.02), run(0.1, 0.015)],
    }
    rows = coactivation_tests(REGISTRY, runs)
    assert [r["measure"] for r in rows] == ["coactivation", "caption_overlap@10"]
    assert all(r["p"] == pytest.approx(0.1) for r in rows)  # 3 vs 3 separated: exact minimum
    assert [r["p_holm"] for r in rows] == pytest.approx([0.2, 0.2])
