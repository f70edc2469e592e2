"""Tests for the AToMiC-format collection reader and the bundled emoji collection."""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lightning_mlsr.data import Collection, DataError, ImageTable, TextTable, load_collection
from lightning_mlsr.data.collection import BUNDLED_DIR
from lightning_mlsr.data.collection.layout import bundled_collections
from tests.helpers import (
    BLUE_JPEG,
    RED,
    TRANSPARENT,
    YELLOW,
    default_images,
    default_texts,
    images_table,
    write_atomic,
)

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def atomic(tmp_path: Path) -> Path:
    return write_atomic(tmp_path / "tiny")


# ----------------------------------------------------------------------------- reading


def test_loads_ids_captions_queries_and_qrels(atomic: Path) -> None:
    c = load_collection(atomic)
    assert isinstance(c, Collection)
    assert c.name == "tiny" and c.root == atomic.resolve()
    assert c.images.ids == ["I1", "I2", "I3", "I4"]  # file order, then row order
    assert len(c.images) == 4 and len(c.texts) == 4
    assert c.images.captions() == ["red square", "blue square", "see-through", "yellow square"]
    # AToMiC default query fields: page_title, section_title, context_section_description
    assert c.texts.ids == ["T1", "T2", "T3", "T4"]
    assert c.texts.query(0) == "Colours Red things about red things"
    assert c.texts.query(1) == "Colours Blue"
    assert c.texts.queries()[3] == ""
    assert c.qrels == {
        "train": {"T1": {"I1": 1, "I2": 0}, "T2": {"I2": 2}},
        "validation": {"T2": {"I3": 1}},
        "test": {"T3": {"I4": 1}},
    }
    assert c.splits == ["train", "validation", "test"]
    assert c.query_ids("train") == ["T1", "T2"]
    assert c.skipped_images == []
    with pytest.raises(KeyError, match="dev"):
        c.query_ids("dev")


def test_captions_by_language_and_field(atomic: Path) -> None:
    de = load_collection(atomic, caption_languages=["de"], on_missing_caption="keep")
    assert de.images.captions() == ["rotes Quadrat", "blaues Quadrat", "durchsichtig", ""]
    every = load_collection(atomic, caption_languages="all")
    assert every.images.caption(every.images.index("I2")) == "blue square ; blaues Quadrat"
    assert every.images.caption(every.images.index("I3")) == "durchsichtig ; see-through"
    both = load_collection(
        atomic,
        caption_fields=["caption_reference_description", "caption_alt_text_description"],
        caption_languages=("en",),
    )
    assert both.images.captions()[:2] == ["red square ; Red", "blue square ; a photo"]
    assert both.caption_fields == ("caption_reference_description", "caption_alt_text_description")


def test_query_fields_and_truncation(atomic: Path) -> None:
    c = load_collection(atomic, query_fields="section_title")
    assert c.texts.queries()[:3] == ["Red things", "Blue", "Yellow"]
    short = load_collection(atomic, max_query_chars=10)
    assert short.texts.query(0) == "Colours Re"
    assert all(len(q) <= 10 for q in short.texts.queries())


def test_image_access(atomic: Path) -> None:
    images = load_collection(atomic).images
    assert images.image_bytes(images.index("I2")) == BLUE_JPEG  # the binary round trip
    assert images.image_bytes(images.index("I4")) == YELLOW  # from the binary column
    assert images.content_hash(0) == hashlib.sha1(RED).hexdigest()
    clear = images.load_image(images.index("I3"))
    assert clear.mode == "RGB" and clear.size == (8, 8)
    assert clear.getpixel((0, 0)) == (255, 255, 255)  # transparent -> white, not black
    assert images.load_image(0).getpixel((3, 3)) == (255, 0, 0)
    r, g, b = images.load_image(images.index("I2")).getpixel((3, 3))
    assert b > 200 and r < 40 and g < 40
    with pytest.raises(KeyError, match="'nope'"):
        images.index("nope")


