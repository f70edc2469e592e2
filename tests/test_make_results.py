"""scripts/make_results.py: the statistics behind RESULTS.md, against known answers."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[1] / "scripts" / "make_results.py"
_spec = importlib.util.spec_from_file_location("make_results", _PATH)
assert _spec is not None and _spec.loader is not None
make_results = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_results)


def _t_sf_two_sided_df3(t: float) -> float:
    """Two-sided p of Student's t with 3 degrees of freedom, from its closed-form CDF."""
    cdf = 0.5 + (t / (math.sqrt(3) * (1 + t * t / 3)) + math.atan(t / math.sqrt(3))) / math.pi
    return 2 * (1 - cdf)


def test_paired_test_on_two_synthetic_runs_with_a_known_answer() -> None:
    a = {"q1": 0.5, "q2": 0.6, "q3": 0.9, "q4": 1.0}
    b = {"q1": 0.4, "q2": 0.4, "q3": 0.6, "q4": 0.6, "only_b": 0.0}  # differences .1 .2 .3 .4
    got = make_results.paired_test(a, b)
    diffs = [0.1, 0.2, 0.3, 0.4]
    sd = math.sqrt(sum((d - 0.25) ** 2 for d in diffs) / 3)
    t = 0.25 / (sd / 2)  # 3.873
    assert got["n"] == 4
    assert got["diff"] == pytest.approx(0.25)
    assert got["t"] == pytest.approx(t)
    assert got["p"] == pytest.approx(_t_sf_two_sided_df3(t), rel=1e-6)  # 0.0305
    swapped = make_results.paired_test(b, a)
    assert swapped["t"] == pytest.approx(-t) and swapped["p"] == pytest.approx(got["p"])
    same = make_results.paired_test(a, dict(a))
    assert (same["diff"], same["p"]) == (0.0, 1.0)


def test_benjamini_hochberg_by_hand() -> None:
    got = make_results.adjust([0.01, 0.04, 0.03, 0.2])
    assert got == pytest.approx([0.04, 0.04 * 4 / 3, 0.04 * 4 / 3, 0.2])


def test_significance_averages_seeds_per_query_then_corrects() -> None:
    def run(values: dict[str, float]) -> dict:
        return {"per_query": {"test": {"nDCG@10": values}}}

    qids = [f"q{i}" for i in range(30)]
    good = [run({q: 0.5 + 0.01 * (i % 3) for i, q in enumerate(qids)}) for _ in range(3)]
    bad = [run({q: 0.1 + 0.01 * ((i + s) % 5) for i, q in enumerate(qids)}) for s in range(3)]
    runs = {"m2_mlp_mlm_caption": good, "m1_mlm_mlm_image": bad}
    rows = make_results.significance(runs)
    assert [(r["a"], r["b"]) for r in rows] == [("m1_mlm_mlm_image", "m2_mlp_mlm_caption")]
    (row,) = rows
    avg_bad = make_results.seed_average([r["per_query"]["test"]["nDCG@10"] for r in bad])
    assert row["mean_a"] == pytest.approx(sum(avg_bad.values()) / 30)
    assert row["diff"] < -0.3 and row["p"] < 1e-10 and row["p_adj"] == row["p"]
    assert make_results.mean_std([1.0, 2.0, 3.0]) == pytest.approx((2.0, 1.0))


def test_distilled_runs_take_the_teacher_of_their_seed_else_of_the_first(tmp_path: Path) -> None:
    assert make_results.overrides_for("m2_distilled", 43, tmp_path) == []  # no teacher: MiniLM
    first = make_results.teacher_path(tmp_path, make_results.FIRST_SEED)
    first.parent.mkdir(parents=True)
    first.write_bytes(b"x")
    assert make_results.overrides_for("mlm_distilled", 43, tmp_path) == [
        f"--model.distillation.init_args.checkpoint={first}"
    ]
    own = make_results.teacher_path(tmp_path, 43)
    own.parent.mkdir(parents=True)
    own.write_bytes(b"x")
    options = make_results.overrides_for("m2_distilled", 43, tmp_path)
    assert options == [f"--model.distillation.init_args.checkpoint={own}"]
    assert make_results.teacher_seed({"overrides": options}) == 43
    assert make_results.teacher_seed({"overrides": []}) is None
    assert make_results.overrides_for("m2_mlp_mlm_caption", 43, tmp_path) == []


