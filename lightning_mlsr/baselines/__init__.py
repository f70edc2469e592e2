"""Untrained baselines, evaluated exactly like the trained models.

Three reference points for the sparse bi-encoders, all scored on the same task as
:class:`~lightning_mlsr.training.callbacks.evaluator.RetrievalEvaluator`: the corpus is every image of the
collection (represented by its caption), the queries are a split's judged texts, the top
``k`` (1000) images are retrieved per query and the run is scored with
:func:`lightning_mlsr.retrieval.metrics.evaluate` (trec_eval semantics).

- ``bm25``: BM25 over the captions with ``bm25s`` (Lucene variant; ``k1=0.9, b=0.4``, the
  Anserini/Pyserini defaults). Text is lowercased and split into ``\\w+`` runs (Unicode
  letters, digits and underscore; single characters kept, punctuation dropped); no stop
  words and no stemming unless asked for. A query term that occurs twice counts twice, as
  in ``bm25s``. Only images sharing a term with the query are returned.
- ``splade-zero-shot``: the pretrained SPLADE-tiny MLM head as shipped
  (:class:`~lightning_mlsr.models.MLMHead`, no training) on queries and captions, searched
  with the exact :class:`~lightning_mlsr.retrieval.index.InvertedIndex`. Tokenisation truncates to 32
  wordpieces on both sides, as the training DataModule does.
- ``dense-zero-shot``: all-MiniLM-L6-v2 used the sentence-transformers way (mean pooling
  over the attention mask, L2-normalised, 256 wordpieces), searched with faiss
  ``IndexFlatIP`` (exact cosine). ``pooling="cls"`` and ``normalize=False`` are options.

Sparse methods also report the mean non-zeros per query and per document and the expected
FLOPS per query (postings touched by exact term-at-a-time scoring).

CLI::

    python -m lightning_mlsr.baselines --collection emoji --split validation test \\
        [--methods bm25 splade-zero-shot dense-zero-shot] [--run-dir runs/baselines]

Files: :mod:`~lightning_mlsr.baselines.bm25`, :mod:`~lightning_mlsr.baselines.splade`,
:mod:`~lightning_mlsr.baselines.dense` (one method each), :mod:`~lightning_mlsr.baselines.run`
(run and score one), :mod:`~lightning_mlsr.baselines.cli` (the command line). Imports no
Lightning.
"""

from lightning_mlsr.baselines.bm25 import bm25_baseline, word_tokenize
from lightning_mlsr.baselines.cli import main
from lightning_mlsr.baselines.dense import dense_zero_shot_baseline
from lightning_mlsr.baselines.run import (
    BASELINES,
    BaselineName,
    BaselineResult,
    format_table,
    run_baseline,
)
from lightning_mlsr.baselines.splade import splade_zero_shot_baseline
from lightning_mlsr.retrieval.metrics import DEFAULT_MEASURES

__all__ = [
    "BASELINES",
    "DEFAULT_MEASURES",
    "BaselineName",
    "BaselineResult",
    "bm25_baseline",
    "dense_zero_shot_baseline",
    "format_table",
    "main",
    "run_baseline",
    "splade_zero_shot_baseline",
    "word_tokenize",
]
