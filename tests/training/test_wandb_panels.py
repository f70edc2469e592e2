"""The W&B sample table of an evaluation: every file it needs stays in the run's folder."""

from __future__ import annotations

import os
import types
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from lightning_mlsr.data import load_collection
from lightning_mlsr.training.callbacks.loggers import WandbLogger
from lightning_mlsr.training.callbacks.wandb_panels import log_sample_terms


def test_the_sample_table_images_are_staged_inside_the_run_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """wandb wrote each sample image into the system's temporary folder and staged the
    table and its images for upload in the home folder (kept for good by an offline run);
    both now happen in the W&B run's own folder, and nothing is left outside it."""
    import wandb.sdk.data_types.image as wandb_image

    system_tmp, home = tmp_path / "system_tmp", tmp_path / "home"
    system_tmp.mkdir()
    monkeypatch.setattr(wandb_image, "MEDIA_TMP", types.SimpleNamespace(name=str(system_tmp)))
    monkeypatch.delenv("WANDB_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(home))  # wandb's default staging: in here
    monkeypatch.setenv("WANDB_MODE", "offline")

    images = load_collection("emoji").images
    doc_ids = [images.ids[i] for i in range(6)]
    docs = sp.csr_matrix(np.eye(6, 8, dtype=np.float32))  # (6 docs, V=8)
    queries = sp.csr_matrix(np.ones((2, 8), dtype=np.float32))
    logger = WandbLogger(project="lightning_mlsr", save_dir=str(tmp_path / "logs"))
    vocabulary = [f"term{v}" for v in range(8)]
    trainer = types.SimpleNamespace(
        loggers=[logger],
        datamodule=types.SimpleNamespace(collection=types.SimpleNamespace(images=images)),
        global_step=3,
    )
    module = types.SimpleNamespace(
        doc_encoder=types.SimpleNamespace(term_vocabulary=lambda: vocabulary)
    )
    try:
        log_sample_terms(trainer, module, doc_ids, docs, queries, "val", n_samples=4)  # type: ignore[arg-type]
        run_folder = Path(logger.experiment.settings.sync_dir)
    finally:
        logger.experiment.finish()

    assert run_folder.is_relative_to(tmp_path / "logs")
    assert list(system_tmp.iterdir()) == []
    assert not [p for p in home.rglob("*") if p.is_file()]
    staged = [p for p in (run_folder / "tmp" / "artifacts" / "staging").iterdir() if p.is_file()]
    assert len(staged) >= 4 + 1  # the sample images and the table
    assert not list((run_folder / "tmp").glob("val_sample_terms_*"))  # its own copies: gone
    assert "WANDB_DATA_DIR" not in os.environ  # as it was
