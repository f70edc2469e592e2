"""InfoNCE against hand-computed values and a naive loop; cross-rank gathering with gloo; the
KL distillation loss by hand."""

from __future__ import annotations

import math
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from lightning_mlsr.objectives.distillation import KLDistillation, kl_distillation
from lightning_mlsr.objectives.ranking import InfoNCE


def naive_infonce(
    q: torch.Tensor, d: torch.Tensor, temperature: float, drop: set[tuple[int, int]] = frozenset()
) -> float:
    """-mean_i log softmax_i(q_i . d_j / t)[i], leaving out the (i, j) pairs in ``drop``."""
    total = 0.0
    for i in range(q.shape[0]):
        scores = [float(q[i] @ d[j]) / temperature for j in range(d.shape[0])]
        kept = [s for j, s in enumerate(scores) if j == i or (i, j) not in drop]
        total += -scores[i] + math.log(sum(math.exp(s) for s in kept))
    return total / q.shape[0]


def test_identity_vectors_by_hand() -> None:
    eye = torch.eye(3)  # scores = I: each positive 1, each negative 0
    loss = InfoNCE()(eye, eye)
    # -log(e / (e + 2)) = log(1 + 2/e)
    assert loss.item() == pytest.approx(math.log(1 + 2 / math.e))


def test_false_negative_masking_by_hand() -> None:
    eye = torch.eye(3)
    false_negatives = torch.zeros(3, 3, dtype=torch.bool)
    false_negatives[0, 1] = True  # doc 1 is also relevant to query 0
    false_negatives[2, 2] = True  # marking a positive is ignored: it stays the positive
    loss = InfoNCE()(eye, eye, false_negatives)
    # query 0 now competes with one negative: log(1 + 1/e); queries 1, 2 unchanged
    expected = (math.log(1 + 1 / math.e) + 2 * math.log(1 + 2 / math.e)) / 3
    assert loss.item() == pytest.approx(expected)


@pytest.mark.parametrize("temperature", [1.0, 0.05])
def test_matches_a_naive_loop(temperature: float) -> None:
    generator = torch.Generator().manual_seed(0)
    q = torch.rand(5, 7, generator=generator)
    d = torch.relu(torch.randn(5, 7, generator=generator))
    loss = InfoNCE(temperature=temperature)
    assert loss(q, d).item() == pytest.approx(naive_infonce(q, d, temperature), rel=1e-5)
    drop = {(0, 3), (0, 4), (2, 1), (4, 0)}
    mask = torch.zeros(5, 5, dtype=torch.bool)
    for i, j in drop:
        mask[i, j] = True
    masked = loss(q, d, mask).item()
    assert masked == pytest.approx(naive_infonce(q, d, temperature, drop), rel=1e-5)
    assert masked < loss(q, d).item()  # fewer negatives, lower loss


def test_scores_and_labels() -> None:
    q = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    d = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    logits, labels = InfoNCE(temperature=0.5).scores(q, d)
    torch.testing.assert_close(logits, torch.tensor([[4.0, 0.0], [4.0, 0.0]]))
    assert labels.tolist() == [0, 1]


def test_bf16_inputs_give_an_fp32_loss_with_gradients() -> None:
    q = torch.rand(4, 6).to(torch.bfloat16).requires_grad_(True)
    d = torch.rand(4, 6).to(torch.bfloat16).requires_grad_(True)
    loss = InfoNCE()(q, d)
    assert loss.dtype == torch.float32
    loss.backward()
    assert q.grad is not None and d.grad is not None


