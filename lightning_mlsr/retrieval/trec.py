"""TREC run and qrels files, and trec_eval's ranking order.

- Runs: ``search`` output (top-k arrays) -> ``{qid: {docid: score}}`` (:func:`run_from_topk`)
  <-> ``qid Q0 docid rank score tag`` lines (:func:`write_trec_run`, :func:`read_trec_run`).
- Qrels: ``qid Q0 docid rel`` lines (:func:`write_trec_qrels`, :func:`parse_trec_qrels`,
  :func:`read_trec_qrels`).
- :func:`trec_order`: trec_eval ranks by score descending and breaks ties by docid
  descending; the rank column of a written run is that rank.

Imports neither torch nor lightning.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from lightning_mlsr.io.atomic import atomic_write_text

__all__ = [
    "Qrels",
    "Run",
    "parse_trec_qrels",
    "read_trec_qrels",
    "read_trec_run",
    "run_from_topk",
    "trec_order",
    "write_trec_qrels",
    "write_trec_run",
]

#: ``{qid: {docid: score}}``
Run = dict[str, dict[str, float]]
#: ``{qid: {docid: relevance}}``
Qrels = dict[str, dict[str, int]]
_REL = re.compile(r"-?\d+")


def run_from_topk(
    scores: np.ndarray,
    indices: np.ndarray,
    query_ids: Sequence[Any] | np.ndarray,
    doc_ids: Sequence[Any] | np.ndarray,
) -> Run:
    """Turn ``search`` output into a run ``{qid: {docid: score}}`` with string ids.

    Padding (index ``-1``) is skipped; a query without results maps to ``{}``.

    Shape: scores, indices (n_queries, k); query_ids (n_queries,)
    """
    scores = np.asarray(scores)
    indices = np.asarray(indices)
    if scores.shape != indices.shape or scores.ndim != 2:
        raise ValueError(
            f"scores and indices must be 2-D and of one shape, got {scores.shape} and "
            f"{indices.shape}"
        )
    if len(query_ids) != scores.shape[0]:
        raise ValueError(f"{len(query_ids)} query_ids for {scores.shape[0]} rows of results")
    doc_ids = np.asarray(doc_ids)
    if indices.size and indices.max() >= len(doc_ids):
        raise ValueError(
            f"result index {int(indices.max())} is out of range for {len(doc_ids)} doc_ids"
        )
    run: Run = {}
    for qid, row_s, row_i in zip(query_ids, scores, indices):
        qid = str(qid)
        if qid in run:
            raise ValueError(f"query id {qid!r} occurs more than once")
        valid = row_i >= 0
        run[qid] = {
            str(d): float(s) for d, s in zip(doc_ids[row_i[valid]].tolist(), row_s[valid].tolist())
        }
    return run


def trec_order(docs: Mapping[str, float]) -> list[tuple[str, float]]:
    """trec_eval's ranking of one query: score descending, ties by docid descending.

    The one place this order is written; run files and ``RR@k`` both use it.
    """
    return sorted(docs.items(), key=lambda item: (item[1], item[0]), reverse=True)


def write_trec_run(
    path: str | os.PathLike[str],
    run: Mapping[Any, Mapping[Any, float]],
    tag: str = "lightning_mlsr",
) -> None:
    """Write ``qid Q0 docid rank score tag`` lines, best first (rank from 1).

    Ties are written in trec_eval's order (docid descending) so the rank column is the rank
    trec_eval will use. Scores are written with ``repr`` so :func:`read_trec_run` round-trips.
    """
    if not tag or any(c.isspace() for c in tag):
        raise ValueError(f"tag must be a non-empty string without whitespace, got {tag!r}")
    lines = []
    for qid, docs in run.items():
        qid = str(qid)
        _check_trec_id(qid, "query id")
        for rank, (docid, score) in enumerate(
            trec_order({str(d): float(s) for d, s in docs.items()}), start=1
        ):
            _check_trec_id(docid, "document id")
            lines.append(f"{qid} Q0 {docid} {rank} {score!r} {tag}\n")
    atomic_write_text(path, "".join(lines))


def _check_trec_id(value: str, what: str) -> None:
    if not value or any(c.isspace() for c in value):
        raise ValueError(f"{what} {value!r} cannot be written to a TREC run (empty or whitespace)")


def read_trec_run(path: str | os.PathLike[str]) -> Run:
    """Read a TREC run file into ``{qid: {docid: score}}``."""
    run: Run = {}
    with open(path, encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, start=1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 6:
                raise ValueError(
                    f"{path}:{line_no}: expected 'qid Q0 docid rank score tag', got {line.rstrip()!r}"
                )
            qid, _, docid, _, score, _ = fields
            try:
                value = float(score)
            except ValueError:
                raise ValueError(f"{path}:{line_no}: score {score!r} is not a number") from None
            docs = run.setdefault(qid, {})
            if docid in docs:
                raise ValueError(f"{path}:{line_no}: document {docid!r} repeated for query {qid!r}")
            docs[docid] = value
    return run


def write_trec_qrels(path: str | os.PathLike[str], qrels: Mapping[Any, Mapping[Any, int]]) -> None:
    """Write ``qid Q0 docid rel`` lines (the format :func:`parse_trec_qrels` reads)."""
    lines = []
    for qid, judged in qrels.items():
        qid = str(qid)
        _check_trec_id(qid, "query id")
        for docid, rel in judged.items():
            docid = str(docid)
            _check_trec_id(docid, "document id")
            if isinstance(rel, bool) or not float(rel).is_integer():
                raise ValueError(
                    f"relevance of ({qid!r}, {docid!r}) must be an integer, got {rel!r}"
                )
            lines.append(f"{qid} Q0 {docid} {int(rel)}\n")
    atomic_write_text(path, "".join(lines))


_REL_MIN, _REL_MAX = -(2**31), 2**31 - 1


def parse_trec_qrels(path: str | os.PathLike[str]) -> tuple[list[str], list[str], list[int]]:
    """The ``(qids, docids, rels)`` columns of a TREC qrels file, one entry per judgment line.

    Blank lines are skipped; repeated judgments are returned as they are (the caller decides).

    Raises:
        ValueError: a line that is not UTF-8, or not ``qid Q0 docid rel`` with an integer rel
            (the message names the file and line).
    """
    qids: list[str] = []
    docids: list[str] = []
    rels: list[int] = []
    with open(path, "rb") as handle:
        for lineno, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise ValueError(
                    f"{path}:{lineno}: qrels line is not UTF-8 ({err.reason} at byte "
                    f"{err.start}: {raw[max(0, err.start - 10) : err.end + 10]!r}); "
                    f"re-encode the file as UTF-8"
                ) from None
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 4 or not _REL.fullmatch(fields[3]):
                raise ValueError(
                    f"{path}:{lineno}: malformed qrels line {line.rstrip()!r}; expected "
                    f"'text_id Q0 image_id rel' with an integer rel"
                )
            rel = int(fields[3])
            if not _REL_MIN <= rel <= _REL_MAX:  # trec_eval and pytrec_eval hold a C long
                raise ValueError(
                    f"{path}:{lineno}: relevance {fields[3]} is out of range; qrels grades are "
                    f"small integers (trec_eval reads them into a 32-bit integer)"
                )
            qids.append(fields[0])
            docids.append(fields[2])
            rels.append(rel)
    return qids, docids, rels


def read_trec_qrels(path: str | os.PathLike[str]) -> Qrels:
    """Read a TREC qrels file into ``{qid: {docid: rel}}``.

    Raises:
        ValueError: a malformed line, or one (qid, docid) pair judged twice.
    """
    qrels: Qrels = {}
    for qid, docid, rel in zip(*parse_trec_qrels(path)):
        judged = qrels.setdefault(qid, {})
        if docid in judged:
            raise ValueError(f"{path}: document {docid!r} judged twice for query {qid!r}")
        judged[docid] = rel
    return qrels
