"""The experiment registry (``results/registry.yaml`` and ``results/protocol.yaml``), read
into typed records and checked: an unknown key or an experiment name that is neither an
experiment nor a baseline is an error that names it and the file."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from research.report.backbones import Backbone, read_backbones

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
    "load_registry",
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


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise RegistryError(f"{where}: expected a mapping, got {type(value).__name__}")
    return value


def _read_yaml(path: Path) -> Any:
    """The YAML in ``path``; a syntax error names the file, line and column."""
    try:
        return yaml.safe_load(path.read_text("utf-8"))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise RegistryError(f"{path}: not valid YAML{at} ({problem}); fix it there") from None


def _required(spec: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in spec:
        raise RegistryError(f"{where}: `{key}` is missing")
    return spec[key]


def _whole_number(spec: Mapping[str, Any], key: str, default: int | None, where: str) -> int:
    """``spec[key]`` (``default`` when absent; required when None) as an int."""
    value = spec.get(key, default) if default is not None else _required(spec, key, where)
    if not isinstance(value, bool) and isinstance(value, int | str):
        try:
            return int(value)
        except ValueError:
            pass
    raise RegistryError(f"{where}.{key} must be a whole number, got {value!r}")


def _check_keys(data: Mapping[str, Any], allowed: Iterable[str], where: str) -> None:
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise RegistryError(f"{where}: unknown keys {unknown} (known: {', '.join(allowed)})")


def _names(value: Any) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


_EXPERIMENT_KEYS = (
    "label",
    "config",
    "overrides",
    "teacher",
    "pseudo_queries",
    "hard_negatives",
    "visual_concepts",
    "image_only",
    "dense",
    "backbone",
)
_VISUAL_CONCEPT_KEYS = ("top_k", "backbone")
_TOP_KEYS = (
    "collection",
    "seeds",
    "measures",
    "wordpiece_tokenizer",
    "pseudo_query_candidates",
    "baselines",
    "experiments",
    "families",
    "findings",
    "targets",
    "cross_domain",
    "backbones",
    "figure",
)


def _experiment(name: str, spec: Any, where: str) -> Experiment:
    spec = _mapping(spec, f"{where}: experiments.{name}")
    _check_keys(spec, _EXPERIMENT_KEYS, f"{where}: experiments.{name}")
    if "label" not in spec:
        raise RegistryError(f"{where}: experiments.{name} has no label")
    pseudo = spec.get("pseudo_queries")
    if pseudo is not None:
        at = f"{where}: experiments.{name}.pseudo_queries"
        _check_keys(_mapping(pseudo, at), PSEUDO_QUERY_FLAGS, at)
    visual = spec.get("visual_concepts")
    if visual is not None:
        at = f"{where}: experiments.{name}.visual_concepts"
        _check_keys(_mapping(visual, at), _VISUAL_CONCEPT_KEYS, at)
        if pseudo is not None:
            raise RegistryError(f"{at}: an experiment has pseudo_queries or visual_concepts")
    return Experiment(
        name=name,
        label=str(spec["label"]),
        config=str(spec.get("config", name)),
        overrides=tuple(spec.get("overrides") or ()),
        teacher=spec.get("teacher"),
        pseudo_queries=dict(pseudo) if pseudo is not None else None,
        hard_negatives=spec.get("hard_negatives"),
        visual_concepts=dict(visual) if visual is not None else None,
        image_only=bool(spec.get("image_only", False)),
        dense=bool(spec.get("dense", False)),
        backbone=spec.get("backbone"),
    )


def _figure(spec: Any, where: str) -> dict[str, Any]:
    figure = _mapping(spec, f"{where}: figure")
    if figure:
        _check_keys(figure, ("file", "title", "models"), f"{where}: figure")
        for key in ("file", "title", "models"):
            _required(figure, key, f"{where}: figure")
    return figure


def _comparisons(family: str, specs: Any, where: str) -> list[Comparison]:
    out = []
    for i, spec in enumerate(specs or []):
        at = f"{where}: families.{family}.comparisons[{i}]"
        _check_keys(_mapping(spec, at), ("a", "b", "measure", "queries"), at)
        measure = spec.get("measure", "nDCG@10")
        for a, b, queries in itertools.product(
            _names(_required(spec, "a", at)),
            _names(_required(spec, "b", at)),
            _names(spec.get("queries", "all")),
        ):
            if queries not in ("all", "unseen"):
                raise RegistryError(f"{at}: queries must be all or unseen, got {queries!r}")
            out.append(Comparison(family, a, b, measure, queries))
    return out


def read_protocol(path: Path) -> dict[str, list[str]]:
    """``protocol.yaml``: the frozen configurations evaluated on test (``final``) and the
    results whose design was chosen after test numbers were seen (``test_informed``)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: it lists what may be evaluated on test")
    data = _mapping(_read_yaml(path), str(path))
    unknown = set(data) - {"final", "test_informed"}
    if unknown:
        raise RegistryError(f"{path}: unknown keys {sorted(unknown)} (final, test_informed)")
    return {key: list(data.get(key) or []) for key in ("final", "test_informed")}


