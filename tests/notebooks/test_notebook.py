"""The co-activation notebook runs top to bottom, draws its figures, and is stored clean.

It is executed with ``jupyter nbconvert --execute`` from the ``notebook`` extra: once as a
fresh clone runs it (the committed image vectors of the finished runs, ``results/vectors/``),
once on a user's own experiment YAMLs, which it trains in a small setting (5 steps per model,
64 px image features); the feature cache is the test session's private one
(``tests/conftest.py``), which the kernel inherits through the environment.
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
import yaml

from lightning_mlsr.training.model_loading import encode_corpus, load_model, train

REPO = Path(__file__).resolve().parents[2]
NOTEBOOK = REPO / "notebooks" / "coactivation.ipynb"
SMALL = {"TRAIN_STEPS": "5", "IMAGE_SIZE": "64", "SEED": "0", "N_GRID": "6"}
PAPER = {"M1": "m1_mlm_mlm_image", "MLP query": "mlp_mlm_image"}
COMMITTED = {name: REPO / "results" / "vectors" / f"{e}-seed42.npz" for name, e in PAPER.items()}
#: what the notebook reads from the environment, each a source a user can name
PARAMETERS = ("RESULTS_RUNS", "VECTORS_DIR", "M1_CHECKPOINT", "MLP_CHECKPOINT", "M1_CONFIG",
              "MLP_CONFIG", "M1_VECTORS", "MLP_VECTORS", "TRAIN_STEPS", "IMAGE_SIZE", "SEED")  # fmt: skip


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
    for name in PARAMETERS:
        assert f'os.environ.get("{name}"' in nb.cells[1].source


def _execute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, env: dict[str, str]
) -> tuple[nbformat.NotebookNode, dict[str, object]]:
    """``jupyter nbconvert --to notebook --execute`` (the ``notebook`` extra), as a user runs
    it, with ``env`` and a copy of the finished image-only runs as ``RESULTS_RUNS``; returns
    the executed notebook and finding 3 as those runs give it."""
    from research.significance import FINDING3, coactivation_finding

    for name in PARAMETERS:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
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
    monkeypatch.setenv("RESULTS_RUNS", str(runs))
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
    assert not list(workdir.iterdir()), "the notebook wrote into its working directory"
    return nbformat.read(out, as_version=4), expected


def _check_figures_and_verdict(nb: nbformat.NotebookNode, expected: dict, n_models: int) -> str:
    """Every figure drawn, finding 3 stated only as far as the finished runs' test supports
    it (3 seeds each: not shown), the rank sentences true to their numbers; returns the
    code cells' printed text."""
    figures = _tagged(nb, "figure")
    assert len(figures) == 4  # frequency, heatmaps, image grids, histogram
    for cell in figures:
        pngs = [o for o in cell.outputs if "image/png" in o.get("data", {})]
        assert pngs, f"figure cell produced no image:\n{cell.source}"
    n_png = sum("image/png" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", []))
    assert n_png >= 3 + n_models  # one grid per model
    assert expected["verdict"] == "not shown"  # the committed runs: 3 seeds per model
    (verdict,) = _tagged(nb, "verdict")
    text = _text(verdict)
    assert "Finding 3 on the finished runs (3 MLP-query / 3 M1 seeds): NOT SHOWN" in text
    assert "HOLDS" not in text and "in this run" not in text  # nothing from one model each
    assert "described, not tested" in text
    p_holm = [f"Holm {row['p_holm']:.3g}" for row in expected["rows"]]  # type: ignore[index]
    assert all(p in text for p in p_holm)
    printed = "".join(_text(c) for c in nb.cells if c.cell_type == "code")
    (cost,) = _tagged(nb, "cost")  # the quality-vs-cost figure of RESULTS.md, with its runs
    assert [o for o in cost.outputs if "image/png" in o.get("data", {})]
    registry = yaml.safe_load((REPO / "results" / "registry.yaml").read_text("utf-8"))
    for file in [registry["query_cost"]["file"], *registry["query_cost"].get("later", [])]:
        run = json.loads((REPO / file).read_text("utf-8"))
        for row in run["emoji"]:
            assert f"{row['name']:<48} nDCG@10 {row['ndcg10']:.4f}" in _text(cost)
    ranks = [line for line in printed.splitlines() if line.startswith("rank ")]
    assert ranks
    for line in ranks:  # the sentence names the curve that is higher in its own numbers
        values, _, above = line.split(": ", 1)[1].partition(" -> ")
        at = {n: float(v) for n, v in (part.rsplit(" ", 1) for part in values.split(", "))}
        if above:
            assert above == f"{max(at, key=at.__getitem__)} above", line
        else:
            assert len(set(at.values())) == 1, line
    return printed


@pytest.mark.slow
def test_notebook_plots_the_committed_vectors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fresh clone: no checkpoint, nothing trained; both models are the committed vectors
    of finished seed-42 fits, named with their checkpoint's numbers and, beside them, those
    of the committed run, which a refit is said not to be."""
    from lightning_mlsr.analysis.vectors import COMMITTED_RUN, REFIT, load_vectors

    missing = [str(p.relative_to(REPO)) for p in COMMITTED.values() if not p.is_file()]
    if missing:
        pytest.skip(f"not exported yet: {missing} (results/vectors/README.md)")
    nb, expected = _execute(tmp_path, monkeypatch, {"N_GRID": "6"})
    extra = (REPO / "results" / "vectors" / "minilm_m1_mlm_mlm_image_scaled-seed42.npz").is_file()
    printed = _check_figures_and_verdict(nb, expected, n_models=2 + extra)
    assert "WARNING" not in printed and "trained here" not in printed
    for name, path in COMMITTED.items():
        record = load_vectors(path).manifest
        assert (
            f"{name:>9}: vectors {path.name} of {record['experiment']} seed 42 (best checkpoint "
            f"{record['checkpoint']}: validation nDCG@10 {record['validation/nDCG@10']:.4f}, "
            f"test {record['test/nDCG@10']:.4f})"
        ) in printed
        committed = (
            f"{record['committed_run']} (validation nDCG@10 "
            f"{record['committed_run/validation/nDCG@10']:.4f}, "
            f"test {record['committed_run/test/nDCG@10']:.4f})"
        )
        one_run = f"{name}: the vectors of {record['experiment']} seed 42, one run"
        if record["provenance"] == COMMITTED_RUN:
            assert f"the committed run {committed}" in printed
            assert f"{one_run} (it reproduces {record['committed_run']})." in printed
        else:
            assert record["provenance"] == REFIT
            assert (
                f"a refit of the same config and seed, not the checkpoint of {committed}" in printed
            )
            assert (
                f"{one_run} (a refit of its config and seed: not the checkpoint of "
                f"{record['committed_run']})."
            ) in printed


@pytest.mark.slow
def test_notebook_trains_a_users_own_configs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fallback: experiment YAMLs with nothing trained are trained in the notebook, with
    a warning, and no finding is drawn from them."""
    configs = {
        "M1_CONFIG": str(REPO / "experiments" / "paper" / "m1_mlm_mlm_image.yaml"),
        "MLP_CONFIG": str(REPO / "experiments" / "paper" / "mlp_mlm_image.yaml"),
    }
    nothing = tmp_path / "no_vectors"  # no committed vectors shown beside them
    env = {**SMALL, **configs, "VECTORS_DIR": str(nothing)}
    nb, expected = _execute(tmp_path, monkeypatch, env)
    printed = _check_figures_and_verdict(nb, expected, n_models=2)
    assert printed.count("is trained here from") == 2 and "WARNING: no vectors" not in printed
    (verdict,) = _tagged(nb, "verdict")
    assert "trained here for 5 steps" in _text(verdict)
    assert "the vectors of" not in _text(verdict)


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


def test_a_model_built_from_a_yaml_reads_the_base_config(tmp_path: Path) -> None:
    """What the notebook trains from a YAML is what ``fit --config`` builds: the base config
    (FLOPS regularizers, 16-token queries, seed 42) under the experiment's file."""
    loaded = load_model(REPO / "experiments" / "paper" / "m1_mlm_mlm_image.yaml", root_dir=tmp_path)
    hparams = loaded.model.hparams
    assert "FLOPS" in str(hparams["query_regularizer"]) and "FLOPS" in str(
        hparams["doc_regularizer"]
    )
    assert loaded.datamodule.hparams["batching"]["query_max_length"] == 16
    assert loaded.trainer is not None and loaded.trainer.logger is None


def test_load_model_rejects_what_it_cannot_load(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="experiment YAML"):
        load_model(tmp_path / "missing.ckpt")
    other = tmp_path / "model.pt"
    other.write_bytes(b"")
    with pytest.raises(ValueError, match="neither a .ckpt"):
        load_model(other)
