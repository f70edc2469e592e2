"""The model card: its intervals come from the package's one bootstrap, its front matter
and metrics table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lightning_mlsr.hub import save_encoder
from lightning_mlsr.hub.card import interval_of_mean, metrics_with_intervals, model_card
from lightning_mlsr.hub.folder import ExportError
from lightning_mlsr.models import MLMHead
from lightning_mlsr.retrieval.evaluation import INTERVAL_METHOD, mean_interval


def test_card_intervals_come_from_the_one_bootstrap(tmp_path: Path) -> None:
    values = [0.0, 1.0] * 50
    mean, low, high = interval_of_mean(values)
    assert mean == 0.5 and low < 0.5 < high
    assert (low, high) == mean_interval(values)  # the interval every report gives
    assert interval_of_mean([0.3] * 10) == pytest.approx((0.3, 0.3, 0.3))
    with pytest.raises(ExportError, match="at least 2 judged queries"):
        interval_of_mean([0.3])
    metrics_file = tmp_path / "test.metrics.json"
    per_query = {f"q{i}": {"nDCG@10": v} for i, v in enumerate(values)}
    metrics_file.write_text(json.dumps({"aggregate": {"nDCG@10": 0.5}, "per_query": per_query}))
    found = metrics_with_intervals(metrics_file)
    assert found["measures"] == {"nDCG@10": (0.5, low, high)} and found["queries"] == 100
    manifest = save_encoder(MLMHead(), tmp_path / "doc")
    card = model_card(name="x", side="doc", manifest=manifest, metrics=found)
    assert INTERVAL_METHOD in card and f"[{low:.4f}, {high:.4f}]" in card


def test_model_card_has_front_matter_metrics_and_loading(tmp_path: Path) -> None:
    import yaml

    manifest = save_encoder(MLMHead(), tmp_path / "doc")
    metrics = {"split": "test", "queries": 100, "measures": {"nDCG@10": (0.4, 0.35, 0.45)}}
    card = model_card(
        name="m2",
        side="document",
        manifest=manifest,
        training={"collection": "emoji"},
        metrics=metrics,
    )
    front = yaml.safe_load(card.split("---")[1])
    assert front["license"] == "apache-2.0" and front["library_name"] == "sentence-transformers"
    assert front["datasets"] == ["emoji"]
    assert front["model-index"][0]["results"][0]["metrics"][0] == {"type": "nDCG@10", "value": 0.4}
    assert "| nDCG@10 | 0.4000 | [0.3500, 0.4500] |" in card
    assert 'SparseEncoder("PATH/TO/THIS/FOLDER")' in card and "load_encoder" in card
