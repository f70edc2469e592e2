"""``python -m lightning_mlsr.hub export``: both sides of a fit checkpoint as model folders."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from lightning_mlsr.hub import load_encoder
from lightning_mlsr.models import MLMHead, StaticQueryHead
from tests.hub.test_hub import perturbed, text_batch


def test_export_command_writes_both_sides_of_a_fit_checkpoint(tmp_path: Path) -> None:
    """A checkpoint as ``fit`` writes it (encoders recorded by class_path, the run's
    ``runs/test.metrics.json`` beside its checkpoints): both sides load back with the same
    vectors and their cards carry the run's metrics."""
    from lightning_mlsr.hub.__main__ import main

    torch.manual_seed(0)
    query, doc = perturbed(StaticQueryHead()), perturbed(MLMHead(), seed=1)
    state = {f"query_encoder.{k}": v for k, v in query.state_dict().items()}
    state.update({f"doc_encoder.{k}": v for k, v in doc.state_dict().items()})
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "runs").mkdir()
    per_query = {f"q{i}": {"nDCG@10": float(i % 2)} for i in range(10)}
    (run / "runs" / "test.metrics.json").write_text(
        json.dumps({"aggregate": {"nDCG@10": 0.5}, "per_query": per_query})
    )
    torch.save(
        {
            "state_dict": state,
            "epoch": 1,
            "global_step": 7,
            "hyper_parameters": {
                "query_encoder": {"class_path": "lightning_mlsr.models.StaticQueryHead"},
                "doc_encoder": {"class_path": "lightning_mlsr.models.MLMHead", "init_args": {}},
            },
            "datamodule_hyper_parameters": {"collection": "emoji", "query_max_length": 16},
        },
        run / "checkpoints" / "last.ckpt",
    )
    assert (
        main(
            [
                "export",
                "--ckpt_path",
                str(run / "checkpoints" / "last.ckpt"),
                "--out",
                str(tmp_path / "out"),
            ]
        )
        == 0
    )
    for side, head in (("query", query), ("doc", doc)):
        loaded = load_encoder(tmp_path / "out" / side)
        with torch.no_grad():
            torch.testing.assert_close(loaded(text_batch()), head(text_batch()), rtol=0, atol=0)
        card = (tmp_path / "out" / side / "README.md").read_text()
        assert "| nDCG@10 | 0.5000 |" in card and "global_step: `7`" in card
    tokenizer_config = json.loads(
        (tmp_path / "out" / "query" / "tokenizer_config.json").read_text()
    )
    assert tokenizer_config["model_max_length"] == 16
