"""The exact index on disk: one ``.npz`` file of its CSC arrays, document ids and row order.

Reading checks everything the compiled kernel would otherwise trust (out-of-range postings
would crash it) and names the file and the problem. Imports neither torch nor lightning.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from lightning_mlsr.retrieval.index.inputs import normalise_doc_ids

__all__ = ["FORMAT_VERSION", "read_index", "write_index"]

#: Version of the on-disk layout written by :func:`write_index`.
FORMAT_VERSION = 2
_INDEX_FILE = "index.npz"  # file name used when saving into a directory


def write_index(
    path: str | os.PathLike[str], postings: sp.csc_matrix, doc_ids: np.ndarray, order: np.ndarray
) -> Path:
    """Write ``postings`` (rows in tie order), ``doc_ids`` and ``order`` to ``path``: a
    ``.npz`` file, or a directory holding ``index.npz``. Returns the written file's path."""
    target = Path(path)
    if target.suffix != ".npz":
        target.mkdir(parents=True, exist_ok=True)
        target = target / _INDEX_FILE
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
    meta = {"format_version": FORMAT_VERSION, "shape": list(postings.shape)}
    with open(target, "wb") as fh:
        np.savez(
            fh,
            meta=np.array(json.dumps(meta)),
            indptr=postings.indptr,
            indices=postings.indices,
            data=postings.data,
            doc_ids=doc_ids,
            order=order,
        )
    return target


def read_index(
    path: str | os.PathLike[str],
) -> tuple[sp.csc_matrix, np.ndarray, np.ndarray | None]:
    """Read what :func:`write_index` wrote (the ``.npz`` file or its directory), checked.

    Returns ``(postings, doc_ids, order)``; ``order`` is ``None`` for a version-1 file, whose
    rows are as given (the caller puts them in tie order).
    """
    source = Path(path)
    if source.is_dir():
        source = source / _INDEX_FILE
    if not source.is_file():
        raise FileNotFoundError(
            f"no saved index at {source}; pass the .npz file or the directory given to save()"
        )
    try:
        with np.load(source, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except (zipfile.BadZipFile, ValueError, OSError) as err:
        raise ValueError(f"{source} is not a readable index file: {err}") from err
    missing = {"meta", "indptr", "indices", "data", "doc_ids"} - set(arrays)
    if missing:
        raise ValueError(f"{source} is not an InvertedIndex file (missing {sorted(missing)})")
    meta = json.loads(str(arrays["meta"]))
    version = meta.get("format_version")
    if version not in (1, FORMAT_VERSION):
        raise ValueError(
            f"{source} has index format version {version}; this code reads version "
            f"{FORMAT_VERSION}. Rebuild the index with this version of lightning_mlsr."
        )
    if version == FORMAT_VERSION and "order" not in arrays:
        raise ValueError(f"{source} is not an InvertedIndex file (missing ['order'])")
    try:
        csc = sp.csc_matrix(
            (arrays["data"], arrays["indices"], arrays["indptr"]), shape=tuple(meta["shape"])
        )
        csc.check_format(full_check=True)  # out-of-range postings would crash the kernel
        if csc.dtype != np.float32:
            raise ValueError(f"weights are {csc.dtype}, expected float32")
        doc_ids = normalise_doc_ids(arrays["doc_ids"], csc.shape[0])
        order = arrays.get("order")  # version 1: rows as given, permuted on load
        if order is not None and not np.array_equal(np.sort(order), np.arange(csc.shape[0])):
            raise ValueError("its row order is not a permutation of the documents")
    except (ValueError, TypeError, KeyError) as err:
        raise ValueError(f"{source} holds a corrupt index: {err}") from err
    return csc, doc_ids, order
