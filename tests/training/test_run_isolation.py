"""Runs cannot hurt each other or the user: a fit starts fresh unless told to resume, every
run has its own checkpoint directory, no run deletes another's files, checkpoints are written
atomically, a checkpoint of another configuration is refused, and no file runs code when it
is loaded."""

from __future__ import annotations

import ast
import errno
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from lightning.pytorch.demos.boring_classes import BoringModel

from lightning_mlsr.io.checkpoints import CheckpointError, load_checkpoint
from lightning_mlsr.training.callbacks.checkpointing import (
    AtomicCheckpointIO,
    RunCheckpoint,
    newest_resumable,
)
from lightning_mlsr.training.callbacks.fault_tolerance import CheckpointOnException
from lightning_mlsr.training.cli import main

REPO = Path(__file__).resolve().parents[2]
M2 = str(REPO / "experiments" / "paper" / "m2_mlp_mlm_caption.yaml")
M3 = str(REPO / "experiments" / "paper" / "m3_mlp_mlp_caption.yaml")


def _weights_digest(module: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


class _StartProbe(L.Callback):
    """Records the global step and the weights a fit starts training from."""

    def __init__(self) -> None:
        self.start_step: int | None = None
        self.start_weights: str | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.start_step = trainer.global_step
        self.start_weights = _weights_digest(pl_module)


def _boring_trainer(root: Path, probe: _StartProbe, **kwargs: Any) -> L.Trainer:
    return L.Trainer(
        default_root_dir=root,
        logger=False,
        max_steps=2,
        limit_val_batches=1,
        enable_progress_bar=False,
        enable_model_summary=False,
        plugins=[AtomicCheckpointIO()],
        callbacks=[RunCheckpoint(save_last=True), CheckpointOnException(), probe],
        **kwargs,
    )


# ---------------------------------------------------------------- fresh unless asked


def test_a_second_fit_in_the_same_directory_starts_fresh_with_its_own_checkpoints(
    tmp_path: Path,
) -> None:
    first, second = _StartProbe(), _StartProbe()
    L.seed_everything(1)
    model_a = BoringModel()
    trainer_a = _boring_trainer(tmp_path, first)
    trainer_a.fit(model_a)
    trained_a = _weights_digest(model_a)
    dir_a = Path(trainer_a.checkpoint_callback.dirpath)  # type: ignore[union-attr]
    assert (dir_a / "last.ckpt").is_file()

    L.seed_everything(7)
    model_b = BoringModel()
    initial_b = _weights_digest(model_b)
    trainer_b = _boring_trainer(tmp_path, second)
    trainer_b.fit(model_b)  # no ckpt_path: must not resume from A's last.ckpt
    assert second.start_step == 0
    assert second.start_weights == initial_b != trained_a
    assert trainer_b.global_step == 2  # trained its own two steps
    dir_b = Path(trainer_b.checkpoint_callback.dirpath)  # type: ignore[union-attr]
    assert (
        dir_b != dir_a and dir_b.parent.parent == dir_a.parent.parent == tmp_path / "lightning_mlsr"
    )
    assert (dir_a / "last.ckpt").is_file()  # A's files untouched


def test_resuming_needs_an_explicit_checkpoint_and_then_continues(tmp_path: Path) -> None:
    probe = _StartProbe()
    trainer = _boring_trainer(tmp_path, _StartProbe())
    trainer.fit(BoringModel())
    last = newest_resumable([tmp_path])
    assert last is not None and last.name == "last.ckpt"
    resumed = _boring_trainer(tmp_path, probe)
    resumed.fit_loop.epoch_loop.max_steps = 4
    resumed.fit(BoringModel(), ckpt_path=str(last))
    assert probe.start_step == 2 and resumed.global_step == 4


def test_a_finished_fit_leaves_another_runs_on_exception_checkpoint(tmp_path: Path) -> None:
    """Both write to one explicit directory: the earlier run's resume point must survive."""
    shared = tmp_path / "shared"
    shared.mkdir()
    theirs = shared / "on_exception.ckpt"
    torch.save({"global_step": 17, "state_dict": {}}, theirs)
    before = theirs.read_bytes()
    trainer = L.Trainer(
        default_root_dir=tmp_path,
        logger=False,
        max_steps=2,
        limit_val_batches=0,
        enable_progress_bar=False,
        enable_checkpointing=False,
        callbacks=[CheckpointOnException(dirpath=str(shared))],
    )
    trainer.fit(BoringModel())
    assert theirs.read_bytes() == before


class _Explode(L.Callback):
    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.global_step == 1:
            raise RuntimeError("stop here")


def test_a_stopped_fit_saves_its_resume_point_in_its_own_run_directory(tmp_path: Path) -> None:
    trainer = _boring_trainer(tmp_path, _StartProbe())
    trainer.callbacks.append(_Explode())
    with pytest.raises(RuntimeError, match="stop here"):
        trainer.fit(BoringModel())
    (saved,) = tmp_path.glob("lightning_mlsr/version_*/checkpoints/on_exception.ckpt")
    assert load_checkpoint(saved)["global_step"] == 1
    assert not (tmp_path / "checkpoints").exists()  # not the shared <root>/checkpoints


def test_fast_dev_run_writes_no_checkpoint(tmp_path: Path) -> None:
    trainer = L.Trainer(
        default_root_dir=tmp_path,
        fast_dev_run=1,
        enable_progress_bar=False,
        callbacks=[RunCheckpoint(save_last=True), CheckpointOnException()],
    )
    trainer.fit(BoringModel())
    assert not list(tmp_path.rglob("*.ckpt"))


# ---------------------------------------------------------------- atomic writes


def test_a_full_disk_leaves_the_previous_checkpoint_intact_and_no_debris(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    io = AtomicCheckpointIO()
    target = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"global_step": 1, "w": torch.arange(1000.0)}, target)
    good = target.read_bytes()

    real_save = torch.save

    def fills_the_disk(obj: Any, handle: Any, *args: Any, **kwargs: Any) -> None:
        handle.write(b"\0" * 4096)  # part of the file made it before the disk filled up
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", fills_the_disk)
    with pytest.raises(OSError, match="no space left to write") as err:
        io.save_checkpoint({"global_step": 2, "w": torch.zeros(1000)}, target)
    monkeypatch.setattr(torch, "save", real_save)
    message = str(err.value)
    assert str(target) in message and "MB free" in message and "default_root_dir" in message
    assert err.value.errno == errno.ENOSPC
    assert target.read_bytes() == good  # unchanged, not truncated
    assert load_checkpoint(target)["global_step"] == 1
    assert sorted(p.name for p in target.parent.iterdir()) == ["last.ckpt"]  # no temporaries


