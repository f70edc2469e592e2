"""The settings of :class:`~lightning_mlsr.data.datamodule.RetrievalDataModule`, in groups.

Each group is a small frozen dataclass; in YAML and on the command line it is a nested key
of ``data:`` (``--data.batching.batch_size=32``, ``--data.evaluation.corpus=judged``).
jsonargparse checks the types and the ``Literal`` choices; each ``__post_init__`` checks the
ranges, with messages that name the key. Lightning-free, so scripts and the hub export read
them without a Trainer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, is_dataclass
from typing import Any, Literal, TypeVar

from lightning_mlsr.data.collection.caption_text import CaptionPreprocessing
from lightning_mlsr.data.collection.load import CorruptPolicy, MissingCaptionPolicy
from lightning_mlsr.data.evaluation_corpus import EvalCorpus

__all__ = [
    "FLAT_KEYS",
    "BatchingSettings",
    "EvaluationSettings",
    "FeatureSettings",
    "NegativeSettings",
    "ReadingSettings",
    "grouped_hparams",
    "plain",
    "settings_of",
]


def _at_least(key: str, value: int | None, low: int, why: str = "") -> None:
    if value is not None and value < low:
        raise ValueError(f"data.{key} must be >= {low}{why}, got {value}")


@dataclass(frozen=True)
class ReadingSettings:
    """How captions and queries are read from the collection (``data.reading``); see
    :func:`~lightning_mlsr.data.collection.load_collection`.

    Args:
        caption_fields / caption_languages / query_fields / max_query_chars: how captions
            and queries are formed (None: the collection's defaults).
        on_corrupt_image: ``skip`` drops an image unusable at load, and one met while
            reading pixels is skipped and reported once per pass; ``error`` raises.
        on_missing_caption: an image with no caption in the chosen fields and languages is
            an ``error``, or skipped (``skip``), or kept with an empty caption (``keep``).
        caption_preprocessing: which words of each caption become the document text:
            ``raw`` (all), ``no_stopwords`` or ``nouns``
            (:mod:`~lightning_mlsr.data.collection.caption_text`).
    """

    caption_fields: list[str] | None = None
    caption_languages: list[str] | None = None
    query_fields: list[str] | None = None
    max_query_chars: int | None = None
    on_corrupt_image: CorruptPolicy = "skip"
    on_missing_caption: MissingCaptionPolicy = "error"
    caption_preprocessing: CaptionPreprocessing = "raw"

    def __post_init__(self) -> None:
        _at_least("reading.max_query_chars", self.max_query_chars, 1)


@dataclass(frozen=True)
class BatchingSettings:
    """How many rows a batch holds and how long its texts are (``data.batching``).

    Args:
        batch_size: training pairs per batch (in-batch negatives come from the same batch).
        eval_batch_size: rows per batch when encoding the corpus and queries.
        num_workers: DataLoader workers.
        query_max_length / doc_max_length: tokenizer truncation, in wordpieces.
    """

    batch_size: int = 64
    eval_batch_size: int = 256
    num_workers: int = 0
    query_max_length: int = 32
    doc_max_length: int = 32

    def __post_init__(self) -> None:
        _at_least("batching.batch_size", self.batch_size, 2, " for in-batch negatives")
        _at_least("batching.eval_batch_size", self.eval_batch_size, 1)
        _at_least("batching.num_workers", self.num_workers, 0)
        _at_least("batching.query_max_length", self.query_max_length, 1)
        _at_least("batching.doc_max_length", self.doc_max_length, 1)


@dataclass(frozen=True)
class FeatureSettings:
    """The cache of frozen image-backbone features (``data.features``).

    Args:
        cache_dir: where the features are cached (None: the default cache).
        batch_size: images per batch when filling the cache (on an accelerator, with
            ``fill: upfront`` or ``python -m lightning_mlsr features``, hundreds: e.g. 512).
        fill: ``lazy`` computes the features when a batch first needs them (a short run
            encodes only the images it reads), on the CPU; ``upfront`` fills the cache for
            every image the run needs before the first batch is built, on the Trainer's
            devices, each DDP rank a disjoint share, with a progress bar (resumable; worth
            it for large collections).
    """

    cache_dir: str | None = None
    batch_size: int = 32
    fill: Literal["lazy", "upfront"] = "lazy"

    def __post_init__(self) -> None:
        _at_least("features.batch_size", self.batch_size, 1)


@dataclass(frozen=True)
class EvaluationSettings:
    """Which images a retrieval evaluation ranks (``data.evaluation``).

    Args:
        corpus: ``all``, ``judged`` (the images judged in the split, AToMiC's "small"
            setting) or ``judged+sampled`` (those plus ``distractors`` others drawn with
            ``seed``).
    """

    corpus: EvalCorpus = "all"
    distractors: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        _at_least("evaluation.distractors", self.distractors, 0)


@dataclass(frozen=True)
class NegativeSettings:
    """Teacher-mined hard negatives in the training batches (``data.negatives``).

    Args:
        file: a TSV of each training query's ranked negative images (mined by
            ``python -m lightning_mlsr.generate.hard_negatives``); each training batch then
            holds, after its ``B`` positives, ``per_query`` of them per pair, drawn from the
            first ``depth`` (None: all) of the query's list. None: in-batch negatives only.
    """

    file: str | None = None
    per_query: int = 1
    depth: int | None = None

    def __post_init__(self) -> None:
        _at_least("negatives.per_query", self.per_query, 1)
        _at_least("negatives.depth", self.depth, 1)


S = TypeVar("S")


def settings_of(cls: type[S], value: object) -> S:
    """``value`` as a ``cls``: itself, or built from the plain dict a checkpoint's
    hyperparameters hold for the group."""
    if isinstance(value, cls):
        return value
    if isinstance(value, Mapping):
        return cls(**value)
    raise TypeError(f"expected a {cls.__name__} or a mapping of its fields, got {value!r}")


def plain(value: Any) -> Any:
    """A settings group as a plain dict (what checkpoints and ``hparams.yaml`` hold)."""
    return asdict(value) if is_dataclass(value) and not isinstance(value, type) else value


#: Each flat key of earlier checkpoints, with its (group, field) now.
FLAT_KEYS: dict[str, tuple[str, str]] = {
    **{f.name: ("reading", f.name) for f in fields(ReadingSettings)},
    **{f.name: ("batching", f.name) for f in fields(BatchingSettings)},
    "feature_cache_dir": ("features", "cache_dir"),
    "feature_batch_size": ("features", "batch_size"),
    "feature_fill": ("features", "fill"),
    "eval_corpus": ("evaluation", "corpus"),
    "eval_distractors": ("evaluation", "distractors"),
    "eval_seed": ("evaluation", "seed"),
    "hard_negatives": ("negatives", "file"),
    "negatives_per_query": ("negatives", "per_query"),
    "negative_depth": ("negatives", "depth"),
}


def grouped_hparams(hparams: Mapping[str, Any]) -> dict[str, Any]:
    """A checkpoint's DataModule hyperparameters as the constructor's keyword arguments.

    Accepts the grouped form and the flat one that checkpoints of earlier versions hold
    (``batch_size``, ``eval_corpus``, ``predict_target="queries:test"``, ...: see
    :data:`FLAT_KEYS`); keys Lightning adds (``_instantiator``) are dropped.
    """
    out: dict[str, Any] = {}
    for key, value in hparams.items():
        if key.startswith("_"):
            continue
        if key in FLAT_KEYS:
            group, name = FLAT_KEYS[key]
            out.setdefault(group, {})[name] = value
        elif key == "predict_target":
            target, _, split = str(value).partition(":")
            out["predict"] = target
            if split:
                out["predict_split"] = split
        else:
            out[key] = plain(value)
    return out
