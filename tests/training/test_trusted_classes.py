"""Nothing a model folder, a checkpoint or its hyperparameters name runs unless it is one of the
package's own classes: a manifest or checkpoint naming ``subprocess.Popen`` is refused before
anything is imported or called, while every class the experiments use still loads."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from lightning_mlsr.hub import load_encoder, save_encoder
from lightning_mlsr.models import LateFusionHead, MLMHead, MLPHead, StaticQueryHead
from lightning_mlsr.training.system.module import SparseBiEncoder
from lightning_mlsr.training.trusted_classes import (
    UntrustedClassError,
    check_checkpoint_hparams,
    check_head_config,
    head_class,
)

REPO = Path(__file__).resolve().parents[2]
POPEN = "subprocess.Popen"


def _popen_args(marker: Path) -> dict[str, object]:
    return {"args": [sys.executable, "-c", f"open({str(marker)!r}, 'w').close()"]}


def _wait_for_children() -> None:
    """Give a started process time to create its file (the old code did start one)."""
    import time

    time.sleep(1.0)


def test_a_folder_whose_manifest_names_popen_runs_nothing(tmp_path: Path) -> None:
    folder = tmp_path / "side"
    save_encoder(StaticQueryHead(), folder)
    marker = tmp_path / "ran"
    manifest_file = folder / "lightning_mlsr.json"
    manifest = json.loads(manifest_file.read_text())
    manifest.update(class_path=POPEN, init_args=_popen_args(marker))
    manifest_file.write_text(json.dumps(manifest))
    with pytest.raises(UntrustedClassError) as err:
        load_encoder(folder)
    _wait_for_children()
    assert not marker.exists()
    message = str(err.value)
    assert "lightning_mlsr.json" in message and "class_path" in message and POPEN in message
    assert "lightning_mlsr.models.MLMHead" in message  # what it may name instead


def test_a_fusion_folder_cannot_reach_outside_itself_or_name_code_in_its_arguments(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "fusion"
    save_encoder(LateFusionHead(MLPHead(), MLMHead()), folder)
    manifest_file = folder / "lightning_mlsr.json"
    manifest = json.loads(manifest_file.read_text())
    manifest["parts"] = ["../elsewhere"]
    manifest_file.write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=r"parts names '\.\./elsewhere'"):
        load_encoder(folder)
    manifest["parts"] = ["image_head", "text_head"]
    manifest["init_args"]["combine"] = {"class_path": POPEN, "init_args": {"args": ["true"]}}
    manifest_file.write_text(json.dumps(manifest))
    with pytest.raises(UntrustedClassError, match=r"init_args\.combine\.class_path"):
        load_encoder(folder)


def test_head_names_resolve_against_the_registry_only() -> None:
    assert head_class("lightning_mlsr.models.MLMHead", "f") is MLMHead
    assert head_class("lightning_mlsr.models.text.MLMHead", "f") is MLMHead
    assert head_class("MLMHead", "f") is MLMHead
    for name in ("os.system", "lightning_mlsr.io.atomic.atomic_write_text", "Popen", None, 3):
        with pytest.raises(UntrustedClassError, match="registered lightning_mlsr head"):
            head_class(name, "f")
    # a loss is a class of the package, but not a head
    with pytest.raises(UntrustedClassError):
        check_head_config(
            {"class_path": "lightning_mlsr.objectives.ranking.InfoNCE"}, "f", "query_encoder"
        )


def _checkpoint(path: Path, hparams: dict[str, object]) -> Path:
    query = StaticQueryHead()
    state = {f"query_encoder.{k}": v for k, v in query.state_dict().items()}
    torch.save({"state_dict": state, "hyper_parameters": hparams}, path)
    return path


def test_a_checkpoint_naming_popen_as_a_head_is_refused_by_export(tmp_path: Path) -> None:
    from lightning_mlsr.hub.export import load_checkpoint_encoders

    marker = tmp_path / "ran"
    ckpt = _checkpoint(
        tmp_path / "last.ckpt",
        {
            "query_encoder": {"class_path": "lightning_mlsr.models.StaticQueryHead"},
            "doc_encoder": {"class_path": POPEN, "init_args": _popen_args(marker)},
        },
    )
    with pytest.raises(UntrustedClassError, match=r"last\.ckpt: hyper_parameters\.doc_encoder"):
        load_checkpoint_encoders(ckpt)
    assert not marker.exists()


@pytest.mark.parametrize(
    "hparams, key",
    [
        ({"loss": {"class_path": POPEN, "init_args": {"args": ["true"]}}}, "loss.class_path"),
        ({"optimizer": "builtins.exec"}, "optimizer"),
        ({"_instantiator": "builtins.exec"}, "_instantiator"),
        ({"_class_path": "subprocess.Popen"}, "_class_path"),
        (
            {"query_encoder": {"class_path": "lightning_mlsr.models.LateFusionHead",
                               "init_args": {"text_head": {"class_path": POPEN}}}},
            "text_head.class_path",
        ),
    ],
)  # fmt: skip
def test_checkpoint_hyperparameters_naming_other_code_are_refused(
    hparams: dict[str, object], key: str
) -> None:
    with pytest.raises(UntrustedClassError, match=key.replace(".", r"\.")):
        check_checkpoint_hparams(hparams, "x.ckpt")


def test_loading_a_checkpoint_for_a_notebook_refuses_a_foreign_class(tmp_path: Path) -> None:
    from lightning_mlsr.training.model_loading import load_model

    ckpt = _checkpoint(
        tmp_path / "last.ckpt",
        {
            "_instantiator": "lightning.pytorch.cli.instantiate_module",
            "loss": {"class_path": POPEN},
        },
    )
    with pytest.raises(UntrustedClassError, match=r"hyper_parameters\.loss\.class_path"):
        load_model(ckpt)


def test_evaluating_a_checkpoint_naming_popen_is_refused_before_anything_is_built(
    tmp_path: Path,
) -> None:
    from lightning_mlsr.training.cli import main

    marker = tmp_path / "ran"
    ckpt = _checkpoint(
        tmp_path / "last.ckpt",
        {
            "_instantiator": "lightning.pytorch.cli.instantiate_module",
            "query_encoder": {"class_path": POPEN, "init_args": _popen_args(marker)},
        },
    )
    config = str(REPO / "experiments" / "paper" / "m3_mlp_mlp_caption.yaml")
    with pytest.raises(SystemExit, match=r"--ckpt_path: .*query_encoder\.class_path"):
        main(["validate", "--config", config, f"--ckpt_path={ckpt}", "--trainer.logger=false"])
    assert not marker.exists()


@pytest.mark.parametrize(
    "config",
    [
        "paper/m4x_mlp_mlm_image_caption.yaml",
        "distillation/kl_mlp_query.yaml",
        "inference_free/static_mlm_caption.yaml",
        "baselines/dense_image.yaml",
    ],
)
def test_what_fit_records_in_a_checkpoint_passes_the_check(config: str, tmp_path: Path) -> None:
    """The hyperparameters a LightningCLI fit saves (heads, loss, regularizers, optimizer,
    teacher, distillation) are all on the allow-list."""
    from lightning_mlsr.training.cli import main

    cli = main(
        ["--config", str(REPO / "experiments" / config), "--trainer.logger=false",
         f"--trainer.default_root_dir={tmp_path}"],
        run=False,
    )  # fmt: skip
    hparams = dict(cli.model.hparams)
    assert "_instantiator" in hparams and "query_encoder" in hparams
    check_checkpoint_hparams(hparams, "last.ckpt")


def test_a_checkpoint_naming_the_training_module_by_its_old_place_passes_the_check() -> None:
    """A checkpoint saved before ``training/`` was cut by role names the module's old class
    path; the alias table translates it, and a foreign module is still refused."""
    check_checkpoint_hparams({"_class_path": "lightning_mlsr.training.module.SparseBiEncoder"}, "x")
    check_checkpoint_hparams({"_class_path": SparseBiEncoder.__module__ + ".SparseBiEncoder"}, "x")
    with pytest.raises(UntrustedClassError, match="_class_path"):
        check_checkpoint_hparams({"_class_path": "lightning_mlsr.training.module.Other"}, "x")
