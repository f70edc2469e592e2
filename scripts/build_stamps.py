#!/usr/bin/env python3
"""Build the "stamps" collection (photos and drawings with human multilingual captions)
from the installed Debian package ``tuxpaint-stamps-default``, deterministically.

The package is GPL-2, so its images and captions are read here at build time and never
committed: the collection is written to ``$LIGHTNING_MLSR_CACHE/collections/stamps``
(default ``~/.cache/lightning_mlsr/collections/stamps``), where ``--data.collection=stamps``
finds it. Documents are the stamp images, captioned with their translations (every
language but English); queries are the English captions; an image is relevant to its own
English caption (identical captions share their images); splits are by caption group,
stratified by category. See DATA.md ("The stamps collection").

Usage::

    sudo apt-get install tuxpaint-stamps-default    # once
    python scripts/build_stamps.py                  # -> the cache folder above
    python scripts/build_stamps.py --out DIR --sample 50

Running it twice gives byte-identical files. It prints the counts for DATA.md.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import re
import shutil
import subprocess
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent))
import build_emoji_collection as emoji_build
import stamps_images
import stamps_tables

from lightning_mlsr.data.collection.layout import built_collections_dir

PACKAGE = "tuxpaint-stamps-default"
LICENSE = "GPL-2 (Tux Paint stamps; see NOTICE.md)"
INSTALL_HINT = f"sudo apt-get install {PACKAGE}  (Debian/Ubuntu, package section main)"
DEFAULT_STAMPS_DIR = Path("/usr/share/tuxpaint/stamps")
SPLIT_SEED = "stamps-v1"
#: Validation and test are large enough for per-type tables with intervals.
SPLIT_FRACTIONS = (("train", 0.6), ("validation", 0.2), ("test", 0.2))
#: What a document reads by default: Latin-script languages that a BERT-uncased vocabulary
#: tokenizes into words and that nearly every stamp has (``caption_languages="all"``
#: gives the whole list of translations).
CAPTION_LANGUAGES = ("de", "es", "fr", "it", "nl")
IMAGES_ROW_GROUP = 64  # ~1.6 MB of image bytes per row group, as Hugging Face writes them
TRANSLATION = re.compile(r"([A-Za-z]+(?:_[A-Za-z]+)?(?:@[a-z]+)?)\.utf8=(.*)")


@dataclass
class Stamp:
    image_id: str  # the path below the stamps folder without its suffix: animals/mammals/cow
    source: str  # the file read: animals/mammals/cow.png
    english: str
    translations: dict[str, str]  # language -> caption, English variants left out
    png: bytes
    from_svg: bool
    kind: str = ""
    split: str = ""

    @property
    def category(self) -> str:
        return self.image_id.split("/")[0]

    @property
    def subcategory(self) -> str:
        return "/".join(self.image_id.split("/")[1:-1])


@dataclass
class Report:
    skipped: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    dropped_translations: Counter[str] = field(default_factory=Counter)

    def skip(self, reason: str, what: str) -> None:
        self.skipped[reason] += 1
        self.examples[reason].append(what)


def fail(message: str) -> None:
    raise SystemExit(f"error: {message}")


def package_version(stamps_dir: Path) -> str:
    """The Debian version of the package that holds ``stamps_dir``: from ``dpkg-query`` for
    the installed one, else the first line of the package's ``changelog.Debian.gz``."""
    if not stamps_dir.is_dir():
        fail(f"{stamps_dir} does not exist: the Debian package {PACKAGE} is not installed.\n"
             f"Install it with `{INSTALL_HINT}`, or give --stamps-dir (an unpacked package).")  # fmt: skip
    changelog = stamps_dir.parents[1] / "doc" / PACKAGE / "changelog.Debian.gz"
    if stamps_dir.resolve() == DEFAULT_STAMPS_DIR and shutil.which("dpkg-query"):
        done = subprocess.run(
            ["dpkg-query", "-W", "-f=${Version}", PACKAGE], capture_output=True, text=True
        )
        if done.returncode == 0 and done.stdout.strip():
            return done.stdout.strip()
    if changelog.is_file():
        first = gzip.decompress(changelog.read_bytes()).decode("utf-8").splitlines()[0]
        match = re.match(rf"{PACKAGE} \(([^)]+)\)", first)
        if match:
            return match.group(1)
    fail(f"cannot tell which version of {PACKAGE} holds {stamps_dir} (no dpkg record and no "
         f"{changelog}); install it with `{INSTALL_HINT}`")  # fmt: skip
    raise AssertionError  # unreachable


