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
("The bundled emoji-describe collection") and in :func:`select_senses`.

Usage::

    python scripts/build_emoji_describe.py     # fetch with npm and apt-get, rebuild in place
    python scripts/build_emoji_describe.py --out /tmp/bundled --emoji-datasource G.tgz \
        --emojibase B.tgz --twemoji T.tgz --openmoji O.tgz --wordnet wordnet-base_3.0-37_all.deb

Running it twice gives byte-identical files. It prints the counts for DATA.md.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import lzma
import random
import re
import subprocess
import sys
import tarfile
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
import build_emoji_collection as emoji_build

Source = emoji_build.Source
REPO_ROOT = emoji_build.REPO_ROOT
DEFAULT_OUT = REPO_ROOT / "lightning_mlsr" / "data" / "bundled"

TWEMOJI = Source(
    "emoji-datasource-twitter",
    "16.0.0",
    "f64a530c63bca463bd8317fdc4615ce63a53a0c65018e4ce2d848aaba7a28877",
    "MIT (data); Twemoji images CC-BY 4.0 (Twitter, Inc and other contributors)",
)
WORDNET = Source(
    "wordnet-base",
    "1:3.0-37",
    "61060d960f9ada8fa120872312eccd3ecebfbab8c4579e4f5a74e1cf67620752",
    "WordNet 3.0 license (Princeton University), BSD-style",
)
OPENMOJI = Source(
    "openmoji",
    "17.0.0",
    "55ee7d13485dec86e9f38c1f3a645a13382d33ff97c0cd845ee824b0aef45e68",
    "images CC BY-SA 4.0 (OpenMoji, HfG Schwäbisch Gmünd); code LGPL-3.0",
)
#: The SVG rasterizer (build time only; ``pip install -e ".[bundled-data]"``): resvg
#: through its Python binding, pinned because the PNG bytes are part of the collection.
RASTERIZER = ("resvg-py", "0.5.0")
TWEMOJI_IMAGE_DIR = "package/img/twitter/64/"
OPENMOJI_SVG_DIR = "package/color/svg/"
IMAGE_SIZE = 64
WORDNET_DIR = "./usr/share/wordnet/"
WORDNET_COPYRIGHT = "./usr/share/doc/wordnet-base/copyright"

SPLIT_SEED = "emoji-describe-v1"
#: Test is the largest split: the queries exist to measure, and a synset never crosses splits.
SPLIT_FRACTIONS = (("train", 0.4), ("validation", 0.1), ("test", 0.5))
#: A sense that covers more images than this is a category, not a picture (``entity``).
MAX_RELEVANT = 20
#: Hypernym levels above a label's sense whose glosses also describe the image (apple ->
#: edible fruit); tag senses are not propagated.
HYPERNYM_LEVELS = 1
#: Most-frequent-sense fallback for a label with no disambiguating evidence: the first
#: sense's SemCor count must be at least this and this many times the second's.
MFS_MIN_COUNT = 3
MFS_RATIO = 3.0
#: A tag with several senses needs this many of the emoji's other words in the best one.
TAG_MIN_EVIDENCE = 2

STOP_WORDS = frozenset(
    [
        "a",
        "an",
        "the",
        "of",
        "in",
        "on",
        "at",
        "to",
        "for",
        "from",
        "with",
        "without",
        "by",
        "and",
        "or",
        "but",
        "not",
        "no",
        "as",
        "is",
        "are",
        "be",
        "it",
        "its",
        "into",
        "onto",
        "off",
        "up",
        "down",
        "out",
        "over",
        "under",
        "one",
        "two",
    ]
)
POS_NAMES = {"n": "noun", "v": "verb", "a": "adj", "s": "adj", "r": "adv"}
SS_TYPE = {"n": 1, "v": 2, "a": 3, "r": 4, "s": 5}
#: WordNet's morphological detachment rules (``morph.c``): suffix -> replacement, per POS.
DETACHMENT = {
    "n": [("s", ""), ("ses", "s"), ("xes", "x"), ("zes", "z"), ("ches", "ch"), ("shes", "sh"),
          ("men", "man"), ("ies", "y")],
    "v": [("s", ""), ("ies", "y"), ("es", "e"), ("es", ""), ("ed", "e"), ("ed", ""),
          ("ing", "e"), ("ing", "")],
    "adj": [("er", ""), ("est", ""), ("er", "e"), ("est", "e")],
}  # fmt: skip
WORD = re.compile(r"[a-z0-9]+")


