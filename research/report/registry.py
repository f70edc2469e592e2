"""What the experiment registry holds (``results/registry.yaml`` and
``results/protocol.yaml``), as typed, frozen records: the experiments, the comparisons, the
cross-domain tests and the :class:`Registry` that answers for them (labels, backbones,
folders, training order). :func:`~research.report.registry_file.load_registry` reads and
checks the files into one."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from research.report.backbones import Backbone

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "results"

#: what an experiment's ``pseudo_queries`` may set, and the flag of
#: ``python -m lightning_mlsr.generate.pseudo_queries`` that sets it
PSEUDO_QUERY_FLAGS = {
    "min_score": "--min-score",
    "max_queries": "--max-queries",
    "english": "--english",
    "positives": "--positives",
    "expand_captions": "--expand-captions",
    "include_evaluation_queries": "--transductive",
    "seed": "--seed",
}

__all__ = [
    "PSEUDO_QUERY_FLAGS",
    "Comparison",
    "CrossDomain",
    "Experiment",
    "Registry",
    "RegistryError",
    "dense_families",
]


class RegistryError(ValueError):
    """A registry file that cannot be used as it is (the message names the file and key)."""


@dataclass(frozen=True)
class Experiment:
    """One row of the report: how it is trained and how the report treats it."""

    name: str
    label: str
    #: ``experiments/<config>.yaml``
    config: str
    #: added to the ``fit`` command
    overrides: tuple[str, ...] = ()
    #: the experiment whose trained model of the same seed this one is distilled from
    teacher: str | None = None
    #: keyword arguments of ``build_pseudo_query_collection`` (None: the plain collection)
    pseudo_queries: Mapping[str, Any] | None = None
    #: depth of each training query's teacher-mined hard-negative list (None: none)
    hard_negatives: int | None = None
    #: keyword arguments of ``build_visual_concept_collection`` (``top_k``, ``backbone``):
    #: trained on the collection whose images carry their ImageNet class names as a caption
    #: field (None: the plain collection)
    visual_concepts: Mapping[str, Any] | None = None
    image_only: bool = False
    dense: bool = False
    #: the text backbone's key in the registry's ``backbones`` (None: the default; ``none``:
    #: no text model)
    backbone: str | None = None

    @property
    def transductive(self) -> bool:
        """Evaluation queries were among the pseudo-query candidates."""
        return bool((self.pseudo_queries or {}).get("include_evaluation_queries"))


@dataclass(frozen=True)
class Comparison:
    """Is ``a`` different from ``b`` on ``measure``, over all test queries or the unseen ones?"""

    family: str
    a: str
    b: str
    measure: str = "nDCG@10"
    queries: str = "all"


@dataclass(frozen=True)
class CrossDomain:
    """Another bundled collection the trained models of ``experiments`` are tested on, without
    retraining (``what``: how it differs from the training collection)."""

    collection: str
    what: str
    experiments: tuple[str, ...]


@dataclass(frozen=True)
class Registry:
    experiments: dict[str, Experiment]  # report order
    baselines: dict[str, bool]  # name -> dense
    collection: str
    first_seed: int
    seed_count: int
    measures: tuple[str, ...]
    wordpiece_tokenizer: str
    candidate_backbone: str
    candidate_english: int
    family_titles: dict[str, str]
    comparisons: tuple[Comparison, ...]
    coactivation: tuple[str, str]  # finding 3: (MLP-query model, MLM-query model)
    findings: dict[str, Any]
    targets: dict[str, Any]
    final: tuple[str, ...]  # evaluated on test (results/protocol.yaml)
    test_informed: tuple[str, ...]  # design chosen after test numbers were seen
    results_dir: Path = field(default=RESULTS)
    experiments_dir: Path = field(default=REPO / "experiments")
    #: collection -> what it tests, in report order
    cross_domain: dict[str, CrossDomain] = field(default_factory=dict)
    #: the text backbones (``backbones`` in registry.yaml), the default, and each baseline's
    backbones: dict[str, Backbone] = field(default_factory=dict)
    default_backbone: str = "splade-tiny"
    baseline_backbones: dict[str, str | None] = field(default_factory=dict)
    #: the report's opening figure: ``file`` (under the results folder), ``title``, ``models``
    figure: dict[str, Any] = field(default_factory=dict)
    #: the cost section: ``file`` (a committed bench/bench_query_cost.py JSON, relative to the
    #: checkout), ``figure`` (the PNG the report draws from it, under the results folder) and
    #: ``later`` (more such files: models measured after the main run, beside its baselines)
    query_cost: dict[str, Any] = field(default_factory=dict)

    @property
    def is_default(self) -> bool:
        """The bundled collection's results folder (``results/``), as opposed to another
        collection's (``results/<collection>/``)."""
        return self.results_dir.resolve() == RESULTS.resolve()

    @property
    def report_path(self) -> Path:
        """Where its report goes: ``RESULTS.md`` at the root for ``results/``, else
        ``RESULTS.md`` inside its folder."""
        return REPO / "RESULTS.md" if self.is_default else self.results_dir / "RESULTS.md"

    @property
    def runs_dir(self) -> Path:
        """Its finished runs, committed: ``runs/`` inside its results folder."""
        return self.results_dir / "runs"

    @property
    def default_work(self) -> Path:
        """Its work folder (logs, checkpoints, generated data): one per results folder, so
        that the same experiment name in two registries never shares a run directory."""
        name = "results" if self.is_default else f"results-{self.results_dir.name}"
        return REPO / "outputs" / name

    def cross_domain_of(self, name: str) -> list[str]:
        """The collections the trained models of ``name`` are also tested on."""
        return [c for c, spec in self.cross_domain.items() if name in spec.experiments]

    @property
    def seeds(self) -> list[int]:
        return list(range(self.first_seed, self.first_seed + self.seed_count))

    @property
    def names(self) -> set[str]:
        """Every name a comparison may use: experiments and baselines."""
        return set(self.experiments) | set(self.baselines)

    def label(self, name: str) -> str:
        """A row's name; ``[transductive]``: pseudo-query candidates held evaluation queries;
        ``†``: design chosen after test numbers were seen."""
        experiment = self.experiments.get(name)
        if experiment is None:
            return f"{name} (baseline)" if name in self.baselines else name
        label = experiment.label
        if experiment.transductive:
            label += " [transductive]"
        if name in self.test_informed:
            label += " †"
        return label

    def backbone(self, name: str) -> Backbone | None:
        """The text backbone of a model or baseline (None: it has no text model)."""
        experiment = self.experiments.get(name)
        key = experiment.backbone if experiment else self.baseline_backbones.get(name)
        key = key or self.default_backbone
        return None if key == "none" else self.backbones.get(key)

    def backbone_cell(self, name: str) -> str:
        """The backbone column's cell for ``name``."""
        backbone = self.backbone(name)
        return "–" if backbone is None else backbone.cell

    def config_path(self, name: str) -> Path:
        """The YAML ``name`` is trained with."""
        return self.experiments_dir / f"{self.experiments[name].config}.yaml"

    def is_dense(self, name: str) -> bool:
        experiment = self.experiments.get(name)
        return experiment.dense if experiment else self.baselines.get(name, False)

    def training_order(self) -> list[str]:
        """Report order, with every teacher before the experiments distilled from it."""
        teachers = [e.teacher for e in self.experiments.values() if e.teacher]
        first = list(dict.fromkeys(teachers))
        return first + [n for n in self.experiments if n not in first]


def dense_families(spec: Mapping[str, Any]) -> list[str]:
    """The families of a ``findings.dense`` entry: ``family`` as one name or a list."""
    family = spec.get("family")
    return [str(f) for f in family] if isinstance(family, list) else [str(family)]
