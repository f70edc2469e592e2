"""FeatureStore: lazy, weight-keyed, corruption-checked, resumable frozen-feature cache.

The oracle everywhere is the backbone itself, run in eval mode on the preprocessed image;
"images encoded" is counted by a hook on the store's backbone, not by the store.
"""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lightning_mlsr.data import DataError, ImageTable
from lightning_mlsr.data.features.store import FeatureCacheError, FeatureStore
from lightning_mlsr.models.image_backbone import ImageBackbone

ROOT = Path(__file__).resolve().parents[2]
N_IMAGES = 24


def noise_png(seed: int, size: int = 16) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def make_images(n: int = N_IMAGES, corrupt: tuple[int, ...] = ()) -> ImageTable:
    """``n`` distinct noise images ``img0..``; rows in ``corrupt`` hold undecodable bytes."""
    blobs = [b"not an image %d" % i if i in corrupt else noise_png(i) for i in range(n)]
    return ImageTable([f"img{i}" for i in range(n)], blobs, [f"caption {i}" for i in range(n)])


def make_backbone(seed: int = 0) -> ImageBackbone:
    torch.manual_seed(seed)  # random weights, identical in every process for one seed
    return ImageBackbone("test_efficientnet", pretrained=False, image_size=32)


def count_encoded(store: FeatureStore) -> list[int]:
    """A list whose sum is the number of images the store's feature callable (its frozen
    copy of the backbone) has encoded."""
    counts: list[int] = []
    store.computer.compute.register_forward_pre_hook(lambda _m, args: counts.append(len(args[0])))
    return counts


def direct(backbone: ImageBackbone, images: ImageTable, rows: list[int]) -> torch.Tensor:
    """The oracle: the backbone in eval mode on the preprocessed images. Shape: (R, D)."""
    transform = backbone.eval().transform()
    with torch.no_grad():
        return backbone(torch.stack([transform(images.load_image(r)) for r in rows]))


def test_features_equal_the_backbone_and_only_asked_rows_are_encoded(tmp_path: Path) -> None:
    images, backbone = make_images(), make_backbone()
    store = FeatureStore(
        backbone.feature_spec(), images, cache_dir=tmp_path, batch_size=4, shard_size=8
    )
    counts = count_encoded(store)
    rows = [5, 2, 9]
    got = store.features(rows)
    assert got.shape == (3, backbone.num_features) and got.dtype == np.float32
    torch.testing.assert_close(torch.from_numpy(got), direct(backbone, images, rows))
    assert sum(counts) == 3  # lazy: not the other 21 images
    # cached rows are read back, only the new one is encoded; order follows the request
    got = store.features([9, 5, 11, 9])
    assert sum(counts) == 4
    torch.testing.assert_close(torch.from_numpy(got), direct(backbone, images, [9, 5, 11, 9]))
    assert not list(store.root.glob("*.npy"))  # held until a whole shard is ready ...
    store.flush()  # ... or flushed (the DataModule does at teardown)
    # a fresh store (another process, a later run) finds them on disk by content
    again = FeatureStore(backbone.feature_spec(), images, cache_dir=tmp_path)
    again_counts = count_encoded(again)
    torch.testing.assert_close(again.features([11, 2]), store.features([11, 2]))
    assert sum(again_counts) == 0
    # ... also when the same images sit in other rows of another table
    moved = images.take([11, 0, 2])
    other = FeatureStore(backbone.feature_spec(), moved, cache_dir=tmp_path)
    other_counts = count_encoded(other)
    torch.testing.assert_close(other.features([0, 2]), store.features([11, 2]))
    assert sum(other_counts) == 0


