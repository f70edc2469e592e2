"""The co-activation notebook runs top to bottom, draws its figures, and is stored clean.

It is executed with ``jupyter nbconvert --execute`` from the ``notebook`` extra. The run
uses a small setting (5 training steps per model, 64 px image features); the
feature cache is the test session's private one (``tests/conftest.py``), which the kernel
inherits through the environment.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import numpy as np
import pytest

from lightning_mlsr.training.model_loading import encode_corpus, load_model, train

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "coactivation.ipynb"
SMALL = {"TRAIN_STEPS": "5", "IMAGE_SIZE": "64", "SEED": "0", "N_GRID": "6"}


def _tagged(nb: nbformat.NotebookNode, tag: str) -> list[nbformat.NotebookNode]:
    return [c for c in nb.cells if tag in c.get("metadata", {}).get("tags", [])]


def _text(cell: nbformat.NotebookNode) -> str:
    return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")


def test_notebook_is_stored_without_outputs() -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, "the notebook has no code cells"
    dirty = [i for i, c in enumerate(code) if c.outputs or c.execution_count is not None]
    assert not dirty, f"code cells {dirty} keep outputs or execution counts; strip them"
    # the parameters cell comes right after the title and reads the environment
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")
    assert "parameters" in nb.cells[1].metadata.get("tags", [])
    for name in (
        "RESULTS_RUNS",
        "M1_CHECKPOINT",
        "MLP_CHECKPOINT",
        "TRAIN_STEPS",
        "IMAGE_SIZE",
        "SEED",
    ):
        assert f'os.environ.get("{name}"' in nb.cells[1].source


@pytest.mark.slow
def test_notebook_runs_top_to_bottom(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``jupyter nbconvert --to notebook --execute`` (the ``notebook`` extra), as a user runs it,
    on a copy of the finished image-only runs: it states finding 3 only as far as their test
    supports it (3 seeds each: not shown) and draws no finding from the models it trains."""
    from lightning_mlsr.analysis.significance import FINDING3, coactivation_finding

    for name, value in SMALL.items():
        monkeypatch.setenv(name, value)
    runs = tmp_path / "runs"
    per_seed = {}
    for experiment in ("mlp_mlm_image", "m1_mlm_mlm_image"):
        found = sorted((REPO / "results" / "runs" / experiment).glob("seed*/metrics.json"))
        for path in found:
            (runs / experiment / path.parent.name).mkdir(parents=True)
            shutil.copy(path, runs / experiment / path.parent.name / path.name)
        stats = [json.loads(p.read_text())["coactivation"] for p in found]
        per_seed[experiment] = {k: [s[k] for s in stats] for k in FINDING3}
    expected = coactivation_finding(per_seed["mlp_mlm_image"], per_seed["m1_mlm_mlm_image"])
    assert expected["verdict"] == "not shown"  # the committed runs: 3 seeds per model
    monkeypatch.setenv("RESULTS_RUNS", str(runs))
    monkeypatch.delenv("M1_CHECKPOINT", raising=False)
    monkeypatch.delenv("MLP_CHECKPOINT", raising=False)
    workdir = tmp_path / "work"
    workdir.mkdir()
    copy = workdir / NOTEBOOK.name  # nbconvert runs the kernel in the notebook's directory
    shutil.copy(NOTEBOOK, copy)
    out = tmp_path / "executed.ipynb"
    done = subprocess.run(
        [sys.executable, "-m", "jupyter", "nbconvert", "--to", "notebook", "--execute",
         "--ExecutePreprocessor.timeout=600", f"--output={out}", str(copy)],
        capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    copy.unlink()
    nb = nbformat.read(out, as_version=4)

    figures = _tagged(nb, "figure")
    assert len(figures) == 4  # frequency, heatmaps, image grids, histogram
    for cell in figures:
        pngs = [o for o in cell.outputs if "image/png" in o.get("data", {})]
        assert pngs, f"figure cell produced no image:\n{cell.source}"
    n_png = sum("image/png" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", []))
    assert n_png >= 5  # one grid per model
    (verdict,) = _tagged(nb, "verdict")
    text = _text(verdict)
    assert "Finding 3 on the finished runs (3 MLP-query / 3 M1 seeds): NOT SHOWN" in text
    assert "HOLDS" not in text and "in this run" not in text  # nothing from the tiny models
    p_holm = [f"Holm {row['p_holm']:.3g}" for row in expected["rows"]]
    assert all(p in text for p in p_holm)
    assert "trained here for 5 steps" in text and "described, not tested" in text
    trained = "".join(_text(c) for c in nb.cells if c.cell_type == "code")
    assert trained.count("WARNING: no checkpoint for") == 2
    ranks = [line for line in trained.splitlines() if line.startswith("rank ")]
    assert ranks
    for line in ranks:  # the sentence names the curve that is higher in its own numbers
        values, _, above = line.split(": ", 1)[1].partition(" -> ")
        at = {n: float(v) for n, v in (part.rsplit(" ", 1) for part in values.split(", "))}
        if above:
            assert above == f"{max(at, key=at.__getitem__)} above", line
        else:
            assert len(set(at.values())) == 1, line
    assert not list(workdir.iterdir()), "the notebook wrote into its working directory"


@pytest.mark.slow
def test_checkpoint_encodes_like_the_trained_model(tmp_path: Path) -> None:
    """What the notebook does with M1_CHECKPOINT: the reloaded model gives the same vectors."""
    config = REPO / "experiments" / "paper" / "m1_mlm_mlm_image.yaml"
    loaded = train(load_model(config, image_size=64, max_steps=2, seed=0, root_dir=tmp_path))
    assert loaded.trainer is not None and loaded.trainer.global_step == 2
    ids, docs = encode_corpus(loaded.model, loaded.datamodule)
    path = tmp_path / "m1.ckpt"
    loaded.trainer.save_checkpoint(path)

    reloaded = load_model(path)
    assert reloaded.trainer is None
    assert reloaded.datamodule.batching == loaded.datamodule.batching
    ids_again, docs_again = encode_corpus(reloaded.model, reloaded.datamodule)
    assert ids_again == ids == reloaded.datamodule.collection.images.ids
    assert docs.nnz > 0 and (docs != docs_again).nnz == 0
    np.testing.assert_array_equal(docs.indptr, docs_again.indptr)
    with pytest.raises(ValueError, match="already trained"):
        train(reloaded)


def test_load_model_rejects_what_it_cannot_load(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="experiment YAML"):
        load_model(tmp_path / "missing.ckpt")
    other = tmp_path / "model.pt"
    other.write_bytes(b"")
    with pytest.raises(ValueError, match="neither a .ckpt"):
        load_model(other)