def test_pseudo_query_runs_train_on_a_collection_their_teacher_labelled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import lightning_mlsr.data.pseudo_queries as pseudo

    name = "mlm_pseudo_distilled"
    with pytest.raises(FileNotFoundError, match="dense_caption"):  # nothing to label with
        make_results.overrides_for(name, 43, tmp_path)
    calls = []

    def fake_build(source, out, teacher, **options):
        calls.append((source, teacher, options))
        out.mkdir(parents=True)
        (out / "collection.json").write_text("{}")

    monkeypatch.setattr(pseudo, "build_pseudo_query_collection", fake_build)
    first = make_results.teacher_path(tmp_path, make_results.FIRST_SEED)
    first.parent.mkdir(parents=True)
    first.write_bytes(b"x")
    for seed in (43, 44):  # both learn from the seed-42 teacher: one collection, built once
        options = make_results.overrides_for(name, seed, tmp_path)
        assert options[0] == f"--model.distillation.init_args.checkpoint={first}"
        collection = Path(options[1].removeprefix("--data.collection="))
        assert (
            options[1].startswith("--data.collection=") and collection.parent == tmp_path / "pseudo"
        )
        assert (collection / "collection.json").is_file()
        assert make_results.teacher_seed({"overrides": options}) == 42
    assert calls == [("emoji", first, make_results.PSEUDO_QUERIES[name])]
    assert [p.name for p in (tmp_path / "pseudo").iterdir()] == [collection.name]  # no temp left


def test_pseudo_coverage_has_one_table_per_word_list(tmp_path: Path) -> None:
    """Students trained on the same pseudo-queries share a table; another list gets its own,
    and a query counts as a pseudo-query of a list when its text is in that list."""
    from lightning_mlsr.baselines.common import split_texts
    from lightning_mlsr.data import load_collection

    ids, texts = split_texts(load_collection("emoji"), "test")
    first, second = texts[0].lower(), texts[1].lower()

    def collection(name: str, words: list[str]) -> list[str]:
        d = tmp_path / name
        d.mkdir()
        rows = "".join(f"pseudo-{i:06d}\t{w}\t0.5\tcap\n" for i, w in enumerate(words))
        (d / "pseudo_queries.tsv").write_text("text_id\tquery\tcos\tcaps\n" + rows, "utf-8")
        return [f"--data.collection={d}"]

    def run(overrides: list[str], value: float) -> dict:
        per_query = {q: (value if q == ids[0] else 0.0) for q in ids}
        return {"overrides": overrides, "per_query": {"test": {"nDCG@10": per_query}}}

    small, large = collection("small", [first]), collection("large", [first, second, "zzz"])
    runs = {
        "mlm_pseudo_distilled": [run(small, 0.6)],
        "mlm_pseudo_top3_distilled": [run(small, 0.4)],
        "mlm_pseudo_english_distilled": [run(large, 1.0)],
    }
    lines = make_results.pseudo_coverage(runs)
    heads = [line for line in lines if line.startswith("| model |")]
    assert heads == [
        f"| model | a pseudo-query (1 queries) | not a pseudo-query ({len(ids) - 1} queries) |",
        f"| model | a pseudo-query (2 queries) | not a pseudo-query ({len(ids) - 2} queries) |",
    ]
    rows = [line for line in lines if line.startswith("| MLM/MLM")]
    assert rows == [
        "| MLM/MLM distilled + pseudo-queries | 0.6000 | 0.0000 |",
        "| MLM/MLM distilled + pseudo-queries, top 3 | 0.4000 | 0.0000 |",
        "| MLM/MLM distilled + English pseudo-queries | 0.5000 | 0.0000 |",  # (1.0 + 0.0) / 2
    ]


