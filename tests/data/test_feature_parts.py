"""The feature store's parts, each against a plain oracle: the key index against a dict, the
shard writer against what it was given (read back from disk), the feature computer
against its callable run directly, and a store over a spec whose callable is a plain
function (no backbone at all), whose resumed fill computes nothing."""

from __future__ import annotations

import errno
from pathlib import Path

import numpy as np
import pytest
import torch

from lightning_mlsr.data.features import shards
from lightning_mlsr.data.features.computer import FeatureComputer
from lightning_mlsr.data.features.key_index import KeyIndex, RequestedKeys, RowLocations, RowState
from lightning_mlsr.data.features.shards import FeatureCacheError, ShardWriter, WrittenShard
from lightning_mlsr.data.features.store import FeatureStore
from lightning_mlsr.io.encoder_reads import FeatureSpec
from tests.data.test_features import direct, make_backbone, make_images


def random_keys(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.array([rng.bytes(16) for _ in range(n)], dtype="S16")


def test_the_key_index_agrees_with_a_dict() -> None:
    index, oracle = KeyIndex(), {}
    keys = random_keys(60, seed=0)
    for shard, part in enumerate(np.split(keys, [25, 40])):  # shards of 25, 15, 20 keys
        ok = np.arange(len(part)) % 7 != 3
        index.add_shard(shard, part, ok)
        oracle.update({k: (shard, i, bool(o)) for i, (k, o) in enumerate(zip(part, ok))})
    asked = np.concatenate([keys[::3], random_keys(10, seed=1)])  # stored and unknown keys
    found = index.lookup(asked)
    assert found.found.tolist() == [k in oracle for k in asked]
    got = list(zip(found.shard.tolist(), found.offset.tolist(), found.ok.tolist()))
    assert got == [oracle[k] for k in asked if k in oracle]
    assert len(index) == 60
    index.drop_shard(1)
    found = index.lookup(keys)
    assert found.found.tolist() == [oracle[k][0] != 1 for k in keys]
    assert len(index) == 45


def test_row_locations_hold_a_state_and_forget_by_shard() -> None:
    rows = RowLocations(6)
    assert rows.where(np.arange(6), RowState.UNKNOWN).all()
    rows.stored(np.array([0, 1]), 4, np.array([7, 8]))
    rows.stored(np.array([2]), 5, np.array([0]))
    rows.buffered(np.array([3]), np.array([2]))
    rows.undecodable(4)
    everything = np.arange(6)
    states = [RowState(s) for s in rows.state[everything]]
    assert states == [RowState.STORED] * 3 + [RowState.BUFFERED, RowState.UNDECODABLE] + [
        RowState.UNKNOWN
    ]
    assert rows.shard[:3].tolist() == [4, 4, 5] and rows.offset[:4].tolist() == [7, 8, 0, 2]
    rows.forget_shard(4)  # only the rows stored in shard 4; the buffered row keeps its state
    assert rows.where(everything, RowState.UNKNOWN).tolist() == [1, 1, 0, 0, 0, 1]


def test_requested_keys_are_found_by_row_in_any_order() -> None:
    requested = RequestedKeys()
    keys = random_keys(8, seed=2)
    requested.remember(np.array([5, 1, 7]), keys[[5, 1, 7]])
    requested.remember(np.array([0, 3]), keys[[0, 3]])
    np.testing.assert_array_equal(requested.keys_of(np.array([3, 7, 0, 1])), keys[[3, 7, 0, 1]])
    with pytest.raises(ValueError, match=r"rows \[2\] were not returned by missing\(\)"):
        requested.keys_of(np.array([1, 2]))


def test_the_shard_writer_writes_what_it_holds_in_whole_shards(tmp_path: Path) -> None:
    written: list[WrittenShard] = []
    buffered: dict[int, int] = {}
    writer = ShardWriter(
        tmp_path,
        shard_size=4,
        dim=3,
        on_buffered=lambda rows, at: buffered.update(zip(rows.tolist(), at.tolist())),
        on_written=written.append,
        on_lost=lambda rows: pytest.fail("nothing is lost"),
    )
    rows = np.arange(100, 110)
    keys = random_keys(10, seed=3)
    ok = rows % 4 != 1
    features = np.random.default_rng(0).standard_normal((10, 3)).astype(np.float32)
    for part in np.split(np.arange(10), [3, 4, 9]):  # batches of 3, 1, 5, 1 rows
        writer.hold(rows[part], keys[part], ok[part], features[part])
    assert [len(w.rows) for w in written] == [4, 4] and writer.held == 2
    np.testing.assert_array_equal(writer.buffered(np.array([0, 1])), features[8:])
    assert buffered[108] == 0 and buffered[109] == 1
    writer.flush()
    assert [w.rows.tolist() for w in written] == [rows[:4].tolist(), rows[4:8].tolist(), [108, 109]]
    for w, begin in zip(written, (0, 4, 8), strict=True):  # read back from disk
        stored_keys, stored_ok, checksum = shards.read_index(tmp_path, w.stem, 3)
        end = begin + len(w.rows)
        np.testing.assert_array_equal(stored_keys, keys[begin:end])
        np.testing.assert_array_equal(stored_ok, ok[begin:end])
        np.testing.assert_array_equal(shards.open_features(tmp_path, w.stem), features[begin:end])
        assert checksum == w.checksum
    assert sorted(shards.shard_stems(tmp_path)) == sorted(w.stem for w in written)


def test_a_failed_shard_write_reports_the_rows_it_held(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lost: list[list[int]] = []
    writer = ShardWriter(
        tmp_path,
        2,
        1,
        lambda *_: None,
        lambda _: pytest.fail("no write"),
        lambda r: lost.append(r.tolist()),
    )

    def full(*_args: object, **_kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "save", full)
    with pytest.raises(FeatureCacheError, match="out of space"):
        writer.hold(np.array([4, 9, 6]), random_keys(3, 4), np.ones(3, bool), np.ones((3, 1)))
    assert lost == [[4, 9]] and writer.held == 0


def test_the_computer_equals_its_callable_and_zeroes_undecodable_images() -> None:
    images, backbone = make_images(8, corrupt=(2, 5)), make_backbone()
    computer = FeatureComputer(backbone.feature_spec(), images, batch_size=3)
    assert computer.compute is not backbone  # its own frozen copy
    assert computer.compute_on(torch.device("cpu")) is computer.compute
    assert [b.tolist() for b in computer.batches(np.arange(8))] == [[0, 1, 2], [3, 4, 5], [6, 7]]
    features, errors = computer.encode(np.array([1, 2, 3, 5]))
    assert [e is None for e in errors] == [True, False, True, False]
    assert "'img2' cannot be decoded" in str(errors[1]) and "'img5'" in str(errors[3])
    torch.testing.assert_close(torch.from_numpy(features[[0, 2]]), direct(backbone, images, [1, 3]))
    assert not features[[1, 3]].any()


def mean_colour(pixels: torch.Tensor) -> torch.Tensor:
    """A feature callable that is no model: each image's mean colour. (B, 3, H, W) -> (B, 3)."""
    mean_colour.calls += len(pixels)  # type: ignore[attr-defined]
    return pixels.mean(dim=(2, 3))


def never(_device: torch.device) -> object:
    """A feature callable that must not be called."""
    return lambda _pixels: pytest.fail("a resumed fill computes nothing")


def test_a_store_over_a_plain_callable_and_its_resumed_fill(tmp_path: Path) -> None:
    transform = make_backbone().transform()
    spec = FeatureSpec(
        cache_key="mean-colour-32",
        name="mean colour",
        dim=3,
        pixel_shape=(3, 32, 32),
        transform=transform,
        compute_on=lambda _device: mean_colour,
    )
    images = make_images(10)
    mean_colour.calls = 0  # type: ignore[attr-defined]
    store = FeatureStore(spec, images, cache_dir=tmp_path, batch_size=4, shard_size=4)
    assert store.fill(progress=False) == 10 and mean_colour.calls == 10  # type: ignore[attr-defined]
    oracle = torch.stack([transform(images.load_image(r)).mean(dim=(1, 2)) for r in range(10)])
    torch.testing.assert_close(torch.from_numpy(store.features(range(10))), oracle)
    # a new process with an equal spec (same key, other callables) finds all of it
    again = FeatureSpec("mean-colour-32", "mean colour", 3, (3, 32, 32), transform, never)
    assert again == spec
    resumed = FeatureStore(again, images, cache_dir=tmp_path)
    assert resumed.fill(progress=False) == 0 and len(resumed) == 10
    torch.testing.assert_close(torch.from_numpy(resumed.features(range(10))), oracle)
    assert mean_colour.calls == 10  # type: ignore[attr-defined]  # nothing recomputed
