"""The resumable runner: an interrupted fit resumes, lanes share the work under locks,
run_all goes seed-major and survives a failure."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import torch

from research.report import cross_domain, fitting, locks, pipelines, runner, teachers
from tests.research.helpers import (
    REGISTRY,
    REPO,
    fake_fit,
    results_copy,
)


def test_an_interrupted_fit_resumes_from_the_newest_checkpoint_it_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import lightning_mlsr.training.cli as cli

    root = tmp_path / "m2_mlp_mlm_caption" / "seed43"
    assert fitting.unfinished_checkpoint(root) is None  # nothing ran yet
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
        torch.save({"global_step": i}, path)
        os.utime(path, (1000 + i, 1000 + i))
        files[rel] = path
    assert fitting.unfinished_checkpoint(root) == files["version_1/checkpoints/on_exception.ckpt"]
    os.utime(files["version_0/checkpoints/last.ckpt"], (2000, 2000))  # newer after all
    assert fitting.unfinished_checkpoint(root) == files["version_0/checkpoints/last.ckpt"]
    # a full disk left newer ones damaged: an empty file and a truncated one are skipped
    empty = root / "version_2/checkpoints/on_exception.ckpt"
    empty.parent.mkdir(parents=True)
    empty.write_bytes(b"")
    cut = root / "version_2/checkpoints/last.ckpt"
    cut.write_bytes(files["version_1/checkpoints/on_exception.ckpt"].read_bytes()[:-40])
    for path in (empty, cut):
        os.utime(path, (3000, 3000))
    assert fitting.unfinished_checkpoint(root) == files["version_0/checkpoints/last.ckpt"]
    empty.unlink()
    cut.unlink()

    calls: list[list[str]] = []

    class Stop(Exception):
        pass

    def fake_main(args: list[str]) -> None:
        calls.append(args)
        raise Stop

    monkeypatch.setattr(cli, "main", fake_main)
    name = "m2_mlp_mlm_caption"
    with pytest.raises(Stop):
        runner.train_and_evaluate(REGISTRY, name, 43, tmp_path, ["--x=1"])
    assert f"--ckpt_path={files['version_0/checkpoints/last.ckpt']}" in calls[0]
    assert calls[0][-1] == "--x=1" and root.is_dir()  # kept, not wiped
    assert calls[0][:3] == ["fit", "--config", str(REPO / "experiments" / "paper" / f"{name}.yaml")]
    with pytest.raises(Stop):  # asked to start over: the attempt is wiped, no --ckpt_path
        runner.train_and_evaluate(REGISTRY, name, 43, tmp_path, [], False)
    assert not any(a.startswith("--ckpt_path") for a in calls[1]) and not root.exists()


def test_keep_best_keeps_the_best_checkpoint_and_removes_the_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``report run --keep-best DIR``: the finished fit's best checkpoint survives as
    DIR/<name>/seed<N>.ckpt with its bytes; every checkpoint under the work folder goes."""
    import lightning_mlsr.training.cli as cli

    calls: list[list[str]] = []
    fake_fit(calls, monkeypatch)
    fake = cli.main
    name = "m2_mlp_mlm_caption"
    ckpts = tmp_path / "work" / name / "seed43" / "version_0" / "checkpoints"

    def fit_with_checkpoints(args: list[str]) -> Any:
        made = fake(args)
        ckpts.mkdir(parents=True, exist_ok=True)
        (ckpts / "epoch1-ndcg0.5000.ckpt").write_bytes(b"best weights")
        (ckpts / "last.ckpt").write_bytes(b"last weights")
        made.trainer.checkpoint_callback.best_model_path = str(ckpts / "epoch1-ndcg0.5000.ckpt")
        return made

    monkeypatch.setattr(cli, "main", fit_with_checkpoints)
    keep = tmp_path / "keep"
    runner.train_and_evaluate(
        REGISTRY, name, 43, tmp_path / "work", [], runs_dir=tmp_path / "runs", keep_best=keep
    )
    assert (keep / name / "seed43.ckpt").read_bytes() == b"best weights"
    assert not list((tmp_path / "work").rglob("*.ckpt"))
    assert (tmp_path / "runs" / name / "seed43" / "metrics.json").is_file()


