"""W&B panels of an evaluation: sample images with their top terms, non-zero histograms.

Logged by :class:`~lightning_mlsr.training.callbacks.evaluator.RetrievalEvaluator` on the global-zero rank,
only when the Trainer has a ``WandbLogger``.

Everything the table needs stays in the W&B run's own folder (``<save_dir>/wandb/<run>/``):
wandb would write the sample images into a system temporary folder first, and stage the
table and its images for upload under ``WANDB_DATA_DIR`` (by default in the home folder,
where an offline run leaves them for good). The images are written into the run folder's
``tmp/`` (and removed once logged), and, unless ``WANDB_DATA_DIR`` is set, the upload
staging goes there too (``tmp/artifacts/staging``).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import lightning as L
import numpy as np
import scipy.sparse as sp

__all__ = ["log_sample_terms"]


def log_sample_terms(
    trainer: L.Trainer,
    pl_module: L.LightningModule,
    doc_ids: list[str],
    docs: sp.csr_matrix,
    queries: sp.csr_matrix,
    prefix: str,
    n_samples: int = 16,
    n_terms: int = 10,
) -> None:
    """A table of ``n_samples`` images (spread over the corpus) with their top ``n_terms``
    terms, and histograms of non-zeros per query and per document, to every WandbLogger.

    Shape: docs ``(n_docs, V)``, queries ``(n_queries, V)`` CSR; ``doc_ids`` ``n_docs`` ids.
    """
    from lightning.pytorch.loggers import WandbLogger

    loggers = [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]
    if not loggers or n_samples <= 0:
        return
    import wandb

    from lightning_mlsr.analysis import top_terms

    vocab = cast(Any, pl_module).doc_encoder.term_vocabulary()
    images = cast(Any, trainer).datamodule.collection.images
    n = min(n_samples, len(doc_ids))
    rows = np.linspace(0, len(doc_ids) - 1, n).astype(int)  # spread over the corpus
    terms = top_terms(docs[rows], vocab, k=n_terms)
    histograms = {
        f"{prefix}/q_nnz_hist": wandb.Histogram(np.diff(queries.indptr)),
        f"{prefix}/d_nnz_hist": wandb.Histogram(np.diff(docs.indptr)),
    }
    for logger in loggers:
        run = logger.experiment
        folder = Path(run.settings.sync_dir) / "tmp"
        staged = folder / f"{prefix}_sample_terms_{trainer.global_step}"
        staged.mkdir(parents=True, exist_ok=True)
        table = wandb.Table(columns=["image_id", "image", "caption", "nnz", "top_terms"])
        for row, row_terms in zip(rows, terms):
            i = images.index(doc_ids[row])
            image = staged / f"{len(table.data)}.png"
            images.load_image(i).save(image)
            table.add_data(
                doc_ids[row],
                wandb.Image(str(image)),
                images.caption(i),
                int(docs[row].nnz),
                ", ".join(f"{t} {w:.2f}" for t, w in row_terms),
            )
        with _upload_staging_in(folder):
            panels = {f"{prefix}/sample_terms": table, **histograms}
            run.log({**panels, "trainer/global_step": trainer.global_step})
        shutil.rmtree(staged)  # copied into the run's staging when it was logged


@contextmanager
def _upload_staging_in(folder: Path) -> Iterator[None]:
    """``WANDB_DATA_DIR`` (where wandb stages a logged table's files) is ``folder`` for the
    block, unless the user set it."""
    if "WANDB_DATA_DIR" in os.environ:
        yield
        return
    os.environ["WANDB_DATA_DIR"] = str(folder)
    try:
        yield
    finally:
        os.environ.pop("WANDB_DATA_DIR", None)
