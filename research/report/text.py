"""The report's prose, read from a markdown file of named snippets (``results/report_text.md``).

A snippet runs from its ``<!-- name -->`` marker line to the next marker. Its paragraphs
(blocks separated by blank lines) are rendered one line each: the lines of a paragraph are
joined by a single space, so the file can be wrapped, and the first line keeps its leading
indentation. ``{field}`` placeholders are Python format fields.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

__all__ = ["ReportText"]

_MARKER = re.compile(r"^<!-- ([a-z0-9_]+) -->$")


class ReportText:
    """Named prose snippets, rendered with :meth:`__call__`."""

    def __init__(self, snippets: dict[str, str], source: str = "report text") -> None:
        self.snippets = snippets
        self.source = source
        self.used: set[str] = set()

    @classmethod
    def read(cls, path: str | Path) -> ReportText:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: it holds the prose of RESULTS.md")
        snippets: dict[str, list[str]] = {}
        current: list[str] | None = None
        for line in path.read_text("utf-8").splitlines():
            marker = _MARKER.match(line)
            if marker:
                if marker.group(1) in snippets:
                    raise ValueError(f"{path}: snippet {marker.group(1)!r} is defined twice")
                current = snippets.setdefault(marker.group(1), [])
            elif current is not None:
                current.append(line)
        return cls({name: _paragraphs(lines) for name, lines in snippets.items()}, str(path))

    def __call__(self, name: str, **fields: Any) -> str:
        """Snippet ``name`` with ``fields`` filled in; paragraphs joined by a blank line."""
        if name not in self.snippets:
            raise KeyError(
                f"{self.source} has no snippet {name!r} (it has {sorted(self.snippets)})"
            )
        self.used.add(name)
        try:
            return self.snippets[name].format(**fields)
        except KeyError as missing:
            raise KeyError(f"{self.source}: snippet {name!r} needs the field {missing}") from None

    def lines(self, name: str, **fields: Any) -> list[str]:
        """:meth:`__call__` as a list of lines (blank lines between paragraphs)."""
        return self(name, **fields).split("\n")


def _paragraphs(lines: list[str]) -> str:
    out, block = [], []
    for line in [*lines, ""]:
        if line.strip():
            block.append(line.rstrip())
        elif block:
            out.append(block[0] + "".join(" " + rest.strip() for rest in block[1:]))
            block = []
    return "\n\n".join(out)