def test_a_relative_work_folder_resumes_its_unfinished_fit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``report run --work outputs/x`` (relative): the fit resumes from the checkpoint the
    interrupted attempt left, and the finished run records where it resumed from (the
    relative root against the absolute checkpoint raised ValueError after the whole fit)."""
    calls: list[list[str]] = []
    fake_fit(calls, monkeypatch)
    monkeypatch.chdir(tmp_path)
    name = "m2_mlp_mlm_caption"
    last = tmp_path / "work" / name / "seed43" / "version_0" / "checkpoints" / "last.ckpt"
    last.parent.mkdir(parents=True)
    torch.save({"global_step": 4}, last)
    runner.train_and_evaluate(REGISTRY, name, 43, Path("work"), [], runs_dir=Path("runs"))
    assert f"--ckpt_path={last}" in calls[0]
    record = json.loads((tmp_path / "runs" / name / "seed43" / "metrics.json").read_text())
    assert record["resumed_from"] == "version_0/checkpoints/last.ckpt"
    # what a bit-identical refit needs besides the seed
    assert record["environment"]["torch_threads"] == torch.get_num_threads()
    assert record["environment"]["torch"] == torch.__version__
    assert record["environment"]["commit"] is None or len(record["environment"]["commit"]) == 40
    assert not last.exists()  # a finished run keeps no checkpoint


@pytest.mark.skipif(os.name != "posix", reason="the run lock is an fcntl lock")
def test_a_second_lane_skips_the_run_another_lane_holds_and_a_failure_exits_non_zero(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two ``report run`` lanes on one (experiment, seed): the second leaves it to the lane
    holding its lock (it resumed the other's live last.ckpt before); a run that fails lets
    the others go on, then makes the command exit 1 (a scheduler saw 0)."""
    from research.report import cli

    work, runs = tmp_path / "work", tmp_path / "runs"
    attempts: list[tuple[str, int]] = []

    def fake_train(registry, name, seed, work_dir, options, resume, runs_dir, keep_best=None):
        attempts.append((name, seed))
        if name == "m3_mlp_mlp_caption":
            raise RuntimeError("out of memory")

    monkeypatch.setattr(runner, "train_and_evaluate", fake_train)
    argv = [
        "run",
        f"--registry={results_copy(tmp_path)}",
        f"--runs={runs}",
        f"--results={tmp_path / 'RESULTS.md'}",
        f"--work={work}",
        "--no-baselines",
        "--seed-list=42",
        "--experiments",
    ]
    with locks.run_lock(work, "m2_mlp_mlm_caption", 42) as held:  # the other lane trains M2
        assert held
        status = cli.main([*argv, "m2_mlp_mlm_caption", "m3_mlp_mlp_caption"])
    out, err = capsys.readouterr()
    assert attempts == [("m3_mlp_mlp_caption", 42)]
    assert "=== m2_mlp_mlm_caption seed 42: skipped, another lane is on it" in out
    assert str(locks.lock_path(work, "m2_mlp_mlm_caption", 42)) in out
    assert status == 1 and "1 run(s) FAILED: m3_mlp_mlp_caption seed 42" in err
    assert (tmp_path / "RESULTS.md").is_file()  # the report is written all the same
    attempts.clear()  # the other lane has gone: this one trains M2, and nothing failed
    assert cli.main([*argv, "m2_mlp_mlm_caption"]) == 0
    assert attempts == [("m2_mlp_mlm_caption", 42)]