@pytest.mark.parametrize("what", ["trec run", "vector export"])
def test_run_files_and_exports_on_a_full_disk_keep_the_previous_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, what: str
) -> None:
    import numpy as np
    import scipy.sparse as sp

    import lightning_mlsr.io.atomic as atomic
    from lightning_mlsr.retrieval.trec import read_trec_run, write_trec_run
    from lightning_mlsr.training.callbacks.vector_writer import write_json_vectors

    target = tmp_path / ("test.trec" if what == "trec run" else "corpus.jsonl")

    def write(score: float) -> None:
        if what == "trec run":
            write_trec_run(target, {"q1": {"d1": score, "d2": 0.5}})
        else:
            write_json_vectors(target, ["d1"], sp.csr_matrix(np.array([[score, 0.0]])), ["a", "b"])

    write(2.0)
    good = target.read_bytes()

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", full)
    with pytest.raises(OSError, match=f"no space left to write {target}"):
        write(3.0)
    assert target.read_bytes() == good
    assert [p.name for p in tmp_path.iterdir()] == [target.name]
    if what == "trec run":
        assert read_trec_run(target) == {"q1": {"d1": 2.0, "d2": 0.5}}


def test_the_cli_writes_checkpoints_atomically() -> None:
    from lightning_mlsr.training.cli.trainer_cli import _with_atomic_checkpoints

    assert any(isinstance(p, AtomicCheckpointIO) for p in _with_atomic_checkpoints(None))
    mine = AtomicCheckpointIO()
    assert _with_atomic_checkpoints([mine]) == [mine]  # a configured CheckpointIO is kept


