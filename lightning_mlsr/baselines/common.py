"""What the baseline methods share: their result before evaluation, stage timings, the
split's query texts, and tokenised batches for a real text head."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from tqdm.auto import tqdm

from lightning_mlsr.data.collection import Collection

__all__ = ["Retrieved", "Stopwatch", "mean_nnz", "split_texts", "text_batches"]

Run = dict[str, dict[str, float]]


@dataclass
class Retrieved:
    """What a method hands back before evaluation."""

    run: Run
    q_nnz: float | None = None
    d_nnz: float | None = None
    flops_per_query: float | None = None
    timings: dict[str, float] = field(default_factory=dict)


class Stopwatch:
    """Accumulates named stage timings."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.timings[stage] = self.timings.get(stage, 0.0) + now - self._last
        self._last = now


def split_texts(collection: Collection, split: str) -> tuple[list[str], list[str]]:
    """Judged query ids of ``split`` (sorted) and their query strings."""
    query_ids = collection.query_ids(split)  # KeyError naming the splits if unknown
    texts = collection.texts
    return query_ids, [texts.query(texts.index(q)) for q in query_ids]


def mean_nnz(matrix: sp.csr_matrix) -> float:
    return float(np.diff(matrix.indptr).mean()) if matrix.shape[0] else 0.0


def text_batches(
    texts: Sequence[str],
    tokenizer: Any,
    batch_size: int,
    max_length: int,
    desc: str,
    progress: bool,
) -> Iterator[dict[str, torch.Tensor]]:
    """A text head's inputs for ``texts``: padded, truncated batches, with a progress bar.

    Shape: yields ``input_ids`` and ``attention_mask`` ``(b, L)``, ``L <= max_length``.
    """
    for start in tqdm(
        range(0, len(texts), batch_size), desc=desc, unit="batch", disable=not progress
    ):
        enc = tokenizer(
            list(texts[start : start + batch_size]),
            padding=True,
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
        )
        yield {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
