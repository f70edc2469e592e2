"""Image vectors of a finished run, kept as files so the analysis needs no checkpoint.

A set is three files with one stem (``<experiment>-seed<k>``, :func:`vectors_stem`):

- ``<stem>.npz``: the ``(n_images, V)`` scipy CSR matrix of term weights, as ``predict``
  writes it (float32, unchanged);
- ``<stem>.ids.txt``: the image id of each row, one per line, in matrix order;
- ``<stem>.json``: the manifest: where the vectors come from (experiment, seed, backbone,
  the checkpoint's validation and test nDCG@10 beside the committed run's, its
  :func:`provenance`, the command that made them), the co-activation figures of the matrix
  at export (:func:`coactivation_figures`) and what the two files must hold (shape,
  non-zeros, sha256 of the ids), checked on every load.

``results/vectors/`` holds the sets of the final image-only experiments at seed 42 that
``notebooks/coactivation.ipynb`` plots (finished fits; a set whose checkpoint does not
reproduce its committed run says ``provenance: refit``); ``scripts/export_vectors.py`` writes
them.
A ``predict`` export (``corpus.npz`` + ``corpus.ids.txt``, no manifest) loads too.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from lightning_mlsr.analysis.comparison import compare_models
from lightning_mlsr.io.atomic import atomic_write, atomic_write_text

__all__ = [
    "COMMITTED_RUN",
    "NO_COMMITTED_RUN",
    "REFIT",
    "SavedVectors",
    "coactivation_figures",
    "ids_sha256",
    "load_vectors",
    "provenance",
    "save_vectors",
    "vectors_stem",
]

#: A manifest's ``provenance``: the checkpoint is the committed run's (its validation and test
#: numbers equal those of ``results/runs/<experiment>/seed<k>/metrics.json``), ...
COMMITTED_RUN = "committed run"
#: ... a refit (the same config and seed fitted again in full, on another code version or
#: thread count: its numbers differ from the committed run's like another seed's,
#: docs/evaluation.md), ...
REFIT = "refit"
#: ... or a fit of an (experiment, seed) that has no committed run.
NO_COMMITTED_RUN = "no committed run"


@dataclass
class SavedVectors:
    """One model's image vectors: row ids, the ``(n_images, V)`` CSR matrix, its manifest
    (empty for a ``predict`` export) and the ``.npz`` they were read from."""

    ids: list[str]
    docs: sp.csr_matrix
    path: Path
    manifest: dict[str, Any] = field(default_factory=dict)


def vectors_stem(experiment: str, seed: int) -> str:
    """The file stem of ``experiment``'s vectors at ``seed``: ``m1_mlm_mlm_image-seed42``."""
    return f"{experiment}-seed{seed}"


def ids_sha256(ids: Sequence[str]) -> str:
    """sha256 of the ids file's text (one id per line), so a manifest pins the row order."""
    return hashlib.sha256("".join(f"{i}\n" for i in ids).encode("utf-8")).hexdigest()


def provenance(found: Mapping[str, float], committed: Mapping[str, float]) -> str:
    """What a checkpoint is, from its numbers (``found``, per split) and those of the committed
    run of its experiment and seed (``committed``, empty when there is none):
    :data:`COMMITTED_RUN` when every committed split's number is equal, else :data:`REFIT`;
    :data:`NO_COMMITTED_RUN` without committed numbers.

    Raises:
        ValueError: a committed split the checkpoint was not evaluated on.
    """
    if not committed:
        return NO_COMMITTED_RUN
    missing = sorted(set(committed) - set(found))
    if missing:
        raise ValueError(f"the checkpoint has no {', '.join(missing)} number to compare")
    same = all(found[split] == value for split, value in committed.items())
    return COMMITTED_RUN if same else REFIT


def coactivation_figures(
    docs: sp.spmatrix, tokenizer: Any, captions: Sequence[str]
) -> dict[str, float | str]:
    """The co-activation statistics of image vectors as a run's ``metrics.json`` keeps them
    (its ``coactivation`` block, ``research.report``): :func:`compare_models` with its defaults,
    the terms named by ``tokenizer``'s vocabulary and ``captions`` (one per row) split by it;
    numbers as floats, ``frequent_terms`` a string.

    ``tokenizer``: a Hugging Face tokenizer (``convert_ids_to_tokens``, ``vocab_size``).
    """
    vocab = tokenizer.convert_ids_to_tokens(list(range(tokenizer.vocab_size)))
    stats = compare_models({"m": docs}, vocab, captions=captions, tokenize=tokenizer)["m"]
    return {k: (v if isinstance(v, str) else float(v)) for k, v in stats.items()}


