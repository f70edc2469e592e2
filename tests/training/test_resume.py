"""Resuming from a mid-epoch checkpoint trains on the batches an uninterrupted run sees, and
``last.ckpt`` is the newest state at every epoch's end."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.demos.boring_classes import BoringModel
from torch.utils.data import DistributedSampler

from lightning_mlsr.data.datamodule import RetrievalDataModule
from lightning_mlsr.data.settings import BatchingSettings
from lightning_mlsr.data.training.sampler import ResumableSampler
from lightning_mlsr.io.checkpoints import load_checkpoint, newest_resumable
from lightning_mlsr.models import MLPHead
from lightning_mlsr.objectives.regularizers import FLOPS
from lightning_mlsr.training.callbacks.checkpointing import RunCheckpoint
from lightning_mlsr.training.system.module import SparseBiEncoder
from tests.helpers import batch_inputs, quiet_trainer


def test_sampler_order_is_distributed_samplers_and_skips_seen_batches() -> None:
    for epoch in (0, 3):
        shards = []
        for rank in range(2):
            ours = ResumableSampler(11, batch_size=2, seed=5, num_replicas=2, rank=rank)
            ours.set_epoch(epoch)
            theirs = DistributedSampler(range(11), num_replicas=2, rank=rank, seed=5)
            theirs.set_epoch(epoch)
            assert list(ours) == list(theirs)
            shards.append(list(ours))
        assert set(shards[0]) | set(shards[1]) == set(range(11))
    sampler = ResumableSampler(11, batch_size=2, seed=5)
    full = list(sampler)
    sampler.resume(epoch=0, batches_seen=2)
    assert list(sampler) == full[4:] and len(sampler) == 11  # epoch length is unchanged
    sampler.set_epoch(1)  # the next epoch starts from its first batch
    sampler.set_epoch(0)
    assert list(sampler) == full


def test_sampler_state_resumes_the_same_order_or_warns_and_restarts(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sampler = ResumableSampler(11, batch_size=2, seed=5, epoch=1)
    full = list(sampler)
    state = sampler.state_dict(batches_seen=3)
    assert state == {"seed": 5, "epoch": 1, "batches_seen": 3, "batch_size": 2, "world_size": 1}
    resumed = ResumableSampler.resumed(state, 11, batch_size=2, seed=99, epoch=1)
    assert list(resumed) == full[6:]  # the checkpoint's seed, after its 3 batches
    next_epoch = ResumableSampler.resumed(state, 11, batch_size=2, seed=99, epoch=2)
    assert next_epoch.seed == 5 and len(list(next_epoch)) == 11  # a new epoch: from its start
    with caplog.at_level("WARNING", logger="lightning_mlsr.data"):
        other = ResumableSampler.resumed(state, 11, batch_size=4, seed=99, epoch=1)
    assert other.seed == 99 and len(list(other)) == 11
    assert "batch size 2 on 1 process(es), this run uses 4 on 1" in caplog.text


def _first_rows(dm: RetrievalDataModule, n: int) -> list[list[int]]:
    loader = iter(dm.train_dataloader())
    return [next(loader)["query_idx"].tolist() for _ in range(n)]


def test_datamodule_state_positions_the_next_train_loader(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("PL_GLOBAL_SEED", "3")
    heads = (MLPHead(), MLPHead())
    fresh = RetrievalDataModule("emoji", batching=BatchingSettings(batch_size=4))
    fresh.set_batch_inputs(batch_inputs(*heads))
    batches = _first_rows(fresh, 3)

    order = {"seed": 3, "epoch": 0, "batches_seen": 2, "batch_size": 4, "world_size": 1}
    monkeypatch.setenv("PL_GLOBAL_SEED", "99")  # the checkpoint's seed wins
    resumed = RetrievalDataModule("emoji", batching=BatchingSettings(batch_size=4))
    resumed.set_batch_inputs(batch_inputs(*heads))
    resumed.load_state_dict({"train_order": order})
    assert _first_rows(resumed, 1) == batches[2:3]

    # another batch size cannot continue the same order: said, and the epoch starts afresh
    other = RetrievalDataModule("emoji", batching=BatchingSettings(batch_size=8))
    other.set_batch_inputs(batch_inputs(*heads))
    other.load_state_dict({"train_order": order})
    with caplog.at_level("WARNING", logger="lightning_mlsr.data"):
        _first_rows(other, 1)
    assert "batch size 4 on 1 process(es), this run uses 8 on 1" in caplog.text


class _Steps(L.Callback):
    """(global step after the batch, loss, query rows) of every training batch."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, float, list[int]]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = float(outputs["loss"])
        self.seen.append((trainer.global_step, loss, batch["query_idx"].tolist()))


