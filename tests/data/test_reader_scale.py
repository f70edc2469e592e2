"""The reader at scale: bytes read on demand, lazy corrupt images, the check command,
evaluation corpora and the sharding of reading across processes."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from lightning_mlsr.data import DataError, load_collection
from lightning_mlsr.data.datamodule import RetrievalDataModule
from lightning_mlsr.data.evaluation_corpus import eval_corpus_rows
from lightning_mlsr.data.settings import BatchingSettings, EvaluationSettings, ReadingSettings
from lightning_mlsr.models import ImageMLMHead, MLPHead
from tests.helpers import batch_inputs

N_IMAGES = 300
GROUP = 50  # rows per parquet row group, as Hugging Face writes image datasets (100)
CORRUPT = {"img007": b"\xff\xd8 truncated jpeg", "img123": b"not an image at all"}


def noise_jpeg(seed: int, size: int = 48) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="JPEG", quality=95)
    return out.getvalue()


def write_synthetic(root: Path, corrupt: dict[str, bytes] | None = None) -> Path:
    """N_IMAGES noise JPEGs in two files of row groups of GROUP, 60 texts, 3 qrels splits."""
    corrupt = CORRUPT if corrupt is None else corrupt
    ids = [f"img{k:03d}" for k in range(N_IMAGES)]
    blobs = [corrupt.get(i) or noise_jpeg(k) for k, i in enumerate(ids)]
    (root / "images").mkdir(parents=True)
    half = N_IMAGES // 2
    for part, rows in enumerate((range(half), range(half, N_IMAGES))):
        table = pa.table(
            {
                "image_id": [ids[r] for r in rows],
                "image": pa.array(
                    [{"bytes": blobs[r], "path": None} for r in rows],
                    pa.struct([("bytes", pa.binary()), ("path", pa.string())]),
                ),
                "language": [["en", "de"] for _ in rows],
                "caption_reference_description": [[f"picture {r}", f"Bild {r}"] for r in rows],
            }
        )
        pq.write_table(table, root / "images" / f"part-{part}.parquet", row_group_size=GROUP)
    (root / "texts").mkdir()
    texts = {"text_id": [f"t{k:02d}" for k in range(60)]}
    texts |= {"page_title": [f"page {k}" for k in range(60)]}
    texts |= {"section_title": ["s"] * 60, "context_section_description": [""] * 60}
    pq.write_table(pa.table(texts), root / "texts" / "texts.parquet")
    (root / "qrels").mkdir()
    rng = np.random.default_rng(0)
    for split, queries in (("train", range(0, 40)), ("validation", range(40, 50))):
        lines = [
            f"t{q:02d} Q0 img{int(i):03d} 1"
            for q in queries
            for i in rng.choice(N_IMAGES, size=3, replace=False)
        ]
        if split == "train":
            lines.append("t00 Q0 img007 1")  # a corrupt image judged for training
        (root / "qrels" / f"{split}.trec").write_text("\n".join(lines) + "\n")
    (root / "qrels" / "test.trec").write_text("t55 Q0 img299 1\n")
    return root


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic(tmp_path_factory.mktemp("scale") / "c")


def image_file_bytes(root: Path) -> int:
    return sum(
        len(b or b"")
        for f in sorted((root / "images").glob("*.parquet"))
        for b in pq.read_table(f)["image"].combine_chunks().field("bytes").to_pylist()
    )


def test_image_bytes_are_not_resident_after_load(synthetic: Path) -> None:
    total = image_file_bytes(synthetic)
    assert total > N_IMAGES * 2000  # the noise JPEGs are several KB each
    pool_before = pa.total_allocated_bytes()
    c = load_collection(synthetic)
    assert c.images.store.resident_bytes == 0
    assert pa.total_allocated_bytes() - pool_before < total / 10
    # reading one image brings in one row group of the image column, not the files
    first = c.images.image_bytes(0)
    assert first == noise_jpeg(0)
    assert 0 < c.images.store.resident_bytes < total / 4
    assert c.images.image_bytes(N_IMAGES - 1) == noise_jpeg(N_IMAGES - 1)
    # ids, captions and qrels are the ones written
    assert list(c.images.ids) == [f"img{k:03d}" for k in range(N_IMAGES)]
    assert c.images.caption(5) == "picture 5"
    judged = (synthetic / "qrels" / "validation.trec").read_text().split()
    assert sum(len(d) for d in c.qrels["validation"].values()) == len(judged) // 4


def test_loader_workers_read_bytes_themselves(synthetic: Path) -> None:
    import pickle

    c = load_collection(synthetic)
    c.images.image_bytes(3)
    copy = pickle.loads(pickle.dumps(c.images))  # what a DataLoader worker receives
    assert copy.store.resident_bytes == 0 and len(pickle.dumps(c.images.store)) < 20_000
    assert copy.image_bytes(3) == noise_jpeg(3)


def pixel_model() -> tuple[MLPHead, ImageMLMHead]:
    image = ImageMLMHead(
        image_backbone="test_efficientnet",
        image_pretrained=False,
        image_size=32,
        freeze_image_backbone=False,  # pixels in every batch: images decoded when used
    )
    return MLPHead(), image


def test_corrupt_images_met_in_a_pass_are_counted_once(synthetic: Path, caplog) -> None:
    dm = RetrievalDataModule(str(synthetic), batching=BatchingSettings(eval_batch_size=64))
    dm.set_batch_inputs(batch_inputs(*pixel_model()))
    assert dm.collection.skipped_images == []  # nothing decoded at load
    loader = dm.corpus_dataloader()
    with caplog.at_level(logging.WARNING, logger="lightning_mlsr.data"):
        rows = [r for batch in loader for r in batch["doc_idx"].tolist()]
    assert len(rows) == N_IMAGES - len(CORRUPT)
    assert sorted(loader.last_skipped) == sorted(CORRUPT)
    warnings = [r.getMessage() for r in caplog.records if "corrupt image" in r.getMessage()]
    assert len(warnings) == 1 and "skipped 2 corrupt image(s)" in warnings[0]

    # a training batch keeps its size: the broken pair is replaced by a good one
    pairs = dm._split_pairs("train")
    broken = int(np.flatnonzero(np.isin(pairs[:, 1], [7, 123]))[0])
    batch = dm.train_dataloader().collate_fn([broken, (broken + 1) % len(pairs)])
    assert batch["doc"]["pixel_values"].shape[0] == 2 and len(batch["skipped_images"]) == 1
    assert batch["false_negatives"][0, 1] and batch["false_negatives"][1, 0]

    strict = RetrievalDataModule(str(synthetic), reading=ReadingSettings(on_corrupt_image="error"))
    strict.set_batch_inputs(batch_inputs(*pixel_model()))
    with pytest.raises(DataError, match="image 'img007' cannot be decoded"):
        list(strict.corpus_dataloader())


def test_check_command_lists_unusable_images_for_later_loads(tmp_path: Path) -> None:
    root = write_synthetic(tmp_path / "c")
    done = subprocess.run(
        [sys.executable, "-m", "lightning_mlsr.data", "check", str(root), "--workers", "2"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    listed = (root / "unusable_images.tsv").read_text().splitlines()
    assert listed[0] == "image_id\treason"
    assert [line.split("\t")[0] for line in listed[1:]] == sorted(CORRUPT)
    assert "2 unusable image(s)" in done.stdout
    c = load_collection(root)
    assert c.skipped_images == sorted(CORRUPT)
    assert "unusable_images.tsv" in c.skip_reasons["img007"]
    with pytest.raises(DataError, match="2 image\\(s\\) cannot be decoded: 'img007', 'img123'"):
        load_collection(root, on_corrupt_image="error")


def test_eval_corpus_modes_against_brute_force(synthetic: Path) -> None:
    c = load_collection(synthetic)
    judged = {
        line.split()[2]
        for line in (synthetic / "qrels" / "validation.trec").read_text().split("\n")
        if line
    }
    assert len(eval_corpus_rows(c, "validation", "all")) == N_IMAGES
    rows = eval_corpus_rows(c, "validation", "judged")
    assert {c.images.ids[r] for r in rows} == judged and len(rows) == len(judged)
    sampled = eval_corpus_rows(c, "validation", "judged+sampled", distractors=25, seed=3)
    assert len(sampled) == len(judged) + 25 and len(set(sampled.tolist())) == len(sampled)
    assert judged <= {c.images.ids[r] for r in sampled}
    again = eval_corpus_rows(c, "validation", "judged+sampled", distractors=25, seed=3)
    other = eval_corpus_rows(c, "validation", "judged+sampled", distractors=25, seed=4)
    assert np.array_equal(sampled, again) and not np.array_equal(sampled, other)
    everything = eval_corpus_rows(c, "validation", "judged+sampled", distractors=10**6)
    assert len(everything) == N_IMAGES  # capped at the collection
    dm = RetrievalDataModule(
        str(synthetic),
        batching=BatchingSettings(eval_batch_size=7),
        evaluation=EvaluationSettings(corpus="judged"),
    )
    dm.set_batch_inputs(batch_inputs(MLPHead(), MLPHead()))
    loaded = [r for b in dm.corpus_dataloader(split="validation") for r in b["doc_idx"].tolist()]
    assert loaded == rows.tolist()


SHARD_SCRIPT = """
import hashlib, json, sys
from lightning_mlsr.data import load_collection
from lightning_mlsr.data.evaluation_corpus import eval_corpus_rows, shard_indices
root, rank = sys.argv[1], int(sys.argv[2])
c = load_collection(root)  # what every DDP rank does; then it reads only its own shard
corpus = eval_corpus_rows(c, "validation", "all")
rows = corpus[shard_indices(len(corpus), rank, 2)].tolist()
images = c.images
digests = {images.ids[r]: hashlib.sha1(images.image_bytes(r)).hexdigest() for r in rows}
groups = sorted({(int(images.store.file_of[r]), int(images.store.group_of[r])) for r in rows})
print(json.dumps({"ids": list(digests), "sha1": digests, "groups": groups}))
"""


def test_two_processes_read_disjoint_shards_covering_the_corpus(synthetic: Path) -> None:
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", SHARD_SCRIPT, str(synthetic), str(rank)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in (0, 1)
    ]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=180)
        assert p.returncode == 0, err
        outs.append(json.loads(out.strip().splitlines()[-1]))
    ids = [set(o["ids"]) for o in outs]
    assert not ids[0] & ids[1]
    assert ids[0] | ids[1] == {f"img{k:03d}" for k in range(N_IMAGES)}
    # contiguous shards: each process reads its own row groups (one may be shared at the cut)
    shared = {tuple(g) for g in outs[0]["groups"]} & {tuple(g) for g in outs[1]["groups"]}
    assert len(shared) <= 1
    c = load_collection(synthetic)
    for o in outs:
        for image_id, digest in o["sha1"].items():
            assert (
                hashlib.sha1(c.images.image_bytes(c.images.index(image_id))).hexdigest() == digest
            )


def test_cached_features_are_found_without_reading_image_bytes(tmp_path: Path) -> None:
    """The feature cache is keyed by content, but a second run finds its features from the
    row groups' stored key maps: no image bytes are read again (issue 11.c)."""
    import hashlib as _hashlib

    from lightning_mlsr.data.features.store import FeatureStore
    from tests.data.test_features import direct, make_backbone

    root = write_synthetic(tmp_path / "c", corrupt={})
    c = load_collection(root)
    rows = np.arange(0, N_IMAGES, 7)
    # the keys are those of the bytes (an independent hash of what was written)
    want = [
        _hashlib.blake2b(
            _hashlib.sha1(noise_jpeg(int(r))).hexdigest().encode(), digest_size=16
        ).digest()
        for r in rows
    ]
    np.testing.assert_array_equal(c.images.content_keys(rows), np.array(want, dtype="S16"))
    backbone = make_backbone()
    FeatureStore(backbone.feature_spec(), c.images, cache_dir=tmp_path / "cache").fill(
        rows, progress=False
    )

    again = load_collection(root)  # a new process: nothing of the first one in memory
    reads: list[tuple[int, int]] = []
    real = again.images.store._group
    again.images.store._group = lambda f, g: reads.append((f, g)) or real(f, g)  # type: ignore[method-assign]
    store = FeatureStore(backbone.feature_spec(), again.images, cache_dir=tmp_path / "cache")
    got = store.features(rows)
    assert reads == []  # keys from the key maps, features from the shards
    np.testing.assert_allclose(got, direct(backbone, again.images, rows.tolist()), atol=1e-5)

    # a rewritten file gets new key maps: its changed image is not given stale features
    table = pq.read_table(root / "images" / "part-0.parquet")
    column = table["image"].combine_chunks()
    blobs = column.field("bytes").to_pylist()
    blobs[0] = noise_jpeg(10_000)
    image = pa.StructArray.from_arrays(
        [pa.array(blobs, pa.binary()), column.field("path")], ["bytes", "path"]
    )
    table = table.set_column(table.schema.get_field_index("image"), "image", image)
    pq.write_table(table, root / "images" / "part-0.parquet", row_group_size=GROUP)
    changed = load_collection(root)
    store = FeatureStore(backbone.feature_spec(), changed.images, cache_dir=tmp_path / "cache")
    np.testing.assert_allclose(
        store.features([0]), direct(backbone, changed.images, [0]), atol=1e-5
    )


def test_check_command_keeps_the_content_keys(tmp_path: Path) -> None:
    from lightning_mlsr.data.collection.check import check_images
    from lightning_mlsr.data.features.content_keys import content_key

    root = write_synthetic(tmp_path / "c", corrupt={})
    check_images(root, workers=1, progress=False)
    c = load_collection(root)
    reads: list[tuple[int, int]] = []
    real = c.images.store._group
    c.images.store._group = lambda f, g: reads.append((f, g)) or real(f, g)  # type: ignore[method-assign]
    keys = c.images.content_keys(np.arange(N_IMAGES))
    assert reads == []  # every key came from the maps the check wrote
    want = np.array([content_key(noise_jpeg(k)) for k in range(N_IMAGES)], dtype="S16")
    np.testing.assert_array_equal(keys, want)
