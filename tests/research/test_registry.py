"""The registry (results/registry.yaml, protocol.yaml) against the committed runs and
experiments, and its errors, which name the file and the culprit."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from research.report import fitting
from research.report.registry import RegistryError
from research.report.registry_file import load_registry
from tests.research.helpers import (
    REGISTRY,
    REPO,
    results_copy,
)


def test_the_registry_matches_the_committed_runs_and_protocol() -> None:
    assert list(REGISTRY.experiments)[:2] == ["m1_mlm_mlm_image", "m2_mlp_mlm_caption"]
    assert REGISTRY.seeds == [42, 43, 44] and REGISTRY.measures[0] == "nDCG@10"
    order = REGISTRY.training_order()
    assert sorted(order) == sorted(REGISTRY.experiments)
    assert order.index("dense_caption") < min(
        order.index(n) for n, e in REGISTRY.experiments.items() if e.teacher
    )
    committed = {p.parent.name for p in (REPO / "results" / "runs").glob("*/seed*")}
    assert committed <= set(REGISTRY.experiments)
    held = REGISTRY.experiments["pseudo_queries_heldout"]
    assert held.config == "distillation/pseudo_queries" and not held.transductive
    assert REGISTRY.experiments["pseudo_queries"].transductive
    assert all(
        (REPO / "experiments" / f"{e.config}.yaml").is_file() for e in REGISTRY.experiments.values()
    )
    family = [c for c in REGISTRY.comparisons if c.family == "dense"]
    assert len(family) == 16 and (family[0].a, family[0].b, family[0].queries) == (
        "m2_mlp_mlm_caption",
        "dense-zero-shot",
        "all",
    )


@pytest.mark.parametrize(
    "edit, match",
    [
        (
            lambda t: t.replace("collection: emoji", "collection: emoji\nfrozen: []"),
            r"unknown keys \['frozen'\]",
        ),
        (
            lambda t: t.replace("{label: M2,", "{label: M2, seed: 1,"),
            r"experiments.m2_mlp_mlm_caption: unknown keys \['seed'\]",
        ),
        (
            lambda t: t.replace("b: m1_mlm_mlm_image}", "b: m1_typo}"),
            r"families name unknown experiments \['m1_typo'\]",
        ),
        (
            lambda t: t.replace("expand_captions: 1}", "expand_caption: 1}"),
            r"pseudo_queries: unknown keys \['expand_caption'\]",
        ),
        (
            lambda t: t.replace("queries: unseen}", "queries: some}"),
            "queries must be all or unseen",
        ),
        (
            lambda t: t.replace("dense: dense_image_sparse_lr,", "dense: dense_imag,"),
            r"targets name unknown experiments \['dense_imag'\]",
        ),
        (
            lambda t: t.replace(
                "      - dense_image_sparse_lr\n  emoji-openmoji:", "      - m9\n  emoji-openmoji:"
            ),
            r"cross_domain.emoji-twemoji names unknown experiments \['m9'\]",
        ),
        (
            lambda t: t.replace(
                "      - dense_image_sparse_lr\n  emoji-openmoji:",
                "      - pseudo_queries\n  emoji-openmoji:",
            ),
            r"cross_domain.emoji-twemoji names \['pseudo_queries'\], which .* not list as final",
        ),
        (
            lambda t: t.replace("  emoji-openmoji:\n", "  emoji:\n"),
            r"cross_domain.emoji is the training collection",
        ),
        (
            lambda t: t.replace(
                "visual_concepts: &top5 {top_k: 5}", "visual_concepts: &top5 {k: 5}"
            ),
            r"visual_concepts: unknown keys \['k'\]",
        ),
        (
            lambda t: t.replace("seeds: {first: 42,", "seeds: {first: forty-two,"),
            r"seeds.first must be a whole number, got 'forty-two'",
        ),
        (
            lambda t: t.replace("seeds: {first: 42,", "seeds: {first: [42,"),
            r"not valid YAML at line 8, column \d+ \(.*\); fix it there",
        ),
        (
            lambda t: t.replace("wordpiece_tokenizer: splade-tiny\n", ""),
            r"`wordpiece_tokenizer` is missing",
        ),
    ],
)
def test_registry_errors_name_the_file_and_the_culprit(tmp_path: Path, edit, match: str) -> None:
    results = results_copy(tmp_path)
    path = results / "registry.yaml"
    path.write_text(edit(path.read_text("utf-8")))
    with pytest.raises(RegistryError, match=match) as caught:
        load_registry(results)
    assert str(path) in str(caught.value)


def test_protocol_lists_known_experiments_and_marks_rows(tmp_path: Path) -> None:
    assert set(REGISTRY.final) <= set(REGISTRY.experiments)
    variants = [  # named after their config file neither alone nor with its folder
        n
        for n, e in REGISTRY.experiments.items()
        if n not in (Path(e.config).name, e.config.replace("/", "_"))
    ]
    assert set(variants) <= set(REGISTRY.final)
    pseudo = [n for n, e in REGISTRY.experiments.items() if e.pseudo_queries]
    assert all(n in REGISTRY.test_informed for n in pseudo)
    assert "†" in REGISTRY.label("pseudo_queries_english_expanded_captions_top3")
    assert "[transductive]" in REGISTRY.label("pseudo_queries_english_expanded_captions_top3")
    assert REGISTRY.label("m2_mlp_mlm_caption") == "M2"
    assert REGISTRY.label("bm25") == "bm25 (baseline)"

    results = results_copy(tmp_path)
    (results / "protocol.yaml").write_text("final: []\nfrozen: []\n")
    with pytest.raises(RegistryError, match="unknown keys"):
        load_registry(results)
    (results / "protocol.yaml").write_text("final: [m9_nothing]\n")
    with pytest.raises(RegistryError, match=r"final names unknown experiments \['m9_nothing'\]"):
        load_registry(results)
    (results / "protocol.yaml").unlink()
    with pytest.raises(FileNotFoundError, match="what may be evaluated on test"):
        load_registry(results)


def test_the_reports_bad_inputs_name_their_file_and_what_to_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A truncated or missing run file and a protocol.yaml that is not YAML stop
    ``python -m research.report`` with one line naming the file (and where in it), not
    a JSONDecodeError or a YAML parser's traceback."""
    from research.report import cli

    results, runs = results_copy(tmp_path), tmp_path / "runs"
    shutil.copytree(REGISTRY.runs_dir / "m2_mlp_mlm_caption", runs / "m2_mlp_mlm_caption")
    argv = ["build", f"--registry={results}", f"--runs={runs}", f"--results={tmp_path / 'R.md'}"]
    metrics = runs / "m2_mlp_mlm_caption" / "seed43" / "metrics.json"
    whole = metrics.read_text()
    metrics.write_text(whole[: len(whole) // 2])  # truncated
    with pytest.raises(SystemExit) as caught:
        cli.main(argv)
    message = str(caught.value.code)
    assert message.startswith(f"error: {metrics} is not valid JSON (")
    assert "remove its run folder" in message and f"git checkout -- {metrics}" in message
    metrics.write_text(whole)
    per_query = metrics.with_name("per_query.json")
    per_query.unlink()
    with pytest.raises(SystemExit, match=f"error: {per_query} is missing: restore it"):
        cli.main(argv)
    (results / "protocol.yaml").write_text("final: [m2_mlp_mlm_caption\n")
    with pytest.raises(SystemExit) as caught:
        cli.main(argv)
    assert str(caught.value.code).startswith(
        f"error: {results / 'protocol.yaml'}: not valid YAML at line 2, column 1 ("
    )
    assert not (tmp_path / "R.md").exists()


def test_a_second_collection_has_its_own_results_folder_report_and_work_folder() -> None:
    describe = load_registry(REPO / "results" / "emoji-describe")
    assert describe.collection == "emoji-describe" and not describe.is_default
    assert describe.report_path == REPO / "results" / "emoji-describe" / "RESULTS.md"
    assert REGISTRY.report_path == REPO / "RESULTS.md" and REGISTRY.is_default
    # the same experiment name in two registries never shares a run directory
    assert describe.default_work != REGISTRY.default_work
    # anything tuned there is tuned on validation: a run that is not final has no test numbers
    tuned = set(describe.experiments) - set(describe.final)
    assert tuned and set(describe.final) < set(describe.experiments)
    for name in tuned:
        for metrics in (describe.runs_dir / name).glob("seed*/metrics.json"):
            assert "test" not in json.loads(metrics.read_text()), metrics
    for registry in (REGISTRY, describe):
        command = fitting.fit_command(registry, "m2_mlp_mlm_caption", 42, Path("x"))
        assert f"--data.collection={registry.collection}" in command