def _paths(npz: Path) -> tuple[Path, Path]:
    stem = npz.name.removesuffix(".npz")
    return npz.with_name(f"{stem}.ids.txt"), npz.with_name(f"{stem}.json")


def save_vectors(
    folder: str | os.PathLike[str],
    experiment: str,
    seed: int,
    ids: Sequence[str],
    docs: sp.spmatrix,
    record: Mapping[str, Any],
) -> Path:
    """Write ``docs`` (rows in the order of ``ids``) as ``folder/<experiment>-seed<seed>.*``
    with a manifest of ``record`` plus what :func:`load_vectors` checks; returns the ``.npz``.

    Each file is written atomically; the manifest last, so a set without one is unfinished.
    Shape: ``docs`` is ``(len(ids), V)``.
    """
    matrix = sp.csr_matrix(docs)
    if matrix.shape[0] != len(ids):
        raise ValueError(f"{len(ids)} ids for the {matrix.shape[0]} rows of the matrix")
    if len(set(ids)) != len(ids):
        raise ValueError("the ids repeat: one row per image expected")
    npz = Path(folder) / f"{vectors_stem(experiment, seed)}.npz"
    ids_path, manifest_path = _paths(npz)
    npz.parent.mkdir(parents=True, exist_ok=True)
    manifest = {
        "experiment": experiment,
        "seed": seed,
        **record,
        "rows": int(matrix.shape[0]),
        "terms": int(matrix.shape[1]),
        "nnz": int(matrix.nnz),
        "dtype": str(matrix.dtype),
        "ids_sha256": ids_sha256(ids),
    }
    atomic_write(npz, lambda handle: sp.save_npz(handle, matrix))
    atomic_write_text(ids_path, "".join(f"{i}\n" for i in ids))
    atomic_write_text(manifest_path, json.dumps(manifest, indent=1) + "\n")
    return npz


def _find_npz(path: Path) -> Path:
    """``path`` itself, its ``.npz`` (a stem or manifest given), or the one vectors set in a
    folder (``corpus.npz`` of a ``predict`` export first)."""
    if path.is_dir():
        if (path / "corpus.npz").is_file():
            return path / "corpus.npz"
        found = sorted(path.glob("*.npz"))
        if len(found) != 1:
            names = ", ".join(p.name for p in found) or "none"
            raise FileNotFoundError(
                f"{path} should hold one vectors .npz (or the corpus.npz predict writes), "
                f"found {names}; pass the .npz itself"
            )
        return found[0]
    if path.suffix == ".json" or path.suffix == "":
        path = path.with_name(path.name.removesuffix(".json") + ".npz")
    return path


def load_vectors(path: str | os.PathLike[str]) -> SavedVectors:
    """The vectors set at ``path`` (its ``.npz``, manifest or stem, or a folder holding one),
    checked against its manifest when it has one: rows, terms, non-zeros and the ids.

    Raises:
        FileNotFoundError: a file of the set is missing (the message names it).
        ValueError: the files disagree with each other or with the manifest.
    """
    npz = _find_npz(Path(path))
    ids_path, manifest_path = _paths(npz)
    if not npz.is_file():
        raise FileNotFoundError(
            f"no vectors at {npz}: make them with scripts/export_vectors.py (see "
            "results/vectors/README.md), or pass the .npz that predict wrote"
        )
    if not ids_path.is_file():
        raise FileNotFoundError(f"{npz} has no ids file {ids_path.name} beside it")
    docs = sp.load_npz(npz).tocsr()
    ids = ids_path.read_text(encoding="utf-8").splitlines()
    if len(ids) != docs.shape[0]:
        raise ValueError(f"{ids_path} has {len(ids)} ids for the {docs.shape[0]} rows of {npz}")
    manifest: dict[str, Any] = {}
    if manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        found = {
            "rows": docs.shape[0],
            "terms": docs.shape[1],
            "nnz": docs.nnz,
            "dtype": str(docs.dtype),
            "ids_sha256": ids_sha256(ids),
        }
        wrong = {k: (manifest.get(k), v) for k, v in found.items() if manifest.get(k) != v}
        if wrong:
            said = "; ".join(f"{k}: manifest {a!r}, files {b!r}" for k, (a, b) in wrong.items())
            raise ValueError(
                f"{npz} does not match its manifest {manifest_path.name} ({said}); the files "
                "were changed or mixed up: export them again with scripts/export_vectors.py"
            )
    if docs.nnz and (not np.isfinite(docs.data).all() or (docs.data < 0).any()):
        raise ValueError(f"{npz} holds negative or non-finite weights: not a sparse head's output")
    return SavedVectors(ids, docs, npz, manifest)
