"""Image vectors kept as files (``analysis.vectors``), and the committed sets in
``results/vectors/`` that the co-activation notebook plots: each loads, matches its manifest
(rows, terms, non-zeros, ids), holds the collection's images in order, and is the run it
names (its co-activation statistics are the committed run's)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from lightning_mlsr.analysis import compare_models
from lightning_mlsr.analysis.vectors import ids_sha256, load_vectors, save_vectors, vectors_stem

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


@pytest.mark.parametrize("manifest", MANIFESTS, ids=[p.stem for p in MANIFESTS])
def test_committed_vectors_are_the_runs_they_name(manifest: Path) -> None:
    from lightning_mlsr.data import load_collection
    from lightning_mlsr.io.pretrained import load_tokenizer

    saved = load_vectors(manifest)  # checks rows, terms, nnz and ids against the manifest
    record = saved.manifest
    assert manifest.stem == vectors_stem(record["experiment"], record["seed"])
    assert saved.path.stat().st_size < 4_000_000, "keep committed vectors to a few MB"
    collection = load_collection(record["collection"])
    assert saved.ids == collection.images.ids  # every image, in the collection's order
    assert saved.docs.nnz > 0 and np.diff(saved.docs.indptr).mean() < 1000
    run = REPO / record["committed_run"]
    metrics = json.loads(run.read_text("utf-8"))
    assert record["reproduces_committed_run"] is True
    for split in ("validation", "test"):
        assert record[f"{split}/nDCG@10"] == metrics[split]["nDCG@10"]
    # the vectors themselves are the run's: its co-activation statistics, recomputed
    tokenizer = load_tokenizer(record["backbone"])
    vocab = tokenizer.convert_ids_to_tokens(list(range(tokenizer.vocab_size)))
    captions = collection.images.captions()
    stats = compare_models({"m": saved.docs}, vocab, captions=captions, tokenize=tokenizer)["m"]
    for key, value in metrics["coactivation"].items():
        if isinstance(value, str):
            assert stats[key] == value, key
        else:
            assert float(stats[key]) == pytest.approx(value, rel=1e-9, abs=1e-12), key
