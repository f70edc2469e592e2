"""W&B panels of an evaluation: sample images with their top terms, non-zero histograms.

Logged by :class:`~lightning_mlsr.training.evaluator.RetrievalEvaluator` on the global-zero rank,
only when the Trainer has a ``WandbLogger``.
"""

from __future__ import annotations

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
    table = wandb.Table(columns=["image_id", "image", "caption", "nnz", "top_terms"])
    for row, row_terms in zip(rows, terms):
        i = images.index(doc_ids[row])
        table.add_data(
            doc_ids[row],
            wandb.Image(images.load_image(i)),
            images.caption(i),
            int(docs[row].nnz),
            ", ".join(f"{t} {w:.2f}" for t, w in row_terms),
        )
    panels = {
        f"{prefix}/sample_terms": table,
        f"{prefix}/q_nnz_hist": wandb.Histogram(np.diff(queries.indptr)),
        f"{prefix}/d_nnz_hist": wandb.Histogram(np.diff(docs.indptr)),
    }
    for logger in loggers:
        logger.experiment.log({**panels, "trainer/global_step": trainer.global_step})
