"""Distillation losses: the student's in-batch scores against a frozen teacher's (D2S /
SPLADE++), added to the ranking loss in YAML (``model.distillation``, with ``model.teacher``).

The losses receive the teacher's scores; the teacher itself (loading, cache, fingerprint)
is :class:`~lightning_mlsr.models.teacher.DenseTeacher`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["KLDistillation", "MarginMSE", "ScoreDistillation", "kl_distillation", "margin_mse"]


def kl_distillation(
    student: torch.Tensor, teacher: torch.Tensor, drop: torch.Tensor | None = None
) -> torch.Tensor:
    """``mean_i KL(softmax(teacher_i) || softmax(student_i))`` over in-batch scores.

    Both inputs are logits (already divided by their temperatures); a softmax is shift
    invariant, so the loss is 0 whenever each student row equals the teacher row plus a
    constant. Entries in ``drop`` (e.g. false negatives) are left out of both softmaxes.

    Shape:
        student ``(B, N)``, teacher ``(B, N)``, drop ``(B, N)`` bool -> scalar (fp32).
    """
    if student.shape != teacher.shape:
        raise ValueError(
            f"kl_distillation: student scores {tuple(student.shape)} and teacher scores "
            f"{tuple(teacher.shape)} must have the same shape (queries x documents)"
        )
    student, teacher = student.float(), teacher.float()
    if drop is not None:
        student = student.masked_fill(drop, float("-inf"))
        teacher = teacher.masked_fill(drop, float("-inf"))
    log_p_teacher = F.log_softmax(teacher, dim=1)  # (B, N)
    log_p_student = F.log_softmax(student, dim=1)  # (B, N)
    terms = log_p_teacher.exp() * (log_p_teacher - log_p_student)  # (B, N)
    if drop is not None:
        terms = terms.masked_fill(drop, 0.0)  # 0 * (-inf - -inf) would be NaN
    return terms.sum(dim=1).mean()


def margin_mse(
    student: torch.Tensor,
    teacher: torch.Tensor,
    negatives_per_query: int,
    drop: torch.Tensor | None = None,
) -> torch.Tensor:
    """MarginMSE: ``mean_(i,j) ((s_ip - s_ij) - (t_ip - t_ij))^2`` over each query ``i``'s
    own hard negatives ``j``, with ``p`` its positive.

    The columns are a training batch's documents: ``B`` positives (query ``i``'s at column
    ``i``), then ``negatives_per_query`` hard negatives per query (query ``i``'s at columns
    ``B + i * n .. B + i * n + n - 1``). With ``negatives_per_query=0`` (a batch of
    positives only, e.g. validation) every other query's positive is a negative. Triples
    whose negative is marked in ``drop`` (a document also relevant to the query) are left
    out of the mean.

    Shape:
        student ``(B, N)``, teacher ``(B, N)``, drop ``(B, N)`` bool, ``N = B * (1 + n)``
        -> scalar (fp32).
    """
    if student.shape != teacher.shape:
        raise ValueError(
            f"margin_mse: student scores {tuple(student.shape)} and teacher scores "
            f"{tuple(teacher.shape)} must have the same shape (queries x documents)"
        )
    b, n = student.shape[0], int(negatives_per_query)
    if n < 0 or student.shape[1] != b * (1 + n) or (n == 0 and b < 2):
        raise ValueError(
            f"margin_mse: {student.shape[1]} documents for {b} queries; MarginMSE needs each "
            f"query's positive and its {n} hard negative(s) ({b * (1 + n)} documents), or "
            "with no hard negatives at least 2 queries"
        )
    rows = torch.arange(b, device=student.device)[:, None]  # (B, 1)
    if n == 0:  # in-batch: the other queries' positives
        others = ~torch.eye(b, dtype=torch.bool, device=student.device)  # (B, B)
        cols = torch.arange(b, device=student.device).expand(b, b)[others].view(b, b - 1)
    else:
        cols = b + rows * n + torch.arange(n, device=student.device)[None, :]  # (B, n)
    student, teacher = student.float(), teacher.float()
    s_margin = student[rows[:, 0], rows[:, 0]][:, None] - student[rows, cols]  # (B, n)
    t_margin = teacher[rows[:, 0], rows[:, 0]][:, None] - teacher[rows, cols]  # (B, n)
    errors = (s_margin - t_margin).square()  # (B, n)
    if drop is None:
        return errors.mean()
    keep = ~drop.bool()[rows, cols]  # (B, n)
    return (errors * keep).sum() / keep.sum().clamp_min(1)


class ScoreDistillation(nn.Module):
    """A weighted loss between the student's in-batch scores and the teacher's.

    The student's scores are its dot products ``q @ d.T / student_temperature``; the
    teacher's, given, are divided by ``teacher_temperature`` (0.05 for cosine scores, as the
    dense baselines are trained). Subclasses say how the two are compared.

    Args:
        weight: multiplier of the loss.
        teacher_temperature: divides the teacher's scores.
        student_temperature: divides the student's dot products.

    Shape:
        q ``(B, V)``, d ``(N, V)`` (positives first, then any hard negatives), teacher_scores
        ``(B, N)``, false_negatives ``(B, N)`` bool -> scalar.
    """

    def __init__(
        self,
        weight: float = 1.0,
        teacher_temperature: float = 0.05,
        student_temperature: float = 1.0,
    ) -> None:
        super().__init__()
        if weight < 0 or teacher_temperature <= 0 or student_temperature <= 0:
            raise ValueError(
                f"{type(self).__name__}: weight must be >= 0 and temperatures > 0, got "
                f"weight={weight}, teacher_temperature={teacher_temperature}, "
                f"student_temperature={student_temperature}"
            )
        self.weight = float(weight)
        self.teacher_temperature = float(teacher_temperature)
        self.student_temperature = float(student_temperature)

    def logits(
        self, q: torch.Tensor, d: torch.Tensor, teacher_scores: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The student's and the teacher's fp32 logits. Shape: ``(B, N)`` each."""
        student = q.float() @ d.float().T / self.student_temperature  # (B, N)
        return student, teacher_scores.float() / self.teacher_temperature

    def forward(
        self,
        q: torch.Tensor,
        d: torch.Tensor,
        teacher_scores: torch.Tensor,
        false_negatives: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The weighted loss. Shape: see the class."""
        raise NotImplementedError(f"{type(self).__name__} does not say how scores compare")


class KLDistillation(ScoreDistillation):
    """KL between the teacher's in-batch score distribution and the student's: each query's
    softmax over the batch's documents (:func:`kl_distillation`), false negatives left out
    of both (the positives never are)."""

    def forward(
        self,
        q: torch.Tensor,
        d: torch.Tensor,
        teacher_scores: torch.Tensor,
        false_negatives: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Weighted KL of the student's in-batch scores to the teacher's.

        Shape: q ``(B, V)``, d ``(N, V)``, teacher_scores ``(B, N)``, false_negatives
        ``(B, N)`` -> scalar.
        """
        student, teacher = self.logits(q, d, teacher_scores)  # (B, N) each
        drop = None
        if false_negatives is not None:
            drop = false_negatives.bool().clone()
            drop.fill_diagonal_(False)  # the positives stay
        return self.weight * kl_distillation(student, teacher, drop)


class MarginMSE(ScoreDistillation):
    """MarginMSE distillation (Hofstätter et al., 2020; the recipe of naver/splade,
    sentence-transformers' ``SparseMarginMSELoss`` and lsr): the student's score margin
    between a query's positive and each of its hard negatives matches the teacher's
    (:func:`margin_mse`).

    A drop-in for :class:`KLDistillation` in ``model.distillation``, meant for training
    batches with teacher-mined hard negatives (``data.negatives.file``,
    :mod:`lightning_mlsr.data.training.negatives`), the triples whose margins it compares; a
    batch without them (validation) compares each positive with the other queries'
    positives. ``teacher_temperature`` sets the scale of the teacher's margins (0.05: cosine
    margins times 20).

    Shape:
        q ``(B, V)``, d ``(B * (1 + n), V)``, teacher_scores ``(B, B * (1 + n))`` -> scalar.
    """

    def forward(
        self,
        q: torch.Tensor,
        d: torch.Tensor,
        teacher_scores: torch.Tensor,
        false_negatives: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Weighted MarginMSE over each query's (positive, hard negative) pairs.

        Shape: q ``(B, V)``, d ``(N, V)``, teacher_scores ``(B, N)``, false_negatives
        ``(B, N)`` -> scalar.
        """
        b = q.shape[0]
        if d.shape[0] < b or d.shape[0] % b:
            raise ValueError(
                f"MarginMSE: a batch of {b} queries and {d.shape[0]} documents; it needs the "
                "B positives, then the same number of hard negatives for every query "
                "(data.negatives.file with data.negatives.per_query)"
            )
        student, teacher = self.logits(q, d, teacher_scores)  # (B, N) each
        return self.weight * margin_mse(student, teacher, d.shape[0] // b - 1, false_negatives)
