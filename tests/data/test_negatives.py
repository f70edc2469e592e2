"""Teacher-mined hard negatives (lightning_mlsr.data.training.negatives) and training batches that
hold them: the mined lists against a brute-force ranking of the teacher's cosines, the
reader's errors, the sampler, and a batch's documents and false-negative mask against the
qrels; InfoNCE and distillation over more documents than queries, by hand."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lightning_mlsr.baselines.common import split_texts
from lightning_mlsr.data import load_collection
from lightning_mlsr.data.errors import DataError
from lightning_mlsr.data.training.negatives import HardNegatives
from lightning_mlsr.generate.hard_negatives import mine_hard_negatives
from lightning_mlsr.objectives.distillation import KLDistillation
from lightning_mlsr.objectives.ranking import InfoNCE
from tests.helpers import dense_teacher_checkpoint, teacher_cosines, write_atomic


def _read_tsv(path: Path) -> dict[str, list[str]]:
    rows = [line.split("\t") for line in path.read_text("utf-8").splitlines()]
    return {r[0]: r[1:] for r in rows}


def test_mined_negatives_are_the_teachers_best_unjudged_captions(tmp_path: Path) -> None:
    source = write_atomic(tmp_path / "source")  # 4 images; train: T1 -> I1 (I2 graded 0), T2 -> I2
    ckpt = dense_teacher_checkpoint(tmp_path / "teacher.pt")
    out = tmp_path / "neg.tsv"
    info = mine_hard_negatives(source, out, ckpt, depth=2)
    c = load_collection(source)
    ids, texts = split_texts(c, "train")
    cos = teacher_cosines(ckpt, texts, c.images.captions())  # (Q, 4)
    image_ids = list(c.images.ids)
    expected = {}
    for qid, row in zip(ids, cos, strict=True):
        judged = {i for i, rel in c.qrels["train"][qid].items() if rel > 0}
        ranked = [image_ids[j] for j in row.argsort(descending=True).tolist()]
        expected[qid] = [i for i in ranked if i not in judged][:2]
    assert _read_tsv(out) == expected
    assert "I1" not in expected["T1"] and "I2" not in expected["T2"]
    assert info == {"queries": 2, "images": 4, "depth": 2, "split": "train"}
    assert not list(tmp_path.glob(".neg.tsv.tmp*"))  # written aside, renamed


def test_reader_maps_ids_to_rows_and_fails_clearly(tmp_path: Path, caplog) -> None:
    c = load_collection(write_atomic(tmp_path / "source"))
    path = tmp_path / "neg.tsv"
    path.write_text("T2\tI4\tI9\tI1\nT1\tI3\n", "utf-8")
    with caplog.at_level(logging.WARNING, logger="lightning_mlsr.data"):
        neg = HardNegatives.read(path, c)
    assert "1 negative image id(s) are not in collection" in caplog.text  # I9, left out
    rows = {c.images.ids[int(r)] for r in neg.rows}
    t2 = c.texts.index("T2")
    got = [c.images.ids[int(r)] for r in neg.rows[neg.offsets[t2] : neg.offsets[t2 + 1]]]
    assert got == ["I4", "I1"] and rows == {"I4", "I1", "I3"}  # ranking kept
    assert neg.count(np.array([c.texts.index(t) for t in ("T1", "T2", "T3")])).tolist() == [1, 2, 0]
    with pytest.raises(DataError, match="T3"):
        neg.check_covers(np.array([c.texts.index("T3")]), c)

    path.write_text("T1\tI3\nTX\tI2\n", "utf-8")
    with pytest.raises(DataError, match="TX"):
        HardNegatives.read(path, c)
    with pytest.raises(DataError, match="does not exist"):
        HardNegatives.read(tmp_path / "missing.tsv", c)


def test_sample_draws_from_each_querys_first_depth_without_replacement() -> None:
    # text 0: images 10..19 ranked; text 1: image 7 only
    neg = HardNegatives(np.array([0, 10, 11]), np.array([*range(10, 20), 7]))
    draws = neg.sample([0, 1, 0], 3, np.random.default_rng(0), depth=4)  # (3, 3)
    assert draws.shape == (3, 3)
    for row in (draws[0], draws[2]):
        assert set(row.tolist()) <= {10, 11, 12, 13} and len(set(row.tolist())) == 3
    assert draws[1].tolist() == [7, 7, 7]  # fewer than n: with replacement
    again = neg.sample([0, 1, 0], 3, np.random.default_rng(0), depth=4)
    assert np.array_equal(draws, again)
    seen = {int(x) for _ in range(50) for x in neg.sample([0], 4, np.random.default_rng(_))[0]}
    assert seen == set(range(10, 20))  # depth None: the whole list


def test_training_batches_hold_each_pairs_negatives_after_the_positives(tmp_path: Path) -> None:
    from lightning_mlsr.data.datamodule import RetrievalDataModule
    from lightning_mlsr.data.settings import BatchingSettings, NegativeSettings
    from lightning_mlsr.models import MLMHead
    from tests.helpers import batch_inputs

    c = load_collection("emoji")
    ids, _ = split_texts(c, "train")
    images = list(c.images.ids)
    rng = np.random.default_rng(0)
    lists = {q: [images[j] for j in rng.choice(len(images), 5, replace=False)] for q in ids}
    lists[ids[0]][0] = next(iter(c.qrels["train"][ids[1]]))  # another query's positive
    path = tmp_path / "neg.tsv"
    path.write_text("".join("\t".join([q, *v]) + "\n" for q, v in lists.items()), "utf-8")
    dm = RetrievalDataModule(
        "emoji",
        batching=BatchingSettings(batch_size=8),
        negatives=NegativeSettings(file=str(path), per_query=2, depth=3),
    )
    enc = MLMHead()
    dm.set_batch_inputs(batch_inputs(enc, enc))
    batch = next(iter(dm.train_dataloader()))
    b = batch["query_idx"].shape[0]
    docs = batch["doc_idx"].tolist()
    assert b == 8 and len(docs) == 8 * 3
    assert batch["doc"]["input_ids"].shape[0] == 24
    for i, t in enumerate(batch["query_idx"].tolist()):
        qid = c.texts.ids[t]
        assert images[docs[i]] in c.qrels["train"][qid]  # the positive, column i
        negs = [images[j] for j in docs[b + 2 * i : b + 2 * i + 2]]
        assert set(negs) <= set(lists[qid][:3]), (qid, negs)
    # the mask: column j is judged relevant to query i and is not its positive
    expected = torch.tensor(
        [
            [
                j != i and c.qrels["train"][c.texts.ids[t]].get(images[d], 0) > 0
                for j, d in enumerate(docs)
            ]
            for i, t in enumerate(batch["query_idx"].tolist())
        ]
    )
    assert torch.equal(batch["false_negatives"], expected)


def test_hard_negatives_need_a_list_for_every_training_query(tmp_path: Path) -> None:
    from lightning_mlsr.data.datamodule import RetrievalDataModule
    from lightning_mlsr.data.settings import NegativeSettings

    c = load_collection("emoji")
    ids, _ = split_texts(c, "train")
    path = tmp_path / "neg.tsv"
    path.write_text(f"{ids[0]}\t{c.images.ids[0]}\n", "utf-8")
    dm = RetrievalDataModule("emoji", negatives=NegativeSettings(file=str(path)))
    with pytest.raises(DataError, match="have no hard negatives"):
        dm.hard_negatives()
    with pytest.raises(ValueError, match="data.negatives.per_query must be >= 1"):
        RetrievalDataModule("emoji", negatives=NegativeSettings(file=str(path), per_query=0))


def test_infonce_and_distillation_score_extra_documents_as_negatives() -> None:
    g = torch.Generator().manual_seed(0)
    q, d = torch.rand(3, 7, generator=g), torch.rand(5, 7, generator=g)  # 3 positives + 2 negs
    mask = torch.zeros(3, 5, dtype=torch.bool)
    mask[0, 4] = True  # document 4 is also relevant to query 0
    logits = q @ d.T / 0.5
    by_hand = 0.0
    for i in range(3):
        keep = [j for j in range(5) if not mask[i, j]]
        by_hand += -(logits[i, i] - torch.logsumexp(logits[i, keep], 0))
    loss = InfoNCE(temperature=0.5)(q, d, mask)
    assert torch.allclose(loss, by_hand / 3, atol=1e-6)
    with pytest.raises(ValueError, match="positive document"):
        InfoNCE()(q, d[:2])

    # distillation: the teacher's (3, 5) scores over the same documents, the false
    # negative left out of both softmaxes (the positives never are)
    tq, td = torch.randn(3, 4, generator=g), torch.randn(5, 4, generator=g)
    kd = KLDistillation(teacher_temperature=0.1)
    teacher = tq @ td.T / 0.1
    student = q @ d.T
    want = 0.0
    for i in range(3):
        keep = [j for j in range(5) if not mask[i, j]]
        p, r = F.softmax(teacher[i, keep], 0), F.softmax(student[i, keep], 0)
        want += float((p * (p / r).log()).sum()) / 3
    got = kd(q, d, tq @ td.T, mask)
    assert float(got) == pytest.approx(want, rel=1e-5)