def read_caption(path: Path, report: Report) -> tuple[str, dict[str, str]]:
    """Line 1 (English) and the ``xx.utf8=...`` translations of a stamp's ``NAME.txt``.

    English variants (``en_GB``, ``en_AU``) and translations equal to the English caption
    (untranslated copies) are left out: the English caption is the query.
    """
    lines = path.read_text(encoding="utf-8").lstrip("\ufeff").splitlines()
    english = " ".join(lines[0].split()) if lines else ""
    translations: dict[str, str] = {}
    for line in lines[1:]:
        match = TRANSLATION.fullmatch(line.strip())
        if match is None:
            continue
        language, text = match.group(1), " ".join(match.group(2).split())
        if language == "en" or language.startswith("en_"):
            report.dropped_translations["english_variant"] += 1
        elif not text or language in translations:
            report.dropped_translations["empty_or_repeated"] += 1
        elif text.casefold() == english.casefold():
            report.dropped_translations["same_as_english"] += 1
        else:
            translations[language] = text
    return english, dict(sorted(translations.items()))


def read_stamps(stamps_dir: Path, report: Report) -> list[Stamp]:
    """Every captioned stamp image, by image id; a name with a PNG and an SVG takes the
    PNG (the package's own raster of the same drawing), an SVG alone is rasterized."""
    files: dict[str, dict[str, Path]] = defaultdict(dict)
    for path in sorted(stamps_dir.rglob("*")):
        if path.suffix in (".png", ".svg", ".txt") and path.is_file():
            stem = path.relative_to(stamps_dir).with_suffix("").as_posix()
            files[stem][path.suffix] = path
    stamps = []
    for stem, found in sorted(files.items()):
        image = found.get(".png") or found.get(".svg")
        if image is None:
            report.skip("caption_without_image", stem)
            continue
        if ".txt" not in found:
            report.skip("no_caption_file", image.relative_to(stamps_dir).as_posix())
            continue
        english, translations = read_caption(found[".txt"], report)
        if not english:
            report.skip("empty_english_caption", stem)
            continue
        if not translations:
            report.skip("no_translation", stem)
            continue
        from_svg = image.suffix == ".svg"
        png = (
            stamps_images.rasterize_svg(image.read_bytes(), str(image.parent))
            if from_svg
            else image.read_bytes()
        )
        source = image.relative_to(stamps_dir).as_posix()
        stamp = Stamp(stem, source, english, translations, png, from_svg)
        stamp.kind = stamps_images.image_type(source, png, from_svg)
        stamps.append(stamp)
    return stamps


def assign_splits(groups: dict[str, list[Stamp]]) -> dict[str, str]:
    """A split per English caption (so per image: a caption's images stay together),
    stratified by category: within each category (that of the caption's first image), the
    captions are ranked by a seeded sha256 and cut by :data:`SPLIT_FRACTIONS`."""
    by_category: dict[str, list[str]] = defaultdict(list)
    for text, stamps in groups.items():
        by_category[stamps[0].category].append(text)
    split = {}
    for texts in by_category.values():
        ranked = sorted(texts, key=lambda t: hashlib.sha256(f"{SPLIT_SEED}:{t}".encode()).digest())
        n_train = round(len(ranked) * SPLIT_FRACTIONS[0][1])
        n_val = round(len(ranked) * SPLIT_FRACTIONS[1][1])
        for rank, text in enumerate(ranked):
            split[text] = (
                "train" if rank < n_train else "validation" if rank < n_train + n_val else "test"
            )
    return split


