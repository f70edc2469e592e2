"""A final experiment's best checkpoint tested on other collections: the same scores
where the collection differs only in its drawings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lightning_mlsr.data import load_collection
from research.report import cross_domain, fitting
from tests.research.helpers import (
    REGISTRY,
)


def test_cross_domain_tests_the_same_checkpoint_on_other_collections(tmp_path: Path) -> None:
    """A short M3 fit tested on the Twemoji variant (the same captions, queries and judgments:
    a caption model must score every query exactly as at home) and on the descriptive queries
    (the test queries of emoji-describe)."""
    from lightning_mlsr.training.cli import main
    from research.report.evaluations import written_evaluation

    name = "m3_mlp_mlp_caption"
    assert REGISTRY.cross_domain_of(name) == ["emoji-describe", "stamps"]
    budget = [
        "--trainer.max_epochs=1",
        "--trainer.limit_train_batches=2",
        "--trainer.limit_val_batches=1",
    ]
    cli = main([*fitting.fit_command(REGISTRY, name, 42, tmp_path), *budget])
    best = cli.trainer.checkpoint_callback.best_model_path
    cli.trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path=best)
    home = written_evaluation(cli.trainer, "test").per_query(
        cli.datamodule.qrels("test"), REGISTRY.measures
    )
    got = cross_domain.test_on_collections(REGISTRY, cli, best, ["emoji-twemoji", "emoji-describe"])
    assert got["emoji-twemoji"]["per_query"] == home
    assert got["emoji-twemoji"]["test"]["nDCG@10"] == pytest.approx(
        np.mean(list(home["nDCG@10"].values())), abs=1e-6
    )
    describe = load_collection("emoji-describe")
    scored = set(got["emoji-describe"]["per_query"]["nDCG@10"])
    assert scored == set(describe.query_ids("test")) and scored.isdisjoint(home["nDCG@10"])
    assert cli.datamodule.collection_source == "emoji"  # the run's own DataModule is untouched
