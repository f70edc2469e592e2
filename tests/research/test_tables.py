"""Tables of the report: cross-domain pairs and sparsity intervals."""

from __future__ import annotations

import numpy as np

from research.report.text import ReportText
from tests.research.helpers import (
    REGISTRY,
)


def test_cross_domain_table_pairs_shared_queries_and_only_sets_others_side_by_side() -> None:
    from scipy import stats

    from research.report.tables import cross_domain_rows, cross_domain_tables

    rng = np.random.default_rng(0)
    qids = [f"q{i}" for i in range(40)]

    def record(shift: float) -> dict:
        home = {q: float(v) for q, v in zip(qids, rng.uniform(0, 1, len(qids)), strict=True)}
        there = {q: max(0.0, v - shift * (i % 2)) for i, (q, v) in enumerate(home.items())}
        other = {f"g{i}": 0.1 for i in range(7)}  # descriptive queries: other ids
        return {
            "cross_domain": {
                "in_domain": {"per_query": {"nDCG@10": home}},
                "collections": {
                    "emoji-twemoji": {"per_query": {"nDCG@10": there}},
                    "emoji-describe": {"per_query": {"nDCG@10": other}},
                },
            }
        }

    runs = {"m4_mlp_mlp_image_caption": [record(0.2), record(0.3)]}
    text = ReportText.read(REGISTRY.results_dir / "report_text.md")
    lines = cross_domain_tables(REGISTRY, text, cross_domain_rows(REGISTRY, runs))
    row = next(line for line in lines if line.startswith("| M4 |") and "(other" not in line)
    seeds = runs["m4_mlp_mlp_image_caption"]
    home = np.mean(
        [[r["cross_domain"]["in_domain"]["per_query"]["nDCG@10"][q] for q in qids] for r in seeds],
        axis=0,
    )
    there = np.mean(
        [
            [
                r["cross_domain"]["collections"]["emoji-twemoji"]["per_query"]["nDCG@10"][q]
                for q in qids
            ]
            for r in seeds
        ],
        axis=0,
    )
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == "SPLADE-tiny (2L/128, 4.4M)"  # model | backbone | seeds | ...
    assert cells[2] == "2" and cells[5].startswith(f"{(there - home).mean():+.4f} [")
    assert cells[6] == f"{stats.ttest_rel(there, home).statistic:.2f}"
    describe = next(line for line in lines if line.startswith("| M4 |") and "(other" in line)
    assert "0.1000 [0.1000, 0.1000]" in describe
    assert any("No run has been tested on `emoji-openmoji`" in line for line in lines)


def test_sparsity_table_gives_t_intervals_over_seeds() -> None:
    from scipy import stats

    from research.report.tables import sparsity_table

    values = [10.0, 12.0, 17.0]
    runs = {
        "m1_mlm_mlm_image": [
            {
                "test": {"q_nnz": v, "d_nnz": 2 * v, "flops_per_query": 100 * v},
                "per_query": {"test": {}},
                "coactivation": {"coactivation": v / 100, "caption_overlap@10": 0.01},
            }
            for v in values
        ],
        "dense_image": [{"test": {"q_nnz": 1.0}, "per_query": {"test": {}}}],
    }
    lines = sparsity_table(REGISTRY, runs)
    assert len(lines) == 3  # header, rule, M1 (dense models have no sparsity)
    cells = [c.strip() for c in lines[2].strip("|").split("|")]
    low, high = stats.t.interval(0.95, 2, loc=np.mean(values), scale=stats.sem(values))
    assert cells[1] == "SPLADE-tiny (2L/128, 4.4M)"  # model | backbone | seeds | ...
    assert cells[3] == f"{np.mean(values):.1f} [{max(low, 0):.1f}, {high:.1f}]"
    assert cells[7] == "0.0100"  # equal seeds: no interval
