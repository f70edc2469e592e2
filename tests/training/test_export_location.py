"""`predict` exports land in the run's own directory, never overwrite an earlier export
unless told to, and say where they went."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from lightning_mlsr.training.cli import main

REPO = Path(__file__).resolve().parents[2]


def _predict(tmp_path: Path, *extra: str):
    return main(
        [
            "predict",
            "--config",
            str(REPO / "experiments" / "paper" / "m3_mlp_mlp_caption.yaml"),
            "--trainer.logger=false",
            f"--trainer.default_root_dir={tmp_path}",
            "--trainer.enable_progress_bar=false",
            "--data.predict=queries",  # 359 queries: seconds, not the corpus
            "--data.batching.eval_batch_size=512",
            "--return_predictions=false",
            *extra,
        ]
    )


def _writer(cli):
    (writer,) = [c for c in cli.trainer.callbacks if type(c).__name__ == "SparseVectorWriter"]
    return writer


@pytest.mark.slow  # two predict runs (~25 s on 2 busy cores)
def test_each_predict_writes_into_its_own_run_directory(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="lightning.pytorch.utilities.rank_zero"):
        first, second = _predict(tmp_path), _predict(tmp_path)
    dirs = [tmp_path / "lightning_mlsr" / f"version_{i}" / "vectors" for i in (0, 1)]
    for cli, out in zip((first, second), dirs):
        names = ["queries_test.npz", "queries_test.ids.txt", "queries_test.jsonl"]
        assert _writer(cli).written == [out / name for name in names]
        assert all((out / name).is_file() for name in names)
    assert not (tmp_path / "vectors").exists()  # where every export used to go
    printed = [r.getMessage() for r in caplog.records if "vectors" in r.getMessage()]
    assert any(f"to {dirs[1]}" in line for line in printed), printed


@pytest.mark.slow  # three predict runs
def test_a_named_directory_is_not_overwritten_without_the_flag(tmp_path: Path) -> None:
    out = tmp_path / "exports"
    _predict(tmp_path, f"--trainer.callbacks.init_args.output_dir={out}")
    ids = out / "queries_test.ids.txt"
    ids.write_text("an earlier export\n")
    with pytest.raises(FileExistsError) as err:
        _predict(tmp_path, f"--trainer.callbacks.init_args.output_dir={out}")
    assert str(ids) in str(err.value) and "overwrite=true" in str(err.value)
    assert ids.read_text() == "an earlier export\n"

    _predict(
        tmp_path,
        f"--trainer.callbacks.init_args.output_dir={out}",
        "--trainer.callbacks.init_args.overwrite=true",
    )
    assert ids.read_text().splitlines()[0] != "an earlier export"


def test_the_docs_say_where_predict_of_a_run_checkpoint_writes_its_vectors(tmp_path: Path) -> None:
    """docs/exports.md named ``vectors/`` of the run folder; a run's checkpoint is predicted
    into ``<run>/evaluations/<checkpoint>/vectors/`` (the export commands read from there)."""
    import lightning as L

    from lightning_mlsr.training.runs import evaluate_into_checkpoint_run, run_dir

    trainer = L.Trainer(logger=False, default_root_dir=tmp_path, enable_progress_bar=False)
    run = tmp_path / "RUN"
    evaluate_into_checkpoint_run(trainer, run / "checkpoints" / "last.ckpt")
    vectors = (run_dir(trainer) / "vectors").relative_to(tmp_path).as_posix()
    assert vectors == "RUN/evaluations/last/vectors"
    docs = (REPO / "docs" / "exports.md").read_text("utf-8")
    assert f"-> {vectors}/corpus.npz" in docs
    assert f"`DIR` is the `vectors/` folder that `predict` writes (`{vectors}/`" in docs
