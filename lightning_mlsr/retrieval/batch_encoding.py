"""Encode every batch of a loader with any encoder: the one eval / no-grad / batch loop.

Used by the evaluator callback (the trained model's query and document encoders), the
zero-shot baselines (the real heads, built untrained) and :mod:`lightning_mlsr.training.model_loading`.
Sparse output is collected as CSR blocks, one per batch, so no dense ``(N, V)`` matrix is
ever held; dense output is an ``(N, D)`` float32 array.

Imports no Lightning: the caller passes the device and, if any, the precision context.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal, overload

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

__all__ = ["encode_loader", "sparse_block"]

Encode = Callable[[dict[str, torch.Tensor]], torch.Tensor]


def sparse_block(weights: torch.Tensor) -> sp.csr_matrix:
    """The positive entries of a ``(b, V)`` tensor as float32 CSR on the CPU.

    Only the non-zeros leave the device, never the dense block.

    Shape: ``(b, V)`` -> ``(b, V)`` CSR.
    """
    w = weights.detach()
    positive = w > 0  # (b, V)
    nz = positive.nonzero(as_tuple=False).cpu().numpy()  # (nnz, 2), row-major order
    values = w[positive].float().cpu().numpy()
    return sp.csr_matrix((values, (nz[:, 0], nz[:, 1])), shape=tuple(w.shape), dtype=np.float32)


@overload
def encode_loader(
    encode: Encode,
    loader: Iterable[Mapping[str, Any]],
    *,
    width: int,
    dense: Literal[False] = ...,
    side: str | None = ...,
    device: torch.device | str = ...,
    module: nn.Module | None = ...,
    context: contextlib.AbstractContextManager[Any] | None = ...,
) -> tuple[np.ndarray, sp.csr_matrix]: ...


@overload
def encode_loader(
    encode: Encode,
    loader: Iterable[Mapping[str, Any]],
    *,
    width: int,
    dense: Literal[True],
    side: str | None = ...,
    device: torch.device | str = ...,
    module: nn.Module | None = ...,
    context: contextlib.AbstractContextManager[Any] | None = ...,
) -> tuple[np.ndarray, np.ndarray]: ...


@overload
def encode_loader(
    encode: Encode,
    loader: Iterable[Mapping[str, Any]],
    *,
    width: int,
    dense: bool,
    side: str | None = ...,
    device: torch.device | str = ...,
    module: nn.Module | None = ...,
    context: contextlib.AbstractContextManager[Any] | None = ...,
) -> tuple[np.ndarray, sp.csr_matrix | np.ndarray]: ...


def encode_loader(
    encode: Encode,
    loader: Iterable[Mapping[str, Any]],
    *,
    width: int,
    dense: bool = False,
    side: str | None = None,
    device: torch.device | str = "cpu",
    module: nn.Module | None = None,
    context: contextlib.AbstractContextManager[Any] | None = None,
) -> tuple[np.ndarray, sp.csr_matrix | np.ndarray]:
    """Run ``encode`` over every batch of ``loader`` in eval mode without gradients.

    Args:
        encode: an encoder (any ``nn.Module`` or callable) mapping an input dict to ``(b, W)``.
        loader: batches. Each is the encoder's input dict or, with ``side``, a dict holding
            the inputs under ``side`` and their row numbers under ``f"{side}_idx"``.
        width: ``W``, the output width (the shape of the empty result of an empty loader).
        dense: return an ``(N, W)`` float32 array instead of CSR of the positive weights.
        side: key of the inputs in a batch (``"doc"``, ``"query"``); None: the batch is it.
        device: where the inputs are moved.
        module: put in eval mode while encoding, then restored (default: ``encode`` itself
            when it is an ``nn.Module``).
        context: entered around the loop, e.g. the Trainer's precision context.

    Returns:
        ``(rows, vectors)``: the batches' row numbers (``0..N-1`` in loader order without
        ``side``) and their vectors, in loader order.

    Shape: N inputs -> rows ``(N,)`` int64, vectors ``(N, W)`` (CSR, or float32 if dense).
    """
    if module is None and isinstance(encode, nn.Module):
        module = encode
    rows: list[np.ndarray] = []
    blocks: list[Any] = []
    seen = 0
    was_training = module.training if module is not None else False
    if module is not None:
        module.eval()
    try:
        with torch.no_grad(), context if context is not None else contextlib.nullcontext():
            for batch in loader:
                inputs = batch[side] if side is not None else batch
                weights = encode({k: v.to(device) for k, v in inputs.items()}).float()  # (b, W)
                if side is not None:
                    rows.append(np.asarray(batch[f"{side}_idx"], dtype=np.int64))
                else:
                    rows.append(np.arange(seen, seen + len(weights), dtype=np.int64))
                seen += len(weights)
                blocks.append(weights.cpu().numpy() if dense else sparse_block(weights))
    finally:
        if module is not None:
            module.train(was_training)
    if not blocks:
        empty = np.zeros((0, width), dtype=np.float32)
        return np.zeros(0, dtype=np.int64), empty if dense else sp.csr_matrix(empty)
    if dense:
        return np.concatenate(rows), np.concatenate(blocks).astype(np.float32, copy=False)
    return np.concatenate(rows), sp.vstack(blocks, format="csr", dtype=np.float32)
