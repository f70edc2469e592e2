"""A full feature-cache disk: a clear error naming the folder, the space and the fix, and
no files left behind by the failed write.

The full disk is simulated where the shard files are written (``np.save`` / ``np.savez``
write part of the file, then fail with ``ENOSPC`` as a full filesystem does); free space
is simulated through ``shutil.disk_usage``. The oracle for the values is the backbone
itself (``tests.data.test_features.direct``).
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from lightning_mlsr.data.features.store import FeatureCacheError, FeatureStore
from tests.data.test_features import N_IMAGES, count_encoded, direct, make_backbone, make_images


def fail_after(calls: int, real: Any) -> Any:
    """``real`` for its first ``calls`` calls, then a partial write and ENOSPC."""
    done = [0]

    def write(fh: Any, *args: Any, **kwargs: Any) -> None:
        done[0] += 1
        if done[0] > calls:
            fh.write(b"\x93NUMPY" + b"\0" * 64)  # what a full disk leaves half-written
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fh, *args, **kwargs)

    return write


def kib(n: int) -> str:
    """How the messages write sizes of a few KiB (the test backbone's shards)."""
    assert 1024 <= n < 1024**2
    return f"{n / 1024:.1f} KiB"


def files(root: Path) -> set[str]:
    return {p.name for p in root.iterdir()} if root.is_dir() else set()


@pytest.mark.parametrize("failing", ["features", "index"])
def test_a_full_disk_names_the_cache_and_the_space_and_leaves_no_debris(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    images, backbone = make_images(), make_backbone()
    store = FeatureStore(
        backbone.feature_spec(), images, cache_dir=tmp_path, batch_size=4, shard_size=8
    )
    dim = backbone.num_features
    if failing == "features":  # the second shard's features file fails
        monkeypatch.setattr(np, "save", fail_after(1, np.save))
    else:  # the second shard's features are written, its index (the done-marker) fails
        monkeypatch.setattr(np, "savez", fail_after(1, np.savez))
    with pytest.raises(FeatureCacheError) as err:
        store.fill()
    message = str(err.value)
    assert str(store.root) in message and "LIGHTNING_MLSR_CACHE" in message
    assert "out of space" in message
    row_bytes = 4 * dim + 16 + 1  # float32 features, a 16-byte key, an ok flag
    # the failed shard holds 8 images; 8 more were still to be computed (24 = 8 + 8 + 8)
    assert kib(8 * row_bytes) in message
    assert f"about {kib(8 * row_bytes)} more" in message
    # the first shard stays, complete; nothing of the failed one is left
    left = files(store.root)
    assert not [name for name in left if ".tmp" in name], left  # no temporary of any writer
    assert len(left) == 2 and sum(name.endswith(".index.npz") for name in left) == 1, left

    monkeypatch.undo()  # space freed: the same store goes on, recomputing what was lost
    counts = count_encoded(store)
    assert store.fill() == N_IMAGES - 8 and sum(counts) == N_IMAGES - 8
    torch.testing.assert_close(
        torch.from_numpy(store.features(range(N_IMAGES))),
        direct(backbone, images, list(range(N_IMAGES))),
    )
    again = FeatureStore(backbone.feature_spec(), images, cache_dir=tmp_path)
    assert len(again) == N_IMAGES and not list(store.root.glob(".*.tmp*"))


def test_a_lazy_write_on_a_full_disk_is_the_same_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    images, backbone = make_images(), make_backbone()
    store = FeatureStore(
        backbone.feature_spec(), images, cache_dir=tmp_path, batch_size=4, shard_size=4
    )
    monkeypatch.setattr(np, "save", fail_after(0, np.save))
    with pytest.raises(FeatureCacheError, match="LIGHTNING_MLSR_CACHE"):
        store.features(range(6))  # the first whole shard (4 images) is written at once
    assert files(store.root) == set()
    monkeypatch.undo()
    torch.testing.assert_close(
        torch.from_numpy(store.features(range(6))), direct(backbone, images, list(range(6)))
    )


def test_a_fill_that_cannot_fit_fails_before_computing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    images, backbone = make_images(), make_backbone()
    store = FeatureStore(backbone.feature_spec(), images, cache_dir=tmp_path)
    counts = count_encoded(store)
    needed = N_IMAGES * (4 * backbone.num_features + 16 + 1)
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(
        shutil, "disk_usage", lambda _path: usage._replace(free=needed // 2, used=usage.total)
    )
    with pytest.raises(FeatureCacheError) as err:
        store.fill()
    message = str(err.value)
    assert str(store.root) in message and "LIGHTNING_MLSR_CACHE" in message
    assert kib(needed) in message and kib(needed // 2) in message
    assert sum(counts) == 0 and files(store.root) == set()


def test_stale_temporaries_of_killed_writers_are_removed_fresh_ones_kept(tmp_path: Path) -> None:
    from lightning_mlsr.data.features.shards import remove_stale_temporaries

    stale = [tmp_path / ".a.npy.tmp-123", tmp_path / ".b.index.npz.tmp"]  # atomic_write's, older
    fresh = tmp_path / ".c.npy.tmp-456"  # a fill running now
    for path in [*stale, fresh]:
        path.write_bytes(b"x")
    for path in stale:
        os.utime(path, (0, 0))
    remove_stale_temporaries(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [fresh.name]