@pytest.mark.skipif(os.name != "posix", reason="the run lock is an fcntl lock")
def test_a_teacher_another_lane_is_refitting_is_waited_for_not_refitted_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    work, runs = tmp_path / "work", tmp_path / "runs"
    (runs / "dense_caption" / "seed42").mkdir(parents=True)
    (runs / "dense_caption" / "seed42" / "metrics.json").write_text("{}")
    refits: list[int] = []
    monkeypatch.setattr(teachers, "refit_teacher", lambda *args: refits.append(1))
    got: list[Path | None] = []
    student = threading.Thread(
        target=lambda: got.append(teachers.ensure_teacher(REGISTRY, "kl_mlp_query", 42, work, runs))
    )
    with locks.run_lock(work, "dense_caption", 42):  # the other lane refits the teacher
        student.start()
        student.join(timeout=1.0)
        assert student.is_alive()  # waiting
        teacher = pipelines.teacher_path(work, "dense_caption", 42)
        teacher.parent.mkdir(parents=True)
        teacher.write_bytes(b"weights")  # the other lane's refit lands
    student.join(timeout=60)
    assert got == [teacher] and refits == []


def test_run_all_goes_seed_major_skips_finished_runs_and_survives_a_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs_dir = tmp_path / "runs"
    (runs_dir / "m3_mlp_mlp_caption" / "seed42").mkdir(parents=True)
    (runs_dir / "m3_mlp_mlp_caption" / "seed42" / "metrics.json").write_text("{}")
    attempts = []

    def fake_train(registry, name, seed, work, options, resume, runs, keep_best=None):
        attempts.append((name, seed, options))
        if name == "m2_mlp_mlm_caption_captions_name":
            raise RuntimeError("out of memory")

    monkeypatch.setattr(runner, "train_and_evaluate", fake_train)
    refits = []
    monkeypatch.setattr(
        runner, "complete_cross_domain", lambda r, n, s, *a, **k: refits.append((n, s))
    )
    rebuilt = []
    names = ["m3_mlp_mlp_caption", "m2_mlp_mlm_caption_captions_name"]
    runner.run_all(
        REGISTRY, names, [42, 43], tmp_path, ["--a=1"], True, runs_dir, lambda: rebuilt.append(1)
    )
    ablation = ["--a=1", "--data.reading.caption_fields=[caption_alt_text_description]"]
    assert attempts == [
        ("m2_mlp_mlm_caption_captions_name", 42, ablation),
        ("m3_mlp_mlp_caption", 43, ["--a=1"]),
        ("m2_mlp_mlm_caption_captions_name", 43, ablation),
    ]
    # M3 is tested on emoji-describe and stamps: its finished seed-42 run lacks that, so it
    # is refitted
    assert refits == [("m3_mlp_mlp_caption", 42)]
    assert len(rebuilt) == 4
    (runs_dir / "m3_mlp_mlp_caption" / "seed42" / cross_domain.CROSS_DOMAIN_FILE).write_text(
        json.dumps({"collections": {"emoji-describe": {}}})
    )
    refits.clear()
    runner.run_all(REGISTRY, ["m3_mlp_mlp_caption"], [42], tmp_path, runs_dir=runs_dir)
    assert refits == [("m3_mlp_mlp_caption", 42)]  # stamps is still missing
    (runs_dir / "m3_mlp_mlp_caption" / "seed42" / cross_domain.CROSS_DOMAIN_FILE).write_text(
        json.dumps({"collections": {"emoji-describe": {}, "stamps": {}}})
    )
    refits.clear()
    runner.run_all(REGISTRY, ["m3_mlp_mlp_caption"], [42], tmp_path, runs_dir=runs_dir)
    assert refits == []  # finished and tested everywhere it is listed
    with pytest.raises(ValueError, match="unknown experiments"):
        runner.run_all(REGISTRY, ["m9"], [42], tmp_path, runs_dir=runs_dir)


