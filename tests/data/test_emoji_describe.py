"""The bundled emoji variants: descriptive WordNet queries (``emoji-describe``) and the
same emoji drawn by other artists (``emoji-{twemoji,openmoji}``, ``emoji-describe-*``)."""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from lightning_mlsr.data import DataError, load_collection
from lightning_mlsr.data.collection.layout import BUNDLED_DIR, bundled_collections
from lightning_mlsr.training.cli import main
from tests.helpers import write_atomic

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "scripts" / "build_emoji_describe.py"
SPLITS = ("train", "validation", "test")
ARTISTS = ("twemoji", "openmoji")
VARIANTS = (
    "emoji-describe",
    *(f"emoji-{a}" for a in ARTISTS),
    *(f"emoji-describe-{a}" for a in ARTISTS),
)
NPM = (
    "emoji-datasource-google@16.0.0",
    "emojibase-data@17.0.0",
    "emoji-datasource-twitter@16.0.0",
    "openmoji@17.0.0",
)


def _qrels(root: Path, split: str) -> list[tuple[str, str]]:
    lines = (root / "qrels" / f"{split}.trec").read_text().splitlines()
    assert all(line.split()[1] == "Q0" and line.split()[3] == "1" for line in lines)
    return [(line.split()[0], line.split()[2]) for line in lines]


def _emoji_words() -> tuple[dict[str, str], dict[str, list[str]]]:
    """English label and CLDR tags of every emoji, read from the ``emoji`` files."""
    root = BUNDLED_DIR / "emoji"
    images = pq.read_table(root / "images/images.parquet")
    label = {
        i: caps[langs.index("en")].lower()
        for i, langs, caps in zip(
            images["image_id"].to_pylist(),
            images["language"].to_pylist(),
            images["caption_reference_description"].to_pylist(),
        )
    }
    texts = pq.read_table(root / "texts/texts.parquet")
    tag_of = dict(zip(texts["text_id"].to_pylist(), texts["section_title"].to_pylist()))
    tags: dict[str, list[str]] = {i: [] for i in label}
    for split in SPLITS:
        for text_id, image_id in _qrels(root, split):
            tags[image_id].append(tag_of[text_id])
    return label, tags


def _describe_texts() -> dict[str, str]:
    texts = pq.read_table(BUNDLED_DIR / "emoji-describe" / "texts/texts.parquet")
    return dict(zip(texts["text_id"].to_pylist(), texts["context_section_description"].to_pylist()))


# ----------------------------------------------------------------------------- emoji-describe


def test_describe_counts_match_the_files_collection_json_and_data_md() -> None:
    root = BUNDLED_DIR / "emoji-describe"
    gloss = _describe_texts()
    counts = json.loads((root / "collection.json").read_text())["counts"]
    data_md = (REPO_ROOT / "DATA.md").read_text()
    rows = dict(re.findall(r"^\| emoji-describe: (\w+) \|(.*)\|$", data_md, flags=re.M))
    assert set(rows) == set(SPLITS)
    total = 0
    for split in SPLITS:
        pairs = _qrels(root, split)
        assert pairs == sorted(pairs)
        per_query: dict[str, int] = {}
        for text_id, _ in pairs:
            per_query[text_id] = per_query.get(text_id, 0) + 1
        expected = {
            "queries": len(per_query),
            "qrels": len(pairs),
            "mean_relevant_per_query": round(len(pairs) / len(per_query), 3),
            "queries_with_several_relevant": sum(n > 1 for n in per_query.values()),
            "images_judged": len({i for _, i in pairs}),
        }
        assert counts["splits"][split] == expected, split
        cells = [c.strip() for c in rows[split].split("|")]
        assert cells == [
            str(expected["queries"]),
            str(expected["qrels"]),
            f"{expected['mean_relevant_per_query']:.3f}",
            str(expected["queries_with_several_relevant"]),
            str(expected["images_judged"]),
        ], split
        assert max(per_query.values()) <= 20
        total += len(per_query)
    assert total == counts["queries"] == len(gloss)
    assert f"emoji-describe queries: **{total}**" in data_md
    for reason, n in counts["senses_dropped"].items():
        assert f"`{reason}` | {n} |" in data_md, reason
    chosen = counts["sense_selection"]
    prose = " ".join(data_md.split())
    for sentence in (
        f"{chosen['phrases_not_in_wordnet']} phrases are not in WordNet",
        f"{chosen['label_ambiguous_dropped']} label and {chosen['tag_ambiguous_dropped']} tag "
        f"phrases, plus {chosen['tag_single_sense_without_evidence_dropped']} tags",
        f"too vague: {chosen['hypernym_of_one_image_dropped']} dropped",
    ):
        assert sentence in prose, sentence
    assert counts["splits"]["test"]["queries"] > counts["splits"]["train"]["queries"]