def test_tables_from_python_lists() -> None:
    images = ImageTable(["a", "b"], [RED, YELLOW], ["red", "yellow"])
    assert images.caption(1) == "yellow" and images.image_bytes(0) == RED
    assert images.take([1]).ids == ["b"]
    texts = TextTable(["q"], ["a query"])
    assert texts.index("q") == 0 and texts.query(0) == "a query"
    with pytest.raises(DataError, match="duplicate image_ids.*'a'"):
        ImageTable(["a", "a"], [RED, RED], ["x", "y"])


def test_collection_json_defaults_and_overrides(tmp_path: Path) -> None:
    root = write_atomic(
        tmp_path / "c",
        collection_json={
            "name": "tiny-colours",
            "query_fields": ["section_title"],
            "caption_languages": "all",
        },
    )
    c = load_collection(root)
    assert c.name == "tiny-colours"
    assert c.texts.query(0) == "Red things"
    assert c.caption_languages is None
    assert c.images.caption(0) == "red square ; rotes Quadrat"
    c = load_collection(root, caption_languages=["en"], query_fields=["page_title"])
    assert c.images.caption(0) == "red square" and c.texts.query(0) == "Colours"


def test_string_caption_columns(tmp_path: Path) -> None:
    """Plain (non-list) caption and language columns are read as one caption per row."""
    root = write_atomic(tmp_path / "c")
    table = pa.table(
        {
            "image_id": ["I1", "I2", "I3", "I4"],
            "image": [RED, BLUE_JPEG, TRANSPARENT, YELLOW],
            "language": ["en", "en", "de", "en"],
            "caption_reference_description": ["red", "blue", "klar", "yellow"],
        }
    )
    for f in (root / "images").iterdir():
        f.unlink()
    pq.write_table(table, root / "images" / "images.parquet")
    c = load_collection(root, on_missing_caption="skip")
    assert c.images.captions() == ["red", "blue", "yellow"]
    assert c.skipped_images == ["I3"]


def test_hugging_face_layout(tmp_path: Path) -> None:
    root = tmp_path / "hf"
    first, second = default_images()
    for name in ("AToMiC-Images-v0.2", "AToMiC-Texts-v0.2.1", "AToMiC-Qrels-v0.2"):
        (root / name / "data").mkdir(parents=True)
    images = images_table(first + second)
    images = images.append_column("extra", pa.array([1, 2, 3, 4]))  # extra columns are ignored
    pq.write_table(
        images.slice(0, 2), root / "AToMiC-Images-v0.2/data/train-00000-of-00002.parquet"
    )
    pq.write_table(images.slice(2), root / "AToMiC-Images-v0.2/data/train-00001-of-00002.parquet")
    texts = pa.Table.from_pylist(default_texts())
    pq.write_table(texts, root / "AToMiC-Texts-v0.2.1/data/train-00000-of-00001.parquet")
    qrels_dir = root / "AToMiC-Qrels-v0.2/data"
    for split, rows in {
        "train": [("T1", "I1", 1), ("T2", "I2", 1)],
        "validation": [("T2", "I3", 1)],
        "test": [("T3", "I4", 1)],
    }.items():
        t, i, r = zip(*rows)
        table = pa.table({"text_id": t, "Q0": ["Q0"] * len(t), "image_id": i, "rel": r})
        if split == "test":  # the Hub's parquet-converter layout: <split>/0000.parquet
            (qrels_dir / "test").mkdir()
            pq.write_table(table, qrels_dir / "test" / "0000.parquet")
        else:
            pq.write_table(table, qrels_dir / f"{split}-00000-of-00001-abc123.parquet")
    (root / "AToMiC-Qrels-v0.2/.cache").mkdir()
    (root / "AToMiC-Qrels-v0.2/.cache/junk.parquet").write_bytes(b"not parquet")  # hidden: ignored

    c = load_collection(root)
    assert c.images.ids == ["I1", "I2", "I3", "I4"]
    assert c.images.captions()[3] == "yellow square"
    assert c.qrels == {
        "train": {"T1": {"I1": 1}, "T2": {"I2": 1}},
        "validation": {"T2": {"I3": 1}},
        "test": {"T3": {"I4": 1}},
    }


