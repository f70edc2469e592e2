#!/usr/bin/env python3
"""Build the descriptive-query and other-artist variants of the bundled emoji collection.

Five collections, written next to ``emoji`` under ``lightning_mlsr/data/bundled/``:

- ``emoji-describe``: the Noto images and captions of ``emoji``; the queries are WordNet 3.0
  glosses (definitions) of the senses that the emoji's CLDR label and tags name, so a query
  describes the picture without naming it. Its images folder is ``emoji``'s.
- ``emoji-twemoji`` and ``emoji-openmoji``: the same emoji drawn by Twemoji or OpenMoji
  (same ids, captions, queries and judgments as ``emoji``); their texts and qrels folders
  are ``emoji``'s.
- ``emoji-describe-twemoji`` and ``emoji-describe-openmoji``: those images with
  ``emoji-describe``'s queries and judgments; they hold no data file of their own.

Sources, each pinned by the sha256 of its archive: the two npm packages the emoji build
reads, ``emoji-datasource-twitter@16.0.0`` (Twemoji PNGs), ``openmoji@17.0.0`` (SVGs,
rasterized with a pinned ``resvg-py``) and the Debian package ``wordnet-base`` 1:3.0-37
(``apt-get download wordnet-base=1:3.0-37``; read here with ``tarfile``, no ``dpkg``
needed). How senses are chosen and which queries are left out is written in DATA.md
("The bundled emoji-describe collection") and in ``emoji_senses.select_senses``.

The parts live beside this script: ``emoji_wordnet.py`` (the Debian package and WordNet's
files), ``emoji_senses.py`` (sense selection), ``emoji_describe_queries.py`` (the queries,
judgments and splits), ``emoji_artists.py`` (the other artists' images).

Usage::

    python scripts/build_emoji_describe.py     # fetch with npm and apt-get, rebuild in place
    python scripts/build_emoji_describe.py --out /tmp/bundled --emoji-datasource G.tgz \
        --emojibase B.tgz --twemoji T.tgz --openmoji O.tgz --wordnet wordnet-base_3.0-37_all.deb

Running it twice gives byte-identical files. It prints the counts for DATA.md.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import tempfile
from pathlib import Path

import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
import build_emoji_collection as emoji_build
from emoji_artists import (
    IMAGE_SIZE,
    OPENMOJI,
    OPENMOJI_SVG_DIR,
    RASTERIZER,
    TWEMOJI,
    TWEMOJI_IMAGE_DIR,
    openmoji_pngs,
    replace_images,
    twemoji_pngs,
)
from emoji_describe_queries import SPLIT_SEED, build_describe, read_emoji
from emoji_wordnet import (
    WORDNET,
    WORDNET_COPYRIGHT,
    WORDNET_DIR,
    check_deb,
    fetch_deb,
    parse_wordnet,
    read_deb,
)

Source = emoji_build.Source
REPO_ROOT = emoji_build.REPO_ROOT
DEFAULT_OUT = REPO_ROOT / "lightning_mlsr" / "data" / "bundled"


def collection_json(name: str, description: str, extra: dict) -> bytes:
    body = {"name": name, "description": description, **extra}
    return (json.dumps(body, indent=2, ensure_ascii=False) + "\n").encode()


def source_entry(source: Source) -> dict[str, str]:
    entry = {
        "package": source.package,
        "version": source.version,
        "sha256": source.tgz_sha256,
        "license": source.license,
    }
    if source is OPENMOJI:
        entry["rasterized_with"] = f"{RASTERIZER[0]}=={RASTERIZER[1]}"
    return entry


def notice(title: str, parts: list[tuple[str, str, bytes]]) -> bytes:
    """A NOTICE.md: what each source contributes, then its licence text verbatim."""
    text = f"# Notices for the bundled {title} collection\n\n"
    text += "".join(f"{what}\n\n" for what, _, _ in parts)
    for _, spec, licence in parts:
        text += f"## {spec} (licence)\n\n```\n{licence.decode().strip()}\n```\n\n"
    return text.rstrip("\n").encode() + b"\n"


def build(
    datasource_tgz: Path,
    emojibase_tgz: Path,
    twemoji_tgz: Path,
    openmoji_tgz: Path,
    wordnet_deb: Path,
) -> tuple[dict[str, bytes], dict]:
    """Every file of the variant collections (paths relative to the bundled folder)."""
    check_deb(wordnet_deb, WORDNET)
    emoji_build.check_tgz(twemoji_tgz, TWEMOJI)
    emoji_build.check_tgz(openmoji_tgz, OPENMOJI)
    emoji_files, _ = emoji_build.build(datasource_tgz, emojibase_tgz)
    om = emoji_build.read_tgz(
        openmoji_tgz,
        re.compile(rf"package/LICENSE\.txt|{re.escape(OPENMOJI_SVG_DIR)}[0-9A-F-]+\.svg"),
        f"reading {OPENMOJI.spec}",
    )
    tw = emoji_build.read_tgz(
        twemoji_tgz,
        re.compile(rf"package/(emoji\.json|LICENSE)|{re.escape(TWEMOJI_IMAGE_DIR)}[0-9a-f-]+\.png"),
        f"reading {TWEMOJI.spec}",
    )
    wn_files = read_deb(
        wordnet_deb,
        re.compile(
            rf"{re.escape(WORDNET_DIR)}((data|index)\.(noun|verb|adj|adv)|(noun|verb|adj)\.exc"
            rf"|cntlist\.rev)|{re.escape(WORDNET_COPYRIGHT)}"
        ),
    )
    wn = parse_wordnet(wn_files)
    docs = read_emoji(emoji_files)
    describe_files, counts = build_describe(wn, docs)
    noto_images = emoji_files["images/images.parquet"]
    ids = [e.image_id for e in docs]
    artist_images = {
        "twemoji": replace_images(noto_images, twemoji_pngs(ids, tw)),
        "openmoji": replace_images(noto_images, openmoji_pngs(ids, om)),
    }

    g_licence = b"".join(
        emoji_build.read_tgz(datasource_tgz, re.compile("package/LICENSE"), "licence").values()
    )
    b_licence = b"".join(
        emoji_build.read_tgz(emojibase_tgz, re.compile("package/LICENSE"), "licence").values()
    )
    noto = (
        f"Images: Noto Emoji PNGs from the npm package `{emoji_build.EMOJI_DATASOURCE.spec}`, "
        "Copyright Google Inc., Apache License 2.0 "
        "(https://github.com/googlefonts/noto-emoji/blob/main/LICENSE).",
        emoji_build.EMOJI_DATASOURCE.spec,
        g_licence,
    )
    twemoji = (
        f"Images: Twemoji PNGs from the npm package `{TWEMOJI.spec}` (Twemoji, the "
        "jdecked/twemoji fork, v16.0.1), Copyright Twitter, Inc and other contributors, "
        "licensed under CC-BY 4.0 (https://github.com/jdecked/twemoji/blob/main/LICENSE-GRAPHICS,"
        " https://creativecommons.org/licenses/by/4.0/). The PNGs are unmodified.",
        TWEMOJI.spec,
        tw["package/LICENSE"],
    )
    openmoji = (
        f"Images: OpenMoji colour SVGs from the npm package `{OPENMOJI.spec}`, rasterized to "
        f"{IMAGE_SIZE}x{IMAGE_SIZE} PNG with {RASTERIZER[0]} {RASTERIZER[1]} (resvg); otherwise "
        "unmodified. All emojis designed by OpenMoji (https://openmoji.org/) – the open-source "
        "emoji and icon project. License: CC BY-SA 4.0 "
        "(https://creativecommons.org/licenses/by-sa/4.0/); the PNGs are under the same licence.",
        OPENMOJI.spec,
        om["package/LICENSE.txt"],
    )
    cldr = (
        f"Captions (labels) and keyword tags: the npm package `{emoji_build.EMOJIBASE.spec}`, "
        "derived from Unicode CLDR (Unicode License v3, https://www.unicode.org/license.txt).",
        emoji_build.EMOJIBASE.spec,
        b_licence,
    )
    wordnet = (
        "Queries: glosses from WordNet 3.0 (Debian package "
        f"`{WORDNET.package}` {WORDNET.version}), WordNet 3.0 Copyright 2006 by Princeton "
        "University. All rights reserved. The licence below applies to them.",
        f"{WORDNET.package} {WORDNET.version}",
        wn_files[WORDNET_COPYRIGHT],
    )
    common = {
        "caption_fields": ["caption_reference_description"],
        "caption_languages": ["en"],
    }
    describe_defaults = {"query_fields": ["context_section_description"], **common}
    tags_defaults = {"query_fields": ["section_title"], **common}
    sources = [
        source_entry(s) for s in (emoji_build.EMOJI_DATASOURCE, emoji_build.EMOJIBASE, WORDNET)
    ]
    files: dict[str, bytes] = {}
    for rel, data in describe_files.items():
        files[f"emoji-describe/{rel}"] = data
    files["emoji-describe/collection.json"] = collection_json(
        "emoji-describe",
        "The Noto emoji images and captions of `emoji`; queries are WordNet 3.0 glosses of "
        "the senses the emoji's CLDR label and tags name, with no query naming a relevant "
        "image's label word or tag. Built by scripts/build_emoji_describe.py; see DATA.md.",
        {
            **describe_defaults,
            "folders": {"images": "../emoji/images"},
            "split_seed": SPLIT_SEED,
            "sources": sources,
            "counts": counts,
        },
    )
    files["emoji-describe/NOTICE.md"] = notice("emoji-describe", [noto, cldr, wordnet])
    artists = {
        "twemoji": ("Twemoji", TWEMOJI, twemoji),
        "openmoji": ("OpenMoji", OPENMOJI, openmoji),
    }
    for key, (artist, source, part) in artists.items():
        tags_name, describe_name = f"emoji-{key}", f"emoji-describe-{key}"
        files[f"{tags_name}/images/images.parquet"] = artist_images[key]
        files[f"{tags_name}/collection.json"] = collection_json(
            tags_name,
            f"`emoji` with each Noto image replaced by the {artist} drawing of the same emoji: "
            "same ids, captions, queries and judgments. Built by "
            "scripts/build_emoji_describe.py.",
            {
                **tags_defaults,
                "folders": {"texts": "../emoji/texts", "qrels": "../emoji/qrels"},
                "sources": [source_entry(source), *sources[:2]],
                "counts": {"images": len(ids)},
            },
        )
        files[f"{tags_name}/NOTICE.md"] = notice(tags_name, [part, cldr])
        files[f"{describe_name}/collection.json"] = collection_json(
            describe_name,
            f"`emoji-describe` with the {artist} images of `{tags_name}`: same ids, captions, "
            "queries and judgments. Built by scripts/build_emoji_describe.py.",
            {
                **describe_defaults,
                "folders": {
                    "images": f"../{tags_name}/images",
                    "texts": "../emoji-describe/texts",
                    "qrels": "../emoji-describe/qrels",
                },
                "sources": [source_entry(source), *sources],
                "counts": counts,
            },
        )
        files[f"{describe_name}/NOTICE.md"] = notice(describe_name, [part, cldr, wordnet])
    return files, {"emoji": emoji_files, "describe": counts}


def markdown_table(counts: dict) -> str:
    rows = [
        "| emoji-describe split | queries | qrels | mean relevant / query "
        "| queries with several relevant | images judged |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, c in counts["splits"].items():
        rows.append(
            f"| {name} | {c['queries']} | {c['qrels']} | {c['mean_relevant_per_query']:.3f} "
            f"| {c['queries_with_several_relevant']} | {c['images_judged']} |"
        )
    return "\n".join(rows)


def sample_pairs(out: Path, n: int, seed: int = 0) -> list[str]:
    """``n`` random (query, relevant image) pairs of a built ``emoji-describe``, to read."""
    root = out / "emoji-describe"
    texts = pq.read_table(root / "texts/texts.parquet")
    gloss = dict(
        zip(texts["text_id"].to_pylist(), texts["context_section_description"].to_pylist())
    )
    name = dict(zip(texts["text_id"].to_pylist(), texts["synset"].to_pylist()))
    images = pq.read_table(
        out / "emoji/images/images.parquet", columns=["image_id", "caption_reference_description"]
    )
    label = {i: c[0] for i, c in zip(*(images[c].to_pylist() for c in images.column_names))}
    pairs = [
        line.split()[::2]
        for split in ("train", "validation", "test")
        for line in (root / "qrels" / f"{split}.trec").read_text().splitlines()
    ]
    chosen = random.Random(seed).sample(pairs, n)
    return [f"{t}\t{name[t]}\t{label[i]}\t{gloss[t]}" for t, i in chosen]


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the bundled folder")
    parser.add_argument("--emoji-datasource", type=Path, help="local emoji-datasource-google tgz")
    parser.add_argument("--emojibase", type=Path, help="local emojibase-data tgz")
    parser.add_argument("--twemoji", type=Path, help=f"local {TWEMOJI.spec} tgz")
    parser.add_argument("--openmoji", type=Path, help=f"local {OPENMOJI.spec} tgz")
    parser.add_argument("--wordnet", type=Path, help="local wordnet-base 1:3.0-37 .deb")
    parser.add_argument("--sample", type=int, default=0, help="print N random pairs to read")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="emoji-describe-") as tmp:
        g = args.emoji_datasource or emoji_build.fetch_with_npm(
            emoji_build.EMOJI_DATASOURCE, Path(tmp)
        )
        b = args.emojibase or emoji_build.fetch_with_npm(emoji_build.EMOJIBASE, Path(tmp))
        t = args.twemoji or emoji_build.fetch_with_npm(TWEMOJI, Path(tmp))
        o = args.openmoji or emoji_build.fetch_with_npm(OPENMOJI, Path(tmp))
        w = args.wordnet or fetch_deb(WORDNET, Path(tmp))
        files, built = build(g, b, t, o, w)

    shared = args.out / "emoji"
    for rel, data in sorted(built["emoji"].items()):
        path = shared / rel
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        elif path.read_bytes() != data:
            sys.exit(
                f"error: {path} differs from what scripts/build_emoji_collection.py builds from "
                f"the pinned packages; the variants share its files, so rebuild emoji first"
            )
    for rel, data in sorted(files.items()):
        path = args.out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    total = sum(len(d) for d in files.values())
    counts = built["describe"]
    print(f"wrote {len(files)} files ({total / 1e6:.2f} MB) under {args.out}")
    print(f"images: {counts['images']}  queries: {counts['queries']}")
    print(json.dumps({k: counts[k] for k in ("sense_selection", "senses_dropped")}, indent=1))
    print(markdown_table(counts))
    if args.sample:
        print("\n".join(sample_pairs(args.out, args.sample)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