# ----------------------------------------------------------------------------- inputs


def fetch_deb(source: Source, dest: Path) -> Path:
    """Download ``source`` into ``dest`` with ``apt-get download`` and return the .deb."""
    cmd = ["apt-get", "download", f"{source.package}={source.version}"]
    try:
        subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=600, cwd=dest)
    except FileNotFoundError:
        sys.exit(f"error: `apt-get` not found; pass the {source.package} {source.version} .deb")
    except subprocess.CalledProcessError as err:
        sys.exit(f"error: `{' '.join(cmd)}` failed:\n{err.stderr.strip()}")
    found = sorted(dest.glob(f"{source.package}_*.deb"))
    if not found:
        sys.exit(f"error: `{' '.join(cmd)}` wrote no .deb into {dest}")
    return found[0]


def check_deb(path: Path, source: Source) -> None:
    """Exit unless ``path`` is the pinned Debian package ``source``."""
    pin = f"{source.package}={source.version}"
    if not path.is_file():
        sys.exit(f"error: {path} does not exist (expected the Debian package {pin})")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != source.tgz_sha256:
        sys.exit(
            f"error: {path} has sha256 {digest}, but {pin} has {source.tgz_sha256}.\n"
            f"The collection is pinned to that exact package; fetch it with "
            f"`apt-get download {pin}`."
        )


def read_deb(path: Path, wanted: re.Pattern[str]) -> dict[str, bytes]:
    """Members of a .deb's ``data.tar.xz`` whose names fully match ``wanted``.

    A .deb is an ``ar`` archive: an 8-byte magic, then 60-byte headers each followed by the
    member's bytes (padded to an even length).
    """
    blob = path.read_bytes()
    if not blob.startswith(b"!<arch>\n"):
        sys.exit(f"error: {path} is not a Debian package (no ar header)")
    pos, data = 8, None
    while pos + 60 <= len(blob):
        name = blob[pos : pos + 16].decode().strip().rstrip("/")
        size = int(blob[pos + 48 : pos + 58].decode().strip())
        if name == "data.tar.xz":
            data = blob[pos + 60 : pos + 60 + size]
        pos += 60 + size + (size % 2)
    if data is None:
        sys.exit(f"error: {path} holds no data.tar.xz")
    out = {}
    with tarfile.open(fileobj=io.BytesIO(lzma.decompress(data))) as tar:
        for member in tar:
            if member.isfile() and wanted.fullmatch(member.name):
                handle = tar.extractfile(member)
                assert handle is not None
                out[member.name] = handle.read()
    return out


# ----------------------------------------------------------------------------- WordNet


@dataclass
class Synset:
    key: str  # "n02084071": part of speech and byte offset, WordNet 3.0's stable id
    pos: str
    lemmas: list[str]
    gloss: str
    pointers: list[tuple[str, str]]  # (symbol, target key)
    lex_filenum: int
    lex_ids: list[int]
    name: str = ""  # dog.n.01


@dataclass
class WordNet:
    synsets: dict[str, Synset] = field(default_factory=dict)
    index: dict[str, list[str]] = field(default_factory=dict)  # lemma -> keys, by frequency
    counts: dict[str, int] = field(default_factory=dict)  # "lemma key" -> SemCor count
    exceptions: dict[str, dict[str, set[str]]] = field(default_factory=dict)
    lemmas_by_pos: dict[str, set[str]] = field(default_factory=dict)

    def base_forms(self, word: str) -> set[str]:
        """``word`` and its WordNet base forms in any part of speech (morphy)."""
        out = {word}
        for pos in ("n", "v", "adj"):
            known = self.lemmas_by_pos[pos]
            out |= self.exceptions[pos].get(word, set())
            for suffix, repl in DETACHMENT[pos]:
                if word.endswith(suffix) and len(word) > len(suffix):
                    base = word[: len(word) - len(suffix)] + repl
                    if base in known:
                        out.add(base)
        return out

    def senses(self, phrase: str) -> list[str]:
        """Synset keys of ``phrase`` (or of its base forms), most frequent first."""
        lemma = phrase.replace(" ", "_")
        if lemma in self.index:
            return self.index[lemma]
        keys: list[str] = []
        if " " not in phrase:
            for base in sorted(self.base_forms(phrase) - {phrase}):
                keys += [k for k in self.index.get(base, []) if k not in keys]
        return keys

    def count(self, lemma: str, key: str) -> int:
        return self.counts.get(f"{lemma} {key}", 0)


