"""The data some experiments train on, made by a teacher or a classifier through the CLI,
and the fit options each registry row adds."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from research.report import pipelines
from research.report.records import teacher_seed
from tests.research.helpers import (
    REGISTRY,
    REPO,
    results_copy,
)


def test_the_teacher_option_names_the_checkpoint_each_distilled_yaml_declares() -> None:
    import yaml

    for name, experiment in REGISTRY.experiments.items():
        if experiment.teacher is None:
            continue
        option = pipelines.teacher_option(REGISTRY, name)
        assert option.startswith("--model.") and option.endswith(".init_args.checkpoint=")
        path = REGISTRY.config_path(name)
        node = yaml.safe_load(path.read_text("utf-8"))
        for key in option.removeprefix("--").removesuffix("=").split("."):
            if isinstance(node, str):  # a block included by path (experiments/parts/)
                path = path.parent / node
                node = yaml.safe_load(path.read_text("utf-8"))
            assert key in node, (name, option)
            node = node[key]
        assert node is None, name  # the YAML's teacher: MiniLM as shipped
    run = {"overrides": ["--model.teacher.init_args.checkpoint=/w/dense_caption/seed43/teacher.pt"]}
    assert teacher_seed(run) == 43


def test_pseudo_query_runs_train_on_a_collection_their_teacher_labelled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The collection is made by the pseudo-query CLI with the registry's options, once per
    teacher, in a folder that says whether it is transductive."""
    import lightning_mlsr.generate.pseudo_queries as pseudo

    registry = replace(REGISTRY, results_dir=results_copy(tmp_path))
    work = tmp_path / "work"
    name = "pseudo_queries"
    with pytest.raises(FileNotFoundError, match="dense_caption"):  # nothing to label with
        pipelines.fit_overrides(registry, name, 43, work)
    calls = []

    def fake_build(source, out, teacher, **options):
        calls.append((source, Path(teacher), options))
        Path(out).mkdir(parents=True)
        made = {"candidates": 9, "pseudo_queries": 4, "evaluation_queries": "excluded"}
        (Path(out) / "collection.json").write_text(json.dumps({"pseudo_queries": made}))
        return made | {"passed_min_score": 4, "min_score": options["min_score"]}

    monkeypatch.setattr(pseudo, "build_pseudo_query_collection", fake_build)
    first = pipelines.teacher_path(work, "dense_caption", registry.first_seed)
    first.parent.mkdir(parents=True)
    first.write_bytes(b"x")
    for seed in (43, 44):  # both learn from the seed-42 teacher: one collection, built once
        options = pipelines.fit_overrides(registry, name, seed, work)
        assert options[0] == f"{pipelines.teacher_option(registry, name)}{first}"
        assert options[1].startswith("--data.collection=")
        collection = Path(options[1].removeprefix("--data.collection="))
        assert collection.parent == work / "pseudo"
        assert (collection / "collection.json").is_file()
        assert teacher_seed({"overrides": options}) == 42
    ((source, teacher, got),) = calls
    wanted = registry.experiments[name].pseudo_queries
    assert (source, teacher) == ("emoji", first)
    assert {k: got[k] for k in wanted} == wanted  # through the CLI's flags, unchanged
    assert got["include_evaluation_queries"] is True  # the transductive variant
    manifest = json.loads((registry.results_dir / "pseudo_queries.json").read_text())
    assert manifest == {
        collection.name: {"candidates": 9, "pseudo_queries": 4, "evaluation_queries": "excluded"}
    }
    held_out = registry.experiments[f"{name}_heldout"].pseudo_queries
    assert "include_evaluation_queries" not in held_out
    assert collection.name.endswith("-transductive")
    assert [p.name for p in (work / "pseudo").iterdir()] == [collection.name]  # no temp left
    held = pipelines.fit_overrides(registry, f"{name}_heldout", 43, work)[1]
    assert held.endswith("-heldout") and held != options[1]  # never the transductive folder
    assert calls[1][2]["include_evaluation_queries"] is False


