"""Tables and samples of a built stamps collection, for DATA.md and for reading by eye
(``scripts/build_stamps.py`` prints them)."""

from __future__ import annotations

import random
from pathlib import Path

import pyarrow.parquet as pq
import stamps_images

SPLITS = ("train", "validation", "test")


def markdown_tables(counts: dict) -> str:
    types = stamps_images.TYPES
    rows = [
        f"| stamps split | queries | qrels | queries with several relevant | {' | '.join(types)} |",
        "|---|" + "---:|" * (3 + len(types)),
    ]
    for name, c in counts["splits"].items():
        kinds = " | ".join(str(c["images_by_type"][k]) for k in types)
        rows.append(
            f"| stamps: {name} | {c['queries']} | {c['qrels']} | "
            f"{c['queries_with_several_relevant']} | {kinds} |"
        )
    rows += [
        "",
        f"| category | images | {' | '.join(types)} |",
        "|---|" + "---:|" * (1 + len(types)),
    ]
    for category, kinds in counts["images_by_category"].items():
        cells = " | ".join(str(kinds[k]) for k in types)
        rows.append(f"| {category} | {sum(kinds.values())} | {cells} |")
    total = " | ".join(str(counts["images_by_type"][k]) for k in types)
    rows.append(f"| all | {counts['images']} | {total} |")
    return "\n".join(rows)


def sample_pairs(out: Path, n: int, seed: int = 0) -> list[str]:
    """``n`` random (query, relevant image) pairs of a built collection, to check by eye."""
    texts = pq.read_table(out / "texts/texts.parquet", columns=["text_id", "section_title"])
    query = dict(zip(*(texts[c].to_pylist() for c in texts.column_names)))
    images = pq.read_table(out / "images/images.parquet", columns=["image_id", "image_type"])
    kind = dict(zip(*(images[c].to_pylist() for c in images.column_names)))
    pairs = [
        line.split()[::2]
        for name in SPLITS
        for line in (out / "qrels" / f"{name}.trec").read_text().splitlines()
    ]
    chosen = random.Random(seed).sample(pairs, n)
    return [f"{t}\t{query[t]}\t{i}\t{kind[i]}" for t, i in chosen]
