"""Image vectors kept as files (``analysis.vectors``), and the committed sets in
``results/vectors/`` that the co-activation notebook plots: each loads, matches its manifest
(rows, terms, non-zeros, ids), holds the collection's images in order, says truly what its
checkpoint is (the committed run, or a refit whose numbers differ from it), and its
co-activation statistics, recomputed from the matrix, are those recorded at export and, for
a set that is its committed run, that run's."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from lightning_mlsr.analysis import compare_models
from lightning_mlsr.analysis.vectors import (
    COMMITTED_RUN,
    NO_COMMITTED_RUN,
    REFIT,
    coactivation_figures,
    ids_sha256,
    load_vectors,
    provenance,
    save_vectors,
    vectors_stem,
)

REPO = Path(__file__).resolve().parents[2]
COMMITTED = REPO / "results" / "vectors"
MANIFESTS = sorted(COMMITTED.glob("*.json"))


def _random_docs(rows: int = 20, terms: int = 50, seed: int = 0) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    dense = rng.random((rows, terms)).astype(np.float32)
    dense[dense < 0.8] = 0.0
    return sp.csr_matrix(dense)


def test_saved_vectors_load_as_written(tmp_path: Path) -> None:
    docs, ids = _random_docs(), [f"img{i}" for i in range(20)]
    npz = save_vectors(tmp_path, "m1", 7, ids, docs, {"backbone": "splade-tiny"})
    assert npz.name == f"{vectors_stem('m1', 7)}.npz" == "m1-seed7.npz"
    for given in (npz, npz.with_suffix(".json"), tmp_path / "m1-seed7", tmp_path):
        saved = load_vectors(given)
        assert saved.ids == ids and saved.path == npz
        assert (saved.docs != docs).nnz == 0 and saved.docs.dtype == np.float32
    manifest = saved.manifest
    assert manifest["experiment"] == "m1" and manifest["seed"] == 7
    assert manifest["backbone"] == "splade-tiny"
    assert (manifest["rows"], manifest["terms"], manifest["nnz"]) == (20, 50, docs.nnz)
    assert manifest["ids_sha256"] == ids_sha256(ids)


def test_a_predict_export_loads_without_a_manifest(tmp_path: Path) -> None:
    docs = _random_docs()
    sp.save_npz(tmp_path / "corpus.npz", docs)
    (tmp_path / "corpus.ids.txt").write_text("".join(f"d{i}\n" for i in range(20)))
    (tmp_path / "queries_test.npz").write_bytes(b"")  # predict's other target, beside it
    saved = load_vectors(tmp_path)
    assert saved.path.name == "corpus.npz" and saved.manifest == {}
    assert saved.ids[0] == "d0" and saved.docs.shape == (20, 50)


def test_files_that_disagree_with_their_manifest_are_refused(tmp_path: Path) -> None:
    ids = [f"img{i}" for i in range(20)]
    npz = save_vectors(tmp_path, "m1", 42, ids, _random_docs(), {})
    sp.save_npz(npz, _random_docs(seed=1))  # other vectors under the same name
    with pytest.raises(ValueError, match=r"m1-seed42.npz does not match .*nnz: manifest"):
        load_vectors(npz)
    save_vectors(tmp_path, "m1", 42, ids, _random_docs(), {})
    npz.with_name("m1-seed42.ids.txt").write_text("".join(f"{i}\n" for i in reversed(ids)))
    with pytest.raises(ValueError, match="ids_sha256"):
        load_vectors(npz)


def test_missing_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="export_vectors.py"):
        load_vectors(tmp_path / "m1-seed42.npz")
    sp.save_npz(tmp_path / "m1-seed42.npz", _random_docs())
    with pytest.raises(FileNotFoundError, match="no ids file m1-seed42.ids.txt"):
        load_vectors(tmp_path / "m1-seed42.npz")
    with pytest.raises(ValueError, match="5 ids for the 3 rows"):
        save_vectors(tmp_path, "x", 1, list("abcde"), _random_docs(rows=3), {})
    sp.save_npz(tmp_path / "two.npz", _random_docs())
    with pytest.raises(FileNotFoundError, match="one vectors .npz"):
        load_vectors(tmp_path)


def test_provenance_says_whether_the_numbers_are_the_committed_runs() -> None:
    committed = {"validation": 0.0347, "test": 0.0469}
    assert provenance({"validation": 0.0347, "test": 0.0469}, committed) == COMMITTED_RUN
    assert provenance({"validation": 0.0347, "test": 0.0549}, committed) == REFIT
    assert provenance({"validation": 0.0435}, {}) == NO_COMMITTED_RUN
    with pytest.raises(ValueError, match="no test number"):
        provenance({"validation": 0.0347}, committed)


class _Wordpieces:
    """The part of a tokenizer ``coactivation_figures`` uses: terms t0..t49, split on spaces."""

    vocab_size = 50

    def convert_ids_to_tokens(self, ids: list[int]) -> list[str]:
        return [f"t{i}" for i in ids]

    def tokenize(self, text: str) -> list[str]:
        return text.split()

    def convert_tokens_to_ids(self, tokens: list[str]) -> list[int]:
        return [int(t[1:]) for t in tokens]


def test_coactivation_figures_are_compare_models_as_a_run_records_them() -> None:
    docs = _random_docs()
    captions = [" ".join(f"t{j}" for j in docs[i].indices[:2]) for i in range(20)]
    figures = coactivation_figures(docs, _Wordpieces(), captions)
    stats = compare_models(
        {"m": docs}, [f"t{i}" for i in range(50)], captions=captions, tokenize=_Wordpieces()
    )["m"]
    assert figures == stats and set(figures) >= {"coactivation", "caption_overlap@10"}
    assert all(type(v) is (str if k == "frequent_terms" else float) for k, v in figures.items())
    assert json.loads(json.dumps(figures)) == figures  # what a manifest keeps


def _same_figures(found: dict, recorded: dict, what: str) -> None:
    assert set(found) == set(recorded), what
    for key, value in recorded.items():
        if isinstance(value, str):
            assert found[key] == value, f"{what}: {key}"
        else:
            assert float(found[key]) == pytest.approx(value, rel=1e-9, abs=1e-12), f"{what}: {key}"


@pytest.mark.parametrize("manifest", MANIFESTS, ids=[p.stem for p in MANIFESTS])
def test_committed_vectors_are_what_their_manifest_says(manifest: Path) -> None:
    from lightning_mlsr.data import load_collection
    from lightning_mlsr.io.pretrained import load_tokenizer

    saved = load_vectors(manifest)  # checks rows, terms, nnz and ids against the manifest
    record = saved.manifest
    assert manifest.stem == vectors_stem(record["experiment"], record["seed"])
    assert saved.path.stat().st_size < 4_000_000, "keep committed vectors to a few MB"
    collection = load_collection(record["collection"])
    assert saved.ids == collection.images.ids  # every image, in the collection's order
    assert saved.docs.nnz > 0 and np.diff(saved.docs.indptr).mean() < 1000
    # what the checkpoint is: its numbers beside the committed run's, and the label true to them
    run = REPO / record["committed_run"]
    metrics = json.loads(run.read_text("utf-8"))
    found, committed = {}, {}
    for split in ("validation", "test"):
        found[split] = record[f"{split}/nDCG@10"]
        committed[split] = record[f"committed_run/{split}/nDCG@10"]
        assert committed[split] == metrics[split]["nDCG@10"], split
    assert record["provenance"] == provenance(found, committed) in (COMMITTED_RUN, REFIT)
    assert record["reproduces_committed_run"] is (record["provenance"] == COMMITTED_RUN)
    if record["provenance"] == REFIT:  # exported only when told to
        assert "--allow-mismatch" in record["export_command"]
    # a finished fit: its best checkpoint lies within as many steps as the committed run made
    assert (record["committed_run/epochs"], record["committed_run/steps"]) == (
        metrics["epochs"],
        metrics["steps"],
    )
    assert 0 < record["checkpoint_step"] <= metrics["steps"]
    assert 0 < record["checkpoint_epochs"] <= metrics["epochs"]
    # the co-activation statistics, recomputed from the matrix: those recorded at export ...
    tokenizer = load_tokenizer(record["wordpiece_tokenizer"])
    stats = coactivation_figures(saved.docs, tokenizer, collection.images.captions())
    _same_figures(stats, record["coactivation"], f"{manifest.name} coactivation")
    # ... and, for the committed run's checkpoint, the run's own: the vectors are that run's
    if record["provenance"] == COMMITTED_RUN:
        _same_figures(stats, metrics["coactivation"], f"{run} coactivation")