def test_shape_errors_say_what_is_expected() -> None:
    with pytest.raises(ValueError, match="3 queries but 2 documents"):
        InfoNCE()(torch.rand(3, 4), torch.rand(2, 4))
    with pytest.raises(ValueError, match=r"expected \(3, 3\)"):
        InfoNCE()(torch.rand(3, 4), torch.rand(3, 4), torch.zeros(3, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="temperature"):
        InfoNCE(temperature=0.0)


# --------------------------------------------------------------------------- DDP


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _gather_worker(rank: int, world: int, port: int, q, d, false_negatives, out) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        b, n = q.shape[0] // world, d.shape[0] // world  # n = b * (1 + hard negatives)
        q_local = q[rank * b : (rank + 1) * b].clone().requires_grad_(True)
        d_local = d[rank * n : (rank + 1) * n].clone().requires_grad_(True)
        loss = InfoNCE(temperature=0.5, gather_across_ranks=True)(
            q_local, d_local, false_negatives[rank * b : (rank + 1) * b]
        )
        loss.backward()
        out[rank] = (loss.detach(), q_local.grad, d_local.grad)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.parametrize("negatives", [0, 2], ids=["in-batch", "hard-negatives"])
def test_gathering_across_ranks_matches_one_big_batch(negatives: int) -> None:
    """Each rank's loss uses every rank's documents; summed gradients match a single process.
    With hard negatives each rank holds ``B`` positives then ``B * negatives`` negatives, and
    the positive of rank r's query i is gathered column ``r * N + i``."""
    world, b = 2, 3
    n = b * (1 + negatives)  # documents per rank
    generator = torch.Generator().manual_seed(0)
    q = torch.rand(world * b, 5, generator=generator)
    d = torch.rand(world * n, 5, generator=generator)
    false_negatives = torch.zeros(world * b, world * n, dtype=torch.bool)
    false_negatives[0, n + 1] = True  # across ranks: query 0 (rank 0), doc 1 of rank 1
    false_negatives[5, 1] = True
    false_negatives[4, n - 1] = True  # rank 1's query, rank 0's last document
    out = mp.get_context("spawn").Manager().dict()
    mp.spawn(
        _gather_worker,
        args=(world, _free_port(), q, d, false_negatives, out),
        nprocs=world,
        join=True,
    )
    # reference: one process, the ranks' losses summed (DDP then averages gradients)
    q_ref, d_ref = q.clone().requires_grad_(True), d.clone().requires_grad_(True)
    labels = torch.cat([torch.arange(b) + r * n for r in range(world)])  # (world * b,)
    logits = (q_ref @ d_ref.T / 0.5).masked_fill(false_negatives, float("-inf"))
    losses = torch.nn.functional.cross_entropy(logits, labels, reduction="none")
    per_rank = losses.view(world, b).mean(dim=1)
    per_rank.sum().backward()
    for rank in range(world):
        loss, q_grad, d_grad = out[rank]
        assert loss.item() == pytest.approx(per_rank[rank].item(), rel=1e-6)
        torch.testing.assert_close(q_grad, q_ref.grad[rank * b : (rank + 1) * b])
        torch.testing.assert_close(d_grad, d_ref.grad[rank * n : (rank + 1) * n])


# ---------------------------------------------------------------- distillation


def test_kl_distillation_by_hand() -> None:
    student = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    teacher = torch.tensor([[0.0, 0.0], [0.0, math.log(3.0)]])
    # row 0: KL((.5, .5) || (e, 1)/(e+1)) = ln((e+1)/2) - 1/2
    # row 1: KL((.25, .75) || (.5, .5)) = .25 ln .5 + .75 ln 1.5
    row0 = math.log((math.e + 1) / 2) - 0.5
    row1 = 0.25 * math.log(0.5) + 0.75 * math.log(1.5)
    got = kl_distillation(student, teacher)
    assert float(got) == pytest.approx((row0 + row1) / 2, rel=1e-6)


def test_kl_distillation_is_zero_for_scores_equal_up_to_a_row_constant() -> None:
    teacher = torch.randn(5, 5, generator=torch.Generator().manual_seed(0))
    student = teacher + torch.tensor([[3.0], [-1.0], [0.0], [7.5], [2.0]])
    assert float(kl_distillation(student, teacher)) == pytest.approx(0.0, abs=1e-6)
    assert float(kl_distillation(student * 2, teacher)) > 0.01  # a scale change is not free


def test_kl_distillation_leaves_dropped_pairs_out_of_both_softmaxes() -> None:
    g = torch.Generator().manual_seed(1)
    student, teacher = torch.randn(3, 4, generator=g), torch.randn(3, 4, generator=g)
    drop = torch.zeros(3, 4, dtype=torch.bool)
    drop[0, 2] = drop[2, 3] = True
    want = 0.0
    for i in range(3):
        kept = [j for j in range(4) if not drop[i, j]]
        p = torch.softmax(teacher[i, kept], 0)
        r = torch.softmax(student[i, kept], 0)
        want += float((p * (p / r).log()).sum()) / 3
    got = kl_distillation(student, teacher, drop)
    assert torch.isfinite(got) and float(got) == pytest.approx(want, rel=1e-5)


def test_kl_distillation_module_weights_the_kl_of_the_given_teacher_scores() -> None:
    g = torch.Generator().manual_seed(2)
    q, d = torch.rand(4, 10, generator=g, requires_grad=True), torch.rand(4, 10, generator=g)
    teacher = torch.randn(4, 4, generator=g)  # the teacher's in-batch scores
    kd = KLDistillation(weight=0.5, teacher_temperature=0.1, student_temperature=2.0)
    assert not list(kd.parameters())  # a loss: no model inside
    got = kd(q, d, teacher)
    want = 0.5 * kl_distillation(q @ d.T / 2.0, teacher / 0.1)
    torch.testing.assert_close(got, want)
    got.backward()
    assert q.grad is not None
    # a false negative is dropped from both distributions, the positive never is
    fn = torch.eye(4, dtype=torch.bool) | torch.tensor([[0, 1, 0, 0]] * 4, dtype=torch.bool)
    drop = fn.clone()
    drop.fill_diagonal_(False)
    want_fn = 0.5 * kl_distillation(q @ d.T / 2.0, teacher / 0.1, drop)
    torch.testing.assert_close(kd(q, d, teacher, fn), want_fn)
    with pytest.raises(ValueError, match="same shape"):
        kd(q, d, teacher[:, :3])
    with pytest.raises(ValueError, match="temperatures > 0"):
        KLDistillation(teacher_temperature=0.0)
