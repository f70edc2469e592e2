"""Retrieval evaluation as a Callback: encode the corpus, build the inverted index, score.

At the end of every validation epoch (and in ``validate`` / ``test``) the whole corpus and
the split's judged queries are encoded — sharded across DDP ranks and gathered back as
fixed-shape padded rows, so every rank holds the same matrices — an exact
:class:`~lightning_mlsr.index.InvertedIndex` is built, the top ``k`` images are retrieved
per query and scored with trec_eval semantics (:func:`lightning_mlsr.metrics.evaluate`).
Every rank logs the same values, so ``ModelCheckpoint(monitor="val/nDCG@10")`` works
under DDP. ``test`` also writes a TREC run file and, next to it, the per-query metrics
(JSON) that the logged means are made of.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

import lightning as L
import numpy as np
import scipy.sparse as sp
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.rank_zero import rank_zero_info

from lightning_mlsr.heads import is_dense_model
from lightning_mlsr.index import InvertedIndex, run_from_topk, write_trec_run
from lightning_mlsr.metrics import _trec_eval_request, evaluate, parse_measure

log = logging.getLogger("lightning_mlsr")

__all__ = [
    "EncodedSplit",
    "RetrievalEvaluator",
    "encode_loader",
    "encode_split",
    "trec_eval_command",
]

DEFAULT_MEASURES = ("nDCG@10", "AP", "RR@10", "R@10", "R@100", "R@1000")


def encode_loader(
    pl_module: L.LightningModule,
    loader: Any,
    side: str,
    trainer: L.Trainer | None = None,
    dense: bool = False,
) -> tuple[np.ndarray, Any]:
    """Encode every batch of ``loader`` on this process.

    Returns the row indices (into the collection's image or text table) and a CSR matrix
    of their term weights (``dense=True``: a float32 array of embeddings). ``side`` is
    ``"doc"`` or ``"query"``.
    """
    model = cast(Any, pl_module)
    encode: Callable[[dict[str, torch.Tensor]], torch.Tensor]
    encode = model.encode_docs if side == "doc" else model.encode_queries
    context = (
        trainer.precision_plugin.forward_context()
        if trainer is not None
        else torch.autocast("cpu", enabled=False)
    )
    rows: list[np.ndarray] = []
    blocks: list[Any] = []
    was_training = pl_module.training
    pl_module.eval()
    try:
        with torch.no_grad(), context:
            for batch in loader:
                inputs = {k: v.to(pl_module.device) for k, v in batch[side].items()}
                weights = encode(inputs).float()  # (b, V)
                rows.append(batch[f"{side}_idx"].numpy())
                blocks.append(weights.cpu().numpy() if dense else _to_csr(weights))
    finally:
        pl_module.train(was_training)
    if not blocks:
        width = int(getattr(model.doc_encoder, "vocab_size", 0))
        empty = np.zeros((0, width), dtype=np.float32)
        return np.zeros(0, dtype=np.int64), empty if dense else sp.csr_matrix(empty)
    if dense:
        return np.concatenate(rows), np.concatenate(blocks).astype(np.float32)
    return np.concatenate(rows), sp.vstack(blocks, format="csr")


def dense_search(docs: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product top-k with faiss ``IndexFlatIP`` (the dense baseline).

    Shape: docs ``(N, d)``, queries ``(Q, d)`` -> scores, indices ``(Q, min(k, N))``.
    """
    import faiss

    index = faiss.IndexFlatIP(docs.shape[1])
    index.add(np.ascontiguousarray(docs, dtype=np.float32))
    scores, indices = index.search(
        np.ascontiguousarray(queries, dtype=np.float32), min(k, len(docs))
    )
    return scores, indices.astype(np.int64)


def _to_csr(weights: torch.Tensor) -> sp.csr_matrix:
    """Dense ``(b, V)`` tensor -> CSR on the CPU, keeping only positive entries."""
    w = weights.detach()
    nz = (w > 0).nonzero(as_tuple=False).cpu().numpy()  # (nnz, 2), row-major order
    values = w[w > 0].cpu().numpy().astype(np.float32)
    return sp.csr_matrix((values, (nz[:, 0], nz[:, 1])), shape=tuple(w.shape))


def _gather(pl_module: L.LightningModule, tensor: torch.Tensor) -> torch.Tensor:
    """``all_gather`` across ranks. Shape: ``(...)`` -> ``(world, ...)``."""
    return cast(torch.Tensor, pl_module.all_gather(tensor))


def _gather_dense(
    pl_module: L.LightningModule, rows: np.ndarray, matrix: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """All-gather dense rows from every rank (padded to the largest shard, then stripped)."""
    device = pl_module.device
    n_max = int(_gather(pl_module, torch.tensor(len(rows), device=device)).max())
    padded = np.zeros((n_max, matrix.shape[1]), dtype=np.float32)
    padded[: len(rows)] = matrix
    row_ids = np.full(n_max, -1, dtype=np.int64)
    row_ids[: len(rows)] = rows
    g_rows = _gather(pl_module, torch.from_numpy(row_ids).to(device)).cpu().numpy().reshape(-1)
    g_mat = _gather(pl_module, torch.from_numpy(padded).to(device)).cpu().numpy()
    keep = g_rows >= 0
    return g_rows[keep], g_mat.reshape(-1, matrix.shape[1])[keep]


def _gather_rows(
    pl_module: L.LightningModule, rows: np.ndarray, matrix: sp.csr_matrix
) -> tuple[np.ndarray, sp.csr_matrix]:
    """All-gather a sparse shard from every rank as fixed-shape padded tensors.

    Each rank pads its rows to the largest shard and every row to the largest row nnz
    (both agreed on with an all-reduce), gathers, and strips the padding — exact, no
    truncation, and identical on every rank.
    """
    world = pl_module.trainer.world_size if pl_module._trainer is not None else 1
    if world == 1:
        return rows, matrix
    device = pl_module.device
    n_local = torch.tensor(matrix.shape[0], device=device)
    max_nnz_local = torch.tensor(int(np.diff(matrix.indptr).max(initial=0)), device=device)
    n_max = int(_gather(pl_module, n_local).max())
    width = max(1, int(_gather(pl_module, max_nnz_local).max()))
    idx = np.full((n_max, width), -1, dtype=np.int64)
    val = np.zeros((n_max, width), dtype=np.float32)
    counts = np.diff(matrix.indptr)
    row_of = np.repeat(np.arange(matrix.shape[0]), counts)  # (nnz,) row of each entry
    slot = np.arange(matrix.nnz) - np.repeat(matrix.indptr[:-1], counts)  # position in row
    idx[row_of, slot] = matrix.indices
    val[row_of, slot] = matrix.data
    row_ids = np.full(n_max, -1, dtype=np.int64)
    row_ids[: len(rows)] = rows
    g_rows = _gather(pl_module, torch.from_numpy(row_ids).to(device)).cpu().numpy().reshape(-1)
    g_idx = _gather(pl_module, torch.from_numpy(idx).to(device)).cpu().numpy().reshape(-1, width)
    g_val = _gather(pl_module, torch.from_numpy(val).to(device)).cpu().numpy().reshape(-1, width)
    keep = g_rows >= 0
    g_rows, g_idx, g_val = g_rows[keep], g_idx[keep], g_val[keep]
    present = g_idx >= 0
    r_of = np.repeat(np.arange(len(g_rows)), present.sum(axis=1))
    gathered = sp.csr_matrix(
        (g_val[present], (r_of, g_idx[present])), shape=(len(g_rows), matrix.shape[1])
    )
    return g_rows, gathered


def is_dense(pl_module: L.LightningModule) -> bool:
    """Whether the model's encoders produce dense embeddings (the dense baseline)."""
    return is_dense_model(pl_module)


class EncodedSplit:
    """Encoded corpus and queries of one split, rows in the collection's table order."""

    def __init__(
        self,
        doc_ids: list[str],
        docs: sp.csr_matrix,
        query_ids: list[str],
        queries: sp.csr_matrix,
    ) -> None:
        self.doc_ids = doc_ids
        self.docs = docs
        self.query_ids = query_ids
        self.queries = queries


def encode_split(
    pl_module: L.LightningModule, datamodule: Any, split: str, trainer: L.Trainer | None = None
) -> EncodedSplit:
    """Encode the whole corpus and a split's judged queries (sharded under DDP)."""
    rank = trainer.global_rank if trainer is not None else 0
    world = trainer.world_size if trainer is not None else 1
    dense = is_dense(pl_module)
    d_rows, docs = encode_loader(
        pl_module, datamodule.corpus_dataloader(rank, world, split=split), "doc", trainer, dense
    )
    q_rows, queries = encode_loader(
        pl_module, datamodule.query_dataloader(split, rank, world), "query", trainer, dense
    )
    if world > 1:
        gather = _gather_dense if dense else _gather_rows
        d_rows, docs = gather(pl_module, d_rows, docs)
        q_rows, queries = gather(pl_module, q_rows, queries)
    d_order, q_order = np.argsort(d_rows, kind="stable"), np.argsort(q_rows, kind="stable")
    images, texts = datamodule.collection.images, datamodule.collection.texts
    return EncodedSplit(
        doc_ids=[images.ids[i] for i in d_rows[d_order]],
        docs=docs[d_order],
        query_ids=[texts.ids[i] for i in q_rows[q_order]],
        queries=queries[q_order],
    )


class RetrievalEvaluator(Callback):
    """Exact inverted-index retrieval metrics at validation and test time.

    Args:
        k: documents retrieved per query (trec_eval's usual 1000).
        measures: ir_measures-style names passed to :func:`lightning_mlsr.metrics.evaluate`.
        every_n_epochs: evaluate on every n-th validation epoch during ``fit``.
        run_dir: where ``test`` writes TREC run files (default: the logger's directory).
        run_tag: the run file's tag column (default: the experiment/logger name).
        log_samples: images shown with their top terms in a W&B table at each evaluation
            (0 disables; histograms of non-zeros per query and per document are logged
            alongside). Only with a ``WandbLogger``.
        sample_terms: top terms listed per sample image.
    """

    def __init__(
        self,
        k: int = 1000,
        measures: Sequence[str] = DEFAULT_MEASURES,
        every_n_epochs: int = 1,
        run_dir: str | None = None,
        run_tag: str | None = None,
        log_samples: int = 16,
        sample_terms: int = 10,
    ) -> None:
        super().__init__()
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.k = k
        self.measures = tuple(measures)
        self.every_n_epochs = every_n_epochs
        self.run_dir = run_dir
        self.run_tag = run_tag
        self.log_samples = log_samples
        self.sample_terms = sample_terms
        self.last_results: dict[str, float] = {}
        self.last_run: dict[str, dict[str, float]] = {}
        self.last_run_path: Path | None = None

    # ------------------------------------------------------------------ hooks
    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        if trainer.state.fn == "fit" and (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        self.evaluate(trainer, pl_module, split="validation", prefix="val")

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.evaluate(trainer, pl_module, split="test", prefix="test", write_run=True)

    # ------------------------------------------------------------------ work
    def evaluate(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        split: str,
        prefix: str,
        write_run: bool = False,
    ) -> dict[str, float]:
        datamodule = cast(Any, trainer).datamodule
        if datamodule is None or not hasattr(datamodule, "corpus_dataloader"):
            raise RuntimeError(
                "RetrievalEvaluator needs a RetrievalDataModule attached to the Trainer"
            )
        start = time.perf_counter()
        encoded = encode_split(pl_module, datamodule, split, trainer)
        qrels = datamodule.qrels(split)
        dense = is_dense(pl_module)
        if dense:
            scores, indices = dense_search(encoded.docs, encoded.queries, self.k)
        else:
            index = InvertedIndex.from_matrix(encoded.docs, encoded.doc_ids)
            scores, indices = index.search(encoded.queries, self.k)
        run = run_from_topk(scores, indices, encoded.query_ids, encoded.doc_ids)
        means = cast(dict[str, float], evaluate(run, qrels, self.measures))
        results = {name: float(v) for name, v in means.items()}
        if dense:
            results["eval_seconds"] = time.perf_counter() - start
        else:
            results.update(self._efficiency(index, encoded, start))
        # every rank holds identical matrices, so every rank logs identical values
        for name, value in results.items():
            pl_module.log(f"{prefix}/{name}", value, sync_dist=False, batch_size=1)
        self.last_results = results
        self.last_run = run
        self.last_encoded = encoded
        if write_run:
            self.last_run_path = self._write_run(trainer, run, split, qrels, results)
        if trainer.is_global_zero and not dense:
            self._log_wandb_panels(trainer, pl_module, encoded, prefix)
        return results

    @staticmethod
    def _efficiency(index: InvertedIndex, encoded: EncodedSplit, start: float) -> dict[str, float]:
        q_nnz = np.diff(encoded.queries.indptr)
        d_nnz = np.diff(encoded.docs.indptr)
        return {
            "q_nnz": float(q_nnz.mean()) if len(q_nnz) else 0.0,
            "d_nnz": float(d_nnz.mean()) if len(d_nnz) else 0.0,
            "index_postings": float(index.nnz),
            "index_mb": float(index.size_bytes) / 2**20,
            "flops_per_query": float(np.mean(index.expected_flops(encoded.queries)))
            if len(q_nnz)
            else 0.0,
            "eval_seconds": time.perf_counter() - start,
        }

    def _log_wandb_panels(
        self, trainer: L.Trainer, pl_module: L.LightningModule, encoded: EncodedSplit, prefix: str
    ) -> None:
        """W&B: sample images with their top terms, histograms of non-zeros per row."""
        from lightning.pytorch.loggers import WandbLogger

        loggers = [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]
        if not loggers or self.log_samples <= 0:
            return
        import wandb

        from lightning_mlsr.analysis import top_terms

        vocab = cast(Any, pl_module).doc_encoder.term_vocabulary()
        images = cast(Any, trainer).datamodule.collection.images
        n = min(self.log_samples, len(encoded.doc_ids))
        rows = np.linspace(0, len(encoded.doc_ids) - 1, n).astype(int)  # spread over the corpus
        terms = top_terms(encoded.docs[rows], vocab, k=self.sample_terms)
        table = wandb.Table(columns=["image_id", "image", "caption", "nnz", "top_terms"])
        for row, row_terms in zip(rows, terms):
            i = images.index(encoded.doc_ids[row])
            table.add_data(
                encoded.doc_ids[row],
                wandb.Image(images.load_image(i)),
                images.caption(i),
                int(encoded.docs[row].nnz),
                ", ".join(f"{t} {w:.2f}" for t, w in row_terms),
            )
        panels = {
            f"{prefix}/sample_terms": table,
            f"{prefix}/q_nnz_hist": wandb.Histogram(np.diff(encoded.queries.indptr)),
            f"{prefix}/d_nnz_hist": wandb.Histogram(np.diff(encoded.docs.indptr)),
        }
        for logger in loggers:
            logger.experiment.log({**panels, "trainer/global_step": trainer.global_step})

    def _write_run(
        self,
        trainer: L.Trainer,
        run: dict[str, dict[str, float]],
        split: str,
        qrels: dict[str, dict[str, int]],
        results: dict[str, float],
    ) -> Path:
        """Write ``runs/<split>.trec`` and, next to it, ``runs/<split>.metrics.json``: the
        logged figures, per query and aggregated, with the trec_eval call that gives them.

        A judged query that retrieves nothing has no line in a TREC run file, but it counts
        (as 0) in the logged means — ``trec_eval -c`` semantics — so scoring the file without
        ``-c`` gives higher numbers than the log; the JSON says which queries those are.
        """
        from lightning_mlsr.cli import run_dir

        base = Path(self.run_dir) if self.run_dir else run_dir(trainer)
        name = trainer.logger.name if trainer.logger is not None else None
        tag = "".join((self.run_tag or name or "lightning_mlsr").split()) or "lightning_mlsr"
        path = base / "runs" / f"{split}.trec"
        if trainer.is_global_zero:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_trec_run(path, run, tag=tag)
            per_query = cast(
                dict[str, dict[str, float]], evaluate(run, qrels, self.measures, per_query=True)
            )
            judged = sorted(next(iter(per_query.values())))
            empty = [q for q in judged if not run.get(q)]
            command = trec_eval_command(self.measures, path.name)
            metrics_path = path.with_suffix(".metrics.json")
            report = {
                "run_file": path.name,
                "semantics": (
                    f"`{command}`: the mean over all {len(judged)} judged queries; a judged "
                    "query with no line in the run file scores 0. RR@k is not a trec_eval "
                    "measure: it is computed on trec_eval's ordering (score desc, docid desc)."
                ),
                "trec_eval_command": command,
                "judged_queries": len(judged),
                "queries_without_results": empty,
                "aggregate": {m: results[m] for m in self.measures},
                "per_query": {q: {m: per_query[m][q] for m in self.measures} for q in judged},
            }
            metrics_path.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
            figures = " ".join(f"{m}={results[m]:.4f}" for m in self.measures)
            rank_zero_info(
                f"{split}: {figures} — `{command}` over all {len(judged)} judged queries "
                f"({len(empty)} retrieved nothing: absent from the run file, counted as 0). "
                f"Run file: {path}; per-query values: {metrics_path}"
            )
        trainer.strategy.barrier()
        return path


def trec_eval_command(measures: Sequence[str], run_file: str, qrels: str = "QRELS") -> str:
    """The ``trec_eval -c -m ...`` call whose figures ``evaluate`` reproduces (RR@k aside)."""
    requests: list[str] = []
    for name in measures:
        family, cutoff = parse_measure(name)
        if family == "RR" and cutoff is not None:
            continue  # trec_eval has no recip_rank cutoff: computed by lightning_mlsr
        request = _trec_eval_request(family, cutoff)[0]
        if request not in requests:
            requests.append(request)
    flags = " ".join(f"-m {r}" for r in requests)
    return f"trec_eval -c {flags} {qrels} {run_file}"
