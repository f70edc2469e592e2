"""The files each engine ingests, written from sparse matrices (no engine needed).

- Anserini: a ``JsonVectorCollection`` (``{"id", "contents": "", "vector": {term: int}}``
  per line, what ``IndexCollection -impact -pretokenized`` indexes) and queries as
  ``TsvString`` topics whose text repeats each term as often as its impact (how
  ``SearchCollection -impact -pretokenized`` reads weighted queries);
- PISA: queries as ``qid:term term ...`` lines, each term repeated as often as its impact
  (PISA's query-file format; ``--weighted`` counts the repeats), the index itself being
  written by :class:`~lightning_mlsr.retrieval.index.engines.pisa.PisaImpactIndex`;
- Seismic: ``{"id", "content": "", "vector": {term: float}}`` per line, for documents and
  queries alike (what ``seismic.SeismicIndex.build`` reads); float weights, since Seismic
  does its own compression.

Rows are written in matrix order; an all-zero query row is left out of the query files
(it matches nothing, and a topic with empty text stops Anserini's reader).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from lightning_mlsr.retrieval.index.engines.impacts import check_ids, check_impacts
from lightning_mlsr.retrieval.index.inputs import to_csr

__all__ = [
    "ANSERINI_DOCS",
    "write_anserini_collection",
    "write_anserini_queries",
    "write_pisa_queries",
    "write_seismic_jsonl",
]

#: file name of the collection inside an Anserini collection directory
ANSERINI_DOCS = "docs.jsonl"


def _rows(matrix: sp.csr_matrix) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    for r in range(matrix.shape[0]):
        start, stop = matrix.indptr[r], matrix.indptr[r + 1]
        yield r, matrix.indices[start:stop], matrix.data[start:stop]


def _repeated(terms: Sequence[str], cols: np.ndarray, impacts: np.ndarray) -> str:
    return " ".join(" ".join([terms[c]] * int(w)) for c, w in zip(cols, impacts))


def write_anserini_collection(
    directory: str | Path, ids: Sequence[Any], impacts: Any, terms: Sequence[str]
) -> Path:
    """An Anserini ``JsonVectorCollection`` of integer ``impacts`` in ``directory``.

    Returns the directory (``IndexCollection -input`` takes it). Shape: impacts (n_docs, V).
    """
    csr = check_impacts(impacts, "documents")
    names = check_ids(ids, csr.shape[0], "document ids")
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    with (out / ANSERINI_DOCS).open("w", encoding="utf-8") as f:
        for r, cols, weights in _rows(csr):
            vector = {terms[c]: int(w) for c, w in zip(cols, weights)}
            f.write(json.dumps({"id": names[r], "contents": "", "vector": vector}) + "\n")
    return out


def write_anserini_queries(
    path: str | Path, qids: Sequence[Any], impacts: Any, terms: Sequence[str]
) -> int:
    """Anserini ``TsvString`` topics (``qid<TAB>terms repeated by impact``); returns the number
    of queries written. Shape: impacts (n_queries, V)."""
    csr = check_impacts(impacts, "queries")
    names = check_ids(qids, csr.shape[0], "query ids")
    return _write_repeated_queries(path, names, csr, terms, "\t")


def write_pisa_queries(
    path: str | Path, qids: Sequence[Any], impacts: Any, terms: Sequence[str]
) -> int:
    """PISA queries (``qid:terms repeated by impact``); returns the number written.

    Shape: impacts (n_queries, V).
    """
    csr = check_impacts(impacts, "queries")
    names = check_ids(qids, csr.shape[0], "query ids")
    bad = next((q for q in names if ":" in q), None)
    if bad is not None:
        raise ValueError(f"query id {bad!r} holds ':', which separates the id in PISA queries")
    return _write_repeated_queries(path, names, csr, terms, ":")


def _write_repeated_queries(
    path: str | Path, names: Sequence[str], csr: Any, terms: Sequence[str], separator: str
) -> int:
    """``qid<separator>terms repeated by impact`` per non-empty query; returns how many."""
    written = 0
    with Path(path).open("w", encoding="utf-8") as f:
        for r, cols, weights in _rows(csr):
            if len(cols):
                f.write(f"{names[r]}{separator}{_repeated(terms, cols, weights)}\n")
                written += 1
    return written


def write_seismic_jsonl(
    path: str | Path, ids: Sequence[Any], weights: Any, terms: Sequence[str]
) -> int:
    """Seismic JSONL (``{"id", "content": "", "vector": {term: weight}}``) of float weights;
    returns the number of lines. Shape: weights (n_rows, V)."""
    csr = to_csr(weights, "weights")
    names = check_ids(ids, csr.shape[0], "ids")
    with Path(path).open("w", encoding="utf-8") as f:
        for r, cols, values in _rows(csr):
            vector = {terms[c]: float(v) for c, v in zip(cols, values)}
            f.write(json.dumps({"id": names[r], "content": "", "vector": vector}) + "\n")
    return csr.shape[0]
