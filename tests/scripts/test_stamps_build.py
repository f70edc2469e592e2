"""scripts/build_stamps.py: the stamps collection from a hand-made Tux Paint stamps tree (exact
queries, judgments, splits and types), and from the real Debian package where installed."""

from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from lightning_mlsr.data import load_collection
from lightning_mlsr.data.errors import DataError

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "build_stamps.py"
VERSION = "2022.06.04-1"


def _png(kind: str, size: int = 64) -> bytes:
    """A photo-like (seeded noise), flat (one fill) or tiny stamp, opaque."""
    rng = np.random.default_rng(0)
    if kind == "noise":
        pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    else:
        pixels = np.full((size, size, 3), (200, 30, 30), dtype=np.uint8)
    sink = io.BytesIO()
    Image.fromarray(pixels).save(sink, format="PNG")
    return sink.getvalue()


#: An SVG sized in points without a viewBox (as many Tux Paint SVGs are): 32 x 16 CSS px.
SVG = (
    b'<svg xmlns="http://www.w3.org/2000/svg" width="24pt" height="12pt">'
    b'<rect x="0" y="0" width="32" height="16" fill="#f0c000"/></svg>'
)

TREE: dict[str, bytes | str] = {
    # a caption with translations, an English variant left out; a duplicate English caption
    "animals/cow.png": _png("noise"),
    "animals/cow.txt": "A cow.\nde.utf8=Eine Kuh.\nen_GB.utf8=A cow.\nfr.utf8=Une vache.\n",
    "animals/cartoon/cow.png": _png("flat"),
    "animals/cartoon/cow.txt": "A cow.\nde.utf8=Eine Zeichentrick-Kuh.\n",
    "animals/cow_mirror.png": _png("noise"),  # no caption file
    # an untranslated copy of the English caption is not a translation
    "animals/frog.png": _png("noise"),
    "animals/frog.txt": "A frog.\nes.utf8=Una rana.\nson.utf8=A frog.\n",
    "animals/koala.png": _png("noise", size=10),  # too small for a photograph
    "animals/koala.txt": "A koala.\nnl.utf8=Een koala.\n",
    "animals/bee.svg": SVG,  # an SVG alone is rasterized
    "animals/bee.txt": "A bee.\nit.utf8=Un'ape.\n",
    "animals/owl.png": _png("noise"),
    "animals/owl.txt": "An owl.\nde.utf8=Eine Eule.\n",
    # a PNG beside an SVG of the same name: the PNG is read
    "symbols/alphabets/A.png": _png("flat"),
    "symbols/alphabets/A.svg": SVG,
    "symbols/alphabets/A.txt": "The letter A.\nde.utf8=Der Buchstabe A.\n",
    "town/roadsigns/stop.png": _png("flat"),
    "town/roadsigns/stop.txt": "A stop sign.\nfr.utf8=Un panneau stop.\nde.utf8=Ein Stoppschild.\n",
    "town/gift.txt": "A gift.\nde.utf8=Ein Geschenk.\n",  # a caption without an image
    "town/house.png": _png("noise"),
    "town/house.txt": "A house.\n",  # English only: nothing to caption the document with
}


def _package_tree(root: Path) -> Path:
    """``root/usr/share/tuxpaint/stamps`` with :data:`TREE`, and the package's doc folder."""
    stamps = root / "usr/share/tuxpaint/stamps"
    for rel, data in TREE.items():
        path = stamps / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.encode() if isinstance(data, str) else data)
    doc = root / "usr/share/doc/tuxpaint-stamps-default"
    doc.mkdir(parents=True)
    changelog = f"tuxpaint-stamps-default ({VERSION}) unstable; urgency=medium\n"
    (doc / "changelog.Debian.gz").write_bytes(gzip.compress(changelog.encode(), mtime=0))
    (doc / "copyright").write_text("Tux Paint stamps: GPL-2\n")
    return stamps


