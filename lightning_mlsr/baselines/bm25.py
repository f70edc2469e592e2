"""The BM25 baseline: ``bm25s`` over the captions (Lucene variant, Anserini defaults)."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import numpy as np
from tqdm.auto import tqdm

from lightning_mlsr.baselines.common import Retrieved, Run, Stopwatch, split_texts
from lightning_mlsr.data.collection import Collection

__all__ = ["bm25_baseline", "word_tokenize"]

_WORD = re.compile(r"\w+")


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
) -> Retrieved:
    """BM25 over the captions with ``bm25s``; see the module docstring for tokenisation.

    Args:
        k1, b, method: ``bm25s.BM25`` parameters (``method="lucene"`` scores
            ``idf * tf / (tf + k1 * (1 - b + b * |d| / avgdl))`` with
            ``idf = ln(1 + (N - df + 0.5) / (df + 0.5))``).
        stopwords: None, ``"en"`` (bm25s's English list) or a list of words.
        stemmer: None, a PyStemmer language name (``"english"``) or a callable.
    """
    import bm25s

    watch = Stopwatch()
    stop, stem = _resolve_stopwords(stopwords), _resolve_stemmer(stemmer)
    captions = collection.images.captions()
    doc_tokens = [
        word_tokenize(c, stop, stem)
        for c in tqdm(captions, desc="bm25: tokenise captions", disable=not progress)
    ]
    retriever = bm25s.BM25(k1=k1, b=b, method=method)
    retriever.index(doc_tokens, show_progress=progress)
    watch.lap("index")
    query_ids, queries = split_texts(collection, split)
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
    return Retrieved(
        run=run,
        q_nnz=float(np.mean([len(t) for t in q_terms])) if q_terms else 0.0,
        d_nnz=float(np.mean(d_nnz)) if d_nnz else 0.0,
        flops_per_query=float(np.mean([sum(int(df[t]) for t in terms) for terms in q_terms]))
        if q_terms
        else 0.0,
        timings=watch.timings,
    )