@pytest.mark.parametrize("damage", ["empty", "truncated", "not a checkpoint"])
def test_a_damaged_checkpoint_is_named_and_skipped_by_resume(tmp_path: Path, damage: str) -> None:
    good = tmp_path / "run" / "version_0" / "checkpoints" / "last.ckpt"
    good.parent.mkdir(parents=True)
    torch.save({"global_step": 3, "w": torch.ones(4096)}, good)
    bad = tmp_path / "run" / "version_1" / "checkpoints" / "on_exception.ckpt"
    bad.parent.mkdir(parents=True)
    data = good.read_bytes()
    bad.write_bytes(
        {"empty": b"", "truncated": data[: len(data) // 2], "not a checkpoint": b"hello"}[damage]
    )
    os.utime(good, (1000, 1000))  # the damaged one is newer
    with pytest.raises(CheckpointError, match=str(bad).replace(".", r"\.")):
        load_checkpoint(bad)
    assert newest_resumable([tmp_path / "run"]) == good.resolve()
    with pytest.raises(SystemExit, match=r"--ckpt_path: .*on_exception\.ckpt"):
        main(["validate", "--config", M3, f"--ckpt_path={bad}", "--trainer.logger=false"])


# ---------------------------------------------------------------- no code runs on load


class _Payload:
    """Unpickling it opens (creates) a file: the side effect a malicious checkpoint has."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return open, (str(self.marker), "w")


def test_a_malicious_teacher_file_is_refused_and_runs_nothing(tmp_path: Path) -> None:
    from lightning_mlsr.models.teacher import DenseTeacher

    marker = tmp_path / "pwned"
    teacher_file = tmp_path / "teacher.pt"
    torch.save(
        {"state_dict": {"query_encoder.w": torch.ones(1)}, "x": _Payload(marker)}, teacher_file
    )
    assert not marker.exists()

    class Teacher(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(1))

    with pytest.raises(ValueError, match=r"refusing to load .*teacher\.pt"):
        DenseTeacher(Teacher(), checkpoint=str(teacher_file))
    assert not marker.exists()
    with pytest.raises(SystemExit, match="refusing to load"):
        main(["validate", "--config", M3, f"--ckpt_path={teacher_file}", "--trainer.logger=false"])
    assert not marker.exists()


_UNSAFE_CALLS = {
    ("pickle", "load"),
    ("pickle", "loads"),
    ("cPickle", "load"),
    ("dill", "load"),
    ("dill", "loads"),
    ("cloudpickle", "load"),
    ("joblib", "load"),
    ("marshal", "loads"),
    ("marshal", "load"),
    ("shelve", "open"),
    ("yaml", "unsafe_load"),
    ("yaml", "full_load"),
    ("pd", "read_pickle"),
    ("pandas", "read_pickle"),
}


def _unsafe_uses(source: str) -> list[str]:
    """Calls that can run code from data: torch.load without weights_only=True, np.load with
    allow_pickle=True, yaml.load without a safe Loader, pickle-family loads, eval/exec, and
    Lightning's checkpoint loads (any call given ``ckpt_path=``, e.g. ``trainer.test`` or a
    name bound to it, and ``load_from_checkpoint``) without weights_only=True."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        keywords = {k.arg: k.value for k in node.keywords}
        name = func.id if isinstance(func, ast.Name) else None
        owner = (
            func.value.id
            if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name)
            else None
        )
        attr = func.attr if isinstance(func, ast.Attribute) else None
        where = f"line {node.lineno}"
        if name in ("eval", "exec"):
            found.append(f"{where}: {name}()")
        elif (owner, attr) in _UNSAFE_CALLS:
            found.append(f"{where}: {owner}.{attr}()")
        elif owner == "torch" and attr == "load":
            value = keywords.get("weights_only")
            if not (isinstance(value, ast.Constant) and value.value is True):
                found.append(f"{where}: torch.load() without weights_only=True")
        elif "ckpt_path" in keywords or attr == "load_from_checkpoint":
            # Lightning's torch.load of a checkpoint defaults to weights_only=False
            value = keywords.get("weights_only")
            if not (isinstance(value, ast.Constant) and value.value is True):
                called = attr or name or ast.unparse(func)
                found.append(f"{where}: {called}() of a checkpoint without weights_only=True")
        elif owner in ("np", "numpy") and attr == "load":
            value = keywords.get("allow_pickle")
            if isinstance(value, ast.Constant) and value.value is True:
                found.append(f"{where}: np.load(allow_pickle=True)")
        elif owner == "yaml" and attr == "load":
            loader = keywords.get("Loader")
            if loader is None or "Safe" not in ast.unparse(loader):
                found.append(f"{where}: yaml.load() without a SafeLoader")
    return found


