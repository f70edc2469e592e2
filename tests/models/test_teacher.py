"""The frozen dense teacher: frozen whatever its parent does, its embedding cache against
the uncached encoder, its checkpoint loading, and its fingerprint against a reference hash."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from lightning_mlsr.models.teacher import DenseTeacher
from tests.helpers import TableTeacher, token_batch


class _FixedTeacher(torch.nn.Module):
    """Returns the batch's ``emb`` as its embedding, and has one (frozen) parameter."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return inputs["emb"] * self.scale


def test_the_teacher_stays_frozen_and_scores_every_query_against_every_document() -> None:
    g = torch.Generator().manual_seed(2)
    tq, td = torch.randn(4, 3, generator=g), torch.randn(6, 3, generator=g)
    parent = torch.nn.Module()
    parent.teacher = DenseTeacher(_FixedTeacher())
    parent.train()
    teacher: DenseTeacher = parent.teacher
    assert not teacher.training and not teacher.query_encoder.training
    assert not any(p.requires_grad for p in teacher.parameters())
    scores = teacher.scores({"emb": tq}, {"emb": td})
    torch.testing.assert_close(scores, tq @ td.T)
    assert not scores.requires_grad


def test_the_cache_gives_the_uncached_scores_and_encodes_each_text_once() -> None:
    cached, plain = TableTeacher(), TableTeacher()
    cached_teacher = DenseTeacher(cached, cache_size=100)
    plain_teacher = DenseTeacher(plain, cache_size=0)
    batches = [
        (token_batch([[1, 2], [3], [4, 5, 6]], 4), token_batch([[7], [8, 9], [1, 2]], 3)),
        # the same texts again, padded to another length and in another order, plus a new one
        (token_batch([[3], [1, 2], [10, 11]], 5), token_batch([[1, 2], [7], [12]], 2)),
    ]
    for queries, docs in batches:
        torch.testing.assert_close(
            cached_teacher.scores(queries, docs), plain_teacher.scores(queries, docs)
        )
    assert plain.seen == 12  # 2 batches x (3 queries + 3 documents)
    assert cached.seen == 4 + 4  # queries: 3 then 1 new; documents: 3 then 1 new (shared teacher)
    assert len(cached_teacher._cache["query"]) == 4 and len(cached_teacher._cache["doc"]) == 4


def test_the_cache_drops_the_least_recently_used_beyond_its_size() -> None:
    teacher = TableTeacher()
    frozen = DenseTeacher(teacher, cache_size=2)
    for rows in ([[1]], [[2]], [[1]], [[3]]):  # [2] is the least recently used when [3] comes
        frozen.embed("query", token_batch(rows, 2))
    assert list(frozen._cache["query"]) == [
        torch.tensor([1]).numpy().tobytes(),
        torch.tensor([3]).numpy().tobytes(),
    ]
    seen = teacher.seen
    frozen.embed("query", token_batch([[1], [3]], 2))
    assert teacher.seen == seen  # both cached
    frozen.embed("query", token_batch([[2]], 2))
    assert teacher.seen == seen + 1  # [2] was dropped and is encoded again


def test_the_cache_encodes_a_text_repeated_in_one_batch_once() -> None:
    teacher = TableTeacher()
    frozen = DenseTeacher(teacher, cache_size=10)
    batch = token_batch([[4, 5], [6], [4, 5], [4, 5]], 3)  # one caption for three queries
    got = frozen.embed("doc", batch)
    assert teacher.seen == 2
    torch.testing.assert_close(got, DenseTeacher(TableTeacher(), cache_size=0).embed("doc", batch))


class _Linear(torch.nn.Module):
    """A tiny encoder with weights to load: ``emb @ w``."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.eye(3))

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return inputs["emb"] @ self.w


def test_a_dense_checkpoint_loads_each_side_into_its_own_encoder(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(4)
    wq, wd = torch.randn(3, 3, generator=g), torch.randn(3, 3, generator=g)
    path = tmp_path / "dense.ckpt"
    state = {"query_encoder.w": wq, "doc_encoder.w": wd, "loss.x": torch.zeros(1)}
    torch.save({"state_dict": state}, path)
    teacher = DenseTeacher(_Linear(), checkpoint=str(path))  # one encoder for both sides
    assert teacher.query_encoder is not teacher.doc_encoder  # the sides differ: a copy
    torch.testing.assert_close(teacher.query_encoder.w, wq)
    torch.testing.assert_close(teacher.doc_encoder.w, wd)
    x = torch.randn(2, 3, generator=g)
    torch.testing.assert_close(teacher.scores({"emb": x}, {"emb": x}), (x @ wq) @ (x @ wd).T)


def test_a_missing_or_foreign_teacher_checkpoint_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nowhere.ckpt.*does not exist"):
        DenseTeacher(_Linear(), checkpoint=str(tmp_path / "nowhere.ckpt"))
    path = tmp_path / "sparse.ckpt"
    torch.save({"state_dict": {"query_encoder.w": torch.eye(3)}}, path)
    with pytest.raises(ValueError, match=r"has no doc_encoder\.\* weights"):
        DenseTeacher(_Linear(), checkpoint=str(path))


def _reference_fingerprint(query: torch.nn.Module, doc: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for side, module in (("query_teacher", query), ("doc_teacher", doc)):
        for name, tensor in module.state_dict().items():
            t = tensor.detach().contiguous()
            digest.update(f"{side}.{name}|{t.dtype}|{tuple(t.shape)}".encode())
            digest.update(t.numpy().tobytes())
    return digest.hexdigest()


def test_the_fingerprint_is_the_hash_of_the_weights_as_built() -> None:
    query, doc = _Linear(), _Linear()
    with torch.no_grad():
        doc.w.add_(1.0)
    teacher = DenseTeacher(query, doc_encoder=doc)
    assert teacher.fingerprint() == _reference_fingerprint(query, doc)
    assert teacher.fingerprint() != DenseTeacher(_Linear()).fingerprint()
    teacher.to(torch.float64)  # a precision plugin's cast after building changes nothing
    assert teacher.fingerprint() == _reference_fingerprint(_Linear(), doc.float())