def parse_wordnet(files: dict[str, bytes]) -> WordNet:
    wn = WordNet()
    for pos_file in ("noun", "verb", "adj", "adv"):
        for line in files[f"{WORDNET_DIR}data.{pos_file}"].decode("latin-1").splitlines():
            if line.startswith("  "):
                continue  # licence header
            head, _, gloss = line.partition(" | ")
            parts = head.split()
            offset, lex_filenum, pos, n_words = parts[0], int(parts[1]), parts[2], int(parts[3], 16)
            lemmas = [parts[4 + 2 * i].lower() for i in range(n_words)]
            lemmas = [re.sub(r"\([a-z]+\)$", "", w) for w in lemmas]  # adjective markers
            lex_ids = [int(parts[5 + 2 * i], 16) for i in range(n_words)]
            at = 4 + 2 * n_words
            n_ptr = int(parts[at])
            pointers = []
            for i in range(n_ptr):
                sym, target, tpos = parts[at + 1 + 4 * i : at + 4 + 4 * i]
                pointers.append((sym, ("a" if tpos == "s" else tpos) + target))
            key = ("a" if pos == "s" else pos) + offset
            wn.synsets[key] = Synset(
                key, pos, lemmas, gloss.strip(), pointers, lex_filenum, lex_ids
            )
    sense_order: dict[tuple[str, str], list[str]] = {}  # (lemma, pos) -> keys, WordNet order
    for pos_file in ("noun", "verb", "adj", "adv"):
        for line in files[f"{WORDNET_DIR}index.{pos_file}"].decode("latin-1").splitlines():
            if line.startswith("  "):
                continue
            parts = line.split()
            lemma, pos, n_senses = parts[0], parts[1], int(parts[2])
            keys = [("a" if pos in "as" else pos) + o for o in parts[len(parts) - n_senses :]]
            sense_order[(lemma, keys[0][0])] = keys
            wn.index.setdefault(lemma, [])
            wn.index[lemma] += [k for k in keys if k not in wn.index[lemma]]
    for syn in wn.synsets.values():
        first = syn.lemmas[0]
        sense = sense_order[(first, syn.key[0])].index(syn.key) + 1
        syn.name = f"{first}.{syn.key[0]}.{sense:02d}"
    sense_key_to = {}
    for syn in wn.synsets.values():
        if syn.pos == "s":
            continue  # satellite sense keys need the head word; they count as 0
        for lemma, lex_id in zip(syn.lemmas, syn.lex_ids):
            sk = f"{lemma}%{SS_TYPE[syn.pos]}:{syn.lex_filenum:02d}:{lex_id:02d}::"
            sense_key_to[sk] = (lemma, syn.key)
    for line in files[f"{WORDNET_DIR}cntlist.rev"].decode("latin-1").splitlines():
        sk, _, cnt = line.split()
        if sk.lower() in sense_key_to:
            lemma, key = sense_key_to[sk.lower()]
            wn.counts[f"{lemma} {key}"] = int(cnt)
    for lemma, keys in wn.index.items():  # frequency order across parts of speech
        keys.sort(key=lambda k, lemma=lemma: -wn.count(lemma, k))
    for exc_pos, exc_file in (("n", "noun"), ("v", "verb"), ("adj", "adj")):
        table: dict[str, set[str]] = defaultdict(set)
        for line in files[f"{WORDNET_DIR}{exc_file}.exc"].decode("latin-1").splitlines():
            inflected, *bases = line.split()
            table[inflected] |= set(bases)
        wn.exceptions[exc_pos] = dict(table)
    wn.lemmas_by_pos = {"n": set(), "v": set(), "adj": set()}
    for syn in wn.synsets.values():
        bucket = {"n": "n", "v": "v", "a": "adj", "s": "adj"}.get(syn.pos)
        if bucket:
            wn.lemmas_by_pos[bucket].update(syn.lemmas)
    return wn


