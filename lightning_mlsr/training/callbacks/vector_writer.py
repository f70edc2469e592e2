"""Export encoded sparse vectors for other engines (Anserini/Pyserini, PISA, Seismic).

``python -m lightning_mlsr predict --config experiments/<name>.yaml --ckpt_path X.ckpt``
encodes the corpus (or the test queries with ``--data.predict=queries``, another split's with
``--data.predict_split=validation``) and this callback writes:

- ``<target>.npz`` (``corpus`` or ``queries_<split>``) — a scipy CSR matrix, one row per
  item, columns = vocabulary ids;
- ``<target>.ids.txt`` — the row ids, one per line, in matrix order;
- ``<target>.jsonl`` — the Anserini "JSON vector" format, one object per line:
  ``{"id": ..., "contents": "", "vector": {"term": int_weight, ...}}`` with weights
  quantized as ``round(weight * scale)`` (entries that round to 0 are dropped).

Files go to the run's own directory (``<run dir>/vectors/``, the directory that holds the
run's config and run files) unless ``output_dir`` names one, and an existing file is never
replaced unless ``overwrite=True``. Under DDP every rank writes its own shard
(``<target>.rank<r>.*``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any, cast

import lightning as L
import numpy as np
import scipy.sparse as sp
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities.rank_zero import rank_zero_info

from lightning_mlsr.io.atomic import atomic_write, atomic_write_text
from lightning_mlsr.training.runs import run_dir

log = logging.getLogger("lightning_mlsr")

__all__ = ["SparseVectorWriter", "write_json_vectors"]


def write_json_vectors(
    path: str | Path,
    ids: Sequence[str],
    matrix: sp.csr_matrix,
    vocab: Sequence[str],
    scale: float = 100.0,
) -> int:
    """Write rows as Anserini JSON vectors; returns the number of lines written."""
    if scale <= 0:
        raise ValueError(f"scale must be positive, got {scale}")
    if len(ids) != matrix.shape[0]:
        raise ValueError(f"{len(ids)} ids for {matrix.shape[0]} rows")
    matrix = sp.csr_matrix(matrix)

    def write(handle: IO[bytes]) -> None:
        for r, item_id in enumerate(ids):
            start, stop = matrix.indptr[r], matrix.indptr[r + 1]
            terms = matrix.indices[start:stop]
            weights = np.rint(matrix.data[start:stop] * scale).astype(np.int64)
            vector = {vocab[t]: int(w) for t, w in zip(terms, weights) if w > 0}
            line = json.dumps({"id": item_id, "contents": "", "vector": vector}) + "\n"
            handle.write(line.encode("utf-8"))

    atomic_write(path, write)
    return len(ids)


class SparseVectorWriter(BasePredictionWriter):
    """Writes ``predict`` outputs as scipy ``.npz`` + ids and Anserini JSONL.

    Args:
        output_dir: where files go (default: ``vectors/`` in the run's own directory, see
            :func:`lightning_mlsr.training.runs.run_dir`, so two exports never share a directory).
        formats: any of ``npz`` and ``jsonl``.
        scale: quantization factor of the JSONL integer weights.
        overwrite: replace files an earlier export left in ``output_dir`` (otherwise
            ``predict`` stops before encoding anything).
    """

    def __init__(
        self,
        output_dir: str | None = None,
        formats: Sequence[str] = ("npz", "jsonl"),
        scale: float = 100.0,
        overwrite: bool = False,
    ) -> None:
        super().__init__(write_interval="batch")
        unknown = set(formats) - {"npz", "jsonl"}
        if unknown:
            raise ValueError(f"unknown export formats {sorted(unknown)}; use npz and/or jsonl")
        if scale <= 0:
            raise ValueError(f"scale must be positive, got {scale}")
        self.output_dir = output_dir
        self.formats = tuple(formats)
        self.scale = scale
        self.overwrite = overwrite
        self._rows: list[np.ndarray] = []
        self._blocks: list[sp.csr_matrix] = []
        self._out: Path | None = None
        self.written: list[Path] = []

    def _targets(self, trainer: L.Trainer) -> tuple[Path, str, list[Path]]:
        """(directory, file stem, paths this export writes)."""
        if self._out is None:
            self._out = Path(self.output_dir) if self.output_dir else run_dir(trainer) / "vectors"
        stem = str(getattr(cast(Any, trainer).datamodule, "predict_name", "corpus"))
        if trainer.world_size > 1:
            stem += f".rank{trainer.global_rank}"
        suffixes = [".npz", ".ids.txt"] if "npz" in self.formats else []
        suffixes += [".jsonl"] if "jsonl" in self.formats else []
        return self._out, stem, [self._out / f"{stem}{suffix}" for suffix in suffixes]

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Refuse to replace an earlier export before any encoding is done."""
        self._out = None
        _, _, paths = self._targets(trainer)
        existing = [str(p) for p in paths if p.exists()]
        if existing and not self.overwrite:
            raise FileExistsError(
                f"predict would overwrite an earlier export: {', '.join(existing)}. Fix: name "
                "another directory with --trainer.callbacks.init_args.output_dir=DIR, or "
                "replace the files with --trainer.callbacks.init_args.overwrite=true."
            )

    def on_predict_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._rows, self._blocks, self.written = [], [], []

    def write_on_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        prediction: Any,
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        coo = prediction["weights"].coalesce()  # (b, V) sparse
        rows, cols = coo.indices().numpy()
        self._rows.append(prediction["rows"].numpy())
        self._blocks.append(
            sp.csr_matrix((coo.values().numpy(), (rows, cols)), shape=tuple(coo.shape))
        )

    def on_predict_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        datamodule = cast(Any, trainer).datamodule
        target = str(getattr(datamodule, "predict_name", "corpus"))
        side = "doc" if target == "corpus" else "query"
        table = datamodule.collection.images if side == "doc" else datamodule.collection.texts
        rows = np.concatenate(self._rows) if self._rows else np.zeros(0, dtype=np.int64)
        matrix = (
            sp.vstack(self._blocks, format="csr")
            if self._blocks
            else sp.csr_matrix((0, cast(Any, pl_module).query_encoder.vocab_size), dtype=np.float32)
        )
        ids = [table.ids[r] for r in rows]
        out, stem, _ = self._targets(trainer)
        out.mkdir(parents=True, exist_ok=True)
        if "npz" in self.formats:
            atomic_write(out / f"{stem}.npz", lambda handle: sp.save_npz(handle, matrix))
            atomic_write_text(out / f"{stem}.ids.txt", "".join(f"{i}\n" for i in ids))
            self.written += [out / f"{stem}.npz", out / f"{stem}.ids.txt"]
        if "jsonl" in self.formats:
            model = cast(Any, pl_module)
            encoder = model.doc_encoder if side == "doc" else model.query_encoder
            vocab = encoder.term_vocabulary()
            write_json_vectors(out / f"{stem}.jsonl", ids, matrix, vocab, self.scale)
            self.written.append(out / f"{stem}.jsonl")
        rank_zero_info(
            f"wrote {len(ids)} {side} vectors ({target}) to {out}: "
            + ", ".join(p.name for p in self.written)
        )
        self._rows, self._blocks = [], []
