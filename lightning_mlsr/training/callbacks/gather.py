"""Gather encoded rows from every DDP rank, exactly, as fixed-shape padded tensors.

Every rank ends up with the same matrices (so every rank computes and logs the same
retrieval metrics): each rank pads its shard to the largest one, all-gathers, and strips the
padding again. Single-process runs pass through untouched.
"""

from __future__ import annotations

from typing import cast

import lightning as L
import numpy as np
import scipy.sparse as sp
import torch

__all__ = ["gather_dense_rows", "gather_sparse_rows"]


def _gather(pl_module: L.LightningModule, tensor: torch.Tensor) -> torch.Tensor:
    """``all_gather`` across ranks. Shape: ``(...)`` -> ``(world, ...)``."""
    return cast(torch.Tensor, pl_module.all_gather(tensor))


def gather_dense_rows(
    pl_module: L.LightningModule, rows: np.ndarray, matrix: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """All-gather dense rows from every rank (padded to the largest shard, then stripped).

    Shape: rows ``(n,)``, matrix ``(n, D)`` -> ``(N,)``, ``(N, D)`` over all ranks.
    """
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


def gather_sparse_rows(
    pl_module: L.LightningModule, rows: np.ndarray, matrix: sp.csr_matrix
) -> tuple[np.ndarray, sp.csr_matrix]:
    """All-gather a sparse shard from every rank as fixed-shape padded tensors.

    Each rank pads its rows to the largest shard and every row to the largest row nnz
    (both agreed on with an all-gather), gathers, and strips the padding — exact, no
    truncation, and identical on every rank.

    Shape: rows ``(n,)``, matrix ``(n, V)`` CSR -> ``(N,)``, ``(N, V)`` CSR over all ranks.
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
