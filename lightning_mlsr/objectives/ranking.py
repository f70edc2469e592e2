"""Ranking losses over sparse (or dense) query and document vectors: in-batch InfoNCE with
documents gathered from every DDP rank, and the false-negative mask of gathered documents."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["InfoNCE", "gathered_false_negatives"]


def _world() -> tuple[int, int]:
    """``(rank, world_size)`` of the default process group, ``(0, 1)`` without one."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class InfoNCE(nn.Module):
    """In-batch-negatives InfoNCE: cross-entropy over ``q @ d.T / temperature``.

    Document ``i`` is the positive of query ``i``; every other document in the batch (and,
    with ``gather_across_ranks``, on every rank), including any hard negatives after the
    ``B`` positives (:mod:`lightning_mlsr.data.training.negatives`), is a negative, except those
    marked in ``false_negatives``, which are removed from the softmax (their score is set
    to -inf) so duplicates and co-relevant documents are not pushed away.

    With ``gather_across_ranks=True`` and a process group of world size > 1, the documents
    of all ranks are gathered *with gradients* (``torch.distributed.nn.functional.
    all_gather``); each rank keeps its own ``B`` queries, and the positive of local query
    ``i`` is column ``rank * N + i`` (``N`` documents per rank). All ranks must use the same
    batch size. Then ``false_negatives`` must describe the gathered documents, shape
    ``(B, N * world)``, or be None.

    Args:
        temperature: scores are divided by it.
        gather_across_ranks: use the documents of all ranks as negatives.

    Shape:
        q ``(B, V)``, d ``(N, V)`` (``N >= B``), false_negatives ``(B, N_all)`` bool -> scalar.
    """

    def __init__(self, temperature: float = 1.0, gather_across_ranks: bool = False) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"InfoNCE: temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)
        self.gather_across_ranks = gather_across_ranks

    def _gather(self, d: torch.Tensor) -> tuple[torch.Tensor, int]:
        """All ranks' documents (with gradients) and this rank's offset. Shape: ``(B_all, V)``."""
        rank, world = _world()
        if not self.gather_across_ranks or world == 1:
            return d, 0
        from torch.distributed.nn.functional import all_gather

        return torch.cat(all_gather(d), dim=0), rank * d.shape[0]

    def scores(
        self,
        q: torch.Tensor,
        d: torch.Tensor,
        false_negatives: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Masked fp32 logits and the column of each query's positive.

        Shape:
            q ``(B, V)``, d ``(N, V)`` -> logits ``(B, N_all)``, labels ``(B,)`` long.
        """
        if d.shape[0] < q.shape[0]:
            raise ValueError(
                f"InfoNCE: {q.shape[0]} queries but {d.shape[0]} documents; each query needs "
                "its positive document at the same batch index (extra documents after the "
                "positives are hard negatives)."
            )
        docs, offset = self._gather(d)  # (B_all, V)
        logits = (q.float() @ docs.float().T) / self.temperature  # (B, B_all)
        labels = torch.arange(q.shape[0], device=q.device) + offset  # (B,)
        if false_negatives is not None:
            if false_negatives.shape != logits.shape:
                raise ValueError(
                    f"InfoNCE: false_negatives has shape {tuple(false_negatives.shape)}, "
                    f"expected {tuple(logits.shape)} (queries x documents"
                    + (" gathered from all ranks" if docs is not d else "")
                    + "); pass None to keep all in-batch negatives."
                )
            drop = false_negatives.bool().clone()  # (B, B_all)
            drop[torch.arange(q.shape[0], device=q.device), labels] = False  # keep positives
            logits = logits.masked_fill(drop, float("-inf"))
        return logits, labels

    def forward(
        self,
        q: torch.Tensor,
        d: torch.Tensor,
        false_negatives: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Mean cross-entropy of each query's positive. Shape: ``(B, V)``, ``(N, V)`` -> scalar."""
        logits, labels = self.scores(q, d, false_negatives)
        return F.cross_entropy(logits, labels)


def gathered_false_negatives(
    relevant_doc_idx: torch.Tensor, doc_idx: torch.Tensor, offset: int
) -> torch.Tensor:
    """False negatives among documents gathered from every rank, from ids alone.

    ``[i, j]``: document ``doc_idx[j]`` is relevant to local query ``i`` (one of its
    ``relevant_doc_idx[i]``, ``-1`` padded), and column ``j`` is not the query's positive,
    which :class:`InfoNCE` expects at column ``offset + i``.

    Shape:
        relevant_doc_idx ``(B, R)``, doc_idx ``(N,)`` -> ``(B, N)`` bool.
    """
    relevant = relevant_doc_idx.to(doc_idx.device)
    mask = (doc_idx[None, :, None] == relevant[:, None, :]).any(dim=-1)  # (B, N)
    rows = torch.arange(relevant.shape[0], device=doc_idx.device)  # (B,)
    cols = rows + offset
    inside = cols < mask.shape[1]
    mask[rows[inside], cols[inside]] = False
    return mask