def _model() -> SparseBiEncoder:
    torch.manual_seed(0)
    model = SparseBiEncoder(
        MLPHead(pooling="sum"),
        MLPHead(pooling="max"),
        doc_regularizer=FLOPS(weight=1.0, ramp_steps=4),
        optimizer=partial(torch.optim.AdamW, lr=1e-3),
    )
    for module in model.modules():  # dropout draws from the global RNG, which is not
        if isinstance(module, torch.nn.Dropout):  # part of a checkpoint; the data order is
            module.p = 0.0
    return model


def _fit(root: Path, recorder: _Steps, every: int, ckpt_path: str | None = None) -> None:
    trainer = L.Trainer(
        max_steps=10,
        limit_train_batches=4,  # epochs of 4 batches: the resume crosses epoch boundaries
        limit_val_batches=0,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[
            recorder,
            ModelCheckpoint(
                dirpath=root, filename="{step}", every_n_train_steps=every, save_top_k=-1
            ),
        ],
        default_root_dir=root,
    )
    trainer.fit(
        _model(),
        RetrievalDataModule("emoji", batching=BatchingSettings(batch_size=4)),
        ckpt_path=ckpt_path,
    )


@pytest.mark.slow  # two short fits (~30-50 s on 2 busy cores)
@pytest.mark.filterwarnings("error:.*dataloader is not resumable")
@pytest.mark.parametrize(
    "step",
    [5, 8],  # mid-epoch (batch 1 of 4 in epoch 1); the last batch of epoch 1
    ids=["mid_epoch", "epoch_end"],
)
def test_resumed_run_trains_on_the_same_batches_with_the_same_losses(
    tmp_path: Path, step: int
) -> None:
    L.seed_everything(7)
    full = _Steps()
    _fit(tmp_path / "full", full, every=step)
    assert [s for s, _, _ in full.seen] == list(range(1, 11))
    ckpt = tmp_path / "full" / f"step={step}.ckpt"

    L.seed_everything(123)  # the order comes from the checkpoint, not from this seed
    resumed = _Steps()
    _fit(tmp_path / "resumed", resumed, every=step, ckpt_path=str(ckpt))
    assert [s for s, _, _ in resumed.seen] == list(range(step + 1, 11))
    assert [rows for _, _, rows in resumed.seen] == [rows for _, _, rows in full.seen[step:]]
    assert [loss for _, loss, _ in resumed.seen] == pytest.approx(
        [loss for _, loss, _ in full.seen[step:]], rel=1e-6, abs=1e-7
    )
    # the epochs of the uninterrupted run really were different orders
    assert full.seen[0][2] != full.seen[4][2]


class _Worsening(BoringModel):
    """Logs ``val/nDCG@10`` lower after each epoch: only the first epoch improves."""

    def on_validation_epoch_end(self) -> None:
        self.log("val/nDCG@10", 0.5 - 0.1 * self.current_epoch)


@pytest.mark.parametrize("check_val_every_n_epoch", [1, 2])
def test_last_ckpt_holds_the_newest_step_after_an_epoch_that_does_not_improve(
    tmp_path: Path, check_val_every_n_epoch: int
) -> None:
    """A hard kill after such an epoch resumes from it (Lightning 2.6 alone leaves last.ckpt
    at the last improving epoch: 4 of 8 steps), also where an epoch is not validated."""
    checkpoint = RunCheckpoint(monitor="val/nDCG@10", mode="max", save_last=True)
    trainer = quiet_trainer(
        tmp_path,
        [checkpoint],
        max_epochs=3,
        limit_train_batches=4,
        limit_val_batches=1,
        check_val_every_n_epoch=check_val_every_n_epoch,
    )
    trainer.fit(_Worsening())
    folder = Path(checkpoint.dirpath)  # type: ignore[arg-type]
    best = {1: "epoch=0-step=4.ckpt", 2: "epoch=1-step=8.ckpt"}[check_val_every_n_epoch]
    assert sorted(p.name for p in folder.iterdir()) == [best, "last.ckpt"]
    assert load_checkpoint(folder / "last.ckpt")["global_step"] == 12
    assert newest_resumable([tmp_path]) == (folder / "last.ckpt").resolve()