def test_describe_splits_share_no_synset_query_text_or_pair() -> None:
    root = BUNDLED_DIR / "emoji-describe"
    gloss = _describe_texts()
    assert all(re.fullmatch(r"[nva]\d{8}", t) for t in gloss)  # WordNet 3.0 synset ids
    seen_ids: set[str] = set()
    seen_texts: set[str] = set()
    seen_pairs: set[tuple[str, str]] = set()
    for split in SPLITS:
        pairs = set(_qrels(root, split))
        ids = {t for t, _ in pairs}
        texts = {gloss[t].strip().lower() for t in ids}
        assert len(texts) == len(ids), f"{split} has two synsets with one gloss"
        assert not ids & seen_ids and not texts & seen_texts and not pairs & seen_pairs, split
        seen_ids |= ids
        seen_texts |= texts
        seen_pairs |= pairs
    assert seen_ids == set(gloss)  # every query is judged, in exactly one split


def _variants(word: str) -> set[str]:
    """A word and its regular English inflections (a deliberately simple oracle)."""
    out = {word, word + "s", word + "es", word + "ed", word + "ing", word + "d"}
    if word.endswith("y"):
        out.add(word[:-1] + "ies")
    if word.endswith("e"):
        out.add(word[:-1] + "ing")
    return out


def _contains(text: str, phrase: str) -> bool:
    words = re.findall(r"[a-z0-9]+", text.lower())
    needle = re.findall(r"[a-z0-9]+", phrase.lower())
    return bool(needle) and any(
        all(words[i + j] in _variants(needle[j]) for j in range(len(needle)))
        for i in range(len(words) - len(needle) + 1)
    )


