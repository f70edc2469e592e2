"""The teachers of the distilled experiments: the run of the same seed, else the first
seed's, fitted again when its checkpoint is gone and checked against its record."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from research.report import pipelines, teachers
from research.report.records import teacher_seed
from tests.research.helpers import (
    REGISTRY,
    evaluations_in_root,
    root_dir,
    write_evaluation,
)


def test_distilled_runs_take_the_teacher_of_their_seed_else_of_the_first(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="needs a trained dense_caption teacher to learn"):
        pipelines.fit_overrides(REGISTRY, "kl_mlp_query", 43, tmp_path)  # never MiniLM instead
    first = pipelines.teacher_path(tmp_path, "dense_caption", REGISTRY.first_seed)
    first.parent.mkdir(parents=True)
    first.write_bytes(b"x")
    assert pipelines.fit_overrides(REGISTRY, "kl_mlm_query", 43, tmp_path) == [
        f"{pipelines.teacher_option(REGISTRY, 'kl_mlm_query')}{first}"
    ]
    own = pipelines.teacher_path(tmp_path, "dense_caption", 43)
    own.parent.mkdir(parents=True)
    own.write_bytes(b"x")
    options = pipelines.fit_overrides(REGISTRY, "kl_mlp_query", 43, tmp_path)
    assert options == [f"{pipelines.teacher_option(REGISTRY, 'kl_mlp_query')}{own}"]
    assert teacher_seed({"overrides": options}) == 43
    assert teacher_seed({"overrides": []}) is None
    assert pipelines.fit_overrides(REGISTRY, "m2_mlp_mlm_caption", 43, tmp_path) == []


def test_a_finished_teacher_without_its_checkpoint_is_fitted_again_for_its_students(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The student's own seed's teacher when that has a run, else the first seed's; nothing
    to refit is left to fit_overrides' error."""
    runs_dir, work = tmp_path / "runs", tmp_path / "work"
    refits: list[int] = []

    def fake_refit(registry, name, seed, work_dir, runs):
        refits.append(seed)
        path = pipelines.teacher_path(work_dir, name, seed)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
        return path

    monkeypatch.setattr(teachers, "refit_teacher", fake_refit)
    assert teachers.ensure_teacher(REGISTRY, "m2_mlp_mlm_caption", 43, work, runs_dir) is None
    assert teachers.ensure_teacher(REGISTRY, "kl_mlp_query", 43, work, runs_dir) is None
    assert refits == []  # no teacher run at all
    for seed in (42, 43):
        (runs_dir / "dense_caption" / f"seed{seed}").mkdir(parents=True)
        (runs_dir / "dense_caption" / f"seed{seed}" / "metrics.json").write_text("{}")
    got = teachers.ensure_teacher(REGISTRY, "kl_mlp_query", 44, work, runs_dir)  # no seed-44 run
    assert got == pipelines.teacher_path(work, "dense_caption", 42) and refits == [42]
    got = teachers.ensure_teacher(REGISTRY, "kl_mlp_query", 43, work, runs_dir)
    assert got == pipelines.teacher_path(work, "dense_caption", 43) and refits == [42, 43]
    assert teachers.ensure_teacher(REGISTRY, "kl_mlm_query", 43, work, runs_dir) == got
    assert refits == [42, 43]  # kept: not fitted twice


def test_a_refitted_teacher_is_checked_against_its_record_and_named_in_students(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import types

    import lightning_mlsr.training.cli as cli

    scores = iter([0.4823, 0.4001])
    calls: list[list[str]] = []

    def fake_main(args: list[str]) -> types.SimpleNamespace:
        calls.append(args)
        root = root_dir(args)
        best = root / "checkpoints" / "best.ckpt"
        best.parent.mkdir(parents=True)
        best.write_bytes(b"weights" + bytes([len(calls)]))

        def validate(model, datamodule, ckpt_path, weights_only):
            assert ckpt_path == str(best) and weights_only is True
            write_evaluation(root, "validation", {"nDCG@10": next(scores)})

        trainer = types.SimpleNamespace(
            root=root,
            checkpoint_callback=types.SimpleNamespace(best_model_path=str(best)),
            validate=validate,
        )
        return types.SimpleNamespace(trainer=trainer, model=None, datamodule=None)

    monkeypatch.setattr(cli, "main", fake_main)
    evaluations_in_root(monkeypatch)
    runs_dir, work = tmp_path / "runs", tmp_path / "work"
    record = runs_dir / "dense_caption" / "seed42" / "metrics.json"
    record.parent.mkdir(parents=True)
    recorded = {"overrides": ["--trainer.max_epochs=3"], "validation": {"nDCG@10": 0.4823}}
    record.write_text(json.dumps(recorded))
    path = teachers.refit_teacher(REGISTRY, "dense_caption", 42, work, runs_dir)
    assert path == pipelines.teacher_path(work, "dense_caption", 42)
    assert path.read_bytes() == b"weights\x01"
    assert "--seed_everything=42" in calls[0] and calls[0][-1] == "--trainer.max_epochs=3"
    assert "WARNING" not in capsys.readouterr().out
    assert not (work / "dense_caption" / "seed42-refit").exists()
    assert json.loads(record.read_text()) == recorded  # the run's own record is untouched
    option = f"{pipelines.teacher_option(REGISTRY, 'kl_mlp_query')}{path}"
    kept = teachers.teacher_record([option])
    assert kept == {
        "experiment": "dense_caption",
        "seed": 42,
        "measure": "nDCG@10",
        "refit": 0.4823,
        "recorded": 0.4823,
    }
    teachers.refit_teacher(REGISTRY, "dense_caption", 42, work, runs_dir)  # now it differs
    assert "WARNING: the refitted dense_caption seed 42" in capsys.readouterr().out
    assert teachers.teacher_record([option])["refit"] == 0.4001
    assert teachers.teacher_record(["--x=1"]) is None
