"""The texts, qrels and counts of ``emoji-describe``: the senses each emoji names (and the
hypernyms of its label's), the glosses kept as queries, and the seeded split by synset."""

from __future__ import annotations

import hashlib
import io
from collections import defaultdict

import build_emoji_collection as emoji_build
import pyarrow as pa
import pyarrow.parquet as pq
from emoji_senses import STOP_WORDS, Emoji, Forms, select_senses
from emoji_wordnet import WordNet, definition

SPLIT_SEED = "emoji-describe-v1"
#: Test is the largest split: the queries exist to measure, and a synset never crosses splits.
SPLIT_FRACTIONS = (("train", 0.4), ("validation", 0.1), ("test", 0.5))
#: A sense that covers more images than this is a category, not a picture (``entity``).
MAX_RELEVANT = 20
#: Hypernym levels above a label's sense whose glosses also describe the image (apple ->
#: edible fruit); tag senses are not propagated.
HYPERNYM_LEVELS = 1


def split_of(keys: list[str]) -> dict[str, str]:
    """Assign each synset key to a split by the rank of a seeded sha256 of the key."""
    ranked = sorted(keys, key=lambda k: hashlib.sha256(f"{SPLIT_SEED}:{k}".encode()).hexdigest())
    n_train = round(len(ranked) * SPLIT_FRACTIONS[0][1])
    n_val = round(len(ranked) * SPLIT_FRACTIONS[1][1])
    return {
        k: "train" if r < n_train else "validation" if r < n_train + n_val else "test"
        for r, k in enumerate(ranked)
    }


def read_emoji(emoji_files: dict[str, bytes]) -> list[Emoji]:
    """The documents of the emoji collection with their English label and tags."""
    images = pq.read_table(
        io.BytesIO(emoji_files["images/images.parquet"]),
        columns=["image_id", "language", "caption_reference_description"],
    )
    texts = pq.read_table(io.BytesIO(emoji_files["texts/texts.parquet"]))
    tag_of = dict(zip(texts["text_id"].to_pylist(), texts["section_title"].to_pylist()))
    tags: dict[str, list[str]] = defaultdict(list)
    for name in ("train", "validation", "test"):
        for line in emoji_files[f"qrels/{name}.trec"].decode().splitlines():
            text_id, _, image_id, _ = line.split()
            tags[image_id].append(tag_of[text_id])
    out = []
    for image_id, langs, caps in zip(*(images[c].to_pylist() for c in images.column_names)):
        out.append(Emoji(image_id, caps[langs.index("en")], tuple(sorted(tags[image_id]))))
    return out


def build_describe(wn: WordNet, docs: list[Emoji]) -> tuple[dict[str, bytes], dict]:
    """Texts, qrels and counts of ``emoji-describe``."""
    forms = Forms(wn)
    stats: dict[str, int] = defaultdict(int)
    sigs: dict[str, set[str]] = {}
    relevant: dict[str, set[str]] = defaultdict(set)
    broader: dict[str, set[str]] = defaultdict(set)  # hypernym of a label's sense -> images
    for e in docs:
        chosen = select_senses(wn, forms, e, sigs, stats)
        for key, origin in chosen.items():
            relevant[key].add(e.image_id)
            if origin != "label":
                continue
            frontier = [key]
            for _ in range(HYPERNYM_LEVELS):
                frontier = [
                    t for k in frontier for s, t in wn.synsets[k].pointers if s in ("@", "@i")
                ]
                for up in frontier:
                    broader[up].add(e.image_id)
    for key, images in broader.items():
        if len(images) >= 2 or key in relevant:  # a category of one image is too vague
            relevant[key] |= images
        else:
            stats["hypernym_of_one_image_dropped"] += 1
    by_id = {e.image_id: e for e in docs}

    drops: dict[str, int] = defaultdict(int)
    kept: dict[str, tuple[str, set[str]]] = {}
    for key in sorted(relevant):
        text = definition(wn.synsets[key].gloss)
        images = relevant[key]
        if not text:
            drops["empty_gloss"] += 1
        elif len(images) > MAX_RELEVANT:
            drops[f"more_than_{MAX_RELEVANT}_relevant_images"] += 1
        elif any(
            forms.contains(text, w)
            for i in images
            for w in forms.words(by_id[i].label)
            if w not in STOP_WORDS
        ):
            drops["gloss_contains_a_label_word"] += 1
        elif any(forms.contains(text, t) for i in images for t in by_id[i].tags):
            drops["gloss_contains_a_tag"] += 1
        else:
            kept[key] = (text, images)
    by_text: dict[str, list[str]] = defaultdict(list)
    for key, (text, _) in kept.items():
        by_text[text.lower()].append(key)
    for keys in by_text.values():
        if len(keys) > 1:
            drops["gloss_shared_by_another_sense"] += len(keys)
            for key in keys:
                del kept[key]

    keys = sorted(kept)
    split = split_of(keys)
    empty = [""] * len(keys)
    texts = pa.table(
        {
            "text_id": pa.array(keys, pa.string()),
            "page_title": pa.array(empty, pa.string()),
            "section_title": pa.array(empty, pa.string()),
            "context_page_description": pa.array(empty, pa.string()),
            "context_section_description": pa.array([kept[k][0] for k in keys], pa.string()),
            "synset": pa.array([wn.synsets[k].name for k in keys], pa.string()),
        }
    )
    qrels: dict[str, list[str]] = {name: [] for name, _ in SPLIT_FRACTIONS}
    for key in keys:
        for image_id in sorted(kept[key][1]):
            qrels[split[key]].append(f"{key} Q0 {image_id} 1\n")
    files = {"texts/texts.parquet": emoji_build.parquet_bytes(texts)}
    for name, lines in qrels.items():
        files[f"qrels/{name}.trec"] = "".join(lines).encode()

    per_split = {}
    for name, _ in SPLIT_FRACTIONS:
        mine = [k for k in keys if split[k] == name]
        n_qrels = sum(len(kept[k][1]) for k in mine)
        per_split[name] = {
            "queries": len(mine),
            "qrels": n_qrels,
            "mean_relevant_per_query": round(n_qrels / len(mine), 3),
            "queries_with_several_relevant": sum(len(kept[k][1]) > 1 for k in mine),
            "images_judged": len({i for k in mine for i in kept[k][1]}),
        }
    counts = {
        "images": len(docs),
        "queries": len(keys),
        "senses_mapped": len(relevant),
        "sense_selection": dict(sorted(stats.items())),
        "senses_dropped": dict(sorted(drops.items())),
        "splits": per_split,
    }
    return files, counts
