"""The registry files read into a :class:`~research.report.registry.Registry` and checked:
an unknown key, a malformed value or an experiment name that is neither an experiment nor a
baseline is a :class:`~research.report.registry.RegistryError` that names it and the file."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from research.report.backbones import read_backbones
from research.report.registry import (
    PSEUDO_QUERY_FLAGS,
    RESULTS,
    Comparison,
    CrossDomain,
    Experiment,
    Registry,
    RegistryError,
    dense_families,
)

__all__ = ["load_registry", "read_protocol"]


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
    "query_cost",
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


def _query_cost(spec: Any, where: str) -> dict[str, Any]:
    cost = _mapping(spec, f"{where}: query_cost")
    if cost:
        _check_keys(cost, ("file", "figure", "later"), f"{where}: query_cost")
        _required(cost, "file", f"{where}: query_cost")
        later = cost.get("later", [])
        if not isinstance(later, list) or not all(isinstance(f, str) for f in later):
            raise ValueError(f"{where}: query_cost.later must be a list of files, not {later!r}")
    return cost


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
        query_cost=_query_cost(data.get("query_cost"), where),
    )
    dense = registry.findings.get("dense")
    if isinstance(dense, Mapping):
        _check_dense_families(registry, dense, f"{where}: findings.dense")
    for i, spec in enumerate(registry.findings.get("restated") or []):
        at = f"{where}: findings.restated[{i}]"
        _check_keys(_mapping(spec, at), _RESTATED, at)
        for key, keys in _RESTATED.items():
            if key not in spec:
                if key in ("coactivation", "dense"):  # optional: not restated without them
                    continue
                raise RegistryError(f"{at}: `{key}` is missing")
            if keys:
                _check_keys(_mapping(spec[key], f"{at}.{key}"), keys, f"{at}.{key}")
        if "dense" in spec:
            _check_dense_families(registry, spec["dense"], f"{at}.dense")
    _check_names(registry, where)
    return registry


def _check_dense_families(registry: Registry, dense: Mapping[str, Any], at: str) -> None:
    """Every family a ``dense`` entry names (one or a list) is a family of the registry."""
    for family in dense_families(dense):
        if family not in registry.family_titles:
            raise RegistryError(f"{at}.family {family!r} is no family")


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
