"""Untrained baselines, evaluated exactly like the trained models.

Three reference points for the sparse bi-encoders, all scored on the same task as
:class:`~lightning_mlsr.callbacks.RetrievalEvaluator`: the corpus is every image of the
collection (represented by its caption), the queries are a split's judged texts, the top
``k`` (1000) images are retrieved per query and the run is scored with
:func:`lightning_mlsr.metrics.evaluate` (trec_eval semantics).

- ``bm25``: BM25 over the captions with ``bm25s`` (Lucene variant; ``k1=0.9, b=0.4``, the
  Anserini/Pyserini defaults). Text is lowercased and split into ``\\w+`` runs (Unicode
  letters, digits and underscore; single characters kept, punctuation dropped); no stop
  words and no stemming unless asked for. A query term that occurs twice counts twice, as
  in ``bm25s``. Only images sharing a term with the query are returned.
- ``splade-zero-shot``: the pretrained SPLADE-tiny MLM head as shipped
  (:class:`~lightning_mlsr.heads.MLMHead`, no training) on queries and captions, searched
  with the exact :class:`~lightning_mlsr.index.InvertedIndex`. Tokenisation truncates to 32
  wordpieces on both sides, as the training DataModule does.
- ``dense-zero-shot``: all-MiniLM-L6-v2 used the sentence-transformers way (mean pooling
  over the attention mask, L2-normalised, 256 wordpieces), searched with faiss
  ``IndexFlatIP`` (exact cosine). ``pooling="cls"`` and ``normalize=False`` are options.

Sparse methods also report the mean non-zeros per query and per document and the expected
FLOPS per query (postings touched by exact term-at-a-time scoring).

CLI::

    python -m lightning_mlsr.baselines --collection emoji --split validation test \\
        [--methods bm25 splade-zero-shot dense-zero-shot] [--run-dir runs/baselines]

This module imports no Lightning.
"""

from __future__ import annotations

import argparse
import inspect
import re
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast, get_args

import numpy as np
import scipy.sparse as sp
import torch
from tqdm.auto import tqdm

from lightning_mlsr.data.collection import Collection
from lightning_mlsr.index import InvertedIndex, run_from_topk, write_trec_run
from lightning_mlsr.metrics import evaluate

__all__ = [
    "BASELINES",
    "DEFAULT_MEASURES",
    "BaselineName",
    "BaselineResult",
    "bm25_baseline",
    "dense_zero_shot_baseline",
    "encode_dense",
    "encode_splade",
    "format_table",
    "main",
    "run_baseline",
    "splade_zero_shot_baseline",
    "word_tokenize",
]

BaselineName = Literal["bm25", "splade-zero-shot", "dense-zero-shot"]
BASELINES: tuple[str, ...] = get_args(BaselineName)
#: The measures the RetrievalEvaluator callback reports.
DEFAULT_MEASURES: tuple[str, ...] = ("nDCG@10", "AP", "RR@10", "R@10", "R@100", "R@1000")
DensePooling = Literal["mean", "cls"]

Run = dict[str, dict[str, float]]
_WORD = re.compile(r"\w+")


@dataclass
class BaselineResult:
    """One baseline on one split.

    Attributes:
        run: ``{text_id: {image_id: score}}``, at most ``k`` images per judged query.
        metrics: ``evaluate(run, collection.qrels[split], measures)``.
        q_nnz / d_nnz: mean non-zero terms per query / per document (None for dense).
        seconds: wall time of the whole baseline: loading the model, encoding, indexing,
            search and evaluation.
        flops_per_query: mean postings scored per query (None for dense).
        timings: seconds per stage (``load``, ``encode_docs``, ``encode_queries``, ``index``,
            ``search``, ``evaluate``).
    """

    run: Run
    metrics: dict[str, float]
    q_nnz: float | None
    d_nnz: float | None
    seconds: float
    name: str = ""
    split: str = ""
    flops_per_query: float | None = None
    timings: dict[str, float] = field(default_factory=dict)


@dataclass
class _Retrieved:
    """What a method hands back before evaluation."""

    run: Run
    q_nnz: float | None = None
    d_nnz: float | None = None
    flops_per_query: float | None = None
    timings: dict[str, float] = field(default_factory=dict)


