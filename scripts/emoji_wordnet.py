"""WordNet 3.0 for ``scripts/build_emoji_describe.py``: the pinned Debian package
``wordnet-base`` (fetched with ``apt-get download``, checked by sha256, read with ``tarfile``
alone, no ``dpkg``) and its database files parsed into synsets, sense order, SemCor counts
and morphy's exception lists and detachment rules."""

from __future__ import annotations

import hashlib
import io
import lzma
import re
import subprocess
import sys
import tarfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from build_emoji_collection import Source

WORDNET = Source(
    "wordnet-base",
    "1:3.0-37",
    "61060d960f9ada8fa120872312eccd3ecebfbab8c4579e4f5a74e1cf67620752",
    "WordNet 3.0 license (Princeton University), BSD-style",
)
WORDNET_DIR = "./usr/share/wordnet/"
WORDNET_COPYRIGHT = "./usr/share/doc/wordnet-base/copyright"
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
