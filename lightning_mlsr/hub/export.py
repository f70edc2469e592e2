"""Export a trained bi-encoder checkpoint: each side as a self-describing folder with its
model card (``python -m lightning_mlsr.hub export --ckpt_path X.ckpt --out DIR``)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from lightning_mlsr.data.settings import grouped_hparams
from lightning_mlsr.hub.card import metrics_with_intervals, model_card
from lightning_mlsr.hub.folder import save_encoder
from lightning_mlsr.hub.manifest import MANIFEST, ExportError
from lightning_mlsr.io.atomic import disk_full_error, is_disk_full
from lightning_mlsr.io.checkpoints import load_checkpoint
from lightning_mlsr.models.encoder import Encoder
from lightning_mlsr.training.trusted_classes import check_head_config

__all__ = ["PushError", "export_checkpoint", "load_checkpoint_encoders", "push_folder"]

_SIDES = {"query": "query_encoder", "doc": "doc_encoder"}
#: the folder (inside ``--out``) an export is written into before its sides are renamed
_STAGING_PREFIX = ".partial-export-"
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
    and the checkpoint's hyperparameters.

    Raises:
        FileNotFoundError: no file at ``ckpt_path``.
        CheckpointError: the file is damaged or holds more than weights (names it).
        UntrustedClassError: it names a class other than the package's heads.
        ExportError: it does not record its encoders, or they do not fit its weights.
    """
    path = Path(ckpt_path)
    if not path.is_file():
        raise FileNotFoundError(
            f"checkpoint {str(path)!r} does not exist; fit writes them under "
            "<default_root_dir>/<name>/<version>/checkpoints/"
        )
    return _encoders_of(load_checkpoint(path), path)


def _encoders_of(
    checkpoint: dict[str, Any], path: Path
) -> tuple[dict[str, Encoder], dict[str, Any]]:
    from jsonargparse import ArgumentParser

    hparams = dict(checkpoint.get("hyper_parameters") or {})
    state = checkpoint.get("state_dict")
    if not isinstance(state, dict):
        raise ExportError(
            f"{str(path)!r} has no state_dict: it is not a checkpoint written by "
            "`python -m lightning_mlsr fit`"
        )
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
        try:
            encoder = parser.instantiate_classes(parser.parse_object({"encoder": config})).encoder
        except Exception as err:  # jsonargparse and the head's own checks raise many types
            raise ExportError(
                f"{str(path)!r}: hyper_parameters.{key} does not build a head "
                f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); "
                "was it written by another version of lightning_mlsr?"
            ) from err
        prefix = key + "."
        try:
            encoder.load_state_dict(
                {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
            )
        except RuntimeError as err:
            raise ExportError(
                f"{str(path)!r}: the {key} weights do not fit the head its hyperparameters "
                f"describe ({str(err).splitlines()[0]})"
            ) from err
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
            Both sides are written into a hidden folder inside it and renamed into place
            at the end, so a failed export (a full disk, a damaged checkpoint) leaves
            nothing behind and can simply be run again.
        name: the model's name on its card (default: the logger's name and version, from
            the run directory).
        metrics_file: a ``runs/<split>.metrics.json`` of the run, whose per-query values give
            the card's metrics and bootstrap intervals; None looks for
            ``runs/test.metrics.json`` in the checkpoint's run directory.
        license: the card's license identifier.

    Returns:
        side -> folder written.
    """
    ckpt_path, out = Path(ckpt_path), Path(out)
    targets = {side: out / side for side in _SIDES}
    for folder in targets.values():
        if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
            raise ExportError(
                f"{str(folder)!r} already holds an export (or other files); remove it, or "
                "export into another --out (files left from another head would be read as "
                "this one's)"
            )
    if not ckpt_path.is_file():
        raise FileNotFoundError(
            f"checkpoint {str(ckpt_path)!r} does not exist; fit writes them under "
            "<default_root_dir>/<name>/<version>/checkpoints/"
        )
    checkpoint = load_checkpoint(ckpt_path)
    encoders, hparams = _encoders_of(checkpoint, ckpt_path)
    run_dir = ckpt_path.resolve().parent.parent
    if metrics_file is None and (run_dir / "runs" / "test.metrics.json").is_file():
        metrics_file = run_dir / "runs" / "test.metrics.json"
    metrics = metrics_with_intervals(metrics_file) if metrics_file is not None else None
    info: dict[str, Any] = {k: checkpoint[k] for k in ("epoch", "global_step") if k in checkpoint}
    training = _training_summary(ckpt_path, hparams, info)
    data = hparams.get("datamodule", {})
    name = name or f"{run_dir.parent.name}-{run_dir.name}"
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=_STAGING_PREFIX, dir=out))
    try:
        for side, encoder in encoders.items():
            folder = staging / side
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
        _publish(staging, targets)
    except BaseException as err:
        written = sum(p.stat().st_size for p in staging.rglob("*") if p.is_file())
        full = is_disk_full(err, out)
        shutil.rmtree(staging, ignore_errors=True)
        if created and not any(out.iterdir()):
            out.rmdir()
        if full:
            raise disk_full_error(
                out,
                written,
                "nothing was exported (the partial export is removed). Free space there, or "
                "export elsewhere with --out",
            ) from err
        raise
    shutil.rmtree(staging, ignore_errors=True)
    return targets


def _publish(staging: Path, targets: dict[str, Path]) -> None:
    """Rename every side from ``staging`` to its target, or none: a side already moved is
    moved back when a later one fails."""
    moved: list[str] = []
    try:
        for side, target in targets.items():
            os.replace(staging / side, target)
            moved.append(side)
    except BaseException:
        for side in moved:
            os.replace(targets[side], staging / side)
        raise


class PushError(RuntimeError):
    """An upload to the Hugging Face hub that did not happen."""


def push_folder(folder: str | Path, repo_id: str, private: bool = True) -> str:
    """Upload an exported side to the Hugging Face hub (needs network and a token from
    ``huggingface-cli login``); returns the repository URL."""
    from huggingface_hub import HfApi

    folder = Path(folder)
    if not (folder / MANIFEST).is_file():
        raise ExportError(
            f"{str(folder)!r} has no {MANIFEST}: push one side written by `python -m "
            "lightning_mlsr.hub export` (DIR/query or DIR/doc)"
        )
    api = HfApi()
    try:
        url = api.create_repo(repo_id, private=private, exist_ok=True)
        api.upload_folder(folder_path=str(folder), repo_id=repo_id)
    except Exception as err:  # the hub client raises network, HTTP and offline errors
        raise PushError(
            f"could not upload {str(folder)!r} to {repo_id!r} on the Hugging Face hub "
            f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); "
            + _push_hint(err)
        ) from err
    return str(url)


def _push_hint(err: Exception) -> str:
    status = getattr(getattr(err, "response", None), "status_code", None)
    if status in (401, 403):
        return (
            "log in with `huggingface-cli login` (or set HF_TOKEN) with a token that may "
            "write to that repository"
        )
    if isinstance(err, ConnectionError | TimeoutError) or "Connect" in type(err).__name__:
        return (
            "the hub cannot be reached: connect to the network (and unset HF_HUB_OFFLINE if "
            "it is set), then push again"
        )
    return "nothing was uploaded; check the repository name and your access, then push again"