class _Stopwatch:
    """Accumulates named stage timings."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.timings[stage] = self.timings.get(stage, 0.0) + now - self._last
        self._last = now


# ------------------------------------------------------------------------------ inputs


def _split_texts(collection: Collection, split: str) -> tuple[list[str], list[str]]:
    """Judged query ids of ``split`` (sorted) and their query strings."""
    query_ids = collection.query_ids(split)  # KeyError naming the splits if unknown
    texts = collection.texts
    return query_ids, [texts.query(texts.index(q)) for q in query_ids]


def _check_k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    return int(k)


def _mean_nnz(matrix: sp.csr_matrix) -> float:
    return float(np.diff(matrix.indptr).mean()) if matrix.shape[0] else 0.0


# ------------------------------------------------------------------------------ BM25


def word_tokenize(
    text: str,
    stopwords: Sequence[str] | None = None,
    stemmer: Callable[[str], str] | None = None,
) -> list[str]:
    """Lowercase, split into ``\\w+`` runs, drop ``stopwords``, then apply ``stemmer``.

    ``"Flag: United States"`` -> ``["flag", "united", "states"]``; ``"10:30"`` -> ``["10", "30"]``.
    """
    tokens = _WORD.findall(text.lower())
    if stopwords:
        stop = set(stopwords)
        tokens = [t for t in tokens if t not in stop]
    if stemmer is not None:
        tokens = [stemmer(t) for t in tokens]
    return tokens


def _resolve_stopwords(stopwords: str | Sequence[str] | None) -> list[str] | None:
    if stopwords is None:
        return None
    if isinstance(stopwords, str):
        from bm25s.stopwords import STOPWORDS_EN

        if stopwords not in ("en", "english"):
            raise ValueError(
                f"stopwords={stopwords!r}: give 'en' (bm25s's English list), a list of words, "
                "or None"
            )
        return list(STOPWORDS_EN)
    return list(stopwords)


def _resolve_stemmer(stemmer: str | Callable[[str], str] | None) -> Callable[[str], str] | None:
    if stemmer is None or callable(stemmer):
        return stemmer
    try:
        import Stemmer
    except ImportError:
        raise ValueError(
            f"stemmer={stemmer!r} needs PyStemmer, which is not installed. Fix: pip install "
            "-e '.[stemming]' (or pip install PyStemmer), pass any callable str -> str, or use "
            "stemmer=None."
        ) from None
    try:
        return Stemmer.Stemmer(stemmer).stemWord
    except KeyError:
        raise ValueError(
            f"stemmer={stemmer!r} is not a known PyStemmer language; known: "
            f"{', '.join(Stemmer.algorithms())}"
        ) from None


def bm25_baseline(
    collection: Collection,
    split: str,
    k: int = 1000,
    *,
    k1: float = 0.9,
    b: float = 0.4,
    method: str = "lucene",
    stopwords: str | Sequence[str] | None = None,
    stemmer: str | Callable[[str], str] | None = None,
    progress: bool = True,
) -> _Retrieved:
    """BM25 over the captions with ``bm25s``; see the module docstring for tokenisation.

    Args:
        k1, b, method: ``bm25s.BM25`` parameters (``method="lucene"`` scores
            ``idf * tf / (tf + k1 * (1 - b + b * |d| / avgdl))`` with
            ``idf = ln(1 + (N - df + 0.5) / (df + 0.5))``).
        stopwords: None, ``"en"`` (bm25s's English list) or a list of words.
        stemmer: None, a PyStemmer language name (``"english"``) or a callable.
    """
    import bm25s

    watch = _Stopwatch()
    stop, stem = _resolve_stopwords(stopwords), _resolve_stemmer(stemmer)
    captions = collection.images.captions()
    doc_tokens = [
        word_tokenize(c, stop, stem)
        for c in tqdm(captions, desc="bm25: tokenise captions", disable=not progress)
    ]
    retriever = bm25s.BM25(k1=k1, b=b, method=method)
    retriever.index(doc_tokens, show_progress=progress)
    watch.lap("index")
    query_ids, queries = _split_texts(collection, split)
    query_tokens = [word_tokenize(q, stop, stem) for q in queries]
    watch.lap("encode_queries")

    n_docs = len(captions)
    run: Run = {}
    if n_docs:
        found = retriever.retrieve(
            query_tokens, k=min(k, n_docs), show_progress=progress, n_threads=0
        )
        doc_ids = np.asarray(collection.images.ids)
        for qid, rows, scores in zip(query_ids, found.documents, found.scores):
            keep = scores > 0  # like InvertedIndex: images sharing no term are not retrieved
            run[qid] = dict(zip(doc_ids[rows[keep]].tolist(), scores[keep].astype(float).tolist()))
    else:
        run = {qid: {} for qid in query_ids}
    watch.lap("search")

    # sparsity in the index's term space (query terms unknown to the corpus score nothing)
    vocab: dict[str, int] = {t: i for t, i in retriever.vocab_dict.items() if t != ""}
    df = np.diff(np.asarray(retriever.scores["indptr"], dtype=np.int64))
    q_terms = [{vocab[t] for t in tokens if t in vocab} for tokens in query_tokens]
    d_nnz = [len(set(tokens)) for tokens in doc_tokens]
    return _Retrieved(
        run=run,
        q_nnz=float(np.mean([len(t) for t in q_terms])) if q_terms else 0.0,
        d_nnz=float(np.mean(d_nnz)) if d_nnz else 0.0,
        flops_per_query=float(np.mean([sum(int(df[t]) for t in terms) for terms in q_terms]))
        if q_terms
        else 0.0,
        timings=watch.timings,
    )


# ------------------------------------------------------------------------------ SPLADE


def _tokenized_batches(
    texts: Sequence[str],
    tokenizer: Any,
    batch_size: int,
    max_length: int,
    desc: str,
    progress: bool,
) -> Iterator[Any]:
    """Padded, truncated tokenizer outputs of ``texts`` in batches, with a progress bar."""
    for start in tqdm(
        range(0, len(texts), batch_size), desc=desc, unit="batch", disable=not progress
    ):
        yield tokenizer(
            list(texts[start : start + batch_size]),
            padding=True,
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
        )


def encode_splade(
    texts: Sequence[str],
    head: torch.nn.Module,
    tokenizer: Any,
    max_length: int = 32,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    desc: str = "splade",
    progress: bool = True,
) -> sp.csr_matrix:
    """Sparse term weights of ``texts`` from a text head, in eval mode without gradients.

    Shape: ``len(texts)`` strings -> ``(len(texts), V)`` float32 CSR.
    """
    was_training = head.training
    head.eval()
    blocks: list[sp.csr_matrix] = []
    try:
        with torch.no_grad():
            for enc in _tokenized_batches(
                texts, tokenizer, batch_size, max_length, desc=desc, progress=progress
            ):
                inputs = {
                    "input_ids": enc["input_ids"].to(device),
                    "attention_mask": enc["attention_mask"].to(device),
                }
                weights = head(inputs).float().cpu().numpy()  # (b, V), >= 0
                blocks.append(sp.csr_matrix(weights))
    finally:
        head.train(was_training)
    vocab = int(getattr(head, "vocab_size", 0))
    if not blocks:
        return sp.csr_matrix((0, vocab), dtype=np.float32)
    return sp.vstack(blocks, format="csr").astype(np.float32)


def splade_zero_shot_baseline(
    collection: Collection,
    split: str,
    k: int = 1000,
    *,
    backbone: str = "splade-tiny",
    pooling: Literal["max", "sum"] = "max",
    query_max_length: int = 32,
    doc_max_length: int = 32,
    batch_size: int = 64,
    device: str = "cpu",
    progress: bool = True,
) -> _Retrieved:
    """The pretrained SPLADE MLM head, untrained here, on queries and captions."""
    from lightning_mlsr.backbones import load_tokenizer
    from lightning_mlsr.heads.text import MLMHead

    watch = _Stopwatch()
    head = MLMHead(backbone, pooling=pooling).to(device).eval()
    tokenizer = load_tokenizer(backbone)
    watch.lap("load")
    docs = encode_splade(
        collection.images.captions(),
        head,
        tokenizer,
        doc_max_length,
        batch_size,
        device,
        "splade: encode captions",
        progress,
    )
    watch.lap("encode_docs")
    query_ids, queries = _split_texts(collection, split)
    q = encode_splade(
        queries,
        head,
        tokenizer,
        query_max_length,
        batch_size,
        device,
        "splade: encode queries",
        progress,
    )
    watch.lap("encode_queries")
    index = InvertedIndex.from_matrix(docs, collection.images.ids)
    watch.lap("index")
    scores, indices = index.search(q, _check_k(k))
    run = run_from_topk(scores, indices, query_ids, index.doc_ids)
    watch.lap("search")
    return _Retrieved(
        run=run,
        q_nnz=_mean_nnz(q),
        d_nnz=_mean_nnz(docs),
        flops_per_query=float(np.mean(index.expected_flops(q))) if q.shape[0] else 0.0,
        timings=watch.timings,
    )


# ------------------------------------------------------------------------------ dense


def encode_dense(
    texts: Sequence[str],
    encoder: torch.nn.Module,
    tokenizer: Any,
    pooling: DensePooling = "mean",
    normalize: bool = True,
    max_length: int = 256,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    desc: str = "dense",
    progress: bool = True,
) -> np.ndarray:
    """Sentence embeddings: mean over real tokens (attention mask) or the ``[CLS]`` state.

    Shape: ``len(texts)`` strings -> ``(len(texts), H)`` float32.
    """
    if pooling not in get_args(DensePooling):
        raise ValueError(f"pooling must be one of {get_args(DensePooling)}, got {pooling!r}")
    was_training = encoder.training
    encoder.eval()
    blocks: list[np.ndarray] = []
    try:
        with torch.no_grad():
            for enc in _tokenized_batches(
                texts, tokenizer, batch_size, max_length, desc=desc, progress=progress
            ):
                mask = enc["attention_mask"].to(device)  # (b, L)
                hidden = encoder(
                    input_ids=enc["input_ids"].to(device), attention_mask=mask
                ).last_hidden_state.float()  # (b, L, H)
                if pooling == "mean":
                    m = mask.unsqueeze(-1).to(hidden.dtype)  # (b, L, 1)
                    emb = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)  # (b, H)
                else:
                    emb = hidden[:, 0]  # (b, H)
                if normalize:
                    emb = torch.nn.functional.normalize(emb, p=2, dim=-1)
                blocks.append(emb.cpu().numpy().astype(np.float32))
    finally:
        encoder.train(was_training)
    if not blocks:
        hidden_size = int(getattr(getattr(encoder, "config", None), "hidden_size", 0))
        return np.zeros((0, hidden_size), dtype=np.float32)
    return np.concatenate(blocks)


def dense_zero_shot_baseline(
    collection: Collection,
    split: str,
    k: int = 1000,
    *,
    backbone: str = "minilm-l6",
    pooling: DensePooling = "mean",
    normalize: bool = True,
    max_length: int = 256,
    batch_size: int = 64,
    device: str = "cpu",
    progress: bool = True,
) -> _Retrieved:
    """A pretrained sentence encoder, exact inner-product search with faiss ``IndexFlatIP``."""
    import faiss

    from lightning_mlsr.backbones import load_text_encoder, load_tokenizer

    watch = _Stopwatch()
    encoder = load_text_encoder(backbone).to(device).eval()
    tokenizer = load_tokenizer(backbone)
    watch.lap("load")

    def encode(texts: Sequence[str], desc: str) -> np.ndarray:
        return encode_dense(
            texts,
            encoder,
            tokenizer,
            pooling=pooling,
            normalize=normalize,
            max_length=max_length,
            batch_size=batch_size,
            device=device,
            desc=desc,
            progress=progress,
        )

    docs = encode(collection.images.captions(), "dense: encode captions")
    watch.lap("encode_docs")
    query_ids, queries = _split_texts(collection, split)
    q = encode(queries, "dense: encode queries")
    watch.lap("encode_queries")
    index = faiss.IndexFlatIP(docs.shape[1])
    index.add(np.ascontiguousarray(docs))
    watch.lap("index")
    n = min(_check_k(k), len(docs))
    if n and len(q):
        scores, indices = index.search(np.ascontiguousarray(q), n)  # (n_q, n), -1 = none
    else:
        scores = np.zeros((len(q), 0), np.float32)
        indices = np.zeros((len(q), 0), np.int64)
    run = run_from_topk(scores, indices, query_ids, collection.images.ids)
    watch.lap("search")
    return _Retrieved(run=run, timings=watch.timings)


# ------------------------------------------------------------------------------ API

_METHODS: dict[str, Callable[..., _Retrieved]] = {
    "bm25": bm25_baseline,
    "splade-zero-shot": splade_zero_shot_baseline,
    "dense-zero-shot": dense_zero_shot_baseline,
}


def run_baseline(
    name: BaselineName,
    collection: Collection,
    split: str,
    k: int = 1000,
    measures: Sequence[str] = DEFAULT_MEASURES,
    **options: Any,
) -> BaselineResult:
    """Run one baseline on ``split`` and score it like the trained models.

    Args:
        name: ``"bm25"``, ``"splade-zero-shot"`` or ``"dense-zero-shot"``.
        collection: the corpus is all its images; the queries are ``split``'s judged texts.
        k: images retrieved per query.
        measures: passed to :func:`lightning_mlsr.metrics.evaluate`.
        options: method options, e.g. ``k1``/``b``/``stopwords``/``stemmer`` (bm25),
            ``backbone``/``batch_size``/``device`` (both neural ones), ``pooling`` and
            ``normalize`` (dense); ``progress=False`` hides the progress bars.

    Raises:
        ValueError: an unknown name or option, or a bad ``k``.
        KeyError: the collection has no such split.
    """
    if name not in _METHODS:
        raise ValueError(f"unknown baseline {name!r}; choose one of {', '.join(BASELINES)}")
    method = _METHODS[name]
    accepted = [
        p.name for p in inspect.signature(method).parameters.values() if p.kind is p.KEYWORD_ONLY
    ]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(
            f"baseline {name!r} has no option(s) {unknown}; it accepts {', '.join(accepted)}"
        )
    k = _check_k(k)
    collection.query_ids(split)  # fail on an unknown split before loading any model
    start = time.perf_counter()
    found = method(collection, split, k, **options)
    before_eval = time.perf_counter()
    means = cast(dict[str, float], evaluate(found.run, collection.qrels[split], tuple(measures)))
    metrics = {m: float(means[m]) for m in measures}  # in the order asked for
    end = time.perf_counter()
    return BaselineResult(
        run=found.run,
        metrics=metrics,
        q_nnz=found.q_nnz,
        d_nnz=found.d_nnz,
        seconds=end - start,
        name=name,
        split=split,
        flops_per_query=found.flops_per_query,
        timings={**found.timings, "evaluate": end - before_eval},
    )


def format_table(results: Sequence[BaselineResult], measures: Sequence[str] | None = None) -> str:
    """A markdown table: one row per result, measures then sparsity and wall time."""
    names = list(measures) if measures is not None else list(results[0].metrics if results else [])

    def num(value: float | None, digits: int) -> str:
        return "–" if value is None else f"{value:.{digits}f}"

    header = ["method", "split", *names, "q_nnz", "d_nnz", "FLOPS/query", "seconds"]
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] * 2 + ["---:"] * (len(header) - 2)) + "|",
    ]
    for r in results:
        cells = [
            r.name,
            r.split,
            *(num(r.metrics.get(m), 4) for m in names),
            num(r.q_nnz, 1),
            num(r.d_nnz, 1),
            num(r.flops_per_query, 0),
            num(r.seconds, 1),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------ CLI


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m lightning_mlsr.baselines",
        description="Untrained baselines (BM25, zero-shot SPLADE, zero-shot dense) scored like "
        "the trained models; prints a markdown table.",
    )
    parser.add_argument("--collection", default="emoji", help="bundled name or directory")
    parser.add_argument("--split", nargs="+", default=["test"], help="one or more splits")
    parser.add_argument("--methods", nargs="+", choices=BASELINES, default=list(BASELINES))
    parser.add_argument("--run-dir", type=Path, help="write <run-dir>/<split>.<method>.trec")
    parser.add_argument("--k", type=int, default=1000, help="images retrieved per query")
    parser.add_argument("--measures", nargs="+", default=list(DEFAULT_MEASURES))
    parser.add_argument("--device", default="cpu", help="torch device of the neural baselines")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--bm25-k1", type=float, default=0.9)
    parser.add_argument("--bm25-b", type=float, default=0.4)
    parser.add_argument("--dense-pooling", choices=get_args(DensePooling), default="mean")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return parser


def main(argv: Sequence[str] | None = None) -> list[BaselineResult]:
    """Run the chosen baselines on the chosen splits, print the table, write runs."""
    from lightning_mlsr.data.collection import load_collection
    from lightning_mlsr.data.errors import DataError

    args = _parser().parse_args(argv)
    try:
        collection = load_collection(args.collection)
    except DataError as err:
        sys.exit(f"error: {err}")
    missing = [s for s in args.split if s not in collection.qrels]
    if missing:
        sys.exit(
            f"error: collection {collection.name!r} has no split(s) {missing}; "
            f"it has {collection.splits}"
        )
    progress = not args.no_progress
    options: dict[str, dict[str, Any]] = {
        "bm25": {"k1": args.bm25_k1, "b": args.bm25_b},
        "splade-zero-shot": {"batch_size": args.batch_size, "device": args.device},
        "dense-zero-shot": {
            "batch_size": args.batch_size,
            "device": args.device,
            "pooling": args.dense_pooling,
        },
    }
    results = []
    for split in args.split:
        for method in args.methods:
            result = run_baseline(
                method,
                collection,
                split,
                args.k,
                args.measures,
                progress=progress,
                **options[method],
            )
            results.append(result)
            if args.run_dir is not None:
                args.run_dir.mkdir(parents=True, exist_ok=True)
                write_trec_run(args.run_dir / f"{split}.{method}.trec", result.run, tag=method)
    print(format_table(results, args.measures))
    return results


if __name__ == "__main__":
    main()