def test_hard_negatives_are_mined_once_beside_the_collection_by_the_cli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import lightning_mlsr.generate.hard_negatives as mining

    calls = []

    def fake_mine(source, out, teacher, **options):
        calls.append((Path(source), Path(teacher), options))
        Path(out).write_text("t1\ti1\n")
        return {"queries": 1, "images": 1, "depth": options["depth"], "split": "train"}

    monkeypatch.setattr(mining, "mine_hard_negatives", fake_mine)
    collection, teacher = tmp_path / "pseudo", tmp_path / "teacher.pt"
    collection.mkdir()
    for _ in range(2):
        out = pipelines.hard_negatives(collection, teacher, 30)
    assert out == collection / "hard_negatives-depth30.tsv" and out.is_file()
    assert calls == [(collection, teacher, {"split": "train", "depth": 30})]


@pytest.mark.slow
def test_caption_ablations_are_fit_options_of_their_base_experiment(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Each caption-component run is its base YAML plus data overrides that parse, and only
    the captions change."""
    import yaml

    from lightning_mlsr.training.cli import main

    def printed(config: str, options: tuple[str, ...]) -> dict:
        path = REPO / "experiments" / f"{config}.yaml"
        with pytest.raises(SystemExit):
            main(["fit", "--config", str(path), *options, "--print_config"])
        return yaml.safe_load(capsys.readouterr().out)

    ablations = [
        e
        for n, e in REGISTRY.experiments.items()
        if "_caption_captions_" in n and e.visual_concepts is None
    ]
    assert len(ablations) == 12  # 4 components and 2 preprocessings, on M2 and M3
    fields = {"caption_fields", "caption_languages", "caption_preprocessing"}
    for experiment in ablations:
        assert experiment.name in REGISTRY.final
        base = printed(experiment.config, ())
        got = printed(experiment.config, experiment.overrides)
        assert {k: v for k, v in got.items() if k != "data"} == {
            k: v for k, v in base.items() if k != "data"
        }
        changed = {k for k in got["data"] if got["data"][k] != base["data"][k]}
        assert changed == {"reading"}, changed
        reading, base_reading = got["data"]["reading"], base["data"]["reading"]
        changed = {k for k in reading if reading[k] != base_reading[k]}
        assert changed and changed <= fields, changed
    languages = REGISTRY.experiments["m2_mlp_mlm_caption_captions_languages"]
    printed_languages = printed(languages.config, languages.overrides)
    assert len(printed_languages["data"]["reading"]["caption_languages"]) == 11
    nouns = REGISTRY.experiments["m3_mlp_mlp_caption_captions_nouns"]
    assert printed(nouns.config, nouns.overrides)["data"]["reading"]["caption_preprocessing"] == (
        "nouns"
    )


def test_the_registry_trains_its_visual_concept_rows_on_that_collection(tmp_path, monkeypatch):
    """The report's pipeline builds the collection once per options and points the fit at it;
    the registry's rows read the concepts field, alone or after the label."""
    from lightning_mlsr.generate import visual_concepts
    from research.report.pipelines import fit_overrides
    from research.report.registry_file import load_registry

    registry = load_registry()
    rows = {n: e for n, e in registry.experiments.items() if e.visual_concepts is not None}
    assert len(rows) == 4 and all(n in registry.final for n in rows)
    for experiment in rows.values():
        assert any("caption_visual_concepts" in o for o in experiment.overrides)
    calls = []

    def fake_main(argv):
        calls.append(argv)
        out = Path(argv[argv.index("--out") + 1])
        out.mkdir(parents=True)
        (out / "collection.json").write_text("{}")
        return 0

    monkeypatch.setattr(visual_concepts, "main", fake_main)
    options = [fit_overrides(registry, name, 42, tmp_path) for name in rows]
    assert len(calls) == 1  # the same options: built once
    assert calls[0][:1] == [registry.collection] and calls[0][-2:] == ["--top-k", "5"]
    (built,) = {tuple(o) for o in options}
    assert built == (f"--data.collection={tmp_path / 'visual' / 'emoji-top_k5'}",)