def load_registry(results_dir: str | Path = RESULTS) -> Registry:
    """Read ``registry.yaml`` and ``protocol.yaml`` of ``results_dir`` and check every name."""
    results_dir = Path(results_dir)
    path = results_dir / "registry.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: it lists the experiments RESULTS.md reports")
    where = str(path)
    data = _mapping(_read_yaml(path), where)
    _check_keys(data, _TOP_KEYS, where)
    experiments = {
        name: _experiment(name, spec, where)
        for name, spec in _mapping(data.get("experiments"), f"{where}: experiments").items()
    }
    baseline_specs = _mapping(data.get("baselines"), f"{where}: baselines")
    baselines, baseline_backbones = {}, {}
    for name, spec in baseline_specs.items():
        spec = _mapping(spec, f"{where}: baselines.{name}")
        _check_keys(spec, ("dense", "backbone"), f"{where}: baselines.{name}")
        baselines[name] = bool(spec.get("dense", False))
        baseline_backbones[name] = spec.get("backbone")
    backbones, default_backbone = read_backbones(
        _mapping(data.get("backbones"), f"{where}: backbones"), where, RegistryError
    )
    titles, comparisons, coactivation = {}, [], None
    for family, spec in _mapping(data.get("families"), f"{where}: families").items():
        at = f"{where}: families.{family}"
        spec = _mapping(spec, at)
        _check_keys(spec, ("title", "comparisons", "coactivation"), at)
        titles[str(family)] = str(spec.get("title", family))
        comparisons += _comparisons(str(family), spec.get("comparisons"), where)
        if "coactivation" in spec:
            pair = _mapping(spec["coactivation"], f"{at}.coactivation")
            coactivation = (
                _required(pair, "a", f"{at}.coactivation"),
                _required(pair, "b", f"{at}.coactivation"),
            )
    if coactivation is None:
        raise RegistryError(f"{where}: no family names the coactivation pair (finding 3)")
    seeds = _mapping(data.get("seeds"), f"{where}: seeds")
    _check_keys(seeds, ("first", "count"), f"{where}: seeds")
    candidates = _mapping(data.get("pseudo_query_candidates"), f"{where}: pseudo_query_candidates")
    protocol = read_protocol(results_dir / "protocol.yaml")
    cross_domain = {}
    for collection, spec in _mapping(
        data.get("cross_domain") or {}, f"{where}: cross_domain"
    ).items():
        at = f"{where}: cross_domain.{collection}"
        spec = _mapping(spec, at)
        _check_keys(spec, ("what", "experiments"), at)
        cross_domain[str(collection)] = CrossDomain(
            collection=str(collection),
            what=str(spec.get("what", "")),
            experiments=tuple(_names(spec.get("experiments") or ())),
        )
    registry = Registry(
        experiments=experiments,
        baselines=baselines,
        collection=str(data.get("collection", "emoji")),
        first_seed=_whole_number(seeds, "first", 42, f"{where}: seeds"),
        seed_count=_whole_number(seeds, "count", 3, f"{where}: seeds"),
        measures=tuple(data.get("measures") or ()),
        wordpiece_tokenizer=str(_required(data, "wordpiece_tokenizer", where)),
        candidate_backbone=str(
            _required(candidates, "backbone", f"{where}: pseudo_query_candidates")
        ),
        candidate_english=_whole_number(
            candidates, "english", None, f"{where}: pseudo_query_candidates"
        ),
        family_titles=titles,
        comparisons=tuple(comparisons),
        coactivation=coactivation,
        findings=_mapping(data.get("findings"), f"{where}: findings"),
        targets=_mapping(data.get("targets"), f"{where}: targets"),
        final=tuple(protocol["final"]),
        test_informed=tuple(protocol["test_informed"]),
        results_dir=results_dir,
        cross_domain=cross_domain,
        backbones=backbones,
        default_backbone=default_backbone,
        baseline_backbones=baseline_backbones,
        figure=_figure(data.get("figure"), where),
    )
    for i, spec in enumerate(registry.findings.get("restated") or []):
        at = f"{where}: findings.restated[{i}]"
        _check_keys(_mapping(spec, at), _RESTATED, at)
        for key, keys in _RESTATED.items():
            if key not in spec:
                if key == "coactivation":  # optional: the registry's pair by default
                    continue
                raise RegistryError(f"{at}: `{key}` is missing")
            if keys:
                _check_keys(_mapping(spec[key], f"{at}.{key}"), keys, f"{at}.{key}")
        if spec["dense"].get("family") not in registry.family_titles:
            raise RegistryError(f"{at}: dense.family {spec['dense'].get('family')!r} is no family")
    _check_names(registry, where)
    return registry


