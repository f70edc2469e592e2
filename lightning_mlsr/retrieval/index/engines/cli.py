"""``python -m lightning_mlsr.retrieval.index export``: write what PISA, Anserini or Seismic ingests.

Reads the vectors ``predict`` exported (``<target>.npz`` + ``<target>.ids.txt``, see
:mod:`lightning_mlsr.training.callbacks.vector_writer`) and writes, into ``--out``:

- ``--engine anserini``: ``collection/docs.jsonl`` (``JsonVectorCollection`` of integer
  impacts), ``queries.tsv`` (``TsvString`` topics, terms repeated by impact) and, with
  ``--build``, ``index/`` (a Lucene impact index; needs the ``[engines]`` extra);
- ``--engine pisa``: ``index/`` (PISA's inverted and forward files; ``[engines]`` extra),
  ``queries.txt`` (``qid:terms``, terms repeated by impact, for ``queries --weighted``) and
  ``terms.txt`` (the vocabulary's term of each column). PISA's terms are the column numbers:
  PISA tokenizes query text (its default English tokenizer turns ``##s`` into ``s`` and drops
  ``%`` and ``:``), and numbers read the same under every tokenizer, so PISA scores exactly the
  terms the project scored;
- ``--engine seismic``: ``docs.jsonl`` and ``queries.jsonl`` (float weights).

Impacts are ``round(weight * scale)`` as in the JSONL export; terms are the vocabulary's
wordpieces (``--vocab``), so Anserini's and Seismic's files read like text. Vectors an engine
would fail on or index as nothing (no rows, all empty, empty after quantization, an impact above
``2**24``) are refused, naming the problem, before any engine runs. ``export.json`` records the
settings.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from lightning_mlsr.retrieval.index.engines.files import (
    write_anserini_collection,
    write_anserini_queries,
    write_pisa_queries,
    write_seismic_jsonl,
)
from lightning_mlsr.retrieval.index.engines.impacts import check_impacts, quantize, terms_for

__all__ = ["ENGINES", "PISA_TERMS", "export", "main", "read_vectors"]

ENGINES = ("anserini", "pisa", "seismic")
#: beside a PISA export: the term of each column number (line c+1: column c)
PISA_TERMS = "terms.txt"


def read_vectors(path: str | Path) -> tuple[sp.csr_matrix, list[str]]:
    """A ``predict`` export: the CSR matrix of ``X.npz`` and the ids of ``X.ids.txt``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no vectors at {path}: pass the .npz that predict wrote")
    ids_path = path.with_name(path.name.removesuffix(".npz") + ".ids.txt")
    if not ids_path.is_file():
        raise FileNotFoundError(
            f"{path} has no ids file {ids_path.name} beside it (predict writes both)"
        )
    matrix = sp.load_npz(path).tocsr()
    ids = ids_path.read_text(encoding="utf-8").splitlines()
    if len(ids) != matrix.shape[0]:
        raise ValueError(f"{ids_path} has {len(ids)} ids for the {matrix.shape[0]} rows of {path}")
    return matrix, ids


def _vocabulary(name: str, n_terms: int) -> list[str]:
    """Column -> term: ``ids`` (column numbers), a file with one term per line (a BERT
    ``vocab.txt``), or a text backbone whose tokenizer gives the wordpieces."""
    if name == "ids":
        return terms_for(n_terms)
    path = Path(name)
    if path.is_file():
        return terms_for(n_terms, path.read_text(encoding="utf-8").splitlines())
    from lightning_mlsr.io.pretrained import load_tokenizer

    tokenizer = load_tokenizer(name)
    return terms_for(n_terms, tokenizer.convert_ids_to_tokens(list(range(n_terms))))


def export(
    engine: str,
    docs: sp.csr_matrix,
    doc_ids: Sequence[str],
    out: str | Path,
    terms: Sequence[str],
    queries: tuple[sp.csr_matrix, Sequence[str]] | None = None,
    scale: float = 100.0,
    build: bool = False,
    overwrite: bool = False,
) -> list[Path]:
    """Write ``engine``'s input files into ``out``; returns the paths written.

    Shape: docs (n_docs, V), queries (n_queries, V)
    """
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; use one of {', '.join(ENGINES)}")
    _check_indexable(engine, docs, "documents", scale)
    if queries is not None:
        _check_indexable(engine, queries[0], "queries", scale)
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} is not empty; name another --out or pass --overwrite")
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    if engine == "seismic":
        write_seismic_jsonl(out / "docs.jsonl", doc_ids, docs, terms)
        written.append(out / "docs.jsonl")
        if queries is not None:
            write_seismic_jsonl(out / "queries.jsonl", queries[1], queries[0], terms)
            written.append(out / "queries.jsonl")
    elif engine == "anserini":
        collection = write_anserini_collection(
            out / "collection", doc_ids, quantize(docs, scale), terms
        )
        written.append(collection)
        if queries is not None:
            write_anserini_queries(
                out / "queries.tsv", queries[1], quantize(queries[0], scale), terms
            )
            written.append(out / "queries.tsv")
        if build:
            from lightning_mlsr.retrieval.index.engines.anserini import build_anserini_index

            written.append(build_anserini_index(collection, out / "index", overwrite=overwrite))
    else:
        from lightning_mlsr.retrieval.index.engines.pisa import PisaImpactIndex

        # PISA tokenizes query text (its default English tokenizer turns ``##s`` into ``s``
        # and drops ``%`` and ``:``); column numbers read the same under every tokenizer
        numbers = terms_for(docs.shape[1])
        PisaImpactIndex.from_matrix(
            quantize(docs, scale), doc_ids, path=out / "index", terms=numbers, overwrite=overwrite
        )
        written.append(out / "index")
        (out / PISA_TERMS).write_text("".join(f"{t}\n" for t in terms), encoding="utf-8")
        written.append(out / PISA_TERMS)
        if queries is not None:
            qs = quantize(queries[0], scale)
            write_pisa_queries(out / "queries.txt", queries[1], qs, numbers)
            written.append(out / "queries.txt")
    return written