def test_fill_computes_only_the_missing_rows_in_shards(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    images, backbone = make_images(), make_backbone()
    store = FeatureStore(
        backbone.feature_spec(), images, cache_dir=tmp_path, batch_size=4, shard_size=8
    )
    counts = count_encoded(store)
    store.features([0, 1])
    caplog.set_level(logging.INFO, logger="lightning_mlsr.data")
    assert store.fill(range(10)) == 8 and sum(counts) == 10
    assert "features of 8 images" in caplog.text and "images/s" in caplog.text
    assert store.fill() == N_IMAGES - 10 and sum(counts) == N_IMAGES
    assert store.fill() == 0 and len(store) == N_IMAGES
    torch.testing.assert_close(
        torch.from_numpy(store.features(range(N_IMAGES))),
        direct(backbone, images, list(range(N_IMAGES))),
    )
    # shards of at most shard_size images, each with its done-marker
    shards = sorted(store.root.glob("*.npy"))
    assert len(shards) == len(list(store.root.glob("*.index.npz"))) == 4  # 2 + 8 + 8 + 6
    assert max(np.load(p, mmap_mode="r").shape[0] for p in shards) == 8


def test_other_weights_never_reuse_features(tmp_path: Path) -> None:
    images = make_images()
    first, second = make_backbone(seed=0), make_backbone(seed=1)
    # before the fix both were "test_efficientnet-random-32x32" and shared one cache entry
    assert first.cache_key != second.cache_key
    FeatureStore(first.feature_spec(), images, cache_dir=tmp_path).fill(range(6))
    store = FeatureStore(second.feature_spec(), images, cache_dir=tmp_path)
    counts = count_encoded(store)
    torch.testing.assert_close(
        torch.from_numpy(store.features(range(6))), direct(second, images, list(range(6)))
    )
    assert sum(counts) == 6
    # the same weights from a checkpoint file share the key; perturbed weights do not
    path = tmp_path / "weights.pt"
    torch.save(first.model.state_dict(), path)
    loaded = ImageBackbone("test_efficientnet", checkpoint_path=str(path), image_size=32)
    assert loaded.cache_key == first.cache_key
    state = first.model.state_dict()
    name = next(k for k, v in state.items() if v.is_floating_point())
    state[name] = state[name] + 1e-3
    torch.save(state, path)
    changed = ImageBackbone("test_efficientnet", checkpoint_path=str(path), image_size=32)
    assert changed.cache_key != first.cache_key
    # and another preprocessing (input size) is another key
    torch.manual_seed(0)
    resized = ImageBackbone("test_efficientnet", pretrained=False, image_size=48)
    assert resized.weights_hash() == first.weights_hash()
    assert resized.cache_key != first.cache_key


@pytest.mark.parametrize("damage", ["truncate_features", "truncate_index", "flip_features"])
def test_a_damaged_shard_is_named_and_recomputed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: str
) -> None:
    images, backbone = make_images(), make_backbone()
    FeatureStore(backbone.feature_spec(), images, cache_dir=tmp_path, shard_size=8).fill(range(16))
    store_dir = next((tmp_path / "features").rglob("*.index.npz")).parent
    victim = sorted(store_dir.glob("*.npy"))[0]
    if damage == "truncate_features":
        victim.write_bytes(victim.read_bytes()[:-100])
    elif damage == "truncate_index":
        index = victim.with_name(victim.name[: -len(".npy")] + ".index.npz")
        index.write_bytes(index.read_bytes()[:50])
    else:  # same length, different bytes: only the checksum can tell
        data = bytearray(victim.read_bytes())
        data[-7] ^= 0xFF
        victim.write_bytes(bytes(data))
    caplog.set_level(logging.WARNING, logger="lightning_mlsr.data")
    store = FeatureStore(backbone.feature_spec(), images, cache_dir=tmp_path)
    counts = count_encoded(store)
    got = store.features(range(16))
    assert str(victim) in caplog.text and "corrupt or truncated" in caplog.text
    assert sum(counts) == 8  # the damaged shard's images, not the intact shard's
    torch.testing.assert_close(torch.from_numpy(got), direct(backbone, images, list(range(16))))
    assert not victim.exists()  # deleted, so the warning is not repeated on every run


def test_an_unwritable_cache_fails_before_computing(tmp_path: Path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")  # works as root too, unlike chmod
    backbone = make_backbone()
    with pytest.raises(FeatureCacheError) as err:
        FeatureStore(backbone.feature_spec(), make_images(), cache_dir=blocker / "cache")
    assert str(blocker / "cache") in str(err.value) and "LIGHTNING_MLSR_CACHE" in str(err.value)


def test_corrupt_images_are_counted_skips_or_errors(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    images, backbone = make_images(corrupt=(3, 7)), make_backbone()
    caplog.set_level(logging.WARNING, logger="lightning_mlsr.data")
    store = FeatureStore(backbone.feature_spec(), images, cache_dir=tmp_path, batch_size=4)
    store.fill(range(10))
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1  # once, at the end of the pass
    assert "2 image(s) could not be decoded" in warnings[0].getMessage()
    assert "'img3', 'img7'" in warnings[0].getMessage()
    got = store.features(range(10))
    assert not got[[3, 7]].any()
    good = [r for r in range(10) if r not in (3, 7)]
    torch.testing.assert_close(torch.from_numpy(got[good]), direct(backbone, images, good))
    with pytest.raises(DataError, match="'img7'"):  # also when read back from the cache
        FeatureStore(
            backbone.feature_spec(), images, cache_dir=tmp_path, on_corrupt_image="error"
        ).features([7])
    fresh = tmp_path / "fresh"
    with pytest.raises(DataError, match="'img3'.*on_corrupt_image='skip'"):
        FeatureStore(
            backbone.feature_spec(), images, cache_dir=fresh, on_corrupt_image="error"
        ).fill()


FILL_SCRIPT = """
import sys, time
from lightning_mlsr.data.features.store import FeatureStore
from tests.data.test_features import make_backbone, make_images

store = FeatureStore(make_backbone().feature_spec(), make_images(), cache_dir=sys.argv[1], batch_size=2,
                     shard_size=4)
encode = store.computer.encode
def slow(*args):
    time.sleep(0.3)
    return encode(*args)
store.computer.encode = slow
store.fill(progress=False)
"""


def test_an_interrupted_fill_resumes_without_recomputing_finished_shards(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.Popen([sys.executable, "-c", FILL_SCRIPT, str(tmp_path)], cwd=ROOT, env=env)
    deadline = time.monotonic() + 120
    try:
        while len(list(tmp_path.rglob("*.index.npz"))) < 2:
            assert proc.poll() is None, "the fill ended before it could be interrupted"
            assert time.monotonic() < deadline, "the fill wrote no shards"
            time.sleep(0.05)
    finally:
        proc.kill()  # SIGKILL: no cleanup runs
        proc.wait()
    finished = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.index.npz")}
    assert 2 <= len(finished) < N_IMAGES // 4
    images, backbone = make_images(), make_backbone()
    store = FeatureStore(backbone.feature_spec(), images, cache_dir=tmp_path, shard_size=4)
    counts = count_encoded(store)
    assert store.fill() == N_IMAGES - 4 * len(finished)
    assert sum(counts) == N_IMAGES - 4 * len(finished)
    assert {p: p.stat().st_mtime_ns for p in finished} == finished  # left as they were
    torch.testing.assert_close(
        torch.from_numpy(store.features(range(N_IMAGES))),
        direct(backbone, images, list(range(N_IMAGES))),
    )
