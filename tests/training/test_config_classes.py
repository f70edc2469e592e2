"""An experiment YAML cannot make the CLI build a class from outside the package (the
Popen config runs nothing), unless the person running it allows that module by name."""

from __future__ import annotations

from pathlib import Path

import pytest

from lightning_mlsr.training.callbacks.checkpointing import RunCheckpoint
from lightning_mlsr.training.callbacks.evaluator import RetrievalEvaluator
from lightning_mlsr.training.cli import main
from lightning_mlsr.training.moved_classes import current_class_path
from lightning_mlsr.training.trusted_classes import (
    ALLOW_ENV,
    UntrustedClassError,
    check_run_config,
)

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"


def _fit(tmp_path: Path, loss: str) -> list[str]:
    config = tmp_path / "shared.yaml"
    heads = EXPERIMENTS / "parts" / "heads"
    config.write_text(
        f"model:\n  query_encoder: {heads / 'mlp_query.yaml'}\n"
        f"  doc_encoder: {heads / 'mlm.yaml'}\n  loss:\n{loss}"
    )
    args = ["fit", "--config", str(config), "--trainer.fast_dev_run=1"]
    return args + ["--trainer.logger=false", f"--trainer.default_root_dir={tmp_path}"]


def test_a_popen_in_an_experiment_yaml_is_refused_and_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    loss = f"    class_path: subprocess.Popen\n    init_args: {{args: [touch, {marker}]}}\n"
    with pytest.raises(SystemExit):
        main(_fit(tmp_path, loss))
    assert not marker.exists()


def test_a_module_of_the_right_type_from_outside_the_package_is_not_built(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The parser's type check lets any nn.Module through as a loss; the allow-list does not."""
    monkeypatch.delenv(ALLOW_ENV, raising=False)
    loss = "    class_path: torch.nn.Identity\n"
    with pytest.raises(SystemExit, match=r"model.loss.class_path names 'torch.nn.Identity'"):
        main(_fit(tmp_path, loss))  # refused before instantiate_classes: nothing is built


def test_the_bundled_configs_name_only_trusted_classes_and_the_environment_widens_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = {
        "model": {"loss": {"class_path": "lightning_mlsr.objectives.ranking.InfoNCE"}},
        "trainer": {"callbacks": [{"class_path": "lightning.pytorch.callbacks.Timer"}]},
        "optimizer": {"class_path": "torch.optim.AdamW"},
    }
    check_run_config(config, "here")
    config["model"]["loss"] = {"class_path": "mylab.losses.Fancy", "init_args": {}}
    monkeypatch.delenv(ALLOW_ENV, raising=False)
    with pytest.raises(UntrustedClassError, match=rf"{ALLOW_ENV}=mylab.losses"):
        check_run_config(config, "here")
    monkeypatch.setenv(ALLOW_ENV, "other, mylab")
    check_run_config(config, "here")
    monkeypatch.setenv(ALLOW_ENV, "mylabs")  # a prefix is a whole module name
    with pytest.raises(UntrustedClassError):
        check_run_config(config, "here")


def test_a_run_config_saved_before_a_move_builds_the_classes_at_their_new_place(
    tmp_path: Path,
) -> None:
    """A run's ``config.yaml`` written before ``training/`` was cut by role names its
    callbacks by their old class paths: the CLI reads it through the alias table."""
    heads = EXPERIMENTS / "parts" / "heads"
    saved = tmp_path / "config.yaml"
    saved.write_text(
        f"model:\n  query_encoder: {heads / 'mlp_query.yaml'}\n"
        f"  doc_encoder: {heads / 'mlm.yaml'}\n"
        "trainer:\n  logger: false\n  callbacks:\n"
        "  - class_path: lightning_mlsr.training.evaluator.RetrievalEvaluator\n"
        "    init_args: {k: 10}\n"
        "  - class_path: lightning_mlsr.training.checkpointing.RunCheckpoint\n"
    )
    cli = main(["--config", str(saved), f"--trainer.default_root_dir={tmp_path}"], run=False)
    evaluators = [c for c in cli.trainer.callbacks if isinstance(c, RetrievalEvaluator)]
    assert [e.k for e in evaluators] == [10]
    assert any(isinstance(c, RunCheckpoint) for c in cli.trainer.callbacks)
    assert current_class_path("lightning_mlsr.training.progress.ProgressLines") == (
        "lightning_mlsr.training.callbacks.progress.ProgressLines"
    )
    assert current_class_path("lightning_mlsr.models.MLMHead") == "lightning_mlsr.models.MLMHead"