def _build(stamps: Path, *args: str, env: dict[str, str] | None = None):
    return subprocess.run(
        [sys.executable, str(SCRIPT), f"--stamps-dir={stamps}", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("stamps_tree")
    stamps = _package_tree(root)
    out = root / "out"
    done = _build(stamps, f"--out={out}")
    assert done.returncode == 0, done.stderr
    return stamps, out


def test_queries_qrels_and_splits_are_exactly_the_captions(built: tuple[Path, Path]) -> None:
    _, out = built
    texts = pq.read_table(out / "texts/texts.parquet").to_pydict()
    assert texts["text_id"] == [f"s{i:04d}" for i in range(1, 8)]
    assert texts["section_title"] == [
        "A bee.", "A cow.", "A frog.", "A koala.", "A stop sign.", "An owl.", "The letter A.",
    ]  # fmt: skip
    assert set(texts["page_title"]) == set(texts["context_section_description"]) == {""}
    qrels = {s: (out / f"qrels/{s}.trec").read_text() for s in ("train", "validation", "test")}
    # animals: five captions ranked by sha256("stamps-v1:" + caption) -> cow, owl, bee, koala,
    # frog, cut 3/1/1; symbols and town hold one caption each, which goes to train
    assert qrels == {
        "train": (
            "s0001 Q0 animals/bee 1\n"
            "s0002 Q0 animals/cartoon/cow 1\n"
            "s0002 Q0 animals/cow 1\n"
            "s0005 Q0 town/roadsigns/stop 1\n"
            "s0006 Q0 animals/owl 1\n"
            "s0007 Q0 symbols/alphabets/A 1\n"
        ),
        "validation": "s0004 Q0 animals/koala 1\n",
        "test": "s0003 Q0 animals/frog 1\n",
    }


def test_images_captions_types_and_counts(built: tuple[Path, Path]) -> None:
    _, out = built
    images = pq.read_table(out / "images/images.parquet").to_pylist()
    by_id = {row["image_id"]: row for row in images}
    assert list(by_id) == [
        "animals/bee", "animals/cartoon/cow", "animals/cow", "animals/frog", "animals/koala",
        "animals/owl", "symbols/alphabets/A", "town/roadsigns/stop",
    ]  # fmt: skip
    cow = by_id["animals/cow"]
    assert cow["language"] == ["de", "fr"]  # en_GB is English: never a document caption
    assert cow["caption_reference_description"] == ["Eine Kuh.", "Une vache."]
    assert by_id["animals/frog"]["language"] == ["es"]  # son= was the English text
    assert by_id["town/roadsigns/stop"]["language"] == ["de", "fr"]  # sorted by language
    assert {i: r["image_type"] for i, r in by_id.items()} == {
        "animals/bee": "clipart",  # an SVG
        "animals/cartoon/cow": "clipart",  # a cartoon folder
        "animals/cow": "photo",  # noise: no two neighbouring pixels alike
        "animals/frog": "photo",
        "animals/koala": "clipart",  # 100 pixels: an icon
        "animals/owl": "photo",
        "symbols/alphabets/A": "letter",
        "town/roadsigns/stop": "sign",
    }
    assert {i: r["category"] for i, r in by_id.items()}["town/roadsigns/stop"] == "town"
    assert by_id["town/roadsigns/stop"]["subcategory"] == "roadsigns"
    assert by_id["symbols/alphabets/A"]["image"]["path"] == "symbols/alphabets/A.png"
    assert by_id["animals/cow"]["image"]["bytes"] == TREE["animals/cow.png"]  # unmodified
    bee = Image.open(io.BytesIO(by_id["animals/bee"]["image"]["bytes"]))
    assert bee.size == (256, 128)  # 24pt x 12pt = 32 x 16 px, longer side to 256
    assert by_id["animals/bee"]["source_format"] == "svg"
    assert [by_id[i]["split"] for i in ("animals/koala", "animals/frog")] == ["validation", "test"]

    meta = json.loads((out / "collection.json").read_text())
    assert meta["sources"][0]["package"] == "tuxpaint-stamps-default"
    assert meta["sources"][0]["version"] == VERSION
    counts = meta["counts"]
    assert counts["skipped_files"] == {
        "caption_without_image": ["town/gift"],
        "no_caption_file": ["animals/cow_mirror.png"],
        "no_translation": ["town/house"],
    }
    assert counts["translations_left_out"] == {"english_variant": 1, "same_as_english": 1}
    assert (counts["images"], counts["queries"], counts["qrels"]) == (8, 7, 8)
    assert counts["images_by_type"] == {
        "photo": 3, "clipart": 3, "letter": 1, "sign": 1, "symbol": 0,
    }  # fmt: skip
    assert "GPL-2" in (out / "NOTICE.md").read_text()


def test_the_reader_loads_it_with_its_defaults(built: tuple[Path, Path]) -> None:
    _, out = built
    collection = load_collection(out)
    row = collection.images.index("animals/cow")
    assert collection.images.caption(row) == "Eine Kuh. ; Une vache."
    assert collection.texts.query(collection.texts.index("s0002")) == "A cow."
    assert collection.qrels["train"]["s0002"] == {"animals/cartoon/cow": 1, "animals/cow": 1}


def test_rebuild_is_byte_identical(built: tuple[Path, Path], tmp_path: Path) -> None:
    stamps, out = built
    again = tmp_path / "again"
    assert _build(stamps, f"--out={again}").returncode == 0
    names = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    assert names == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    for name in names:
        assert (out / name).read_bytes() == (again / name).read_bytes(), name


def test_missing_package_says_how_to_install_it(tmp_path: Path) -> None:
    done = _build(tmp_path / "usr/share/tuxpaint/stamps", f"--out={tmp_path / 'out'}")
    assert done.returncode != 0
    assert "apt-get install tuxpaint-stamps-default" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_name_stamps_finds_the_default_build(
    built: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stamps, _ = built
    monkeypatch.setenv("LIGHTNING_MLSR_CACHE", str(tmp_path))
    with pytest.raises(DataError, match="scripts/build_stamps.py"):
        load_collection("stamps")
    done = _build(stamps, env={**os.environ, "LIGHTNING_MLSR_CACHE": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "collections/stamps/collection.json").is_file()
    assert len(load_collection("stamps").images) == 8


def test_the_real_package_builds_a_usable_collection(stamps_collection: Path) -> None:
    """Where the Debian package is installed: every image captioned by default, judged once,
    and the splits disjoint in queries and images."""
    collection = load_collection(stamps_collection)
    assert all(collection.images.caption(i) for i in range(len(collection.images)))
    judged: list[str] = []
    for split in ("train", "validation", "test"):
        judged += [i for rel in collection.qrels[split].values() for i in rel]
    assert sorted(judged) == sorted(collection.images.ids)
    meta = json.loads((stamps_collection / "collection.json").read_text())
    assert meta["sources"][0]["version"]
    assert set(meta["counts"]["images_by_type"]) == {"photo", "clipart", "letter", "sign", "symbol"}
