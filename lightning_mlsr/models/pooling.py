"""Pooling of token scores into one vector per text: ``log(1 + relu(.))`` saturation,
sum or max over the kept positions, and the packed MLM path that projects only those.

Shape: token logits ``(B, L, V)`` or packed ``(K, V)`` -> ``(B, V)``.
"""

from __future__ import annotations

import warnings
from typing import Literal

import torch
from torch import nn

__all__ = [
    "Pooling",
    "keep_top_terms",
    "log_saturation",
    "pool_kept_vocab_logits",
    "pool_vocab_logits",
    "scatter_token_weights",
]

Pooling = Literal["sum", "max"]
_POOLINGS = ("sum", "max")


def _check_pooling(pooling: str, where: str) -> None:
    if pooling not in _POOLINGS:
        raise ValueError(f"{where}: pooling must be one of {_POOLINGS}, got {pooling!r}")


def log_saturation(x: torch.Tensor) -> torch.Tensor:
    """``log(1 + relu(x))``: the non-negative, saturating term-weight activation."""
    return torch.log1p(torch.relu(x))


def _check_max_terms(max_terms: int | None, where: str) -> None:
    if max_terms is not None and max_terms < 1:
        raise ValueError(f"{where}: max_terms must be a positive integer, got {max_terms}")


def keep_top_terms(weights: torch.Tensor, k: int | None) -> torch.Tensor:
    """Keep the ``k`` largest weights of each row, zero the rest (a budget on non-zeros;
    ``None``: no budget, ``weights`` as they are).

    Gradients reach the kept weights only. Rows with fewer than ``k`` positive weights keep
    all of them (the zeros picked to fill the budget stay zero).

    Shape:
        ``(B, V)`` -> ``(B, V)``.
    """
    if k is None or k >= weights.shape[-1]:
        return weights
    values, indices = weights.topk(k, dim=-1)  # (B, k)
    return torch.zeros_like(weights).scatter(-1, indices, values)  # (B, V)


def scatter_token_weights(
    weights: torch.Tensor, input_ids: torch.Tensor, vocab_size: int, pooling: Pooling
) -> torch.Tensor:
    """Put per-token weights at their vocabulary ids; repeated ids are summed or maxed.

    ``weights`` must be non-negative and already zero at masked positions (those still
    land on their id, adding nothing).

    Shape:
        weights ``(B, L)``, input_ids ``(B, L)`` -> ``(B, V)``.
    """
    out = weights.new_zeros(weights.shape[0], vocab_size)  # (B, V)
    if pooling == "sum":
        return out.scatter_add(1, input_ids, weights)
    # weights >= 0, so including the zero we start from changes nothing
    return out.scatter_reduce(1, input_ids, weights, reduce="amax", include_self=True)


def pool_vocab_logits(logits: torch.Tensor, mask: torch.Tensor, pooling: Pooling) -> torch.Tensor:
    """SPLADE pooling of MLM logits: ``pool_l log(1 + relu(logits[:, l]))`` over kept tokens.

    Writes into ``logits`` to avoid copying a ``(B, L, V)`` tensor (they are a fresh
    activation from the head, not needed by autograd). For max pooling the activation is
    applied after the max (it is monotone, so the values are the same) so only one
    ``(B, L, V)`` tensor ever exists.

    Shape:
        logits ``(B, L, V)``, mask ``(B, L)`` bool (True = keep) -> ``(B, V)``.
    """
    drop = ~mask.unsqueeze(-1)  # (B, L, 1)
    if pooling == "max":
        logits.masked_fill_(drop, float("-inf"))
        return log_saturation(logits.amax(dim=1))  # (B, V)
    logits.masked_fill_(drop, 0.0)  # log(1 + relu(0)) = 0
    return log_saturation(logits).sum(dim=1)  # (B, V)


def pool_kept_vocab_logits(
    head: nn.Module, hidden: torch.Tensor, mask: torch.Tensor, pooling: Pooling
) -> torch.Tensor:
    """``pool_vocab_logits(head(hidden), mask, pooling)``, with ``head`` run only at the
    kept positions.

    The vocabulary projection is most of an MLM encoder's cost (``V / H`` = 238 for
    SPLADE-tiny), and a dynamically padded batch is often half padding (M2's training batches
    on the bundled captions; ``bench/bench_pooling.py``), so the kept positions are packed
    into one ``(N, H)`` matrix and pooled back per example with ``index_reduce``/``index_add``.
    Same values and gradients as the padded computation, up to floating-point rounding (a
    max's gradient is shared among ties in both).

    Shape:
        hidden ``(B, L, H)``, mask ``(B, L)`` bool (True = keep) -> ``(B, V)``.
    """
    rows = mask.nonzero(as_tuple=True)[0]  # (N,) the example of each kept position
    logits = head(hidden[mask])  # (N, V)
    shape = (mask.shape[0], logits.shape[-1])
    if pooling == "max":
        start = logits.new_full(shape, float("-inf"))  # an example with no kept token -> 0
        with warnings.catch_warnings():  # its "beta" notice; tests hold it to pool_vocab_logits
            warnings.filterwarnings("ignore", message=r"index_reduce\(\) is in beta")
            pooled = start.index_reduce(0, rows, logits, "amax")  # (B, V)
        return log_saturation(pooled)
    return logits.new_zeros(shape).index_add(0, rows, log_saturation(logits))  # (B, V)