def test_cross_domain_tests_use_a_kept_checkpoint_and_a_refit_is_kept_only_if_it_is_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``report run --keep-best DIR`` on a finished run that lacks cross-domain tests: with
    DIR/<name>/seed<N>.ckpt there, that checkpoint is tested (no refit); without one, the
    refit's best checkpoint is kept there only when its test on the training collection
    reproduces the recorded run (the fake fit's test gives nDCG@10 0.5); one that does not is
    kept as seed<N>.refit.ckpt."""
    import lightning_mlsr.training.cli as cli

    name, runs_dir, keep = "m3_mlp_mlp_caption", tmp_path / "runs", tmp_path / "keep"
    recorded = fitting.run_dir(runs_dir, name, 42) / "metrics.json"
    recorded.parent.mkdir(parents=True)
    completed: list[tuple[Any, Any]] = []  # (kept checkpoint or None, keep_best)
    monkeypatch.setattr(
        runner, "complete_cross_domain", lambda r, n, s, *a: completed.append(a[-2:])
    )
    recorded.write_text(json.dumps({"test": {"nDCG@10": 0.5}}))
    runner.run_all(REGISTRY, [name], [42], tmp_path / "work", runs_dir=runs_dir, keep_best=keep)
    assert completed == [(None, keep)]  # nothing kept yet: a refit, told where to keep
    fitting.kept_checkpoint(keep, name, 42).parent.mkdir(parents=True)
    fitting.kept_checkpoint(keep, name, 42).write_bytes(b"the run's best")
    completed.clear()
    runner.run_all(REGISTRY, [name], [42], tmp_path / "work", runs_dir=runs_dir, keep_best=keep)
    assert completed == [(fitting.kept_checkpoint(keep, name, 42), keep)]

    calls: list[list[str]] = []
    fake_fit(calls, monkeypatch)
    fake = cli.main
    best = tmp_path / "best.ckpt"

    def fit_with_best(args: list[str]) -> Any:
        made = fake(args)
        best.write_bytes(b"refit best")
        made.trainer.checkpoint_callback.best_model_path = str(best)
        return made

    monkeypatch.setattr(cli, "main", fit_with_best)
    monkeypatch.setattr(cross_domain, "test_on_collections", lambda *a: {"stamps": {}})
    written = recorded.with_name(cross_domain.CROSS_DOMAIN_FILE)
    for figure, kept in ((0.25, False), (0.5, True)):
        recorded.write_text(json.dumps({"test": {"nDCG@10": figure}}))
        written.unlink(missing_ok=True)
        fitting.kept_checkpoint(keep, name, 42).unlink(missing_ok=True)
        cross_domain.complete_cross_domain(
            REGISTRY, name, 42, tmp_path / "work", [], runs_dir, keep_best=keep
        )
        entry = json.loads(written.read_text())["collections"]["stamps"]
        assert entry["reproduces_recorded"] is kept and entry["checkpoint"] == "refit"
        assert fitting.kept_checkpoint(keep, name, 42).is_file() is kept
        # a refit that is another model is kept apart, never as the run's checkpoint
        assert fitting.kept_checkpoint(keep, name, 42, refit=True).is_file()
    assert fitting.kept_checkpoint(keep, name, 42).read_bytes() == b"refit best"


def test_fit_environment_counts_code_changes_not_the_reports_the_pipeline_rewrites(
    tmp_path: Path,
) -> None:
    """A run record says whether the checkout had uncommitted changes. The pipeline rewrites
    RESULTS.md and run records under results/ after every run, so those must not count; a
    changed source file must."""
    import subprocess

    def git(*args: str) -> None:
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "RESULTS.md").write_text("report\n")
    (tmp_path / "code.py").write_text("x = 1\n")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    assert fitting.fit_environment(tmp_path)["uncommitted_changes"] is False

    (tmp_path / "results" / "RESULTS.md").write_text("rebuilt after a run\n")
    assert fitting.fit_environment(tmp_path)["uncommitted_changes"] is False

    (tmp_path / "code.py").write_text("x = 2\n")
    environment = fitting.fit_environment(tmp_path)
    assert environment["uncommitted_changes"] is True
    assert environment["commit"] and len(environment["commit"]) == 40