def test_the_scanner_finds_every_unsafe_load() -> None:
    unsafe = "\n".join(
        [
            "torch.load(p)",
            "torch.load(p, weights_only=False)",
            "np.load(p, allow_pickle=True)",
            "yaml.load(s)",
            "yaml.load(s, Loader=yaml.FullLoader)",
            "pickle.load(f)",
            "pd.read_pickle(p)",
            "eval(s)",
            "exec(s)",
            "trainer.test(m, ckpt_path=p)",
            "trainer.fit(m, ckpt_path=p, weights_only=False)",
            "Model.load_from_checkpoint(p)",
            "evaluate(m, ckpt_path=p)",
        ]
    )
    assert len(_unsafe_uses(unsafe)) == 13
    safe = "\n".join(
        [
            "torch.load(p, weights_only=True)",
            "np.load(p)",
            "yaml.safe_load(s)",
            "yaml.load(s, Loader=yaml.SafeLoader)",
            "m.eval()",
            "trainer.test(m, ckpt_path=p, weights_only=True)",
            "trainer.fit(m)",
            "Model.load_from_checkpoint(p, weights_only=True)",
        ]
    )
    assert _unsafe_uses(safe) == []


def test_no_file_in_the_package_research_scripts_or_benchmarks_loads_data_unsafely() -> None:
    problems = []
    for folder in ("lightning_mlsr", "research", "scripts", "bench"):
        for path in sorted((REPO / folder).rglob("*.py")):
            for use in _unsafe_uses(path.read_text("utf-8")):
                problems.append(f"{path.relative_to(REPO)} {use}")
    assert problems == []


# ---------------------------------------------------------------- the CLI end to end


def _fit_args(root: Path, *extra: str) -> list[str]:
    return [
        f"--trainer.default_root_dir={root}",
        "--trainer.logger=false",
        "--trainer.max_epochs=1",
        "--trainer.limit_train_batches=2",
        "--trainer.limit_val_batches=1",
        "--trainer.enable_progress_bar=false",
        "--data.batching.batch_size=8",
        "--test_after_fit=false",
        *extra,
    ]


@pytest.fixture(scope="module")
def m3_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """One short M3 fit without a logger: (root, its last.ckpt, its trained weights)."""
    root = tmp_path_factory.mktemp("root")
    cli = main(["fit", "--config", M3, *_fit_args(root)])
    last = Path(cli.trainer.checkpoint_callback.dirpath) / "last.ckpt"  # type: ignore[union-attr]
    return root, last, _weights_digest(cli.model)


