"""The frozen dense teacher of distillation and of teacher-built data (pseudo-queries, hard
negatives): its weights loaded from a trained dense bi-encoder checkpoint, its embeddings
cached per text on the device it lives on, and a fingerprint of its weights.

The losses that use its scores live in :mod:`lightning_mlsr.objectives.distillation`; they
receive the scores and hold no model.
"""

from __future__ import annotations

import copy
import hashlib
import os
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from torch import nn

from lightning_mlsr.io.checkpoints import CheckpointError, load_checkpoint
from lightning_mlsr.io.pretrained import load_tokenizer
from lightning_mlsr.models.dense import DenseTextHead
from lightning_mlsr.models.encoder import Encoder

__all__ = ["DenseTeacher", "load_dense_text_teacher"]

_SIDES = ("query", "doc")


class DenseTeacher(nn.Module):
    """A frozen dense bi-encoder: embeddings of tokenized texts and their in-batch scores.

    The teacher reads the same tokenized batch as the student, so its tokenizer must be the
    student's (:class:`~lightning_mlsr.training.system.module.SparseBiEncoder` checks the
    vocabularies). With ``checkpoint``, its weights come from a trained dense run (a
    Lightning checkpoint of e.g. ``experiments/baselines/dense_caption.yaml``: ``query_encoder.*`` and
    ``doc_encoder.*``); otherwise the backbone's own weights are used. It stays in eval mode
    with no gradients, whatever its parent does.

    Args:
        encoder: the query encoder (e.g. :class:`~lightning_mlsr.models.dense.DenseTextHead`
            on ``minilm-l6``), and the document encoder unless ``doc_encoder``.
        doc_encoder: a separate document encoder; None shares ``encoder`` (a checkpoint with
            different query and document weights then gets a copy).
        checkpoint: path of a dense bi-encoder checkpoint to load.
        cache_size: the teacher is frozen, so a text's embedding never changes: up to this
            many embeddings per side are kept (least recently used dropped first), keyed by
            the text's token ids, and only texts not seen before go through the encoder. 0
            computes every batch afresh. The default holds the bundled collection whole
            (~5.5k texts; 384 floats each for MiniLM-L6).

    Shape:
        tokenized texts ``(B, L)`` -> embeddings ``(B, H)``; scores ``(B, N)``.
    """

    def __init__(
        self,
        encoder: nn.Module,
        doc_encoder: nn.Module | None = None,
        checkpoint: str | None = None,
        cache_size: int = 200_000,
    ) -> None:
        super().__init__()
        if cache_size < 0:
            raise ValueError(f"DenseTeacher: cache_size must be >= 0, got {cache_size}")
        self.cache_size = int(cache_size)
        # per side: token ids of one text (bytes) -> its row in the side's embedding table,
        # least recently used first; the tables (R, H) live where the module does (_apply),
        # so a cached embedding never crosses between host and device
        self._cache: dict[str, OrderedDict[bytes, int]] = {s: OrderedDict() for s in _SIDES}
        self._table: dict[str, torch.Tensor | None] = dict.fromkeys(_SIDES)
        self._free: dict[str, list[int]] = {s: [] for s in _SIDES}  # rows of evicted texts
        self.query_encoder = encoder
        self.doc_encoder = doc_encoder if doc_encoder is not None else encoder
        if checkpoint is not None:
            self._load(checkpoint)
        self.checkpoint = checkpoint
        self.requires_grad_(False)
        self.eval()
        # now, as built: a precision plugin may cast the teacher later (bf16-true)
        self._fingerprint = self._hash_weights()

    def fingerprint(self) -> str:
        """SHA-256 of the teacher's weights as built (names, dtypes, shapes and bytes of both
        sides; the teacher is frozen). A student's checkpoint records it instead of the
        weights, which building the student loads again from ``checkpoint`` or the backbone."""
        return self._fingerprint

    def _hash_weights(self) -> str:
        # each side's weights under "query_teacher." / "doc_teacher.", the names the
        # fingerprints in student checkpoints are made with
        digest = hashlib.sha256()
        for side, encoder in (("query", self.query_encoder), ("doc", self.doc_encoder)):
            for name, tensor in encoder.state_dict(prefix=f"{side}_teacher.").items():
                t = tensor.detach().cpu().contiguous()
                digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
                digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        return digest.hexdigest()

    def _load(self, checkpoint: str) -> None:
        path = Path(checkpoint)
        if not path.is_file():
            raise FileNotFoundError(
                f"DenseTeacher: teacher checkpoint {checkpoint!r} does not exist; train one "
                "with experiments/baselines/dense_caption.yaml or set checkpoint: null to use the "
                "backbone's own weights"
            )
        try:  # weights_only: a teacher file never runs code while it loads
            state = load_checkpoint(path)
        except CheckpointError as err:
            raise ValueError(f"DenseTeacher: teacher checkpoint: {err}") from err
        state = state.get("state_dict", state)
        parts = {}
        for prefix in ("query_encoder.", "doc_encoder."):
            parts[prefix] = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
            if not parts[prefix]:
                raise ValueError(
                    f"DenseTeacher: {checkpoint!r} has no {prefix}* weights; pass a checkpoint "
                    "of a bi-encoder run (e.g. experiments/baselines/dense_caption.yaml)"
                )
        if self.doc_encoder is self.query_encoder:
            self.doc_encoder = copy.deepcopy(self.query_encoder)
        self.query_encoder.load_state_dict(parts["query_encoder."])
        self.doc_encoder.load_state_dict(parts["doc_encoder."])

    def check_reads_tokens_of(self, query_student: Encoder, doc_student: Encoder) -> None:
        """The teacher reads the student's token ids, so each side must tokenize as the
        student's does (the same backbone name, or the same vocabulary)."""
        pairs = (
            ("query", query_student, self.query_encoder),
            ("document", doc_student, self.doc_encoder),
        )
        for side, student, teacher in pairs:
            names = (student.text_backbone_name, getattr(teacher, "text_backbone_name", None))
            if names[0] is None or names[1] is None:
                raise ValueError(
                    f"distillation needs text on the {side} side for both student and teacher "
                    f"(student {type(student).__name__}, teacher {type(teacher).__name__}); "
                    "the teacher scores the same tokenized batch as the student"
                )
            if (
                names[0] != names[1]
                and load_tokenizer(names[0]).get_vocab() != load_tokenizer(names[1]).get_vocab()
            ):
                raise ValueError(
                    f"distillation: the {side} teacher's backbone {names[1]!r} tokenizes "
                    f"differently from the student's {names[0]!r}; use a teacher with the same "
                    "vocabulary (e.g. minilm-l6 for BERT-uncased students)"
                )

    def train(self, mode: bool = True) -> DenseTeacher:
        """The teacher is frozen: it stays in eval mode (no dropout) whatever the mode."""
        return super().train(False)

    @torch.no_grad()
    def embed(self, side: str, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The teacher's embeddings of one side's (``query`` or ``doc``) tokenized texts,
        from the cache where it has them. Shape: ``(B, L)`` -> ``(B, H)`` fp32."""
        encoder = self.query_encoder if side == "query" else self.doc_encoder
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
    ) -> DenseTeacher:
        """Move (or cast) the embedding tables with the module, as its buffers would be
        (they are not buffers: DDP would broadcast them, and each rank has its own)."""
        super()._apply(fn, recurse)
        self._table = {s: None if t is None else fn(t) for s, t in self._table.items()}
        return self

    @torch.no_grad()
    def scores(
        self, queries: Mapping[str, torch.Tensor], docs: Mapping[str, torch.Tensor]
    ) -> torch.Tensor:
        """The teacher's in-batch scores, every query against every document (the dot
        products of its embeddings, cosines for normalised heads). Shape: ``(B, N)`` fp32."""
        q = self.embed("query", queries)  # (B, H)
        d = self.embed("doc", docs)  # (N, H)
        return q @ d.T


def load_dense_text_teacher(
    checkpoint: str | os.PathLike[str],
    backbone: str = "minilm-l6",
    pooling: str = "mean",
    cache_size: int = 0,
) -> DenseTeacher:
    """A trained dense text bi-encoder (``experiments/baselines/dense_caption.yaml``) as a frozen
    teacher; no cache by default (tools that encode each text once gain nothing from it)."""
    encoder = DenseTextHead(backbone=backbone, pooling=pooling)  # type: ignore[arg-type]
    return DenseTeacher(encoder, checkpoint=str(checkpoint), cache_size=cache_size)
