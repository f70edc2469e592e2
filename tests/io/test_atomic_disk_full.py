"""A full disk while a checkpoint is saved gives the disk-full message however torch reports it:
``torch.save`` to a path says ENOSPC as ``RuntimeError: [enforce fail ...] unexpected pos``."""

from __future__ import annotations

import errno
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

import lightning_mlsr.io.atomic as atomic
from lightning_mlsr.io.atomic import atomic_write, is_disk_full
from lightning_mlsr.training.callbacks.checkpointing import AtomicCheckpointIO

TORCH_SHORT_WRITE = "[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598"


def _short_write(obj: Any, handle: Any, *args: Any, **kwargs: Any) -> None:
    handle.write(b"\0" * 4096)  # part of the file made it before the disk filled up
    raise RuntimeError(TORCH_SHORT_WRITE)


def _disk_with(free: int) -> Any:
    def usage(path: Any) -> Any:
        return shutil._ntuple_diskusage(10**9, 10**9 - free, free)  # type: ignore[attr-defined]

    return usage


def test_torchs_short_write_on_a_full_disk_is_the_disk_full_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    io = AtomicCheckpointIO()
    target = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"global_step": 1}, target)
    good = target.read_bytes()
    monkeypatch.setattr(torch, "save", _short_write)
    monkeypatch.setattr(atomic.shutil, "disk_usage", _disk_with(free=0))
    with pytest.raises(OSError, match=f"no space left to write {target}") as err:
        io.save_checkpoint({"global_step": 2}, target)
    assert err.value.errno == errno.ENOSPC
    assert "default_root_dir" in str(err.value)
    assert isinstance(err.value.__cause__, RuntimeError)  # torch's own text stays attached
    assert target.read_bytes() == good
    assert [p.name for p in target.parent.iterdir()] == ["last.ckpt"]


def test_torchs_short_write_with_space_left_is_not_called_a_full_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch, "save", _short_write)
    monkeypatch.setattr(atomic.shutil, "disk_usage", _disk_with(free=10**9))
    with pytest.raises(RuntimeError, match="unexpected pos"):
        atomic_write(tmp_path / "last.ckpt", lambda handle: torch.save({}, handle))
    assert list(tmp_path.iterdir()) == []


def test_what_counts_as_a_full_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(atomic.shutil, "disk_usage", _disk_with(free=10**9))
    assert is_disk_full(OSError(errno.ENOSPC, "No space left on device"), tmp_path)
    assert is_disk_full(OSError(errno.EDQUOT, "Disk quota exceeded"), tmp_path)
    safetensors_text = 'IoError(Os { code: 28, kind: StorageFull, message: "No space left" })'
    assert is_disk_full(Exception(f"Error while serializing: {safetensors_text}"), tmp_path)
    assert not is_disk_full(OSError(errno.EACCES, "Permission denied"), tmp_path)
    assert not is_disk_full(RuntimeError(TORCH_SHORT_WRITE), tmp_path)
    wrapped = ValueError("export failed")
    wrapped.__cause__ = OSError(errno.ENOSPC, "No space left on device")
    assert is_disk_full(wrapped, tmp_path)