def test_qrels_parquet_with_split_column(tmp_path: Path) -> None:
    root = write_atomic(
        tmp_path / "c",
        qrels={},
        qrels_parquet={
            "qrels.parquet": {
                "text_id": ["T1", "T2", "T3"],
                "image_id": ["I1", "I2", "I4"],
                "rel": [1, 1, 1],
                "split": ["train", "dev", "train"],
            }
        },
    )
    c = load_collection(root)
    assert c.splits == ["train", "dev"]
    assert c.query_ids("train") == ["T1", "T3"]


# ----------------------------------------------------------------------------- bad input


def test_missing_directory_names_path_and_bundled(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"no collection at .*nowhere.*bundled: emoji"):
        load_collection(tmp_path / "nowhere")


def test_unrecognised_layout_says_what_was_looked_for(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(DataError) as err:
        load_collection(tmp_path)
    msg = str(err.value)
    assert "images/" in msg and "AToMiC-Images-" in msg and "notes.txt" in msg


def test_partial_layouts(tmp_path: Path) -> None:
    root = write_atomic(tmp_path / "c")
    for f in (root / "qrels").iterdir():
        f.unlink()
    with pytest.raises(DataError, match=r"qrels holds no \*\.trec or \*\.parquet"):
        load_collection(root)
    (root / "qrels").rmdir()
    with pytest.raises(DataError, match="no qrels/ folder"):
        load_collection(root)
    hf = tmp_path / "hf"
    (hf / "AToMiC-Images-v0.2/data").mkdir(parents=True)
    with pytest.raises(DataError, match=r"no AToMiC-Texts-\* or AToMiC-Qrels-\* folder"):
        load_collection(hf)


def test_missing_columns_name_file_and_column(tmp_path: Path) -> None:
    first, second = default_images()
    root = write_atomic(tmp_path / "c")
    pq.write_table(images_table(first).drop_columns(["language"]), root / "images/part-0.parquet")
    with pytest.raises(DataError, match=r"part-0\.parquet has no column 'language'"):
        load_collection(root)
    # without a language filter the language column is not needed
    assert len(load_collection(root, caption_languages="all").images) == 4
    with pytest.raises(
        DataError, match=r"texts\.parquet has no column 'hierarchical_section_title'"
    ):
        load_collection(root, caption_languages="all", query_fields=["hierarchical_section_title"])


def test_unreadable_parquet_names_file(atomic: Path) -> None:
    (atomic / "texts" / "texts.parquet").write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(DataError, match=r"texts\.parquet is not a readable parquet file"):
        load_collection(atomic)


def test_image_struct_without_bytes(tmp_path: Path) -> None:
    root = write_atomic(tmp_path / "c")
    table = images_table(default_images()[0])
    paths_only = pa.array([{"path": "a.png"}] * 3, pa.struct([("path", pa.string())]))
    table = table.set_column(1, "image", paths_only)
    pq.write_table(table, root / "images/part-0.parquet")
    with pytest.raises(DataError, match="struct without a 'bytes' field"):
        load_collection(root)


def _with_corrupt_image(root: Path) -> Path:
    first, second = default_images()
    first[0]["image"] = RED[: len(RED) // 2]  # truncated PNG
    first[1]["image"] = b"definitely not an image"
    return write_atomic(root, images=(first, second))


def test_corrupt_images_skipped_with_one_warning(tmp_path: Path, caplog) -> None:
    root = _with_corrupt_image(tmp_path / "c")
    with caplog.at_level(logging.WARNING, logger="lightning_mlsr.data"):
        c = load_collection(root, validate_images=True)  # opt-in decode at load
    warnings = [r for r in caplog.records if r.name == "lightning_mlsr.data"]
    assert len(warnings) == 1
    assert "2 image(s)" in warnings[0].getMessage() and "'I1', 'I2'" in warnings[0].getMessage()
    assert c.skipped_images == ["I1", "I2"]
    assert set(c.skip_reasons) == {"I1", "I2"}
    assert c.images.ids == ["I3", "I4"]
    # judgments pointing at skipped images are kept: they become unretrievable misses
    assert c.qrels["train"]["T1"] == {"I1": 1, "I2": 0}


def test_corrupt_images_error(tmp_path: Path) -> None:
    root = _with_corrupt_image(tmp_path / "c")
    with pytest.raises(DataError, match=r"2 image\(s\) cannot be decoded: 'I1', 'I2'"):
        load_collection(root, on_corrupt_image="error", validate_images=True)


def test_unvalidated_corrupt_image_fails_on_use(tmp_path: Path) -> None:
    root = _with_corrupt_image(tmp_path / "c")
    c = load_collection(root, validate_images=False)
    assert c.images.ids == ["I1", "I2", "I3", "I4"]
    with pytest.raises(DataError, match="image 'I2' cannot be decoded"):
        c.images.load_image(1)


def test_missing_image_bytes_always_caught(tmp_path: Path) -> None:
    first, second = default_images()
    first[2]["image"] = None
    root = write_atomic(tmp_path / "c", images=(first, second))
    c = load_collection(root, validate_images=False)
    assert c.skipped_images == ["I3"] and c.skip_reasons["I3"] == "no image bytes"


def test_missing_caption_policies(tmp_path: Path, caplog) -> None:
    first, second = default_images()
    first[0]["caption_reference_description"] = [None, "rotes Quadrat"]
    second[0]["caption_reference_description"] = ["   ", None]
    root = write_atomic(tmp_path / "c", images=(first, second))
    with pytest.raises(DataError) as err:
        load_collection(root)
    msg = str(err.value)
    assert "2 image(s) have no caption" in msg and "'I1', 'I4'" in msg
    assert "caption_languages" in msg and "'skip'" in msg and "'keep'" in msg
    with caplog.at_level(logging.WARNING, logger="lightning_mlsr.data"):
        skipped = load_collection(root, on_missing_caption="skip")
    assert len([r for r in caplog.records if r.name == "lightning_mlsr.data"]) == 1
    assert skipped.images.ids == ["I2", "I3"] and skipped.skipped_images == ["I1", "I4"]
    assert skipped.skip_reasons == {"I1": "no caption", "I4": "no caption"}
    kept = load_collection(root, on_missing_caption="keep")
    assert kept.images.captions() == ["", "blue square", "see-through", ""]
    assert load_collection(root, caption_languages="all", on_missing_caption="keep").images.caption(
        0
    ) == ("rotes Quadrat")


def test_misaligned_language_lists(tmp_path: Path) -> None:
    first, second = default_images()
    first[1]["language"] = ["en"]
    root = write_atomic(tmp_path / "c", images=(first, second))
    with pytest.raises(DataError, match=r"different lengths for images 'I2'"):
        load_collection(root)


def test_judged_text_with_empty_query(tmp_path: Path) -> None:
    root = write_atomic(tmp_path / "c", qrels={"train.trec": "T4 Q0 I1 1\n"}, qrels_parquet={})
    with pytest.raises(DataError, match=r"judged text\(s\) have an empty query.*'T4'"):
        load_collection(root)
    assert load_collection(root, query_fields=["text_id"]).texts.query(3) == "T4"


def test_qrels_with_unknown_ids(tmp_path: Path) -> None:
    root = write_atomic(tmp_path / "a", qrels={"train.trec": "T1 Q0 I1 1\nT9 Q0 I1 1\n"})
    with pytest.raises(DataError, match=r"train\.trec: qrels name 1 text id.*'T9'"):
        load_collection(root)
    many = "".join(f"T1 Q0 X{k:02d} 1\n" for k in range(12))
    root = write_atomic(tmp_path / "b", qrels={"test.trec": many})
    with pytest.raises(DataError) as err:
        load_collection(root)
    msg = str(err.value)
    assert "test.trec" in msg and "'X00'" in msg and "'X09'" in msg and "'X10'" not in msg
    assert "(12 in total)" in msg
    root = write_atomic(
        tmp_path / "c",
        qrels={},
        qrels_parquet={"validation.parquet": {"text_id": ["T1"], "image_id": ["nope"], "rel": [1]}},
    )
    with pytest.raises(DataError, match=r"validation\.parquet: qrels name 1 image id.*'nope'"):
        load_collection(root)


def test_malformed_qrels_line(tmp_path: Path) -> None:
    root = write_atomic(tmp_path / "a", qrels={"train.trec": "T1 Q0 I1 1\nT1 I1 1\n"})
    with pytest.raises(DataError, match=r"train\.trec:2: malformed qrels line 'T1 I1 1'"):
        load_collection(root)
    root = write_atomic(tmp_path / "b", qrels={"train.trec": "T1 Q0 I1 high\n"})
    with pytest.raises(DataError, match=r"train\.trec:1: .*integer rel"):
        load_collection(root)


def test_conflicting_judgments(tmp_path: Path) -> None:
    root = write_atomic(tmp_path / "a", qrels={"train.trec": "T1 Q0 I1 1\nT1 Q0 I1 0\n"})
    with pytest.raises(DataError, match=r"\('T1', 'I1'\) in split 'train' is judged both 1 and 0"):
        load_collection(root)


def test_repeated_identical_judgments_count_once(tmp_path: Path) -> None:
    root = write_atomic(
        tmp_path / "a", qrels={"train.trec": "T1 Q0 I1 1\nT1 Q0 I2 0\nT1 Q0 I1 1\n"}
    )
    c = load_collection(root)
    assert c.qrels["train"] == {"T1": {"I1": 1, "I2": 0}}
    assert c.qrels_table.num_judgments == 3  # train 2 + validation 1


def test_duplicate_ids(tmp_path: Path) -> None:
    first, second = default_images()
    second[0]["image_id"] = "I1"  # the same id in two files
    root = write_atomic(tmp_path / "a", images=(first, second))
    with pytest.raises(DataError, match=r"duplicate image_ids in .*images \(2 files\): 'I1'"):
        load_collection(root)
    texts = default_texts()
    texts[2]["text_id"] = "T2"
    root = write_atomic(tmp_path / "b", texts=texts, qrels={"train.trec": "T1 Q0 I1 1\n"})
    with pytest.raises(DataError, match=r"duplicate text_ids in .*texts\.parquet: 'T2'"):
        load_collection(root)


def test_bad_options_and_collection_json(atomic: Path) -> None:
    with pytest.raises(DataError, match="on_corrupt_image"):
        load_collection(atomic, on_corrupt_image="ignore")  # type: ignore[arg-type]
    with pytest.raises(DataError, match="on_missing_caption"):
        load_collection(atomic, on_missing_caption="drop")  # type: ignore[arg-type]
    with pytest.raises(DataError, match="caption_fields"):
        load_collection(atomic, caption_fields=[])
    (atomic / "collection.json").write_text("{not json")
    with pytest.raises(DataError, match=r"collection\.json is not valid JSON"):
        load_collection(atomic)


# ----------------------------------------------------------------------------- bundled emoji


def _read_trec(path: Path) -> list[tuple[str, str, str, str]]:
    return [tuple(line.split()) for line in path.read_text().splitlines()]


def _data_md_table() -> dict[str, list[str]]:
    text = (REPO_ROOT / "DATA.md").read_text()
    rows = re.findall(r"^\| (train|validation|test) \|(.*)\|$", text, flags=re.M)
    return {split: [c.strip() for c in cells.split("|")] for split, cells in rows}


def test_bundled_emoji_matches_data_md() -> None:
    """Counts computed straight from the files agree with DATA.md and with the loader."""
    root = BUNDLED_DIR / "emoji"
    images = pq.read_table(root / "images/images.parquet")
    texts = pq.read_table(root / "texts/texts.parquet")
    image_ids = images["image_id"].to_pylist()
    english = {}
    for i, langs, caps in zip(
        image_ids,
        images["language"].to_pylist(),
        images["caption_reference_description"].to_pylist(),
    ):
        english[i] = caps[langs.index("en")].lower()
    tag_of = dict(zip(texts["text_id"].to_pylist(), texts["section_title"].to_pylist()))

    data_md = REPO_ROOT.joinpath("DATA.md").read_text()
    assert f"Images: **{len(image_ids)}**" in data_md
    assert f"Queries: **{len(tag_of)}**" in data_md
    table = _data_md_table()
    assert set(table) == {"train", "validation", "test"}

    seen_texts: set[str] = set()
    total = 0
    for split in ("train", "validation", "test"):
        lines = _read_trec(root / "qrels" / f"{split}.trec")
        assert lines == sorted(lines)
        assert {line[1] for line in lines} == {"Q0"} and {line[3] for line in lines} == {"1"}
        queries = {line[0] for line in lines}
        assert not queries & seen_texts, f"{split} shares queries with another split"
        seen_texts |= queries
        assert {line[2] for line in lines} <= set(image_ids)
        literal = sum(
            re.search(rf"(?<!\w){re.escape(tag_of[t])}(?!\w)", english[i]) is not None
            for t, _, i, _ in lines
        )
        expected = [
            str(len(queries)),
            str(len(lines)),
            f"{len(lines) / len(queries):.3f}",
            str(literal),
            str(len(lines) - literal),
        ]
        assert table[split][:5] == expected, split
        total += len(lines)
    assert seen_texts == set(tag_of)  # every tag is a query in exactly one split
    assert f"Qrels: **{total}**" in data_md

    # the loader sees the same collection, with the tag as the query
    c = load_collection("emoji")
    assert c.images.ids == image_ids and c.texts.ids == sorted(tag_of)
    assert c.splits == ["train", "validation", "test"]
    assert sum(len(d) for q in c.qrels.values() for d in q.values()) == total
    assert all(c.texts.query(c.texts.index(t)) == tag for t, tag in tag_of.items())
    assert c.images.caption(c.images.index("1F913")) == "nerd face"
    assert c.skipped_images == []
    assert json.loads((root / "collection.json").read_text())["counts"]["images"] == len(image_ids)


@pytest.mark.parametrize("name", bundled_collections())
def test_bundled_emoji_images_are_real_and_load_fast(name: str) -> None:
    start = time.perf_counter()
    c = load_collection(name)  # metadata only: images are decoded when used
    elapsed = time.perf_counter() - start
    assert elapsed < 15, f"loading the bundled collection took {elapsed:.1f}s (expected ~1s)"
    i = c.images.index("1F913")
    assert c.images.load_image(i).size == (64, 64)
    assert c.images.image_bytes(i)[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(set(map(len, c.images.ids))) > 1  # multi-code-point ids such as flags
    assert all(" " not in t for t in c.texts.ids)
    every = load_collection(name, caption_languages="all")
    caption = every.images.caption(i)
    assert caption.startswith("nerd face ; ") and "书呆子脸" in caption


# ----------------------------------------------------------------------------- issue 10.7


def test_ids_with_whitespace_are_rejected_at_load(tmp_path: Path) -> None:
    first, second = default_images()
    first[0]["image_id"] = "I 1"  # would split into two fields in a TREC run file
    second[0]["image_id"] = "I4\t"
    root = write_atomic(tmp_path / "a", images=(first, second), qrels={"t.trec": "T2 Q0 I2 1\n"})
    with pytest.raises(DataError, match=r"2 image_id\(s\) .* contain whitespace: 'I 1', 'I4\\t'"):
        load_collection(root)
    texts = default_texts()
    texts[3]["text_id"] = "T 4"
    root = write_atomic(tmp_path / "b", texts=texts)
    with pytest.raises(DataError, match=r"1 text_id\(s\) .* contain whitespace: 'T 4'"):
        load_collection(root)


def test_non_utf8_qrels_name_file_and_line(tmp_path: Path) -> None:
    root = write_atomic(tmp_path / "a", qrels={"train.trec": "T1 Q0 I1 1\n"})
    (root / "qrels" / "train.trec").write_bytes(b"T1 Q0 I1 1\nT2 Q0 I\xe92 1\n")
    with pytest.raises(DataError, match=r"train\.trec:2: qrels line is not UTF-8"):
        load_collection(root)


def test_query_of_only_zero_width_characters_is_empty(tmp_path: Path) -> None:
    texts = default_texts()
    texts[2]["page_title"] = "\u200b\u200d"  # zero-width space and joiner
    texts[2]["section_title"] = "\ufeff \u2060"  # BOM, space, word joiner
    root = write_atomic(tmp_path / "a", texts=texts)
    with pytest.raises(DataError, match=r"1 judged text\(s\) have an empty query.*'T3'"):
        load_collection(root)
