"""The frozen teacher's embedding cache lives where the module does.

Lightning moves the LightningModule (``.to(device)``, a precision plugin's cast); the cached
teacher embeddings must follow it, so that a cached text costs a gather on the device, not
a host-to-device copy of its embedding every step.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from lightning_mlsr.models.teacher import DenseTeacher
from tests.helpers import TableTeacher, token_batch


class _HostCopies(TorchFunctionMode):
    """Records floating-point tensors copied to the host (``.cpu()``, ``.numpy()``)."""

    def __init__(self) -> None:
        super().__init__()
        self.copied: list[tuple[int, ...]] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in ("cpu", "numpy") and args and args[0].is_floating_point():
            self.copied.append(tuple(args[0].shape))
        return func(*args, **(kwargs or {}))


def test_the_cache_follows_the_module_to_its_device_and_dtype() -> None:
    parent = nn.Module()  # as the LightningModule holds it: moved as a submodule
    parent.teacher = DenseTeacher(TableTeacher(), cache_size=10)
    teacher: DenseTeacher = parent.teacher
    batch = token_batch([[1, 2], [3], [4, 5, 6]], 4)
    want = TableTeacher()(batch)  # (3, H), the same seeded weights
    torch.testing.assert_close(teacher.embed("query", batch), want)
    assert teacher._table["query"] is not None and teacher._table["query"].device.type == "cpu"

    parent.to(torch.float64)  # a precision plugin's cast reaches the cached rows too
    got = teacher.embed("query", token_batch([[3], [1, 2]], 2))  # both cached: no teacher call
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, want[[1, 0]].double())

    parent.to("meta")  # a device move (the meta device stands in for an accelerator)
    table = teacher._table["query"]
    assert table is not None and table.device.type == "meta"
    assert teacher.query_encoder.table.device.type == "meta"
    assert len(teacher._cache["query"]) == 3  # the texts stay known: their rows moved with them


def test_embeddings_never_go_to_the_host() -> None:
    teacher = DenseTeacher(TableTeacher(), cache_size=10)
    with _HostCopies() as mode:
        teacher.embed("doc", token_batch([[7], [8, 9], [7]], 3))  # new texts: computed and stored
        teacher.embed("doc", token_batch([[8, 9], [7], [10]], 2))  # two cached, one new
    assert mode.copied == []  # only the integer token ids (the cache keys) are read there


def test_evicted_rows_are_reused_and_the_table_stays_bounded() -> None:
    teacher = DenseTeacher(TableTeacher(), cache_size=4)
    reference = DenseTeacher(TableTeacher(), cache_size=0)
    for start in range(0, 40, 3):  # 3 new texts a batch, each seen once then dropped
        batch = token_batch([[start % 50], [(start + 1) % 50], [(start + 2) % 50]], 2)
        torch.testing.assert_close(teacher.embed("query", batch), reference.embed("query", batch))
    table = teacher._table["query"]
    assert table is not None and len(table) <= 4 + 3  # the bound plus one batch's new texts
    assert len(teacher._cache["query"]) == 4