def _check_indexable(engine: str, weights: sp.csr_matrix, what: str, scale: float) -> None:
    """Refuse, before any engine runs, vectors it would fail on or index as nothing: no rows,
    no weight at all, or (for the integer engines) no impact left after quantization."""
    if weights.shape[0] == 0:
        raise ValueError(
            f"the {what} file holds no vectors: there is nothing to index or search. Export "
            "them again with predict (--data.predict=corpus for documents, =queries for queries)"
        )
    if weights.nnz == 0 or not (weights.data != 0).any():
        raise ValueError(
            f"every one of the {weights.shape[0]} {what} vectors is empty: the encoder gave no "
            "term a weight. Check the checkpoint (a collapsed model, or predict of another split)"
        )
    if engine == "seismic":
        return
    impacts = quantize(weights, scale)
    if impacts.nnz == 0:
        largest = float(abs(weights).max())
        raise ValueError(
            f"every one of the {weights.shape[0]} {what} vectors is empty after quantization: "
            f"the largest weight, {largest:g}, times --scale {scale:g} rounds to 0. Raise "
            f"--scale (to at least {0.5 / largest:.3g}) so that round(weight * scale) keeps "
            f"the weights, or check the encoder's output"
        )
    check_impacts(impacts, what)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m lightning_mlsr.retrieval.index",
        description="Write sparse vectors in the formats search engines ingest.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    exp = sub.add_parser("export", help="write what PISA, Anserini or Seismic ingests")
    exp.add_argument("--engine", choices=ENGINES, required=True)
    exp.add_argument("--docs", required=True, help="the corpus .npz written by predict")
    exp.add_argument("--queries", help="a queries .npz written by predict (optional)")
    exp.add_argument("--out", required=True, help="output directory")
    exp.add_argument("--scale", type=float, default=100.0, help="impact = round(weight*scale)")
    exp.add_argument(
        "--vocab",
        default="splade-tiny",
        help="column -> term: a text backbone name or path (its tokenizer's wordpieces), a "
        "file with one term per line, or 'ids' for column numbers (default: splade-tiny). "
        "PISA's files use column numbers whatever this says, and terms.txt lists these terms",
    )
    exp.add_argument("--build", action="store_true", help="anserini: also build the index")
    exp.add_argument("--overwrite", action="store_true", help="replace what --out holds")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m lightning_mlsr.retrieval.index``; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        docs, doc_ids = read_vectors(args.docs)
        queries = read_vectors(args.queries) if args.queries else None
        if queries is not None and queries[0].shape[1] != docs.shape[1]:
            raise ValueError(
                f"{args.queries} has {queries[0].shape[1]} columns, {args.docs} {docs.shape[1]}"
            )
        terms = _vocabulary(args.vocab, docs.shape[1])
        written = export(
            args.engine,
            docs,
            doc_ids,
            args.out,
            terms,
            queries,
            args.scale,
            args.build,
            args.overwrite,
        )
    except (FileNotFoundError, FileExistsError, ValueError, ImportError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    meta = {
        "engine": args.engine,
        "docs": str(args.docs),
        "queries": str(args.queries) if args.queries else None,
        "n_docs": int(docs.shape[0]),
        "n_queries": int(queries[0].shape[0]) if queries else 0,
        "scale": args.scale if args.engine != "seismic" else None,
        "vocab": args.vocab,
        "terms": "column numbers (terms.txt names them)" if args.engine == "pisa" else "vocab",
        "mean_nnz_per_doc": float(np.diff(docs.indptr).mean()) if docs.shape[0] else 0.0,
    }
    (Path(args.out) / "export.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.engine} input for {docs.shape[0]} documents to {args.out}:")
    for path in written:
        print(f"  {path}")
    return 0
