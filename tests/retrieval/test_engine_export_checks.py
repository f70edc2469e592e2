"""``python -m lightning_mlsr.retrieval.index export`` refuses, before any engine runs, vectors
an engine would fail on or index as nothing: PISA aborted (SIGABRT, no message) on a corpus
that quantizes to nothing, failed with ``UnboundLocalError: bidx`` on an empty one, and
Anserini printed a Java trace for impacts above 2**24. No engine is needed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from lightning_mlsr.retrieval.index.engines import check_impacts, quantize
from lightning_mlsr.retrieval.index.engines.cli import main


def _vectors(directory: Path, stem: str, matrix: np.ndarray) -> Path:
    directory.mkdir(exist_ok=True)
    sp.save_npz(directory / f"{stem}.npz", sp.csr_matrix(matrix.astype(np.float32)))
    ids = "".join(f"{stem}{r}\n" for r in range(matrix.shape[0]))
    (directory / f"{stem}.ids.txt").write_text(ids)
    return directory / f"{stem}.npz"


def _export(tmp_path: Path, engine: str, docs: np.ndarray, queries: np.ndarray | None = None):
    args = ["export", "--engine", engine, "--vocab", "ids", "--out", str(tmp_path / "out")]
    args += ["--docs", str(_vectors(tmp_path / "vectors", "corpus", docs))]
    if queries is not None:
        args += ["--queries", str(_vectors(tmp_path / "vectors", "queries", queries))]
    return main(args)


@pytest.mark.parametrize("engine", ["pisa", "anserini", "seismic"])
def test_an_empty_corpus_is_refused_before_the_engine_runs(
    engine: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _export(tmp_path, engine, np.zeros((0, 8))) == 2
    err = capsys.readouterr().err
    assert "documents file holds no vectors" in err and "predict" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("engine", ["pisa", "anserini"])
def test_a_corpus_that_quantizes_to_nothing_names_the_scale(
    engine: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    docs = np.full((3, 8), 0.001)  # round(0.001 * 100) = 0 everywhere
    assert _export(tmp_path, engine, docs) == 2
    err = capsys.readouterr().err
    assert "3 documents vectors is empty after quantization" in err
    assert "0.001" in err and "Raise --scale (to at least 500)" in err
    assert not (tmp_path / "out").exists()
    queries = np.zeros((2, 8))
    queries[0, 1] = 0.001
    assert _export(tmp_path, engine, np.eye(8) * 3, queries) == 2
    assert "2 queries vectors is empty after quantization" in capsys.readouterr().err


def test_vectors_without_any_weight_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _export(tmp_path, "seismic", np.zeros((4, 8))) == 2
    assert "every one of the 4 documents vectors is empty" in capsys.readouterr().err


@pytest.mark.parametrize("engine", ["pisa", "anserini"])
def test_impacts_above_2_24_are_refused_naming_the_scale(
    engine: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    docs = np.eye(8) * 3.0
    docs[2, 5] = 2e5  # impact 2e7 > 2**24
    assert _export(tmp_path, engine, docs) == 2
    err = capsys.readouterr().err
    assert "documents row 2 has the impact 20000000 at term 5, above 2**24" in err
    assert "--scale" in err
    assert not (tmp_path / "out").exists()


def test_check_impacts_takes_2_24_and_refuses_what_is_above() -> None:
    assert check_impacts(np.array([[2.0**24, 1.0]]), "documents").nnz == 2
    with pytest.raises(ValueError, match="above 2"):
        check_impacts(quantize(np.array([[1.0, 2**24 / 50]]), 100.0), "documents")
