"""Sparsity regularizers on ``(B, V)`` term weights, with a quadratic warm-up.

The weight at optimizer step ``t`` is ``lambda_t = lambda * min(1, t / T) ** 2`` — a pure
function of the step the caller passes (the LightningModule passes
``trainer.global_step``, which counts optimizer steps and is restored on resume), never an
internal counter. ``T`` is either fixed (``warmup_steps``) or a fraction of the run's total
optimizer steps (``warmup_ratio``; the module passes ``trainer.estimated_stepping_batches``).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["FLOPS", "L1", "Regularizer"]


class Regularizer(nn.Module):
    """Base class: ``forward(w, step) -> (weight_at(step) * penalty(w), weight_at(step))``.

    Args:
        weight: the full weight ``lambda`` reached after warm-up.
        warmup_steps: ``T``; 0 means the full weight from step 0.
        warmup_ratio: ``T`` as a fraction of the total optimizer steps (set this or
            ``warmup_steps``, not both); e.g. 0.2 as in the multimodal LSR reference.

    Shape:
        ``w`` ``(B, V)`` -> scalar.
    """

    def __init__(
        self, weight: float = 0.0, warmup_steps: int = 0, warmup_ratio: float | None = None
    ) -> None:
        super().__init__()
        if weight < 0:
            raise ValueError(f"{type(self).__name__}: weight must be >= 0, got {weight}")
        if warmup_steps < 0:
            raise ValueError(
                f"{type(self).__name__}: warmup_steps must be >= 0, got {warmup_steps}"
            )
        if warmup_ratio is not None:
            if not 0.0 <= warmup_ratio <= 1.0:
                raise ValueError(
                    f"{type(self).__name__}: warmup_ratio must be in [0, 1], got {warmup_ratio}"
                )
            if warmup_steps:
                raise ValueError(
                    f"{type(self).__name__}: set warmup_steps or warmup_ratio, not both "
                    f"(got {warmup_steps} and {warmup_ratio}); base.yaml sets warmup_ratio, so "
                    "an experiment that counts steps also sets warmup_ratio: null"
                )
        self.weight = float(weight)
        self.warmup_steps = int(warmup_steps)
        self.warmup_ratio = warmup_ratio

    def warmup_length(self, total_steps: int | None = None) -> float:
        """``T`` in optimizer steps (``warmup_ratio * total_steps`` when a ratio is set)."""
        if self.warmup_ratio is None:
            return float(self.warmup_steps)
        if total_steps is None:
            raise ValueError(
                f"{type(self).__name__} has warmup_ratio={self.warmup_ratio}, so it needs the "
                "run's total optimizer steps (total_steps)"
            )
        return self.warmup_ratio * total_steps

    def weight_at(self, step: int, total_steps: int | None = None) -> float:
        """``weight * min(1, step / T) ** 2`` (full weight when ``T`` is 0)."""
        warmup = self.warmup_length(total_steps)
        if warmup <= 0:
            return self.weight
        progress = min(1.0, max(0, step) / warmup)
        return self.weight * progress**2

    def penalty(self, w: torch.Tensor) -> torch.Tensor:
        """The unweighted penalty, computed in fp32. Shape: ``(B, V)`` -> scalar."""
        raise NotImplementedError

    def forward(
        self, w: torch.Tensor, step: int, total_steps: int | None = None
    ) -> tuple[torch.Tensor, float]:
        """Weighted penalty and the weight used. Shape: ``(B, V)`` -> scalar."""
        lam = self.weight_at(step, total_steps)
        return lam * self.penalty(w), lam

    def extra_repr(self) -> str:
        if self.warmup_ratio is not None:
            return f"weight={self.weight}, warmup_ratio={self.warmup_ratio}"
        return f"weight={self.weight}, warmup_steps={self.warmup_steps}"


class FLOPS(Regularizer):
    """FLOPS (Paria et al., 2020): ``sum_j (mean_i |w_ij|) ** 2``.

    Approximates the expected number of multiplications of a sparse dot product, and
    pushes towards terms that are rarely active across the batch.
    """

    def penalty(self, w: torch.Tensor) -> torch.Tensor:
        """Shape: ``(B, V)`` -> scalar."""
        return (w.float().abs().mean(dim=0) ** 2).sum()  # (V,) -> ()


class L1(Regularizer):
    """L1: ``mean_i sum_j |w_ij|``, the average total weight of a vector."""

    def penalty(self, w: torch.Tensor) -> torch.Tensor:
        """Shape: ``(B, V)`` -> scalar."""
        return w.float().abs().sum(dim=1).mean()  # (B,) -> ()