def definition(gloss: str) -> str:
    """A gloss without its quoted usage examples: ``a member of ...; occurs in many breeds``."""
    parts = [p.strip() for p in gloss.split(";")]
    kept = [p for p in parts if p and not p.startswith('"')]
    return re.sub(r"\s+", " ", "; ".join(kept)).strip()


# ----------------------------------------------------------------------------- matching


class Forms:
    """Word forms for matching: a word's lowercase spelling and its base forms."""

    def __init__(self, wn: WordNet) -> None:
        self.wn = wn
        self._cache: dict[str, frozenset[str]] = {}

    def of(self, word: str) -> frozenset[str]:
        if word not in self._cache:
            self._cache[word] = frozenset(self.wn.base_forms(word))
        return self._cache[word]

    def words(self, text: str) -> list[str]:
        return WORD.findall(text.lower().replace("_", " ").replace("-", " "))

    def content(self, text: str) -> set[str]:
        """All forms of the non-stop words of ``text``."""
        return {f for w in self.words(text) if w not in STOP_WORDS for f in self.of(w)}

    def loose(self, word: str) -> frozenset[str]:
        """:meth:`of` plus the word with any regular suffix cut, word or not
        (``billiards`` -> ``billiard``): matching for exclusion errs on the side of a match."""
        cut = {word[: -len(x)] for x in ("s", "es", "ies", "d", "ed", "ing") if word.endswith(x)}
        return self.of(word) | {c for c in cut if len(c) >= 3}

    def contains(self, text: str, phrase: str) -> bool:
        """Whether ``phrase`` occurs in ``text`` as consecutive words, any inflection."""
        tokens = [self.loose(w) for w in self.words(text)]
        needle = [self.loose(w) for w in self.words(phrase)]
        if not needle:
            return False
        return any(
            all(tokens[i + j] & needle[j] for j in range(len(needle)))
            for i in range(len(tokens) - len(needle) + 1)
        )


def signature(wn: WordNet, forms: Forms, key: str) -> set[str]:
    """Words that characterise a sense: its lemmas and gloss, its hypernyms' (two levels),
    and the lemmas of its hyponyms, holonyms, meronyms, domains, similar and derived words."""
    syn = wn.synsets[key]
    text = [syn.gloss, *syn.lemmas]
    frontier = [key]
    for _ in range(2):
        frontier = [t for k in frontier for s, t in wn.synsets[k].pointers if s in ("@", "@i")]
        for k in frontier:
            text += [wn.synsets[k].gloss, *wn.synsets[k].lemmas]
    for sym, target in syn.pointers:
        if sym in ("~", "~i", "#m", "#s", "#p", "%m", "%s", "%p", ";c", "-c", "&", "+", "=", "^"):
            text += wn.synsets[target].lemmas
    return forms.content(" ".join(text))


@dataclass(frozen=True)
class Emoji:
    image_id: str
    label: str
    tags: tuple[str, ...]


def phrases_of(e: Emoji) -> list[tuple[str, str]]:
    """``(phrase, origin)`` pairs naming an emoji: its label (and the part after ``:``,
    as in ``flag: Germany``), then its tags."""
    out = [(e.label.lower(), "label")]
    if ":" in e.label:
        out.append((e.label.split(":", 1)[1].strip().lower(), "label"))
    out += [(t, "tag") for t in e.tags]
    seen: set[str] = set()
    return [(p, o) for p, o in out if p and not (p in seen or seen.add(p))]  # type: ignore[func-returns-value]


