"""README's Layout section and the reference pages' links against the tree: every
subpackage is listed, nothing listed is missing, every relative link resolves."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "lightning_mlsr"


def layout_block(readme: str) -> str:
    section = readme.split("\n## Layout\n", 1)[1]
    return section.split("```", 2)[1]


def listed(block: str) -> tuple[dict[str, list[str]], list[str]]:
    """``({subpackage: [file names on its lines]}, [top-level folders of the repository])``."""
    packages: dict[str, list[str]] = {}
    top: list[str] = []
    current = None
    for line in block.splitlines():
        if m := re.match(r"^  (\w+)/", line):  # a package folder inside lightning_mlsr/
            current = m.group(1)
            packages[current] = []
        elif m := re.match(r"^([\w.]+)/", line):  # a folder of the repository
            current = None
            if m.group(1) != "lightning_mlsr":
                top.append(m.group(1))
        if current is not None:
            packages[current] += re.findall(r"\b(\w+\.py)\b", line)
    return packages, top


def test_layout_lists_every_subpackage_and_only_what_exists() -> None:
    packages, top = listed(layout_block((ROOT / "README.md").read_text("utf-8")))
    on_disk = {p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert set(packages) == on_disk, "README Layout vs lightning_mlsr/ folders"
    for package, files in packages.items():
        missing = [f for f in files if not list((PACKAGE / package).rglob(f))]
        assert missing == [], f"README Layout names files that {package}/ lacks"
    assert [t for t in top if not (ROOT / t).is_dir()] == []
    assert len(packages) >= 10 and "tests" in top


def test_the_layout_check_catches_a_stale_entry() -> None:
    packages, top = listed(
        "lightning_mlsr/\n  heads/  base.py x\n  io/  atomic.py\nscripts/ a.py\n"
    )
    assert packages == {"heads": ["base.py"], "io": ["atomic.py"]} and top == ["scripts"]


def test_relative_links_of_readme_and_reference_pages_resolve() -> None:
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    broken = []
    for page in pages:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text("utf-8")):
            if not (page.parent / target).exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}")
    assert broken == []
    assert len(pages) >= 5
