"""What the report's tests share: the committed registry and report text, a results
folder without runs, and a fake fit whose validate and test write what the evaluator
writes."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from research.report import runner
from research.report.records import write_json
from research.report.registry_file import load_registry
from research.report.text import ReportText

REPO = Path(__file__).resolve().parents[2]
REGISTRY = load_registry()
TEXT = ReportText.read(REPO / "results" / "report_text.md")


def results_copy(tmp_path: Path) -> Path:
    """A results folder with the committed registry, protocol and text, no runs."""
    out = tmp_path / "results"
    out.mkdir()
    for name in ("registry.yaml", "protocol.yaml", "report_text.md", "unseen_queries.tsv"):
        shutil.copy(REPO / "results" / name, out / name)
    return out


def root_dir(args: list[str]) -> Path:
    """The ``--trainer.default_root_dir`` of a fit's arguments."""
    return Path(next(a for a in args if a.startswith("--trainer.default_root_dir=")).split("=")[1])


def write_evaluation(root: Path, split: str, figures: dict[str, float]) -> None:
    """What the evaluator writes at a ``validate`` or ``test`` (its figures, a run), under
    ``root``, the fake run's own directory."""
    from lightning_mlsr.retrieval.trec import write_trec_run

    write_json(root / "runs" / f"{split}.metrics.json", {"figures": figures})
    write_trec_run(root / "runs" / f"{split}.trec", {"q1": {"d1": 1.0}})


def evaluations_in_root(monkeypatch: pytest.MonkeyPatch) -> None:
    """A fake Trainer's run directory is its ``root``."""
    import lightning_mlsr.training.runs as runs

    monkeypatch.setattr(runs, "run_dir", lambda trainer: trainer.root)


def fake_fit(calls: list[list[str]], monkeypatch: pytest.MonkeyPatch) -> None:
    """``training.cli.main`` replaced by a fit that trains nothing and whose validation and
    test write fixed figures: :func:`runner.train_and_evaluate` runs to its end."""
    import types

    import lightning_mlsr.retrieval.metrics as metrics
    import lightning_mlsr.training.cli as cli

    def fake_main(args: list[str]) -> types.SimpleNamespace:
        calls.append(args)
        root = root_dir(args)

        def evaluate(split: str) -> Any:
            def run(model: Any, datamodule: Any, ckpt_path: str, weights_only: bool) -> None:
                assert weights_only is True  # Lightning loads the checkpoint as data only
                write_evaluation(root, split, {"nDCG@10": 0.5})

            return run

        trainer = types.SimpleNamespace(
            root=root,
            checkpoint_callback=types.SimpleNamespace(best_model_path=""),
            current_epoch=2,
            global_step=8,
            validate=evaluate("validation"),
            test=evaluate("test"),
        )
        datamodule = types.SimpleNamespace(qrels=lambda split: {})
        return types.SimpleNamespace(trainer=trainer, model=None, datamodule=datamodule)

    monkeypatch.setattr(cli, "main", fake_main)
    evaluations_in_root(monkeypatch)
    monkeypatch.setattr(metrics, "evaluate", lambda *args, **kwargs: {})
    monkeypatch.setattr(runner, "test_on_collections", lambda *args: {})
