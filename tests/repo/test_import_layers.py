"""The package's import graph: no cycle (lazy imports inside functions included, so none is
hidden), the lower layers never import the higher ones, and the product never imports the
research beside it (``research/``, not installed)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "lightning_mlsr"


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
    source.write_text(
        "def f():\n    from lightning_mlsr.data.features.store import default_cache_dir\n"
    )
    modules = {"lightning_mlsr.data.features.store", "lightning_mlsr.data"}
    got = _imports(source, modules, "lightning_mlsr.data.features.content_keys")
    assert got == {"lightning_mlsr.data.features.store"}


def test_the_package_has_no_import_cycle() -> None:
    graph = import_graph()
    assert len(graph) > 50
    assert find_cycles(graph) == []


#: the layers, lowest first: ``io`` (atomic files, safe checkpoint reading, backbone names,
#: what an encoder reads: ``io.encoder_reads``, shared by ``models`` and ``data``) < ``retrieval``
#: (index, metrics, TREC files) < ``data`` (collections, feature cache, training batches) and
#: ``models`` / ``objectives`` (heads, backbones, losses, regularizers) < ``generate``
#: (training data made by a model) and ``baselines`` < ``training`` (Lightning: module,
#: evaluator, CLI) and ``hub``; above them all, outside the package, ``research`` (the
#: registry behind RESULTS.md, which runs the CLI). What each may never import (module
#: prefixes):
_M = "lightning_mlsr."
_ABOVE_MODELS = ("generate", "baselines", "training", "hub")
FORBIDDEN = {
    _M + "io": tuple(_M + p for p in ("retrieval", "data", "models", "objectives", *_ABOVE_MODELS)),
    _M + "retrieval": tuple(_M + p for p in ("data", "models", "objectives", *_ABOVE_MODELS)),
    _M + "analysis": tuple(_M + p for p in ("data", "models", "objectives", *_ABOVE_MODELS)),
    _M + "data": tuple(_M + p for p in ("models", "objectives", *_ABOVE_MODELS)),
    _M + "models": tuple(_M + p for p in ("data", "objectives", *_ABOVE_MODELS)),
    _M + "objectives": tuple(_M + p for p in ("data", *_ABOVE_MODELS)),
    _M + "generate": (_M + "training", _M + "hub"),
    _M + "baselines": (_M + "generate", _M + "training", _M + "hub"),
}


def upward_imports(graph: dict[str, set[str]]) -> set[str]:
    problems = set()
    for module, targets in graph.items():
        for layer, banned in FORBIDDEN.items():
            if module == layer or module.startswith(layer + "."):
                problems |= {f"{module} -> {t}" for t in targets if t.startswith(banned)}
    return problems


def test_lower_layers_never_import_higher_ones() -> None:
    assert upward_imports(
        {"lightning_mlsr.data.collection.load": {"lightning_mlsr.training.system.module"}}
    ) == {"lightning_mlsr.data.collection.load -> lightning_mlsr.training.system.module"}
    found = upward_imports(import_graph())
    assert sorted(found) == [], "upward imports"


def research_imports(root: Path) -> list[str]:
    """``file:line module`` of every import of ``research`` under ``root``: import statements
    anywhere (functions included) and ``importlib.import_module`` / ``__import__`` calls with
    a literal name."""
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            elif isinstance(node, ast.Call) and node.args:
                func, first = node.func, node.args[0]
                called = getattr(func, "attr", None) or getattr(func, "id", None)
                if called in ("import_module", "__import__") and isinstance(first, ast.Constant):
                    names = [str(first.value)]
            found += [
                f"{path.relative_to(root.parent)}:{node.lineno} {n}"
                for n in names
                if n.split(".")[0] == "research"
            ]
    return found


def test_the_package_never_imports_the_research_beside_it(tmp_path: Path) -> None:
    """``research/`` (the report behind RESULTS.md) is not installed: an import of it from
    the package would fail for every user."""
    probe = tmp_path / "pkg" / "m.py"
    probe.parent.mkdir()
    probe.write_text(
        "import os\n"
        "def f():\n    from research.report import runner\n"
        "importlib.import_module('research.significance')\n"
    )
    assert research_imports(probe.parent) == [
        "pkg/m.py:3 research.report",
        "pkg/m.py:4 research.significance",
    ]
    assert research_imports(PACKAGE) == []


#: layers that must import without Lightning (usable from a notebook or another trainer)
LIGHTNING_FREE = ("io", "retrieval", "analysis", "models", "objectives", "data.collection")


def test_models_objectives_and_readers_never_import_lightning() -> None:
    found = []
    for layer in LIGHTNING_FREE:
        for path in sorted((PACKAGE / layer.replace(".", "/")).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text("utf-8"))):
                names = (
                    [a.name for a in node.names]
                    if isinstance(node, ast.Import)
                    else [node.module or ""]
                    if isinstance(node, ast.ImportFrom) and not node.level
                    else []
                )
                found += [
                    f"{path.relative_to(PACKAGE)}:{node.lineno} {n}"
                    for n in names
                    if n.split(".")[0] in ("lightning", "pytorch_lightning")
                ]
    assert found == []