def build(stamps_dir: Path, version: str, notice_text: str = "") -> tuple[dict[str, bytes], dict]:
    """Every file of the collection in memory: relative path -> bytes, and the counts."""
    report = Report()
    stamps = read_stamps(stamps_dir, report)
    if not stamps:
        fail(f"{stamps_dir} holds no captioned stamp images; is it the stamps folder of {PACKAGE}?")
    groups: dict[str, list[Stamp]] = defaultdict(list)
    for stamp in stamps:
        groups[stamp.english].append(stamp)
    texts = sorted(groups)
    width = max(4, len(str(len(texts))))
    text_id = {t: f"s{i:0{width}d}" for i, t in enumerate(texts, start=1)}
    split = assign_splits(groups)
    for text, members in groups.items():
        for stamp in members:
            stamp.split = split[text]

    n = len(stamps)
    empty_lists = [[""] * len(s.translations) for s in stamps]
    images = pa.table(
        {
            "image_id": pa.array([s.image_id for s in stamps], pa.string()),
            "image": pa.array(
                [{"bytes": s.png, "path": s.source} for s in stamps],
                pa.struct([("bytes", pa.binary()), ("path", pa.string())]),
            ),
            "image_url": pa.nulls(n, pa.string()),
            "language": pa.array([list(s.translations) for s in stamps], pa.list_(pa.string())),
            "caption_reference_description": pa.array(
                [list(s.translations.values()) for s in stamps], pa.list_(pa.string())
            ),
            "caption_alt_text_description": pa.array(empty_lists, pa.list_(pa.string())),
            "caption_attribution_description": pa.array(empty_lists, pa.list_(pa.string())),
            "category": pa.array([s.category for s in stamps], pa.string()),
            "subcategory": pa.array([s.subcategory for s in stamps], pa.string()),
            "image_type": pa.array([s.kind for s in stamps], pa.string()),
            "source_format": pa.array(["svg" if s.from_svg else "png" for s in stamps]),
            "split": pa.array([s.split for s in stamps], pa.string()),
        }
    )
    blank = [""] * len(texts)
    texts_table = pa.table(
        {
            "text_id": pa.array([text_id[t] for t in texts], pa.string()),
            "page_title": pa.array(blank, pa.string()),
            "section_title": pa.array(texts, pa.string()),
            "context_page_description": pa.array(blank, pa.string()),
            "context_section_description": pa.array(blank, pa.string()),
        }
    )
    qrels: dict[str, list[str]] = {name: [] for name, _ in SPLIT_FRACTIONS}
    for text in texts:
        for stamp in sorted(groups[text], key=lambda s: s.image_id):
            qrels[split[text]].append(f"{text_id[text]} Q0 {stamp.image_id} 1\n")

    counts = compute_counts(stamps, groups, split, report)
    description = (
        f"Tux Paint stamp images (photos, clip art, letters, signs, symbols) from the Debian "
        f"package {PACKAGE} {version}, captioned with their human translations in every "
        "language but English; queries are the English captions, relevant images the stamps "
        "with that caption. Built by scripts/build_stamps.py; see DATA.md."
    )
    collection = {
        "name": "stamps",
        "description": description,
        "query_fields": ["section_title"],
        "caption_fields": ["caption_reference_description"],
        "caption_languages": list(CAPTION_LANGUAGES),
        "languages": sorted({lang for s in stamps for lang in s.translations}),
        "split_seed": SPLIT_SEED,
        "sources": [{"package": PACKAGE, "version": version, "license": LICENSE}],
        "rasterized_with": "{}=={}".format(*stamps_images.RASTERIZER),
        "counts": counts,
    }
    files = {
        "collection.json": (json.dumps(collection, indent=2, ensure_ascii=False) + "\n").encode(),
        "images/images.parquet": emoji_build.parquet_bytes(images, IMAGES_ROW_GROUP),
        "texts/texts.parquet": emoji_build.parquet_bytes(texts_table),
        "NOTICE.md": notice(version, notice_text),
    }
    for name, lines in qrels.items():
        files[f"qrels/{name}.trec"] = "".join(lines).encode()
    return files, counts