def test_an_interrupted_fit_resumes_from_the_newest_checkpoint_it_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    import lightning_mlsr.cli as cli

    root = tmp_path / "m2_mlp_mlm_caption" / "seed43"
    assert make_results.unfinished_checkpoint(root) is None  # nothing ran yet
    files = {}
    for i, rel in enumerate(
        [
            "version_0/checkpoints/epoch0-ndcg0.3000.ckpt",  # a best checkpoint: not a resume point
            "version_0/checkpoints/last.ckpt",  # epoch 0's end
            "version_1/checkpoints/on_exception.ckpt",  # the resumed attempt, SIGTERM mid-epoch
            "version_1/metrics.csv",
        ]
    ):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
        os.utime(path, (1000 + i, 1000 + i))
        files[rel] = path
    assert (
        make_results.unfinished_checkpoint(root) == files["version_1/checkpoints/on_exception.ckpt"]
    )
    os.utime(files["version_0/checkpoints/last.ckpt"], (2000, 2000))  # newer after all
    assert make_results.unfinished_checkpoint(root) == files["version_0/checkpoints/last.ckpt"]

    calls: list[list[str]] = []

    class Stop(Exception):
        pass

    def fake_main(args: list[str]) -> None:
        calls.append(args)
        raise Stop

    monkeypatch.setattr(cli, "main", fake_main)
    with pytest.raises(Stop):
        make_results.train_and_evaluate("m2_mlp_mlm_caption", 43, tmp_path, ["--x=1"])
    assert f"--ckpt_path={files['version_0/checkpoints/last.ckpt']}" in calls[0]
    assert calls[0][-1] == "--x=1" and root.is_dir()  # kept, not wiped
    with pytest.raises(Stop):  # asked to start over: the attempt is wiped, no --ckpt_path
        make_results.train_and_evaluate("m2_mlp_mlm_caption", 43, tmp_path, [], False)
    assert not any(a.startswith("--ckpt_path") for a in calls[1]) and not root.exists()


def test_distillation_target_is_met_only_on_a_mean_of_three_seeds(tmp_path: Path) -> None:
    """The 0.42 target: missed below it (by how much), 'reached so far' above it on fewer
    than 3 seeds, met on a 3-seed mean; non-zeros and FLOPS are means over the seeds; the
    account of what was tried stays either way."""

    def run(seed: int, ndcg: float, q_nnz: float) -> dict:
        teacher = tmp_path / "dense_caption" / f"seed{seed}" / "teacher.pt"
        split = {"nDCG@10": ndcg, "q_nnz": q_nnz, "d_nnz": 100.0, "flops_per_query": 10.0}
        return {
            "seed": seed,
            "overrides": [
                f"--model.distillation.init_args.checkpoint={teacher}",
                f"--data.collection={tmp_path / 'pseudo'}",  # not built: the report says so
            ],
            "test": split,
            "validation": split,
        }

    name = "mlm_pseudo_english_docexp3_distilled"
    label = make_results._label(name)

    def line(runs: dict) -> str:
        (found,) = [t for t in make_results.targets(runs) if t.startswith(f"- {label}:")]
        return found

    missed = {name: [run(42, 0.40, 10.0), run(43, 0.41, 20.0), run(44, 0.42, 30.0)]}
    assert "(target ≥ 0.42: missed by 0.0100)" in line(missed)
    assert "mean over the seeds: 20.0 query / 100.0 document non-zeros, 10 FLOPS/query" in line(
        missed
    )
    assert "teachers (trained dense caption models): seed 42 from seed 42" in line(missed)
    two = {name: [run(42, 0.43, 10.0), run(43, 0.44, 20.0)]}
    assert "mean of 2 seed(s) (target ≥ 0.42: reached on 2 seed(s) so far" in line(two)
    met = {name: [run(42, 0.41, 10.0), run(43, 0.43, 20.0), run(44, 0.44, 30.0)]}
    assert "0.4267 test nDCG@10, mean of 3 seed(s) (target ≥ 0.42: met)" in line(met)
    accounts = {
        key: [t for t in make_results.targets(runs) if t.startswith("  ")]
        for key, runs in (("missed", missed), ("two", two), ("met", met))
    }
    assert accounts["missed"][0].startswith("  What was tried for the distillation target: (1)")
    assert accounts["two"][0].startswith("  What was tried for the distillation target: (1)")
    assert accounts["met"][0].startswith("  How the distillation target was reached, step by")
