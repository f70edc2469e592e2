#!/usr/bin/env python3
"""Export the image vectors of a registry experiment's best checkpoint for the analysis
notebook, with a manifest that says where they come from.

The run is the results pipeline's own: ``fit`` with exactly the options
``python -m research.report prepare EXPERIMENT --seed K`` prints (the registry's YAML,
collection, seed and overrides). The best checkpoint (by validation nDCG@10) is evaluated on
validation, and on test when ``results/protocol.yaml`` lists the experiment as final, as
``report run`` does; ``predict`` (the CLI's ``SparseVectorWriter``) encodes every image of the
collection, and the matrix is kept unchanged as ``OUT/<experiment>-seed<k>.npz`` + ``.ids.txt``
+ ``.json`` (:mod:`lightning_mlsr.analysis.vectors`). The manifest holds the checkpoint's
numbers beside those of the committed run (``results/runs/<experiment>/seed<k>/metrics.json``),
its ``provenance`` (``committed run`` when they are equal, ``refit`` when they are not: the same
config and seed fitted again, which on another code version or thread count differs like a
change of seed, docs/evaluation.md), the checkpoint's epochs and steps beside the committed
run's, and the matrix's co-activation statistics (``coactivation``, as the report runner keeps
them in a run's ``metrics.json``), which ``tests/analysis/test_vectors.py`` recomputes.

Usage::

    python scripts/export_vectors.py m1_mlm_mlm_image --seed 42            # fits, then exports
    python scripts/export_vectors.py m1_mlm_mlm_image --seed 42 --checkpoint BEST.ckpt

``--checkpoint`` skips the fit: give the best checkpoint of a fit made with the command above.
The fit goes to ``--work`` (default ``outputs/vectors``), the vectors to ``--out`` (default
``results/vectors``). A checkpoint that does not reproduce its committed run is exported only
with ``--allow-mismatch``, as a refit (``provenance: refit``, both numbers in the manifest).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
from pathlib import Path
from typing import Any

import lightning
import torch

from lightning_mlsr.analysis.vectors import (
    COMMITTED_RUN,
    REFIT,
    coactivation_figures,
    load_vectors,
    provenance,
    save_vectors,
)
from lightning_mlsr.io.checkpoints import load_checkpoint
from lightning_mlsr.io.pretrained import load_tokenizer
from lightning_mlsr.training.cli import main as cli_main
from lightning_mlsr.training.model_loading import text_backbone_of

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # research/ is the checkout's, not installed
from research.report.evaluations import written_evaluation  # noqa: E402
from research.report.fitting import fit_command  # noqa: E402
from research.report.pipelines import fit_overrides  # noqa: E402
from research.report.registry_file import load_registry  # noqa: E402
from research.report.teachers import ensure_teacher  # noqa: E402

MEASURE = "nDCG@10"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("experiment", help="a name in results/registry.yaml")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--checkpoint", type=Path, default=None, help="skip the fit: its best")
    parser.add_argument("--work", type=Path, default=REPO / "outputs" / "vectors")
    parser.add_argument("--out", type=Path, default=REPO / "results" / "vectors")
    parser.add_argument(
        "--allow-mismatch",
        action="store_true",
        help="export a checkpoint whose numbers differ from the committed run's, as a refit",
    )
    return parser


def _relative(path: Path) -> str:
    path = path.resolve()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    registry = load_registry()
    name, seed = args.experiment, args.seed
    if name not in registry.experiments:
        known = ", ".join(registry.experiments)
        raise SystemExit(f"unknown experiment {name!r}; results/registry.yaml has {known}")
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    ensure_teacher(registry, name, seed, work)  # distilled experiments: their teacher first
    options = [*registry.experiments[name].overrides, *fit_overrides(registry, name, seed, work)]
    fit = fit_command(registry, name, seed, work / name / f"seed{seed}")
    fit_line = shlex.join(["python", "-m", "lightning_mlsr", *fit, *options])
    checkpoint = args.checkpoint
    if checkpoint is None:
        print(f"=== fitting: {fit_line}", flush=True)
        fitted = cli_main([*fit, *options])
        best = fitted.trainer.checkpoint_callback.best_model_path  # type: ignore[union-attr]
        if not best:
            raise SystemExit(f"the fit of {name} seed {seed} saved no best checkpoint")
        checkpoint = Path(best)
    if not checkpoint.is_file():
        raise SystemExit(f"no checkpoint at {checkpoint}: give the best .ckpt of the fit above")
    checkpoint = checkpoint.resolve()

    with tempfile.TemporaryDirectory(prefix="export_vectors_", dir=work) as scratch:
        cli = cli_main(
            [
                "--config",
                str(registry.config_path(name)),
                f"--data.collection={registry.collection}",
                f"--seed_everything={seed}",
                f"--trainer.default_root_dir={scratch}",
                "--trainer.logger=false",
                "--trainer.enable_progress_bar=false",
                f"--trainer.callbacks.init_args.output_dir={scratch}/vectors",
                "--trainer.callbacks.init_args.formats=[npz]",
                *options,
            ],
            run=False,
        )
        trainer = cli.trainer
        found: dict[str, float] = {}
        splits = [("validation", trainer.validate)]
        if name in registry.final:  # test numbers of frozen configurations only
            splits.append(("test", trainer.test))
        for split, evaluate in splits:
            evaluate(
                cli.model, datamodule=cli.datamodule, ckpt_path=str(checkpoint), weights_only=True
            )
            figures = written_evaluation(trainer, split).figures  # the evaluator's own file
            found[split] = float(figures[MEASURE])
            evaluated_nnz = round(figures["d_nnz"] * figures["eval_docs"])  # mean x documents
        trainer.predict(
            cli.model, datamodule=cli.datamodule, ckpt_path=str(checkpoint), weights_only=True
        )
        exported = load_vectors(Path(scratch) / "vectors" / "corpus.npz")
        if exported.docs.nnz != evaluated_nnz:
            raise SystemExit(
                f"predict wrote {exported.docs.nnz} non-zeros, the evaluation indexed "
                f"{evaluated_nnz}: the exported vectors would not be the evaluated ones"
            )
        backbone = text_backbone_of(cli.model)
        images = list(cli.datamodule.collection.images.ids)
        captions = cli.datamodule.collection.images.captions()
    row_of = {image: row for row, image in enumerate(exported.ids)}
    if sorted(row_of) != sorted(images):
        raise SystemExit("predict did not encode every image of the collection exactly once")
    docs = exported.docs[[row_of[image] for image in images]]  # in the collection's order

    recorded_path = registry.runs_dir / name / f"seed{seed}" / "metrics.json"
    recorded: dict[str, float] = {}
    metrics: dict[str, Any] = {}
    if recorded_path.is_file():
        metrics = json.loads(recorded_path.read_text("utf-8"))
        recorded = {split: float(metrics[split][MEASURE]) for split in found if split in metrics}
    for split, value in found.items():
        was = recorded.get(split)
        said = "no committed run" if was is None else f"committed run {was!r}"
        print(f"{name} seed {seed} {split} {MEASURE}: this checkpoint {value!r}, {said}")
    source = provenance(found, recorded)
    if source == REFIT and not args.allow_mismatch:
        raise SystemExit(
            f"the checkpoint does not reproduce {_relative(recorded_path)}; nothing exported "
            "(--allow-mismatch exports it anyway as a refit, with both numbers in the manifest)"
        )
    state = load_checkpoint(checkpoint)  # its epochs and steps, beside the committed run's
    committed_fit = {f"committed_run/{k}": metrics[k] for k in ("epochs", "steps") if recorded}
    tokenizer = load_tokenizer(registry.wordpiece_tokenizer)  # the report runner's vocabulary
    export_line = shlex.join(
        ["python", "scripts/export_vectors.py", name, "--seed", str(seed)]
        + ([] if args.checkpoint is None else ["--checkpoint", "BEST.ckpt"])
        + (["--allow-mismatch"] if args.allow_mismatch else [])
    )
    record = {
        "label": registry.label(name),
        "config": _relative(registry.config_path(name)),
        "collection": registry.collection,
        "backbone": backbone,
        "checkpoint": checkpoint.name,
        f"validation/{MEASURE}": found["validation"],
        f"test/{MEASURE}": found.get("test"),
        "checkpoint_epochs": int(state["epoch"]) + 1,  # epochs done (Lightning counts from 0)
        "checkpoint_step": int(state["global_step"]),
        "committed_run": _relative(recorded_path) if recorded else None,
        "provenance": source,
        "reproduces_committed_run": source == COMMITTED_RUN,
        **{f"committed_run/{split}/{MEASURE}": value for split, value in recorded.items()},
        **committed_fit,
        "fit_command": fit_line.replace(str(work), "WORK").replace(f"{REPO}/", ""),
        "export_command": export_line,
        "versions": {"torch": torch.__version__, "lightning": lightning.__version__},
        # recomputed by tests/analysis/test_vectors.py from the matrix; a set that is its
        # committed run has that run's coactivation block
        "wordpiece_tokenizer": registry.wordpiece_tokenizer,
        "coactivation": coactivation_figures(docs, tokenizer, captions),
    }
    path = save_vectors(args.out, name, seed, images, docs, record)
    size = sum(p.stat().st_size for p in path.parent.glob(f"{path.stem}.*"))
    print(f"wrote {_relative(path)} (+ .ids.txt, .json): {docs.shape[0]} images, "
          f"{docs.nnz} non-zeros, {size / 1e6:.2f} MB")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
