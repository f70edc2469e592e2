"""Losses over sparse query and document vectors: in-batch InfoNCE, and distillation of
a frozen dense teacher's in-batch score distribution (D2S / SPLADE++), which composes with
InfoNCE in YAML (``model.distillation``)."""

from __future__ import annotations

import copy
import hashlib
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from lightning_mlsr.io.checkpoints import CheckpointError, load_checkpoint

__all__ = ["Distillation", "InfoNCE", "gathered_false_negatives", "kl_distillation"]


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


class Distillation(nn.Module):
    """Dense-to-sparse distillation: KL between a frozen teacher's in-batch score
    distribution and the student's, added to the ranking loss with ``weight``.

    The teacher is a dense bi-encoder (e.g. :class:`~lightning_mlsr.models.dense.
    DenseTextHead` on ``minilm-l6``); its scores ``q_t @ d_t.T / teacher_temperature`` are
    computed on the fly, without gradients, from the same tokenized batch as the student,
    so its tokenizer must be the student's (checked on the vocabulary size and special
    ids). With ``checkpoint``, the teacher weights come from a trained dense run (a
    Lightning checkpoint of e.g. ``experiments/dense_caption.yaml``: ``query_encoder.*``
    and ``doc_encoder.*``); otherwise the backbone's own weights are used.

    Args:
        teacher: the teacher's query encoder (and document encoder, unless ``doc_teacher``).
        doc_teacher: a separate document encoder; None shares ``teacher`` (a checkpoint
            with different query and document weights then gets a copy).
        checkpoint: path of a dense bi-encoder checkpoint to load into the teacher.
        weight: multiplier of the KL term.
        teacher_temperature: divides the teacher's scores (0.05 for cosine scores, as the
            dense baselines are trained).
        student_temperature: divides the student's sparse dot products.
        cache_size: the teacher is frozen, so a text's teacher embedding never changes: up
            to this many embeddings per side are kept (least recently used dropped first),
            keyed by the text's token ids, and only texts not seen before go through the
            teacher. 0 computes every batch afresh. The default holds the bundled
            collection whole (~5.5k texts; 384 floats each for MiniLM-L6).

    Shape:
        student q ``(B, V)``, d ``(N, V)`` (positives first, then any hard negatives) and
        the two tokenized batches -> scalar.
    """

    def __init__(
        self,
        teacher: nn.Module,
        doc_teacher: nn.Module | None = None,
        checkpoint: str | None = None,
        weight: float = 1.0,
        teacher_temperature: float = 0.05,
        student_temperature: float = 1.0,
        cache_size: int = 200_000,
    ) -> None:
        super().__init__()
        if weight < 0 or teacher_temperature <= 0 or student_temperature <= 0 or cache_size < 0:
            raise ValueError(
                "Distillation: weight and cache_size must be >= 0 and temperatures > 0, got "
                f"weight={weight}, teacher_temperature={teacher_temperature}, "
                f"student_temperature={student_temperature}, cache_size={cache_size}"
            )
        self.cache_size = int(cache_size)
        # per side: token ids of one text (bytes) -> its row in the side's embedding table,
        # least recently used first; the tables (R, H) live where the module does (_apply),
        # so a cached embedding never crosses between host and device
        self._cache: dict[str, OrderedDict[bytes, int]] = {
            "query": OrderedDict(),
            "doc": OrderedDict(),
        }
        self._table: dict[str, torch.Tensor | None] = {"query": None, "doc": None}
        self._free: dict[str, list[int]] = {"query": [], "doc": []}  # rows of evicted texts
        self.query_teacher = teacher
        self.doc_teacher = doc_teacher if doc_teacher is not None else teacher
        if checkpoint is not None:
            self._load(checkpoint)
        self.checkpoint = checkpoint
        self.weight = float(weight)
        self.teacher_temperature = float(teacher_temperature)
        self.student_temperature = float(student_temperature)
        self.requires_grad_(False)
        self.eval()
        # now, as built: a precision plugin may cast the teacher later (bf16-true)
        self._fingerprint = self._hash_weights()

    def fingerprint(self) -> str:
        """SHA-256 of the teacher's weights as built (names, dtypes, shapes and bytes of
        both sides; the teacher is frozen). A training checkpoint records it instead of the
        weights, which building the module loads again from ``checkpoint`` or the backbone."""
        return self._fingerprint

    def _hash_weights(self) -> str:
        digest = hashlib.sha256()
        for name, tensor in self.state_dict().items():
            t = tensor.detach().cpu().contiguous()
            digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
            digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        return digest.hexdigest()

    def _load(self, checkpoint: str) -> None:
        path = Path(checkpoint)
        if not path.is_file():
            raise FileNotFoundError(
                f"Distillation: teacher checkpoint {checkpoint!r} does not exist; train one "
                "with experiments/dense_caption.yaml or set checkpoint: null to use the "
                "backbone's own weights"
            )
        try:  # weights_only: a teacher file never runs code while it loads
            state = load_checkpoint(path)
        except CheckpointError as err:
            raise ValueError(f"Distillation: teacher checkpoint: {err}") from err
        state = state.get("state_dict", state)
        parts = {}
        for prefix in ("query_encoder.", "doc_encoder."):
            parts[prefix] = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
            if not parts[prefix]:
                raise ValueError(
                    f"Distillation: {checkpoint!r} has no {prefix}* weights; pass a checkpoint "
                    "of a bi-encoder run (e.g. experiments/dense_caption.yaml)"
                )
        if self.doc_teacher is self.query_teacher:
            self.doc_teacher = copy.deepcopy(self.query_teacher)
        self.query_teacher.load_state_dict(parts["query_encoder."])
        self.doc_teacher.load_state_dict(parts["doc_encoder."])

    def train(self, mode: bool = True) -> Distillation:
        """The teacher is frozen: it stays in eval mode (no dropout) whatever the mode."""
        return super().train(False)

    @torch.no_grad()
    def embed(self, side: str, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The teacher's embeddings of one side's tokenized texts, from the cache where it
        has them. Shape: ``(B, L)`` -> ``(B, H)`` fp32."""
        encoder = self.query_teacher if side == "query" else self.doc_teacher
        if self.cache_size == 0 or "input_ids" not in inputs:  # images: no token ids to key
            return encoder(inputs).float()
        cache = self._cache[side]
        ids, mask = inputs["input_ids"], inputs["attention_mask"].bool()  # (B, L)
        rows = ids.masked_fill(~mask, -1).cpu().numpy()  # (B, L); padding -> -1
        keys = [row[row >= 0].tobytes() for row in rows]
        first: dict[bytes, int] = {}  # each text missing from the cache -> its first row
        for i, key in enumerate(keys):
            if key not in cache:
                first.setdefault(key, i)
        todo = list(first.values())  # a caption repeated in the batch is encoded once
        if todo:
            pick = torch.tensor(todo, device=ids.device)
            fresh = encoder({k: v.index_select(0, pick) for k, v in inputs.items()})
            self._store(side, [keys[i] for i in todo], fresh.float())  # (T, H)
        table = self._table[side]
        if table is None:  # an empty batch
            return encoder(inputs).float()
        slots = torch.tensor([cache[key] for key in keys], device=table.device)  # (B,)
        out = table.index_select(0, slots).to(ids.device)  # (B, H); no copy on one device
        for key in keys:  # most recently used last; drop the oldest beyond the size
            cache.move_to_end(key)
        while len(cache) > self.cache_size:
            self._free[side].append(cache.popitem(last=False)[1])
        return out

    def _store(self, side: str, keys: list[bytes], embeddings: torch.Tensor) -> None:
        """Put new texts' embeddings into the side's table, in rows of evicted texts first;
        the table grows (doubling) on the embeddings' device. Shape: ``(T, H)``."""
        table, free = self._table[side], self._free[side]
        if table is None:
            table = embeddings.new_empty((0, embeddings.shape[1]))
        table = table.to(embeddings.device)
        missing = len(keys) - len(free)
        if missing > 0:
            # doubling, but past the cache's bound only as far as this batch needs
            grown = max(len(table) + missing, min(2 * len(table), self.cache_size + len(keys)))
            free += range(len(table), grown)
            table = torch.cat([table, table.new_empty((grown - len(table), table.shape[1]))])
        slots = [free.pop() for _ in keys]
        table[torch.tensor(slots, device=table.device)] = embeddings.to(table.dtype)
        self._table[side] = table
        self._cache[side].update(zip(keys, slots))

    def _apply(
        self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True
    ) -> Distillation:
        """Move (or cast) the embedding tables with the module, as its buffers would be
        (they are not buffers: DDP would broadcast them, and each rank has its own)."""
        super()._apply(fn, recurse)
        self._table = {s: None if t is None else fn(t) for s, t in self._table.items()}
        return self

    @torch.no_grad()
    def teacher_scores(
        self, queries: Mapping[str, torch.Tensor], docs: Mapping[str, torch.Tensor]
    ) -> torch.Tensor:
        """The teacher's in-batch logits. Shape: ``(B, N)`` fp32."""
        q = self.embed("query", queries)  # (B, H)
        d = self.embed("doc", docs)  # (B, H)
        return q @ d.T / self.teacher_temperature

    def forward(
        self,
        q: torch.Tensor,
        d: torch.Tensor,
        queries: Mapping[str, torch.Tensor],
        docs: Mapping[str, torch.Tensor],
        false_negatives: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Weighted KL of the student's in-batch scores to the teacher's.

        Shape: q ``(B, V)``, d ``(N, V)``, false_negatives ``(B, N)`` -> scalar.
        """
        student = q.float() @ d.float().T / self.student_temperature  # (B, N)
        teacher = self.teacher_scores(queries, docs)  # (B, N)
        drop = None
        if false_negatives is not None:
            drop = false_negatives.bool().clone()
            drop.fill_diagonal_(False)  # the positives stay
        return self.weight * kl_distillation(student, teacher, drop)


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


class MarginMSE(Distillation):
    """MarginMSE distillation (Hofstätter et al., 2020; the recipe of naver/splade,
    sentence-transformers' ``SparseMarginMSELoss`` and lsr): the student's score margin
    between a query's positive and each of its hard negatives matches the teacher's.

    A drop-in for :class:`Distillation` in ``model.distillation`` (same teacher, checkpoint
    and cache), meant for training batches with teacher-mined hard negatives
    (``data.hard_negatives``, :mod:`lightning_mlsr.data.training.negatives`), the triples whose
    margins it compares; a batch without them (validation) compares each positive with the
    other queries' positives. The teacher's scores are divided by ``teacher_temperature``, which
    so sets the scale of its margins (0.05: cosine margins times 20); the student's dot
    products by ``student_temperature``.

    Args:
        teacher, doc_teacher, checkpoint, cache_size: as :class:`Distillation`.
        weight: multiplier of the MarginMSE term.
        teacher_temperature: divides the teacher's scores.
        student_temperature: divides the student's scores.

    Shape:
        student q ``(B, V)``, d ``(B * (1 + n), V)`` and the two tokenized batches -> scalar.
    """

    def forward(
        self,
        q: torch.Tensor,
        d: torch.Tensor,
        queries: Mapping[str, torch.Tensor],
        docs: Mapping[str, torch.Tensor],
        false_negatives: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Weighted MarginMSE over each query's (positive, hard negative) pairs.

        Shape: q ``(B, V)``, d ``(N, V)``, false_negatives ``(B, N)`` -> scalar.
        """
        b = q.shape[0]
        if d.shape[0] < b or d.shape[0] % b:
            raise ValueError(
                f"MarginMSE: a batch of {b} queries and {d.shape[0]} documents; it needs the "
                "B positives, then the same number of hard negatives for every query "
                "(data.hard_negatives with negatives_per_query)"
            )
        student = q.float() @ d.float().T / self.student_temperature  # (B, N)
        teacher = self.teacher_scores(queries, docs)  # (B, N)
        return self.weight * margin_mse(student, teacher, d.shape[0] // b - 1, false_negatives)
