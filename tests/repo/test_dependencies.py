"""Every third-party module the package imports is installed by a plain ``pip install -e .``.

The package's source is scanned (imports inside functions included). A module must come
from a distribution in ``install_requires``; the only exception is an import guarded by
``try: ... except ImportError`` whose handler's message names the extra to install
(``[seismic]``), and that extra must exist and provide the module. Test-only packages
(the ``dev`` extra) must never be imported by the package.
"""

from __future__ import annotations

import ast
import configparser
import functools
import re
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "lightning_mlsr"


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_name(line: str) -> str:
    return _norm(re.split(r"[\s\[<>=!~;@]", line.strip(), maxsplit=1)[0])


def declared_requirements(
    setup_cfg: Path = ROOT / "setup.cfg",
) -> tuple[set[str], dict[str, set[str]]]:
    """``(install_requires names, {extra: names})``, names normalised (PEP 503)."""
    parser = configparser.ConfigParser()
    parser.read(setup_cfg)

    def names(text: str) -> set[str]:
        return {_requirement_name(line) for line in text.splitlines() if line.strip()}

    runtime = names(parser.get("options", "install_requires"))
    extras = {k: names(v) for k, v in parser.items("options.extras_require")}
    return runtime, extras


@dataclass(frozen=True)
class Import:
    module: str  # top-level module name
    where: str  # file:line
    guard_message: str | None  # the ImportError handler's text, when guarded


def _string_constants(tree: ast.Module) -> dict[str, str]:
    """Module-level ``NAME = "text"`` assignments, so a handler that raises with a named
    message (``raise ImportError(_NEEDS_X)``) is read with that message's text."""
    found = {}
    for stmt in tree.body:
        value = stmt.value if isinstance(stmt, (ast.Assign, ast.AnnAssign)) else None
        if isinstance(value, ast.Constant) and isinstance(value.value, str):
            targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
            found.update({t.id: value.value for t in targets if isinstance(t, ast.Name)})
    return found


def _handler_text(handler: ast.ExceptHandler, constants: dict[str, str]) -> str:
    texts = []
    for node in ast.walk(handler):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            texts.append(node.value)
        elif isinstance(node, ast.Name) and node.id in constants:
            texts.append(constants[node.id])
    return " ".join(texts)


def _catches_import_error(handler: ast.ExceptHandler) -> bool:
    types = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return any(
        isinstance(t, ast.Name) and t.id in ("ImportError", "ModuleNotFoundError") for t in types
    )


def package_imports(package: Path = PACKAGE) -> list[Import]:
    """Absolute imports of every module of ``package``, with their ImportError guards."""
    found = []
    for path in sorted(package.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        guard: dict[int, str] = {}
        constants = _string_constants(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Try):
                texts = [
                    _handler_text(h, constants) for h in node.handlers if _catches_import_error(h)
                ]
                if texts:
                    for stmt in node.body:
                        for sub in ast.walk(stmt):
                            guard[id(sub)] = " ".join(texts)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            where = f"{path.relative_to(package.parent)}:{node.lineno}"
            for module in modules:
                found.append(Import(module.split(".")[0], where, guard.get(id(node))))
    return found


@functools.cache
def _module_distributions() -> dict[str, list[str]]:
    return dict(metadata.packages_distributions())  # scans every installed distribution


def distributions_of(module: str) -> set[str]:
    return {_norm(d) for d in _module_distributions().get(module, [])}


def problems(imports: list[Import], runtime: set[str], extras: dict[str, set[str]]) -> list[str]:
    """What a plain install would lack (empty when everything is provided)."""
    out = []
    for imp in imports:
        if imp.module in sys.stdlib_module_names or imp.module in ("lightning_mlsr", "__future__"):
            continue
        dists = distributions_of(imp.module)
        if dists & runtime:
            continue
        if imp.guard_message is not None:
            named = [e for e in extras if e != "dev" and f"[{e}]" in imp.guard_message]
            provided = [e for e in named if not dists or dists & extras[e]]
            if provided:
                continue
            out.append(
                f"{imp.where}: optional import {imp.module!r} — its ImportError message must name "
                f"an extra that provides it (as '[extra]'); named: {named or 'none'}"
            )
            continue
        where = sorted(e for e in extras if dists & extras[e])
        out.append(
            f"{imp.where}: imports {imp.module!r} (distribution {sorted(dists) or 'unknown'}), "
            f"which install_requires lacks" + (f" (only in extras {where})" if where else "")
        )
    return out


def test_plain_install_provides_every_import() -> None:
    runtime, extras = declared_requirements()
    imports = package_imports()
    assert len(imports) > 50, "the scan found too few imports: is the package path right?"
    assert problems(imports, runtime, extras) == []


def test_the_scan_finds_function_level_and_unguarded_imports(tmp_path: Path) -> None:
    """The checker itself: a lazy import of a dev-only package is reported, a guarded
    import naming its extra is accepted, one that names no extra is reported."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "a.py").write_text(
        "def f():\n"
        "    import pytest\n"  # dev-only, lazily imported: must be reported
        "def g():\n"
        "    try:\n"
        "        import yaml\n"
        "    except ImportError:\n"
        "        raise ImportError(\"pip install -e '.[opt]'\")\n"
        "def h():\n"
        "    try:\n"
        "        import numpy\n"
        "    except ImportError:\n"
        "        raise ImportError('numpy is missing')\n"
        "_NEEDS_SCIPY = \"pip install -e '.[opt]'\"\n"
        "def k():\n"
        "    try:\n"
        "        import scipy\n"  # message named by a module constant: accepted
        "    except ImportError as err:\n"
        "        raise ImportError(_NEEDS_SCIPY) from err\n"
    )
    imports = package_imports(pkg)
    assert {i.module for i in imports} == {"pytest", "yaml", "numpy", "scipy"}
    found = problems(
        imports, runtime={"torch"}, extras={"dev": {"pytest"}, "opt": {"pyyaml", "scipy"}}
    )
    assert len(found) == 2
    assert "'pytest'" in found[0] and "only in extras ['dev']" in found[0]
    assert "'numpy'" in found[1] and "must name an extra" in found[1]


@pytest.mark.parametrize("module", ["pytrec_eval", "huggingface_hub"])
def test_modules_once_missing_from_a_plain_install_are_required(module: str) -> None:
    runtime, _ = declared_requirements()
    assert distributions_of(module) & runtime
