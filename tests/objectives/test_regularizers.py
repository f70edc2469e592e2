"""FLOPS and L1 against hand-computed values; the warm-up as a pure function of the step."""

from __future__ import annotations

import pytest
import torch

from lightning_mlsr.objectives.regularizers import FLOPS, L1, Regularizer

# |w| column means over the batch: [2, 1, 2]; row sums of |w|: [3, 7]
W = torch.tensor([[1.0, -2.0, 0.0], [3.0, 0.0, 4.0]])


def test_flops_by_hand() -> None:
    # sum_j (mean_i |w_ij|)^2 = 2^2 + 1^2 + 2^2
    assert FLOPS().penalty(W).item() == pytest.approx(9.0)


def test_l1_by_hand() -> None:
    # mean_i sum_j |w_ij| = (3 + 7) / 2
    assert L1().penalty(W).item() == pytest.approx(5.0)


def test_flops_gradient_by_hand() -> None:
    w = W.clone().requires_grad_(True)
    FLOPS().penalty(w).backward()
    # d/dw_ij = 2 * mean_i|w_ij| * sign(w_ij) / B
    expected = torch.tensor([[2.0, -1.0, 0.0], [2.0, 0.0, 2.0]])
    torch.testing.assert_close(w.grad, expected)


@pytest.mark.parametrize("cls", [FLOPS, L1])
def test_penalty_is_fp32_for_bf16_weights(cls: type[Regularizer]) -> None:
    penalty = cls().penalty(W.to(torch.bfloat16))
    assert penalty.dtype == torch.float32
    assert penalty.item() == pytest.approx(cls().penalty(W).item())


@pytest.mark.parametrize("cls", [FLOPS, L1])
def test_quadratic_warmup_schedule(cls: type[Regularizer]) -> None:
    reg = cls(weight=0.3, ramp_steps=10)
    got = [reg.weight_at(step) for step in (0, 5, 10, 20)]
    assert got == pytest.approx([0.0, 0.3 / 4, 0.3, 0.3])


def test_weight_is_a_pure_function_of_the_step() -> None:
    reg = FLOPS(weight=0.3, ramp_steps=10)
    for step in (10, 3, 10, 0):  # calls in any order, as after a resume, leave no trace
        reg(W, step)
    assert reg.weight_at(5) == pytest.approx(0.075)
    assert reg.weight_at(5) == reg.weight_at(5)


def test_no_warmup_means_full_weight_from_step_zero() -> None:
    assert L1(weight=0.5).weight_at(0) == 0.5
    assert L1().weight_at(100) == 0.0  # default weight 0: the penalty is off


def test_forward_returns_weighted_penalty_and_weight() -> None:
    loss, weight = FLOPS(weight=0.3, ramp_steps=10)(W, 5)
    assert weight == pytest.approx(0.075)
    assert loss.item() == pytest.approx(0.075 * 9.0)
    loss, weight = L1(weight=2.0)(W, 0)
    assert (loss.item(), weight) == pytest.approx((10.0, 2.0))


@pytest.mark.parametrize("kwargs", [{"weight": -1.0}, {"ramp_steps": -5}])
def test_invalid_settings_are_rejected(kwargs: dict) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        FLOPS(**kwargs)


def test_ramp_ratio_is_a_fraction_of_the_total_steps() -> None:
    reg = FLOPS(weight=3.0, ramp_ratio=0.2)
    # T = 0.2 * 50 = 10 steps
    assert [reg.weight_at(s, 50) for s in (0, 5, 10, 40)] == pytest.approx([0.0, 0.75, 3.0, 3.0])
    assert reg.weight_at(5, 100) == pytest.approx(3.0 * (5 / 20) ** 2)  # longer run, slower
    with pytest.raises(ValueError, match="total optimizer steps"):
        reg.weight_at(5)
    with pytest.raises(ValueError, match="not both"):
        FLOPS(weight=1.0, ramp_steps=10, ramp_ratio=0.2)
    with pytest.raises(ValueError, match="ramp_ratio"):
        FLOPS(weight=1.0, ramp_ratio=1.5)