def compute_counts(
    stamps: list[Stamp], groups: dict[str, list[Stamp]], split: dict[str, str], report: Report
) -> dict:
    """The counts printed for DATA.md and stored in ``collection.json``."""
    by_category: dict[str, Counter[str]] = defaultdict(Counter)
    for s in stamps:
        by_category[s.category][s.kind] += 1
    per_split = {}
    for name, _ in SPLIT_FRACTIONS:
        mine = [t for t in groups if split[t] == name]
        members = [s for t in mine for s in groups[t]]
        per_split[name] = {
            "queries": len(mine),
            "qrels": len(members),
            "queries_with_several_relevant": sum(len(groups[t]) > 1 for t in mine),
            "images_by_type": {k: sum(s.kind == k for s in members) for k in stamps_images.TYPES},
        }
    return {
        "images": len(stamps),
        "images_from_svg": sum(s.from_svg for s in stamps),
        "images_by_type": {k: sum(s.kind == k for s in stamps) for k in stamps_images.TYPES},
        "images_by_category": {
            c: {k: kinds[k] for k in stamps_images.TYPES}
            for c, kinds in sorted(by_category.items())
        },
        "queries": len(groups),
        "qrels": len(stamps),
        "translations_per_image": round(sum(len(s.translations) for s in stamps) / len(stamps), 1),
        "skipped": dict(sorted(report.skipped.items())),
        "skipped_files": {k: sorted(v) for k, v in sorted(report.examples.items())},
        "translations_left_out": dict(sorted(report.dropped_translations.items())),
        "splits": per_split,
    }


def notice(version: str, copyright_text: str) -> bytes:
    text = (
        "# Notices for the stamps collection\n\n"
        f"Images and captions: the Tux Paint stamps of the Debian package `{PACKAGE}` "
        f"{version}, licensed under the GNU General Public License, version 2 (GPL-2). SVG "
        "stamps are rasterized to PNG; everything else is unmodified. This folder is built on "
        "the user's machine from the installed package and is not redistributed by "
        "lightning_mlsr.\n"
    )
    if copyright_text:
        text += f"\n## {PACKAGE} (debian/copyright)\n\n```\n{copyright_text.strip()}\n```\n"
    return text.encode()


def write(out: Path, files: dict[str, bytes]) -> None:
    """Replace ``out`` with ``files``, refusing to delete a folder that is not a collection."""
    if out.exists() and any(out.iterdir()) and not (out / "collection.json").is_file():
        fail(f"{out} is not empty and holds no collection.json; give an empty or new --out")
    staging = out.with_name(out.name + ".building")
    shutil.rmtree(staging, ignore_errors=True)
    for rel, data in sorted(files.items()):
        path = staging / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stamps-dir", type=Path, default=DEFAULT_STAMPS_DIR)
    parser.add_argument("--out", type=Path, default=None, help="default: the cache folder")
    parser.add_argument("--sample", type=int, default=0, help="print N random pairs to read")
    args = parser.parse_args(argv)
    out = args.out or built_collections_dir() / "stamps"
    version = package_version(args.stamps_dir)
    copyright_file = args.stamps_dir.parents[1] / "doc" / PACKAGE / "copyright"
    notice_text = copyright_file.read_text("utf-8") if copyright_file.is_file() else ""
    print(f"reading {PACKAGE} {version} from {args.stamps_dir}", flush=True)
    files, counts = build(args.stamps_dir, version, notice_text)
    write(out, files)
    total = sum(len(d) for d in files.values())
    print(f"wrote {len(files)} files ({total / 1e6:.1f} MB) to {out}")
    print(f"images: {counts['images']} ({counts['images_from_svg']} rasterized from SVG)  "
          f"queries: {counts['queries']}  qrels: {counts['qrels']}")  # fmt: skip
    for reason, paths in counts["skipped_files"].items():
        print(f"skipped ({reason}): {len(paths)}: {', '.join(paths)}")
    print(f"translations left out: {counts['translations_left_out']}")
    print(stamps_tables.markdown_tables(counts))
    if args.sample:
        print("\n".join(stamps_tables.sample_pairs(out, args.sample)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
