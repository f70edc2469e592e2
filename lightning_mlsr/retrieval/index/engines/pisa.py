"""PISA search over integer impacts (``pyterrier-pisa``), with the InvertedIndex API.

Needs the ``[engines]`` extra. The index is PISA's own: the uncompressed inverted and
forward files (``inv.docs``/``inv.freqs``/``inv.sizes``, ``fwd.documents``/``fwd.terms`` and
their lexicons, what PISA's ``compress_inverted_index`` and ``create_wand_data`` read), with
one posting per (document, term) whose "frequency" is the impact. PISA's ``quantized``
scorer then scores ``sum(query impact * document impact)``: a query term repeated ``w``
times, counted as weight ``w``. No stemming, no stop words.

The binary collection (ds2i format: sequences of uint32, each preceded by its length) is
written straight from the matrix's CSC form by :func:`write_binary_collection`, in one
pass, so the index holds exactly the matrix it is given. pyterrier-pisa's own
``toks_indexer`` is not used: it inverts in batches of 100,000 documents, and a term first
seen in a later batch gets a spurious posting from the previous batch's last document.
pyterrier-pisa's bindings then build the term and document lexicons here, and the
compressed index and block-max data on first search.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from lightning_mlsr.retrieval.index.engines.impacts import check_ids, check_impacts, terms_for
from lightning_mlsr.retrieval.index.inputs import check_k

__all__ = ["ALGORITHMS", "PisaImpactIndex", "write_binary_collection"]

#: PISA's safe (exact top-k) query algorithms.
ALGORITHMS = ("block_max_wand", "maxscore", "block_max_maxscore", "wand", "ranked_or")


def _pisa() -> Any:
    try:
        import pyterrier_pisa
    except ImportError as err:
        raise ImportError(
            "PISA comes with pyterrier-pisa, in the [engines] extra: pip install -e '.[engines]'"
        ) from err
    return pyterrier_pisa


def _pandas() -> Any:
    try:
        import pandas
    except ImportError as err:
        raise ImportError(
            "PISA queries go through pandas, in the [engines] extra: pip install -e '.[engines]'"
        ) from err
    return pandas


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """PISA's C++ code logs every build step on the process's stdout/stderr: send both to a
    temporary file, shown only if the block fails."""
    logger = logging.getLogger("ir_datasets")
    level = logger.level
    logger.setLevel(logging.WARNING)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with tempfile.TemporaryFile(mode="w+") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield
        except BaseException:
            _restore(saved)
            log.seek(0)
            sys.stderr.write(log.read()[-3000:])
            raise
        else:
            _restore(saved)
        finally:
            logger.setLevel(level)


def _restore(saved: tuple[int, int]) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    for fd, copy in zip((1, 2), saved):
        os.dup2(copy, fd)
        os.close(copy)


def write_binary_collection(
    impacts: sp.csr_matrix, terms: Sequence[str], basename: str | Path, block: int = 4096
) -> list[str]:
    """Write PISA's uncompressed inverted index of integer ``impacts`` (ds2i format).

    ``<basename>.docs`` holds ``[1, n_docs]`` then, per term, ``[n, doc ids...]``;
    ``<basename>.freqs`` per term ``[n, impacts...]``; ``<basename>.sizes`` ``[n_docs,
    sizes...]`` with a document's size the sum of its impacts (as pyterrier-pisa writes it;
    the ``quantized`` scorer does not read it). Only terms with a posting are written, in
    the order of their strings (PISA's term lexicon is searched by bisection). Written
    ``block`` terms at a time, so the extra memory is the CSC copy of the matrix.

    Returns the terms written, in file order (what ``fwd.terms`` must list).

    Shape: impacts (n_docs, len(terms)), canonical CSR of non-negative integers < 2**32.
    """
    base = str(basename)
    csc = impacts.tocsc()
    csc.sort_indices()
    lengths = np.diff(csc.indptr).astype(np.int64)  # (n_terms,)
    used = sorted(np.flatnonzero(lengths).tolist(), key=terms.__getitem__)  # lexicon order
    used_arr = np.asarray(used, dtype=np.int64)
    with open(base + ".docs", "wb") as f_docs, open(base + ".freqs", "wb") as f_freqs:
        np.array([1, csc.shape[0]], dtype=np.uint32).tofile(f_docs)
        for start in range(0, len(used), block):
            cols = used_arr[start : start + block]
            lens = lengths[cols]
            heads = np.cumsum(lens + 1) - (lens + 1)  # where each term's length goes
            body = np.ones(int(heads[-1] + lens[-1] + 1), dtype=bool)
            body[heads] = False
            # posting p of term j (output position heads[j] + 1 + p) comes from indptr[j] + p
            src = np.repeat(csc.indptr[cols] - heads - 1, lens) + np.flatnonzero(body)
            for values, out in ((csc.indices, f_docs), (csc.data, f_freqs)):
                seq = np.empty(len(body), dtype=np.uint32)
                seq[heads] = lens
                seq[body] = values[src]
                seq.tofile(out)
    sizes = np.asarray(impacts.sum(axis=1), dtype=np.float64).ravel()  # (n_docs,)
    np.concatenate([[len(sizes)], sizes]).astype(np.uint32).tofile(base + ".sizes")
    return [terms[c] for c in used]


class PisaImpactIndex:
    """PISA search behind the :class:`~lightning_mlsr.retrieval.index.InvertedIndex` API.

    Build it with :meth:`from_matrix`; open a built index with the document ids and terms it
    was built from. Retrievers (one per algorithm, ``k`` and thread count) are kept, so the
    compressed index and its block-max data are built once, on first use.
    """

    def __init__(self, path: str | Path, doc_ids: Sequence[Any], terms: Sequence[str]) -> None:
        pisa = _pisa()
        self.path = Path(path)
        self._index = pisa.PisaIndex(str(self.path), stemmer="none", stops="none")
        if not self._index.built():
            raise FileNotFoundError(f"no PISA index at {self.path}: build it with from_matrix")
        self._doc_ids = np.asarray(doc_ids)
        self._row = {str(d): r for r, d in enumerate(self._doc_ids)}
        self._terms = list(terms)
        self._retrievers: dict[tuple[str, int, int], Any] = {}

    @classmethod
    def from_matrix(
        cls,
        impacts: Any,
        doc_ids: Sequence[Any] | np.ndarray | None = None,
        *,
        path: str | Path,
        terms: Sequence[str] | None = None,
        overwrite: bool = False,
    ) -> PisaImpactIndex:
        """Write PISA's index of integer ``impacts`` into ``path``. Shape: (n_docs, V)."""
        pisa = _pisa()
        csr = check_impacts(impacts, "documents")
        ids = check_ids(
            range(csr.shape[0]) if doc_ids is None else doc_ids, csr.shape[0], "doc_ids"
        )
        names = terms_for(csr.shape[1], terms)
        if csr.nnz == 0:
            raise ValueError(
                "PISA cannot index a collection without postings: every document vector is "
                "empty (after quantization); check the encoder's output or the scale"
            )
        root = Path(path)
        if pisa.PisaIndex(str(root), stemmer="none", stops="none").built():
            if not overwrite:
                raise FileExistsError(f"a PISA index already exists at {root}; pass overwrite=True")
            shutil.rmtree(root)  # its compressed files would describe the old collection
        root.mkdir(parents=True, exist_ok=True)
        lexicon = write_binary_collection(csr, names, root / "inv")
        (root / "fwd.documents").write_text("".join(f"{i}\n" for i in ids), encoding="utf-8")
        (root / "fwd.terms").write_text("".join(f"{t}\n" for t in lexicon), encoding="utf-8")
        with _quiet():
            pisa._pisathon.build_binlex(str(root / "fwd.documents"), str(root / "fwd.doclex"))
            pisa._pisathon.build_binlex(str(root / "fwd.terms"), str(root / "fwd.termlex"))
        meta = {"type": "sparse_index", "format": "pisa", "package_hint": "pyterrier-pisa"}
        (root / "pt_meta.json").write_text(json.dumps({**meta, "stemmer": "none"}))
        return cls(root, ids, names)

    def __len__(self) -> int:
        return len(self._doc_ids)

    @property
    def doc_ids(self) -> np.ndarray:
        return self._doc_ids

    @property
    def size_bytes(self) -> int:
        """Bytes of the compressed index and block-max data built so far (PISA's search-time
        files; the uncompressed ``inv.*``/``fwd.*`` files it was built from are left out)."""
        return sum(p.stat().st_size for p in self.path.glob("quantized.*") if p.is_file())

    def prepare(self, algorithm: str = "block_max_wand", k: int = 10, num_threads: int = 1) -> None:
        """Build (on first use) and load what ``search`` with these settings needs."""
        self._retriever(algorithm, k, num_threads)

    def _retriever(self, algorithm: str, k: int, num_threads: int) -> Any:
        if algorithm not in ALGORITHMS:
            raise ValueError(f"unknown PISA algorithm {algorithm!r}; use one of {ALGORITHMS}")
        key = (algorithm, k, num_threads)
        if key not in self._retrievers:
            with _quiet():
                self._retrievers[key] = self._index.quantized(
                    num_results=k, query_algorithm=algorithm, toks_scale=1.0, threads=num_threads
                )
        return self._retrievers[key]

    def search(
        self,
        queries: Any,
        k: int,
        algorithm: str = "block_max_wand",
        num_threads: int = 1,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k by impact score; results best first, padded with ``(-inf, -1)``.

        Shape: queries (n_queries, V) integer impacts -> scores, indices (n_queries, k)
        """
        k = check_k(k)
        q = check_impacts(queries, "queries")
        if q.shape[1] != len(self._terms):
            raise ValueError(f"queries must have {len(self._terms)} columns, got {q.shape[1]}")
        scores = np.full((q.shape[0], k), -np.inf, dtype=np.float32)
        indices = np.full((q.shape[0], k), -1, dtype=np.int64)
        rows, toks = [], []
        for r in range(q.shape[0]):
            start, stop = q.indptr[r], q.indptr[r + 1]
            if start < stop:
                rows.append(str(r))
                toks.append(
                    {
                        self._terms[c]: float(w)
                        for c, w in zip(q.indices[start:stop], q.data[start:stop])
                    }
                )
        if not rows:
            return scores, indices
        frame = _pandas().DataFrame({"qid": rows, "query_toks": toks})
        result = self._retriever(algorithm, k, num_threads).transform(frame)
        query_rows = result["qid"].astype(np.int64).to_numpy()
        ranks = result["rank"].to_numpy()
        scores[query_rows, ranks] = result["score"].to_numpy()
        indices[query_rows, ranks] = [self._row[d] for d in result["docno"]]
        return scores, indices