def test_no_query_names_a_relevant_images_label_word_or_tag() -> None:
    label, tags = _emoji_words()
    gloss = _describe_texts()
    # function words are not label words (DATA.md lists them)
    stop = set(
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
    checked = 0
    for split in SPLITS:
        for text_id, image_id in _qrels(BUNDLED_DIR / "emoji-describe", split):
            text = gloss[text_id]
            words = [w for w in re.findall(r"[a-z0-9]+", label[image_id]) if w not in stop]
            for name in [*words, *tags[image_id]]:
                assert not _contains(text, name), (text_id, text, image_id, name)
            checked += 1
    assert checked > 1000
    # the oracle does find names where they are: the gloss of a tag-named sense ("dog")
    assert _contains("a member of the genus Canis; dogs barked", "dog")


# ----------------------------------------------------------------------------- the variants


@pytest.mark.parametrize("artist", ARTISTS)
def test_artist_variants_share_ids_captions_and_judgments_with_other_drawings(
    artist: str,
) -> None:
    noto = load_collection("emoji")
    other = load_collection(f"emoji-{artist}", validate_images=True, on_corrupt_image="error")
    describe = load_collection("emoji-describe")
    both = load_collection(f"emoji-describe-{artist}")
    for a, b in ((noto, other), (describe, both)):
        assert a.images.ids == b.images.ids and a.texts.ids == b.texts.ids
        assert a.images.captions() == b.images.captions()
        assert a.texts.queries() == b.texts.queries()
        assert a.qrels == b.qrels
    assert describe.images.ids == noto.images.ids
    same = sum(
        noto.images.image_bytes(i) == other.images.image_bytes(i) for i in range(len(noto.images))
    )
    assert same == 0  # every image is another artist's drawing
    for i in (0, other.images.index("1F913"), len(other.images) - 1):
        assert both.images.image_bytes(i) == other.images.image_bytes(i)
        assert Image.open(io.BytesIO(other.images.image_bytes(i))).size == (64, 64)
        darkest = min(lo for lo, _ in other.images.load_image(i).getextrema())
        assert darkest < 128  # a drawing, not a blank (or all-white) raster
    # the variants hold no copy of a file they share
    assert not (BUNDLED_DIR / "emoji-describe" / "images").exists()
    assert not (BUNDLED_DIR / f"emoji-{artist}" / "texts").exists()
    assert not any((BUNDLED_DIR / f"emoji-describe-{artist}").glob("*/*"))


@pytest.mark.parametrize("name", bundled_collections())
def test_every_bundled_collection_reads_with_its_defaults(name: str) -> None:
    c = load_collection(name)
    assert c.name == name and c.splits == list(SPLITS)
    assert len(c.images) == 1911 and c.skipped_images == []
    judged = {t for split in SPLITS for t in c.qrels[split]}
    assert judged == set(c.texts.ids)
    assert all(q.strip() for q in c.texts.queries())
    assert all(c.images.caption(i) for i in range(len(c.images)))


def test_folders_in_collection_json_are_checked(tmp_path: Path) -> None:
    base = write_atomic(tmp_path / "base")
    variant = tmp_path / "variant"
    variant.mkdir()
    (variant / "collection.json").write_text(json.dumps({"folders": {"images": "../base/images"}}))
    shutil.copytree(base / "texts", variant / "texts")
    shutil.copytree(base / "qrels", variant / "qrels")
    c = load_collection(variant)
    assert c.images.ids == load_collection(base).images.ids and c.root == variant.resolve()
    (variant / "collection.json").write_text(json.dumps({"folders": {"images": "../nope"}}))
    with pytest.raises(DataError, match=r"points images at '\.\./nope'"):
        load_collection(variant)
    (variant / "collection.json").write_text(json.dumps({"folders": {"pictures": "x"}}))
    with pytest.raises(DataError, match="must map some of images, texts, qrels"):
        load_collection(variant)


# ----------------------------------------------------------------------------- smoke fits


def _fit(config: str, collection: str, tmp_path: Path, *extra: str) -> None:
    cli = main(
        [
            "fit",
            f"--config={REPO_ROOT / 'experiments' / config}",
            f"--data.collection={collection}",
            "--trainer.fast_dev_run=1",
            "--trainer.logger=false",
            f"--trainer.default_root_dir={tmp_path}",
            "--data.batching.batch_size=8",
            *extra,
        ]
    )
    assert cli.trainer.state.finished and cli.trainer.global_step == 1
    assert cli.datamodule.collection.name == collection
    metrics = cli.trainer.callback_metrics
    assert torch.isfinite(metrics["train/loss"]) and "val/nDCG@10" in metrics


@pytest.mark.slow
def test_smoke_fit_on_emoji_describe(tmp_path: Path) -> None:
    _fit("paper/m3_mlp_mlp_caption.yaml", "emoji-describe", tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("collection", [c for c in VARIANTS if c != "emoji-describe"])
def test_smoke_fit_on_other_artists_images(collection: str, tmp_path: Path) -> None:
    _fit(
        "paper/m1_mlm_mlm_image.yaml",
        collection,
        tmp_path,
        "--model.doc_encoder.init_args.image_size=64",
    )


# ----------------------------------------------------------------------------- rebuild


def _fetch(dest: Path) -> list[str]:
    """The four pinned sources, fetched as the build does, or skip saying why not."""
    npm, apt = shutil.which("npm"), shutil.which("apt-get")
    if npm is None or apt is None:
        pytest.skip("npm or apt-get is not installed, so the sources cannot be fetched")
    dest.mkdir(parents=True, exist_ok=True)
    for cmd in (
        [npm, "pack", *NPM, "--pack-destination", str(dest)],
        [apt, "download", "wordnet-base=1:3.0-37"],
    ):
        try:
            subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=600, cwd=dest)
        except subprocess.TimeoutExpired:
            pytest.skip(f"`{' '.join(cmd[:2])}` timed out: the registry is not reachable")
        except subprocess.CalledProcessError as err:
            pytest.skip(f"`{' '.join(cmd[:2])}` failed: {err.stderr.strip()[-300:]}")
    (deb,) = dest.glob("wordnet-base_*.deb")
    return [
        f"--emoji-datasource={dest / 'emoji-datasource-google-16.0.0.tgz'}",
        f"--emojibase={dest / 'emojibase-data-17.0.0.tgz'}",
        f"--twemoji={dest / 'emoji-datasource-twitter-16.0.0.tgz'}",
        f"--openmoji={dest / 'openmoji-17.0.0.tgz'}",
        f"--wordnet={deb}",
    ]


@pytest.mark.slow
def test_rebuild_is_byte_identical(tmp_path: Path) -> None:
    sources = _fetch(tmp_path / "src")
    out = tmp_path / "bundled"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), f"--out={out}", *sources],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    for name in ("emoji", *VARIANTS):
        built = {str(p.relative_to(out / name)): p for p in (out / name).rglob("*") if p.is_file()}
        committed = {
            str(p.relative_to(BUNDLED_DIR / name)): p
            for p in (BUNDLED_DIR / name).rglob("*")
            if p.is_file()
        }
        assert sorted(built) == sorted(committed), name
        for rel, path in committed.items():
            assert built[rel].read_bytes() == path.read_bytes(), f"{name}/{rel} differs"
    added = sum(p.stat().st_size for n in VARIANTS for p in (BUNDLED_DIR / n).rglob("*"))
    assert added < 9e6


def test_rejects_a_wordnet_package_that_is_not_the_pinned_one(tmp_path: Path) -> None:
    fake = tmp_path / "wordnet-base_3.0-37_all.deb"
    fake.write_bytes(b"!<arch>\n")
    tgz = [f"--{k}={fake}" for k in ("emoji-datasource", "emojibase", "twemoji", "openmoji")]
    done = subprocess.run(
        [sys.executable, str(SCRIPT), f"--out={tmp_path / 'out'}", *tgz, f"--wordnet={fake}"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert (
        done.returncode != 0 and "sha256" in done.stderr and "wordnet-base=1:3.0-37" in done.stderr
    )
    assert not (tmp_path / "out").exists()
