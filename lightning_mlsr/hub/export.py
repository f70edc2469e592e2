"""Export a trained bi-encoder checkpoint: each side as a self-describing folder with its
model card (``python -m lightning_mlsr.hub export --ckpt_path X.ckpt --out DIR``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from lightning_mlsr.data.settings import grouped_hparams
from lightning_mlsr.hub.card import metrics_with_intervals, model_card
from lightning_mlsr.hub.folder import ExportError, save_encoder
from lightning_mlsr.models.encoder import Encoder
from lightning_mlsr.training.trusted_classes import check_head_config

__all__ = ["export_checkpoint", "load_checkpoint_encoders", "push_folder"]

_SIDES = {"query": "query_encoder", "doc": "doc_encoder"}
_TRAINING_KEYS = (
    "loss",
    "query_regularizer",
    "doc_regularizer",
    "param_groups",
    "teacher",
    "distillation",
)


def load_checkpoint_encoders(ckpt_path: str | Path) -> tuple[dict[str, Encoder], dict[str, Any]]:
    """The query and document encoders of a ``lightning_mlsr fit`` checkpoint, rebuilt from
    the ``class_path`` configuration it records (the distillation teacher is not built),
    and the checkpoint's hyperparameters."""
    from jsonargparse import ArgumentParser

    path = Path(ckpt_path)
    if not path.is_file():
        raise FileNotFoundError(
            f"checkpoint {str(path)!r} does not exist; fit writes them under "
            "<default_root_dir>/<name>/<version>/checkpoints/"
        )
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    hparams = dict(checkpoint.get("hyper_parameters", {}))
    state = checkpoint["state_dict"]
    encoders: dict[str, Encoder] = {}
    for side, key in _SIDES.items():
        config = hparams.get(key)
        if not isinstance(config, dict) or "class_path" not in config:
            raise ExportError(
                f"{str(path)!r} does not record how its {key} was built (a module built in "
                "Python); export its heads with lightning_mlsr.hub.save_encoder instead"
            )
        check_head_config(config, str(path), f"hyper_parameters.{key}")
        parser = ArgumentParser(exit_on_error=False)
        parser.add_argument("--encoder", type=Encoder)
        encoder = parser.instantiate_classes(parser.parse_object({"encoder": config})).encoder
        prefix = key + "."
        encoder.load_state_dict(
            {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        )
        encoders[side] = encoder.eval()
    hparams["datamodule"] = grouped_hparams(checkpoint.get("datamodule_hyper_parameters") or {})
    return encoders, hparams


def _training_summary(
    ckpt_path: Path, hparams: dict[str, Any], checkpoint_info: dict[str, Any]
) -> dict[str, Any]:
    data = hparams.get("datamodule", {})
    batching = data.get("batching", {})
    summary: dict[str, Any] = {"checkpoint": ckpt_path.name}
    if "collection" in data:
        summary["collection"] = data["collection"]
    for key in ("batch_size", "query_max_length", "doc_max_length"):
        if key in batching:
            summary[key] = batching[key]
    for key in _TRAINING_KEYS:
        value = hparams.get(key)
        if isinstance(value, dict) and "class_path" in value:
            summary[key] = {"class_path": value["class_path"], **dict(value.get("init_args") or {})}
        elif value is not None:
            summary[key] = value
    summary.update(checkpoint_info)
    return json.loads(json.dumps(summary, default=str))


def export_checkpoint(
    ckpt_path: str | Path,
    out: str | Path,
    *,
    name: str | None = None,
    metrics_file: str | Path | None = None,
    license: str = "apache-2.0",
) -> dict[str, Path]:
    """Write ``out/query`` and ``out/doc``: each side's folder (:func:`save_encoder`) with
    its ``README.md`` model card.

    Args:
        ckpt_path: a checkpoint written by ``python -m lightning_mlsr fit``.
        out: the folder to write into (its ``query`` and ``doc`` must not hold files).
        name: the model's name on its card (default: the logger's name and version, from
            the run directory).
        metrics_file: a ``runs/<split>.metrics.json`` of the run, whose per-query values give
            the card's metrics and bootstrap intervals; None looks for
            ``runs/test.metrics.json`` in the checkpoint's run directory.
        license: the card's license identifier.

    Returns:
        side -> folder written.
    """
    ckpt_path = Path(ckpt_path)
    encoders, hparams = load_checkpoint_encoders(ckpt_path)
    run_dir = ckpt_path.resolve().parent.parent
    if metrics_file is None and (run_dir / "runs" / "test.metrics.json").is_file():
        metrics_file = run_dir / "runs" / "test.metrics.json"
    metrics = metrics_with_intervals(metrics_file) if metrics_file is not None else None
    checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    info = {k: checkpoint[k] for k in ("epoch", "global_step") if k in checkpoint}
    training = _training_summary(ckpt_path, hparams, info)
    data = hparams.get("datamodule", {})
    name = name or f"{run_dir.parent.name}-{run_dir.name}"
    written: dict[str, Path] = {}
    for side, encoder in encoders.items():
        folder = Path(out) / side
        key = "query_max_length" if side == "query" else "doc_max_length"
        max_length = data.get("batching", {}).get(key)
        manifest = save_encoder(encoder, folder, max_length=max_length)
        card = model_card(
            name=name,
            side="query" if side == "query" else "document",
            manifest=manifest,
            training=training,
            metrics=metrics,
            license=license,
        )
        (folder / "README.md").write_text(card, encoding="utf-8")
        written[side] = folder
    return written


def push_folder(folder: str | Path, repo_id: str, private: bool = True) -> str:
    """Upload an exported side to the Hugging Face hub (needs network and a token from
    ``huggingface-cli login``); returns the repository URL."""
    from huggingface_hub import HfApi

    api = HfApi()
    url = api.create_repo(repo_id, private=private, exist_ok=True)
    api.upload_folder(folder_path=str(folder), repo_id=repo_id)
    return str(url)