def select_senses(
    wn: WordNet, forms: Forms, e: Emoji, sigs: dict[str, set[str]], stats: dict[str, int]
) -> dict[str, str]:
    """The WordNet senses an emoji's label and tags name: ``synset key -> origin``.

    For each phrase (the label, the label after ``:``, each tag) that is a WordNet lemma (or
    whose base form is): a phrase with one sense takes it. Otherwise each sense scores the
    number of the emoji's *other* words (label and tag words, any inflection, stop words
    left out) in its :func:`signature`; the unique best sense with a score of at least 1 is
    taken. With no evidence, a label (not a tag) takes its most frequent sense when SemCor
    counts make it dominant (>= 3 and >= 3x the next); anything else is ambiguous and
    dropped.
    """
    everything = forms.content(" ".join([e.label, *e.tags]))
    chosen: dict[str, str] = {}
    for phrase, origin in phrases_of(e):
        keys = [k for k in wn.senses(phrase) if wn.synsets[k].pos != "r"]
        if not keys:
            stats["phrases_not_in_wordnet"] += 1
            continue
        context = everything - forms.content(phrase)
        scores = [len(sigs_of(wn, forms, k, sigs) & context) for k in keys]
        best = max(scores)
        if len(keys) == 1 and (origin == "label" or best >= 1):
            pick = keys[0]
            stats[f"{origin}_single_sense"] += 1
        elif len(keys) == 1:
            stats["tag_single_sense_without_evidence_dropped"] += 1
            continue
        else:
            lemma = phrase.replace(" ", "_")
            counts = sorted((wn.count(lemma, k) for k in keys), reverse=True)
            if best >= (1 if origin == "label" else TAG_MIN_EVIDENCE) and scores.count(best) == 1:
                pick = keys[scores.index(best)]
                stats[f"{origin}_by_evidence"] += 1
            elif (
                origin == "label"
                and counts[0] >= MFS_MIN_COUNT
                and counts[0] >= MFS_RATIO * counts[1]
            ):
                pick = keys[0]
                stats["label_most_frequent_sense"] += 1
            else:
                stats[f"{origin}_ambiguous_dropped"] += 1
                continue
        chosen.setdefault(pick, origin)
    return chosen


def sigs_of(wn: WordNet, forms: Forms, key: str, cache: dict[str, set[str]]) -> set[str]:
    if key not in cache:
        cache[key] = signature(wn, forms, key)
    return cache[key]


# ----------------------------------------------------------------------------- building


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


def replace_images(emoji_images: bytes, pngs: dict[str, tuple[bytes, str]]) -> bytes:
    """``emoji``'s images table with each Noto PNG replaced by ``pngs[image_id]``
    (``(png bytes, file name)``); ids, captions and row order stay."""
    table = pq.read_table(io.BytesIO(emoji_images))
    structs = [{"bytes": pngs[i][0], "path": pngs[i][1]} for i in table["image_id"].to_pylist()]
    column = pa.array(structs, table.schema.field("image").type)
    table = table.set_column(table.column_names.index("image"), "image", column)
    return emoji_build.parquet_bytes(table, emoji_build.IMAGES_ROW_GROUP)


def twemoji_pngs(ids: list[str], twemoji_files: dict[str, bytes]) -> dict[str, tuple[bytes, str]]:
    """The 64x64 Twemoji PNG of each emoji, matched on code points as the Noto ones are."""
    datasource = json.loads(twemoji_files["package/emoji.json"])
    by_code: dict[str, dict] = {}
    for entry in datasource:
        by_code.setdefault(entry["unified"].upper(), entry)
    for entry in datasource:
        if entry.get("non_qualified"):
            by_code.setdefault(entry["non_qualified"].upper(), entry)
    out = {}
    for image_id in ids:
        ds = by_code.get(image_id.upper())
        png = twemoji_files.get(TWEMOJI_IMAGE_DIR + ds["image"]) if ds else None
        if ds is None or not ds.get("has_img_twitter") or png is None:
            raise RuntimeError(f"{TWEMOJI.spec} has no 64px image for emoji {image_id}")
        out[image_id] = (png, ds["image"])
    return out


def openmoji_pngs(ids: list[str], openmoji_files: dict[str, bytes]) -> dict[str, tuple[bytes, str]]:
    """Each emoji's OpenMoji colour SVG (named by the emojibase hexcode) rasterized to a
    64x64 RGBA PNG by resvg, with no system fonts (the SVGs hold no text)."""
    try:
        import resvg_py
    except ImportError:
        sys.exit(
            f"error: rasterizing OpenMoji needs {RASTERIZER[0]}=={RASTERIZER[1]}: "
            f'pip install -e ".[bundled-data]"'
        )
    out = {}
    for image_id in ids:
        svg = openmoji_files.get(f"{OPENMOJI_SVG_DIR}{image_id}.svg")
        if svg is None:
            raise RuntimeError(f"{OPENMOJI.spec} has no colour SVG for emoji {image_id}")
        png = resvg_py.svg_to_bytes(
            svg_string=svg.decode("utf-8"),
            width=IMAGE_SIZE,
            height=IMAGE_SIZE,
            skip_system_fonts=True,
        )
        out[image_id] = (bytes(png), f"{image_id}.png")
    return out


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
