"""Top-k search over encoded documents: exact sparse, approximate sparse, exact dense.

- :mod:`~lightning_mlsr.retrieval.index.inverted`: :class:`InvertedIndex`, the exact inverted index,
  with its save/load; its scoring paths in :mod:`~lightning_mlsr.retrieval.index.inverted_scoring`,
  its file format in :mod:`~lightning_mlsr.retrieval.index.inverted_file` and its document order
  in :mod:`~lightning_mlsr.retrieval.index.tie_order`.
- :mod:`~lightning_mlsr.retrieval.index.topk_kernel`: the compiled (numba) term-at-a-time top-k kernel;
  :mod:`~lightning_mlsr.retrieval.index.blockmax_kernel`: its safe block-max pruned variant.
- :mod:`~lightning_mlsr.retrieval.index.inputs`: validation of weights, document ids and ``k``.
- :mod:`~lightning_mlsr.retrieval.index.seismic`: :class:`SeismicIndex`, optional approximate search.
- :mod:`~lightning_mlsr.retrieval.index.dense`: :func:`dense_search`, exact inner-product top-k.

Run files live in :mod:`lightning_mlsr.retrieval.trec`; its run helpers are re-exported here.
Imports neither torch nor lightning.
"""

from lightning_mlsr.retrieval.index.dense import dense_search
from lightning_mlsr.retrieval.index.inverted import FORMAT_VERSION, InvertedIndex
from lightning_mlsr.retrieval.index.seismic import SeismicIndex
from lightning_mlsr.retrieval.trec import read_trec_run, run_from_topk, write_trec_run

__all__ = [
    "FORMAT_VERSION",
    "InvertedIndex",
    "SeismicIndex",
    "dense_search",
    "read_trec_run",
    "run_from_topk",
    "write_trec_run",
]