@pytest.mark.slow  # three short CLI fits of the bundled collection
def test_cli_fits_back_to_back_in_one_root_never_resume_each_other(
    m3_run: tuple[Path, Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, last_a, trained_a = m3_run
    before = last_a.read_bytes()
    log = tmp_path / "start.json"
    probe = [
        "--trainer.callbacks+=tests.probes.StartLog",
        f"--trainer.callbacks.init_args.path={log}",
    ]
    # the same architecture with other settings: fresh, step 0, its own initial weights
    other = ["--model.optimizer.init_args.lr=0.5", "--seed_everything=7"]
    cli = main(["fit", "--config", M3, *_fit_args(root, *other, *probe)])
    start = json.loads(log.read_text())
    assert start["step"] == 0 and start["weights"] != trained_a
    assert cli.trainer.global_step == 2
    assert Path(cli.trainer.checkpoint_callback.dirpath) != last_a.parent  # type: ignore[union-attr]
    # another architecture in the same root: starts (it used to load M3's weights and fail)
    log.unlink()
    cli = main(["fit", "--config", M2, *_fit_args(root, *probe)])
    assert json.loads(log.read_text())["step"] == 0 and cli.trainer.global_step == 2
    assert last_a.read_bytes() == before
    # the fit says where its checkpoints are, last thing
    callback = cli.trainer.checkpoint_callback
    out = capsys.readouterr().out.splitlines()
    assert out[-2] == (
        f"best checkpoint (val/nDCG@10 {float(callback.best_model_score):.4f}): "  # type: ignore[union-attr]
        f"{callback.best_model_path}"  # type: ignore[union-attr]
    )
    assert out[-1] == f"last checkpoint: {callback.last_model_path}"  # type: ignore[union-attr]
    assert Path(callback.last_model_path).is_file()  # type: ignore[union-attr]
    # fast_dev_run of both, in one fresh root: nothing is written at all
    fresh = tmp_path / "dev"
    for config in (M3, M2):
        dev = [f"--trainer.default_root_dir={fresh}", "--trainer.fast_dev_run=1"]
        main(["fit", "--config", config, *dev])
    assert not list(fresh.rglob("*.ckpt"))


@pytest.mark.slow  # a validation pass of the bundled collection
def test_evaluating_a_checkpoint_of_another_configuration_is_refused(
    m3_run: tuple[Path, Path, str],
) -> None:
    root, last, _ = m3_run
    common = ["--trainer.logger=false", f"--trainer.default_root_dir={root}"]
    with pytest.raises(SystemExit) as err:
        main(["validate", "--config", M2, f"--ckpt_path={last}", *common])
    message = str(err.value)
    assert "model.doc_encoder.class_path" in message and "MLPHead" in message
    with pytest.raises(SystemExit, match=r"model\.optimizer\.init_args\.lr: config 0\.5"):
        main(
            [
                "test",
                "--config",
                M3,
                f"--ckpt_path={last}",
                "--model.optimizer.init_args.lr=0.5",
                *common,
            ]
        )
    # its own configuration evaluates it, with the checkpoint's weights
    cli = main(
        [
            "validate",
            "--config",
            M3,
            f"--ckpt_path={last}",
            "--trainer.limit_val_batches=1",
            *common,
        ]
    )
    assert "val/nDCG@10" in cli.trainer.callback_metrics
    assert cli.config["validate"]["weights_only"] is True  # Lightning's load too, not only ours
    with pytest.raises(SystemExit, match=r"--weights_only=false: refused"):
        main(["validate", "--config", M3, f"--ckpt_path={last}", "--weights_only=false", *common])
    # ... and writes beside the run that trained it, not into a new run directory
    from lightning_mlsr.training.runs import run_dir

    assert run_dir(cli.trainer) == last.parent.parent / "evaluations" / "last"


def test_the_cli_names_itself_and_shows_the_logger_offline(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    assert capsys.readouterr().out.startswith("usage: python -m lightning_mlsr ")
    with pytest.raises(SystemExit):
        main(["fit", "--config", M2, "--print_config"])
    printed = capsys.readouterr().out
    assert "offline: null" in printed  # resolved from WANDB_MODE, not a misleading false
    from lightning_mlsr.training.callbacks.loggers import WandbLogger

    for mode, offline in (("offline", True), ("dryrun", True), ("online", False)):
        monkeypatch.setenv("WANDB_MODE", mode)
        assert WandbLogger(save_dir=str(tmp_path))._offline is offline, mode
    assert WandbLogger(save_dir=str(tmp_path), offline=True)._offline is True


def test_ckpt_path_last_needs_a_checkpoint_to_resume(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="no intact last.ckpt or on_exception.ckpt"):
        main(["fit", "--config", M3, *_fit_args(tmp_path), "--ckpt_path=last"])


def test_best_checkpoints_are_not_resume_points(tmp_path: Path) -> None:
    """Only last/on_exception checkpoints resume a fit; a best checkpoint is a model."""
    best = tmp_path / "lightning_mlsr" / "version_0" / "checkpoints" / "epoch0-ndcg0.5.ckpt"
    best.parent.mkdir(parents=True)
    torch.save({"global_step": 1}, best)
    assert newest_resumable([tmp_path]) is None
    torch.save({"global_step": 1}, best.with_name("last-v1.ckpt"))
    assert newest_resumable([tmp_path]) == best.with_name("last-v1.ckpt").resolve()
