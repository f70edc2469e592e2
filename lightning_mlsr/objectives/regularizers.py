"""Sparsity regularizers on ``(B, V)`` term weights, with a quadratic ramp of their weight.

The weight at optimizer step ``t`` is ``weight_t = weight * min(1, t / T) ** 2`` — a pure
function of the step the caller passes (the LightningModule passes
``trainer.global_step``, which counts optimizer steps and is restored on resume), never an
internal counter. ``T`` is either fixed (``ramp_steps``) or a fraction of the run's total
optimizer steps (``ramp_ratio``; the module passes ``trainer.estimated_stepping_batches``).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["FLOPS", "L1", "Regularizer"]


class Regularizer(nn.Module):
    """Base class: ``forward(w, step) -> (weight_at(step) * penalty(w), weight_at(step))``.

    Args:
        weight: the full weight, reached after the ramp.
        ramp_steps: ``T``; 0 means the full weight from step 0.
        ramp_ratio: ``T`` as a fraction of the total optimizer steps (set this or
            ``ramp_steps``, not both); e.g. 0.2 as in the multimodal LSR reference.

    Shape:
        ``w`` ``(B, V)`` -> scalar.
    """

    def __init__(
        self, weight: float = 0.0, ramp_steps: int = 0, ramp_ratio: float | None = None
    ) -> None:
        super().__init__()
        if weight < 0:
            raise ValueError(f"{type(self).__name__}: weight must be >= 0, got {weight}")
        if ramp_steps < 0:
            raise ValueError(f"{type(self).__name__}: ramp_steps must be >= 0, got {ramp_steps}")
        if ramp_ratio is not None:
            if not 0.0 <= ramp_ratio <= 1.0:
                raise ValueError(
                    f"{type(self).__name__}: ramp_ratio must be in [0, 1], got {ramp_ratio}"
                )
            if ramp_steps:
                raise ValueError(
                    f"{type(self).__name__}: set ramp_steps or ramp_ratio, not both "
                    f"(got {ramp_steps} and {ramp_ratio}); base.yaml sets ramp_ratio, so "
                    "an experiment that counts steps also sets ramp_ratio: null"
                )
        self.weight = float(weight)
        self.ramp_steps = int(ramp_steps)
        self.ramp_ratio = ramp_ratio

    def ramp_length(self, total_steps: int | None = None) -> float:
        """``T`` in optimizer steps (``ramp_ratio * total_steps`` when a ratio is set)."""
        if self.ramp_ratio is None:
            return float(self.ramp_steps)
        if total_steps is None:
            raise ValueError(
                f"{type(self).__name__} has ramp_ratio={self.ramp_ratio}, so it needs the "
                "run's total optimizer steps (total_steps)"
            )
        return self.ramp_ratio * total_steps

    def weight_at(self, step: int, total_steps: int | None = None) -> float:
        """``weight * min(1, step / T) ** 2`` (full weight when ``T`` is 0)."""
        ramp = self.ramp_length(total_steps)
        if ramp <= 0:
            return self.weight
        progress = min(1.0, max(0, step) / ramp)
        return self.weight * progress**2

    def penalty(self, w: torch.Tensor) -> torch.Tensor:
        """The unweighted penalty, computed in fp32. Shape: ``(B, V)`` -> scalar."""
        raise NotImplementedError

    def forward(
        self, w: torch.Tensor, step: int, total_steps: int | None = None
    ) -> tuple[torch.Tensor, float]:
        """Weighted penalty and the weight used. Shape: ``(B, V)`` -> scalar."""
        weight = self.weight_at(step, total_steps)
        return weight * self.penalty(w), weight

    def extra_repr(self) -> str:
        if self.ramp_ratio is not None:
            return f"weight={self.weight}, ramp_ratio={self.ramp_ratio}"
        return f"weight={self.weight}, ramp_steps={self.ramp_steps}"


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
