"""An image experiment's first training step comes before its corpus is encoded (issue 8.5).

Kept apart from ``test_features.py`` so that the fill subprocess there does not import
Lightning.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from lightning.pytorch import Callback

ROOT = Path(__file__).resolve().parents[2]


class StopAtFirstTrainBatch(Callback):
    """Counts the images the feature store's frozen backbone copy encodes until training
    starts, then stops the run."""

    encoded: list[int] = []
    at_first_step: int | None = None
    on_disk: int | None = None  # also catches features filled before setup (prepare_data)

    def on_fit_start(self, trainer, pl_module) -> None:  # after every setup hook
        store = trainer.datamodule.collator.features
        store.computer.compute.register_forward_pre_hook(
            lambda _m, args: StopAtFirstTrainBatch.encoded.append(len(args[0]))
        )

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        StopAtFirstTrainBatch.at_first_step = sum(StopAtFirstTrainBatch.encoded)
        StopAtFirstTrainBatch.on_disk = len(trainer.datamodule.collator.features)
        raise _FirstBatchReached


class _FirstBatchReached(Exception):
    pass


def test_an_image_experiment_starts_training_before_encoding_the_corpus(tmp_path: Path) -> None:
    from lightning_mlsr.training.cli import main

    args = [
        "fit",
        "--config",
        str(ROOT / "experiments" / "paper" / "m1_mlm_mlm_image.yaml"),
        "--trainer.fast_dev_run=1",
        "--trainer.logger=false",
        f"--trainer.default_root_dir={tmp_path}",
        "--data.batching.batch_size=8",
        f"--data.features.cache_dir={tmp_path / 'cache'}",
        "--model.doc_encoder.init_args.image_size=64",
        "--trainer.callbacks+=tests.data.test_features_cli.StopAtFirstTrainBatch",
    ]
    StopAtFirstTrainBatch.encoded, StopAtFirstTrainBatch.at_first_step = [], None
    with pytest.raises(_FirstBatchReached):
        main(args)
    # the first batch's images (8 pairs), not the collection's 1,911
    assert StopAtFirstTrainBatch.at_first_step is not None
    assert 1 <= StopAtFirstTrainBatch.at_first_step <= 8
    assert StopAtFirstTrainBatch.on_disk is not None and StopAtFirstTrainBatch.on_disk <= 8


class CountEncodedImages(Callback):
    """Counts every image the feature store's frozen backbone copy encodes during the run."""

    encoded: list[int] = []

    def on_fit_start(self, trainer, pl_module) -> None:  # after every setup hook
        store = trainer.datamodule.collator.features
        store.computer.compute.register_forward_pre_hook(
            lambda _m, args: CountEncodedImages.encoded.append(len(args[0]))
        )


def test_a_whole_fast_dev_run_of_an_image_experiment_encodes_a_few_batches(tmp_path: Path) -> None:
    """Training step *and* validation of a fast_dev_run: one batch of training pairs, one
    of validation pairs and one of the evaluation corpus — not the collection's 1,911
    images."""
    from lightning_mlsr.training.cli import main

    args = [
        "fit",
        "--config",
        str(ROOT / "experiments" / "paper" / "mlp_mlm_image.yaml"),
        "--trainer.fast_dev_run=1",
        "--trainer.logger=false",
        f"--trainer.default_root_dir={tmp_path}",
        "--data.batching.batch_size=8",
        "--data.batching.eval_batch_size=16",
        f"--data.features.cache_dir={tmp_path / 'cache'}",
        "--model.doc_encoder.init_args.image_size=64",
        "--trainer.callbacks+=tests.data.test_features_cli.CountEncodedImages",
    ]
    CountEncodedImages.encoded = []
    cli = main(args)
    assert "val/nDCG@10" in cli.trainer.callback_metrics  # the evaluation did run
    assert float(cli.trainer.callback_metrics["val/eval_docs"]) == 16  # one corpus batch
    # a batch of training pairs, one of validation pairs (held-out loss), one corpus batch
    assert 1 <= sum(CountEncodedImages.encoded) <= 8 + 8 + 16
