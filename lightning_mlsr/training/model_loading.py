"""Load (or briefly train) a model and encode the image collection, for analysis notebooks.

``load_model`` takes a ``.ckpt`` written by ``python -m lightning_mlsr fit`` or an
experiment YAML; ``train`` runs a short fit without logger, checkpoints, validation or
callbacks (a model to look at in a minute, not a result); ``encode_corpus`` returns every
image's sparse vector in collection order, ready for :mod:`lightning_mlsr.analysis`.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import lightning as L
import numpy as np
import scipy.sparse as sp

from lightning_mlsr.data.datamodule import RetrievalDataModule
from lightning_mlsr.io.checkpoints import load_checkpoint
from lightning_mlsr.models import SparseEncoder
from lightning_mlsr.retrieval.batch_encoding import encode_loader
from lightning_mlsr.training.system.module import SparseBiEncoder
from lightning_mlsr.training.trusted_classes import check_checkpoint_hparams

__all__ = ["LoadedModel", "encode_corpus", "load_model", "text_backbone_of", "train", "vocabulary"]


@dataclass
class LoadedModel:
    """A model with the datamodule it was trained on.

    ``trainer`` is set when the model was built from an experiment YAML (untrained, ready
    for :func:`train`); it is None for a checkpoint.
    """

    model: SparseBiEncoder
    datamodule: RetrievalDataModule
    source: Path
    trainer: L.Trainer | None = None


def load_model(
    source: str | Path,
    *,
    image_size: int | None = None,
    max_steps: int | None = None,
    seed: int | None = None,
    root_dir: str | Path | None = None,
    cli_args: Sequence[str] = (),
) -> LoadedModel:
    """A trained model from a ``.ckpt``, or an untrained one from an experiment YAML.

    For a YAML, the model, datamodule and a Trainer are built by the project CLI exactly as
    ``fit --config`` would, with a Trainer for a short look: no logger, no checkpoints, no
    callbacks, no validation, ``max_steps`` optimizer steps (``max_epochs`` lifted).
    ``image_size`` overrides the document image backbone's input resolution, ``seed`` the
    config's ``seed_everything``, and ``cli_args`` adds any other ``--key=value`` override.

    For a checkpoint, the configuration stored in it wins: only ``map_location="cpu"``
    applies, and the datamodule comes from the checkpoint's datamodule hyperparameters.
    """
    path = Path(source).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"{str(path)!r} does not exist; give a .ckpt from `python -m lightning_mlsr fit` "
            "or an experiment YAML such as experiments/paper/m1_mlm_mlm_image.yaml."
        )
    if path.suffix == ".ckpt":
        return _load_checkpoint(path)
    if path.suffix not in {".yaml", ".yml"}:
        raise ValueError(f"{str(path)!r} is neither a .ckpt checkpoint nor a .yaml config.")
    from lightning_mlsr.training.cli import main

    root = Path(root_dir) if root_dir is not None else Path(tempfile.mkdtemp(prefix="mlsr_"))
    args = [
        "--config",
        str(path),
        "--trainer.logger=false",
        "--trainer.enable_checkpointing=false",
        "--trainer.callbacks=[]",
        "--trainer.limit_val_batches=0",
        f"--trainer.default_root_dir={root}",
    ]
    if max_steps is not None:
        args += [f"--trainer.max_steps={max_steps}", "--trainer.max_epochs=-1"]
    if seed is not None:
        args.append(f"--seed_everything={seed}")
    if image_size is not None:
        args.append(f"--model.doc_encoder.init_args.image_size={image_size}")
    cli = main([*args, *cli_args], run=False)
    cli.datamodule.set_batch_inputs(cli.model.batch_inputs())  # loaders usable before a fit
    return LoadedModel(cli.model, cli.datamodule, path, cli.trainer)


def _load_checkpoint(path: Path) -> LoadedModel:
    checkpoint = load_checkpoint(path)
    check_checkpoint_hparams(checkpoint.get("hyper_parameters") or {}, str(path))
    model = SparseBiEncoder.load_from_checkpoint(path, map_location="cpu", weights_only=True)
    # saved without a datamodule: the bundled collection's defaults
    datamodule = RetrievalDataModule.from_hparams(
        checkpoint.get(RetrievalDataModule.CHECKPOINT_HYPER_PARAMS_KEY) or {}
    )
    datamodule.set_batch_inputs(model.batch_inputs())
    return LoadedModel(model.eval(), datamodule, path)


def train(loaded: LoadedModel) -> LoadedModel:
    """Fit a model built by :func:`load_model` from a YAML with its own Trainer."""
    if loaded.trainer is None:
        raise ValueError(
            f"{loaded.source} is a checkpoint, already trained; train() takes a model built "
            "from an experiment YAML."
        )
    loaded.trainer.fit(loaded.model, loaded.datamodule)
    loaded.model.eval()
    return loaded


def encode_corpus(
    model: SparseBiEncoder, datamodule: RetrievalDataModule
) -> tuple[list[str], sp.csr_matrix]:
    """Every image of the collection through the document encoder, in table order.

    Shape: returns ``n_images`` ids and a ``(n_images, V)`` CSR matrix of term weights.
    """
    datamodule.set_batch_inputs(model.batch_inputs())
    rows, docs = encode_loader(
        model.encode_docs,
        datamodule.corpus_dataloader(),
        width=cast(SparseEncoder, model.doc_encoder).vocab_size,
        side="doc",
        device=model.device,
        module=model,
    )
    order = np.argsort(rows, kind="stable")
    images = datamodule.collection.images
    return [images.ids[i] for i in rows[order]], docs[order]


def text_backbone_of(model: SparseBiEncoder) -> str:
    """Name of the text backbone whose vocabulary the document vectors are over."""
    doc, query = cast(SparseEncoder, model.doc_encoder), model.query_encoder
    name = doc.vocab_backbone_name or query.text_backbone_name
    if name is None:
        raise ValueError(f"{type(doc).__name__} names no text backbone or vocabulary")
    return name


def vocabulary(model: SparseBiEncoder) -> list[str]:
    """Term id -> wordpiece of the model's document vocabulary.

    The document encoder's own :meth:`~lightning_mlsr.models.encoder.SparseEncoder.term_vocabulary`,
    so the notebook shows the same words as the W&B panels and the exports.
    """
    return cast(SparseEncoder, model.doc_encoder).term_vocabulary()