#: the keys of an entry of ``findings.restated`` and the keys each of its parts may have
_RESTATED: dict[str, tuple[str, ...]] = {
    "title": (),
    "image_vs_captions": ("image", "captions", "below"),
    "image_and_caption": ("model", "captions", "gain", "expanding"),
    "coactivation": ("a", "b"),
    "dense": ("family", "untrained", "teacher"),
}


def _check_names(registry: Registry, where: str) -> None:
    """Every name the registry and the protocol use is an experiment or a baseline."""
    known = registry.names
    used: dict[str, Iterable[str]] = {
        "families": [n for c in registry.comparisons for n in (c.a, c.b)],
        "finding 3 (coactivation)": registry.coactivation,
        "teachers": [e.teacher for e in registry.experiments.values() if e.teacher],
        "findings": _strings(registry.findings),
        "targets": _strings(registry.targets),
        "figure": registry.figure.get("models", []),
    }
    named = {e.backbone for e in registry.experiments.values()}
    named |= set(registry.baseline_backbones.values())
    unknown_backbones = sorted(str(b) for b in named - {None, "none", *registry.backbones})
    if unknown_backbones:
        raise RegistryError(
            f"{where}: backbone {unknown_backbones} is not in backbones "
            f"({', '.join(registry.backbones)}, or none)"
        )
    for what, names in used.items():
        unknown = sorted(set(names) - known)
        if unknown:
            raise RegistryError(f"{where}: {what} name unknown experiments {unknown}")
    protocol = registry.results_dir / "protocol.yaml"
    for key in ("final", "test_informed"):
        unknown = sorted(set(getattr(registry, key)) - set(registry.experiments))
        if unknown:
            raise RegistryError(f"{protocol}: {key} names unknown experiments {unknown}")
    for collection, spec in registry.cross_domain.items():
        unknown = sorted(set(spec.experiments) - set(registry.experiments))
        if unknown:
            raise RegistryError(
                f"{where}: cross_domain.{collection} names unknown experiments {unknown}"
            )
        not_final = sorted(set(spec.experiments) - set(registry.final))
        if not_final:
            raise RegistryError(
                f"{where}: cross_domain.{collection} names {not_final}, which results/"
                f"protocol.yaml does not list as final: only frozen configurations are tested"
            )
        if collection == registry.collection:
            raise RegistryError(f"{where}: cross_domain.{collection} is the training collection")
    measures = set(registry.measures)
    bad = sorted({c.measure for c in registry.comparisons} - measures)
    if bad:
        raise RegistryError(f"{where}: comparisons on measures not in `measures`: {bad}")


def _strings(value: Any) -> list[str]:
    """The experiment names in the findings and targets: every string leaf but a family's,
    a measure's or a title."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, Mapping):
        return [
            s
            for k, v in value.items()
            if k not in ("family", "measure", "title")
            for s in _strings(v)
        ]
    if isinstance(value, (list, tuple)):
        return [s for v in value for s in _strings(v)]
    return []
