"""The package's import graph: no cycle (lazy imports inside functions included, so none is
hidden), and the lower layers never import the higher ones."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "lightning_mlsr"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, modules: set[str], name: str | None = None) -> set[str]:
    """Every package module ``path`` imports anywhere (top level, functions, TYPE_CHECKING)."""
    name = name or _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        for target in targets:
            while target and target not in modules:  # a name inside a module -> the module
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    files = sorted(PACKAGE.rglob("*.py"))
    modules = {_module_name(p) for p in files}
    graph = {_module_name(p): _imports(p, modules) for p in files}
    # a package's __init__ is imported with any of its modules: not an edge of its own
    return {m: {t for t in targets if not m.startswith(t + ".")} for m, targets in graph.items()}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def test_the_finder_sees_a_cycle_through_a_lazy_import(tmp_path: Path) -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycles(graph) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from lightning_mlsr.data.features import default_cache_dir\n")
    modules = {"lightning_mlsr.data.features", "lightning_mlsr.data"}
    got = _imports(source, modules, "lightning_mlsr.data.content_keys")
    assert got == {"lightning_mlsr.data.features"}


def test_the_package_has_no_import_cycle() -> None:
    graph = import_graph()
    assert len(graph) > 50
    assert find_cycles(graph) == []


#: what a layer may never import (module prefixes): the data layer reads collections and
#: computes features; it does not know models, training, generation or the CLI.
FORBIDDEN = {
    "lightning_mlsr.data": (
        "lightning_mlsr.heads",
        "lightning_mlsr.module",
        "lightning_mlsr.losses",
        "lightning_mlsr.cli",
        "lightning_mlsr.callbacks",
        "lightning_mlsr.hub",
        "lightning_mlsr.export",
        "lightning_mlsr.encode",
        "lightning_mlsr.features_cli",
        "lightning_mlsr.checkpointing",
    ),
    "lightning_mlsr.index": (
        "lightning_mlsr.data",
        "lightning_mlsr.heads",
        "lightning_mlsr.module",
    ),
    "lightning_mlsr.metrics": (
        "lightning_mlsr.data",
        "lightning_mlsr.heads",
        "lightning_mlsr.module",
    ),
    "lightning_mlsr.heads": ("lightning_mlsr.data", "lightning_mlsr.module", "lightning_mlsr.cli"),
    "lightning_mlsr.losses": ("lightning_mlsr.data", "lightning_mlsr.module", "lightning_mlsr.cli"),
    "lightning_mlsr.regularizers": ("lightning_mlsr.data", "lightning_mlsr.module"),
}


#: upward imports that exist today, each to be removed by moving code, not by listing it:
#: the DataModule still receives the encoders' EncoderInputs (which carries the live image
#: backbone), pseudo-query generation (a teacher model at work) still lives in data/, and the
#: static query head reads the collection for its IDF start. The test fails on a new upward
#: import and on a listed one that is gone (then delete it here).
KNOWN_UPWARD = {
    "lightning_mlsr.data.datamodule -> lightning_mlsr.heads.encoder",
    "lightning_mlsr.data.pseudo_queries -> lightning_mlsr.heads.dense",
    "lightning_mlsr.data.pseudo_queries -> lightning_mlsr.losses",
    "lightning_mlsr.heads.static -> lightning_mlsr.data.load",
}


def upward_imports(graph: dict[str, set[str]]) -> set[str]:
    problems = set()
    for module, targets in graph.items():
        for layer, banned in FORBIDDEN.items():
            if module == layer or module.startswith(layer + "."):
                problems |= {f"{module} -> {t}" for t in targets if t.startswith(banned)}
    return problems


def test_lower_layers_never_import_higher_ones() -> None:
    assert upward_imports({"lightning_mlsr.data.load": {"lightning_mlsr.module"}}) == {
        "lightning_mlsr.data.load -> lightning_mlsr.module"
    }
    found = upward_imports(import_graph())
    assert sorted(found - KNOWN_UPWARD) == [], "new upward imports"
    assert sorted(KNOWN_UPWARD - found) == [], "removed: delete them from KNOWN_UPWARD"
