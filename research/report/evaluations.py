"""What a ``validate`` or ``test`` of a report run evaluated, read from the evaluator's public
output, never from the callback's state.

:class:`~lightning_mlsr.training.callbacks.evaluator.RetrievalEvaluator` writes, at every
``validate`` and ``test``, ``runs/<split>.metrics.json`` (every logged figure under
``figures``) and ``runs/<split>.trec`` (the run, scores written exactly) into the run's own
directory (:func:`lightning_mlsr.training.runs.run_dir`). The per-query values of the registry's
measures are scored again from that run, and the image vectors the co-activation statistics
are computed on are encoded again through the evaluator's own loop
(:func:`~lightning_mlsr.retrieval.batch_encoding.encode_loader`), with the same loader, device
and precision as the evaluation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np

from research.report.records import read_json

__all__ = ["Evaluated", "evaluated_corpus", "written_evaluation"]


@dataclass
class Evaluated:
    """One split's evaluation as written: ``figures`` (every value the evaluator logged for
    it, named without its ``val/`` or ``test/`` prefix) and ``run`` (``{query: {doc: score}}``)."""

    figures: dict[str, Any]
    run: dict[str, dict[str, float]]

    def per_query(self, qrels: Any, measures: Sequence[str]) -> dict[str, dict[str, float]]:
        """``{measure: {query: value}}`` of the run against ``qrels``, every judged query
        included (trec_eval ``-c``: 0 where the run retrieved nothing)."""
        from lightning_mlsr.retrieval.metrics import evaluate

        found = evaluate(self.run, qrels, list(measures), per_query=True)
        return cast(dict[str, dict[str, float]], found)


def written_evaluation(trainer: Any, split: str) -> Evaluated:
    """The evaluation of ``split`` that ``trainer``'s last ``validate`` or ``test`` wrote
    into its run's directory."""
    from lightning_mlsr.retrieval.trec import read_trec_run
    from lightning_mlsr.training.runs import run_dir

    folder = run_dir(trainer) / "runs"
    remedy = (
        "the RetrievalEvaluator callback writes it at every validate and test into the run's "
        "own directory: keep it among the configuration's callbacks, without a run_dir"
    )
    record = read_json(folder / f"{split}.metrics.json", remedy)
    if not (folder / f"{split}.trec").is_file():
        raise FileNotFoundError(f"{folder / f'{split}.trec'} is missing: {remedy}")
    return Evaluated(dict(record["figures"]), read_trec_run(folder / f"{split}.trec"))


def evaluated_corpus(trainer: Any, model: Any, datamodule: Any, split: str) -> Any:
    """The document vectors of ``split``'s evaluation corpus (rows in the collection's table
    order), encoded by ``model`` (the checkpoint the last evaluation loaded) as the evaluator
    encodes them: its loader, the Trainer's device and precision context.

    Shape: ``(n_docs, V)`` CSR.
    """
    from lightning_mlsr.retrieval.batch_encoding import encode_loader

    model.to(trainer.strategy.root_device)  # the Trainer hands the model back on the CPU
    rows, docs = encode_loader(
        model.encode_docs,
        datamodule.corpus_dataloader(split=split),
        width=model.doc_encoder.width,
        side="doc",
        device=model.device,
        module=model,
        context=trainer.precision_plugin.forward_context(),
    )
    return docs[np.argsort(rows, kind="stable")]
