"""A final experiment's best checkpoint tested on other collections: the same scores
where the collection differs only in its drawings."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest

from lightning_mlsr.data import load_collection
from research.report import cross_domain, fitting
from research.report.records import read_json, write_json
from research.report.registry import CrossDomain
from tests.research.helpers import (
    REGISTRY,
)


def test_cross_domain_tests_the_same_checkpoint_on_other_collections(tmp_path: Path) -> None:
    """A short M3 fit tested on the Twemoji variant (the same captions, queries and judgments:
    a caption model must score every query exactly as at home) and on the descriptive queries
    (the test queries of emoji-describe); then the same checkpoint, kept by a finished run,
    tested on another collection without a refit once it reproduces the run's figures."""
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
    home_test = written_evaluation(cli.trainer, "test")
    home = home_test.per_query(cli.datamodule.qrels("test"), REGISTRY.measures)
    got = cross_domain.test_on_collections(REGISTRY, cli, best, ["emoji-twemoji", "emoji-describe"])
    assert got["emoji-twemoji"]["per_query"] == home
    assert got["emoji-twemoji"]["test"]["nDCG@10"] == pytest.approx(
        np.mean(list(home["nDCG@10"].values())), abs=1e-6
    )
    describe = load_collection("emoji-describe")
    scored = set(got["emoji-describe"]["per_query"]["nDCG@10"])
    assert scored == set(describe.query_ids("test")) and scored.isdisjoint(home["nDCG@10"])
    assert cli.datamodule.collection_source == "emoji"  # the run's own DataModule is untouched
    # a finished run whose best checkpoint was kept (report run --keep-best): its
    # cross-domain tests come from that checkpoint, not a refit, once it reproduces the run
    registry = dataclasses.replace(
        REGISTRY,
        cross_domain={"emoji-twemoji": CrossDomain("emoji-twemoji", "drawings", (name,))},
    )
    runs = tmp_path / "runs"
    recorded = fitting.run_dir(runs, name, 42) / "metrics.json"
    home_figures = home_test.figures
    write_json(recorded, {"test": {**home_figures, "nDCG@10": home_figures["nDCG@10"] + 0.01}})
    kept = tmp_path / "kept" / "seed42.ckpt"
    kept.parent.mkdir()
    shutil.copyfile(best, kept)
    with pytest.raises(
        ValueError, match=r"is not the best checkpoint of m3_mlp_mlp_caption seed 42"
    ):
        cross_domain.complete_cross_domain(registry, name, 42, tmp_path / "w", budget, runs, kept)
    written = recorded.with_name(cross_domain.CROSS_DOMAIN_FILE)
    assert not written.exists()  # nothing is kept from a checkpoint that is not the run's

    write_json(recorded, {"test": home_figures})
    cross_domain.complete_cross_domain(registry, name, 42, tmp_path / "w", budget, runs, kept)
    record = read_json(written)
    assert record["checkpoint"] == "kept"
    assert record["collections"]["emoji-twemoji"]["checkpoint"] == "kept"
    assert record["in_domain"]["per_query"] == home
    assert record["collections"]["emoji-twemoji"]["per_query"] == home
    assert cross_domain.cross_domain_missing(registry, runs, name, 42) == []


def test_each_collection_is_compared_with_the_in_domain_test_of_its_own_checkpoint(
    tmp_path: Path,
) -> None:
    """One run's cross-domain record fills up from several checkpoints (the run's, a refit,
    the kept one). A collection tested from a refit whose in-domain test differs from the
    checkpoint tested later keeps its own in-domain numbers, and the table pairs it with
    those; an older record (``refit: true``, no per-collection checkpoint) is read as one."""
    from research.report.tables import cross_domain_rows

    name, runs = "m4_mlp_mlp_image_caption", tmp_path / "runs"
    qids = [f"q{i}" for i in range(30)]
    refit = {"test": {}, "per_query": {"nDCG@10": dict.fromkeys(qids, 0.2)}}
    kept = {"test": {}, "per_query": {"nDCG@10": dict.fromkeys(qids, 0.6)}}
    path = fitting.run_dir(runs, name, 42) / cross_domain.CROSS_DOMAIN_FILE
    twemoji = {"test": {}, "per_query": {"nDCG@10": dict.fromkeys(qids, 0.1)}}
    write_json(path, {"refit": True, "in_domain": refit, "collections": {"emoji-twemoji": twemoji}})
    openmoji = {"test": {}, "per_query": {"nDCG@10": dict.fromkeys(qids, 0.5)}}
    cross_domain.write_cross_domain(
        REGISTRY, runs, name, 42, kept, {"emoji-openmoji": openmoji}, "kept"
    )
    record = read_json(path)
    assert record["checkpoint"] == "kept" and "refit" not in record
    assert record["in_domain"] == kept
    assert record["collections"]["emoji-twemoji"]["checkpoint"] == "refit"
    assert record["collections"]["emoji-twemoji"]["in_domain"] == refit
    assert record["collections"]["emoji-openmoji"]["checkpoint"] == "kept"
    assert "in_domain" not in record["collections"]["emoji-openmoji"]

    rows = cross_domain_rows(REGISTRY, {name: [{"cross_domain": record}]})
    (tw,) = [r for r in rows["emoji-twemoji"] if r["name"] == name]
    (om,) = [r for r in rows["emoji-openmoji"] if r["name"] == name]
    assert tw["test"]["diff"] == pytest.approx(0.1 - 0.2)  # against the refit's own 0.2
    assert om["test"]["diff"] == pytest.approx(0.5 - 0.6)

    # the same in-domain test (a refit that reproduced the run): nothing is copied
    cross_domain.write_cross_domain(REGISTRY, runs, name, 42, kept, {"stamps": openmoji}, "kept")
    assert "in_domain" not in read_json(path)["collections"]["stamps"]
