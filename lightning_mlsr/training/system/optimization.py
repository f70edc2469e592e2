"""How the optimizer is set up beyond its own arguments: parameter groups and the
learning-rate schedule (``model.optimization`` in YAML)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

__all__ = ["GROUPS", "Optimization", "lr_schedule"]

#: the parameter groups: layers the heads create from scratch, and everything pretrained
GROUPS = ("new", "pretrained")


@dataclass(frozen=True)
class Optimization:
    """Parameter groups and the learning-rate schedule.

    Args:
        param_groups: optimizer options per parameter group, overriding the optimizer's:
            ``new`` — layers the heads create from scratch (``new_parameters()``: image
            projections, MLP term scorers) — and ``pretrained`` — every other trainable
            parameter (transformers, MLM heads), e.g. ``{new: {lr: 1e-3}, pretrained:
            {lr: 5e-5}}`` as in the multimodal LSR reference. None: one group.
        lr_warmup_ratio: fraction of all optimizer steps spent warming the learning rate up
            (linearly, from 0).
        lr_decay: ``linear`` to zero after the warm-up, or ``constant`` (the schedules of
            :func:`lr_schedule`, from ``transformers``).
    """

    param_groups: dict[str, dict[str, float]] | None = None
    lr_warmup_ratio: float = 0.1
    lr_decay: Literal["linear", "constant"] = "linear"

    def __post_init__(self) -> None:
        unknown = set(self.param_groups or {}) - set(GROUPS)
        if unknown:
            raise ValueError(
                f"model.optimization.param_groups: unknown group(s) {sorted(unknown)}; the "
                f"groups are {GROUPS}"
            )
        if not 0.0 <= self.lr_warmup_ratio < 1.0:
            raise ValueError(
                f"model.optimization.lr_warmup_ratio must be in [0, 1), got {self.lr_warmup_ratio}"
            )


def lr_schedule(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    warmup_ratio: float,
    decay: Literal["linear", "constant"] = "linear",
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over ``warmup_ratio * total_steps`` optimizer steps, then linear decay
    to 0 at ``total_steps`` (or constant): ``transformers``' schedules, stepped per
    optimizer step."""
    from transformers import get_constant_schedule_with_warmup, get_linear_schedule_with_warmup

    if decay not in ("linear", "constant"):  # a Python caller; YAML is checked by its type
        raise ValueError(f"lr_decay must be 'linear' or 'constant', got {decay!r}")
    warmup = int(warmup_ratio * total_steps)
    if decay == "constant":
        return get_constant_schedule_with_warmup(optimizer, warmup)
    return get_linear_schedule_with_warmup(optimizer, warmup, total_steps)
