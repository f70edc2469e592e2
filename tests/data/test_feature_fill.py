"""The accelerator fill driver: the same features as the CPU path, shared over DDP ranks.

Oracles: the CPU path (:meth:`FeatureStore.fill`, the backbone in each worker) and the
backbone itself on the preprocessed images (``tests.data.test_features.direct``). Devices are
CPUs here; the ranks are 2 gloo processes. Tolerances: float32 fills equal the CPU path to
float32 rounding (``assert_close`` defaults: rtol 1.3e-6, atol 1e-5); a bf16-autocast fill
is within 3% relative L2 error per image (cosine >= 0.999) of it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from lightning_mlsr.data.features import shards as feature_shards
from lightning_mlsr.data.features.fill import fill_features
from lightning_mlsr.data.features.store import FeatureCacheError, FeatureStore
from tests.data.test_features import N_IMAGES, count_encoded, direct, make_backbone, make_images

ROOT = Path(__file__).resolve().parents[2]
BF16 = lambda: torch.autocast("cpu", dtype=torch.bfloat16)  # noqa: E731


def shard_keys(root: Path) -> dict[str, set[bytes]]:
    """The content keys stored per writing process id (a shard's stem holds its pid)."""
    out: dict[str, set[bytes]] = {}
    for stem in feature_shards.shard_stems(root):
        keys, _ok, _sha = feature_shards.read_index(root, stem, make_backbone().num_features)
        out.setdefault(stem.split("-")[1], set()).update(keys.tolist())
    return out


def test_the_device_fill_equals_the_cpu_path(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    n = 12
    images, backbone = make_images(n, corrupt=(3, 7)), make_backbone()
    cpu = FeatureStore(
        backbone.feature_spec(), images, cache_dir=tmp_path / "cpu", batch_size=4, shard_size=8
    )
    cpu.fill(progress=False)
    store = FeatureStore(backbone.feature_spec(), images, cache_dir=tmp_path / "dev", shard_size=8)
    counts = count_encoded(store)
    store.features([0, 1])  # some rows are cached already: only the others are computed
    store.flush()
    caplog.clear()
    caplog.set_level(logging.WARNING, logger="lightning_mlsr.data")
    report = fill_features(store, device="cpu", batch_size=5, progress=False)
    assert (report.rank, report.world_size) == (0, 1)
    assert report.missing == report.encoded == n - 2  # all but the 2 cached
    assert report.rows.tolist() == list(range(2, n))
    assert sum(counts) == n  # 2 lazily, the fill's 10 in batches of 5
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "'img3', 'img7'" in warnings[0]

    fresh = FeatureStore(backbone.feature_spec(), images, cache_dir=tmp_path / "dev")
    assert len(fresh) == n  # undecodable images are recorded too, as by the CPU path
    got = torch.from_numpy(fresh.features(range(n)))
    torch.testing.assert_close(got, torch.from_numpy(cpu.features(range(n))))
    good = [r for r in range(n) if r not in (3, 7)]
    torch.testing.assert_close(got[good], direct(backbone, images, good))
    assert not got[[3, 7]].any()
    # resumable: a second fill finds nothing to do
    again = fill_features(fresh, device="cpu", progress=False)
    assert again.missing == again.encoded == 0


def test_a_bf16_fill_is_within_the_stated_tolerance(tmp_path: Path) -> None:
    images, backbone = make_images(), make_backbone()
    store = FeatureStore(backbone.feature_spec(), images, cache_dir=tmp_path)
    fill_features(store, rows=range(12), autocast=BF16, batch_size=6, progress=False)
    got = torch.from_numpy(store.features(range(12)))
    ref = direct(backbone, images, list(range(12)))
    relative = (got - ref).norm(dim=1) / ref.norm(dim=1)
    assert float(relative.max()) < 0.03
    assert float(torch.nn.functional.cosine_similarity(got, ref).min()) >= 0.999
    assert float(relative.max()) > 0  # bf16 did run: the features are not the fp32 ones


def test_a_non_finite_reduced_precision_batch_is_recomputed_in_float32(tmp_path: Path) -> None:
    images, backbone = make_images(), make_backbone()
    store = FeatureStore(backbone.feature_spec(), images, cache_dir=tmp_path)

    def overflow(_module, _args, output: torch.Tensor) -> torch.Tensor | None:
        if torch.is_autocast_enabled("cpu"):  # as fp16 overflow does, only under autocast
            return torch.full_like(output, float("inf"))
        return None

    store.computer.compute.register_forward_hook(overflow)
    fill_features(store, rows=range(6), autocast=BF16, batch_size=3, progress=False)
    torch.testing.assert_close(
        torch.from_numpy(store.features(range(6))), direct(make_backbone(), images, list(range(6)))
    )


def test_a_device_fill_that_cannot_fit_fails_before_computing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    images, backbone = make_images(), make_backbone()
    store = FeatureStore(backbone.feature_spec(), images, cache_dir=tmp_path)
    counts = count_encoded(store)
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda _path: usage._replace(free=1000))
    with pytest.raises(FeatureCacheError, match="LIGHTNING_MLSR_CACHE") as err:
        fill_features(store, progress=False)
    assert str(store.root) in str(err.value)
    assert sum(counts) == 0 and not list(store.root.iterdir())


def test_upfront_filling_in_setup_uses_the_device_fill(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lightning_mlsr.data import datamodule as dm_module
    from lightning_mlsr.data.settings import BatchingSettings, FeatureSettings
    from lightning_mlsr.models import ImageMLMHead, MLPHead
    from tests.helpers import batch_inputs, write_atomic

    calls: list[int] = []
    real = dm_module.fill_features

    def spy(store, rows, **kwargs):
        calls.append(len(rows))
        return real(store, rows, **kwargs)

    monkeypatch.setattr(dm_module, "fill_features", spy)
    head = ImageMLMHead(image_backbone="test_efficientnet", image_pretrained=False, image_size=32)
    dm = dm_module.RetrievalDataModule(
        str(write_atomic(tmp_path / "col")),
        batching=BatchingSettings(batch_size=2),
        features=FeatureSettings(cache_dir=str(tmp_path / "cache"), fill="upfront"),
    )
    dm.set_batch_inputs(batch_inputs(MLPHead(), head))
    dm.setup("fit")
    dm.setup("test")  # once per process, not again per stage
    store = dm.collator.features
    assert store is not None and calls == [len(dm.feature_rows())]
    assert len(store) == len(dm.feature_rows()) == len(dm.collection.images)


def _rank_fill(rank: int, cache: str, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        store = FeatureStore(
            make_backbone().feature_spec(), make_images(), cache_dir=cache, shard_size=4
        )
        report = fill_features(store, batch_size=3, progress=False)
        Path(out, f"rank{rank}.json").write_text(
            json.dumps(
                {"rows": report.rows.tolist(), "missing": report.missing, "pid": os.getpid()}
            )
        )
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_two_ranks_fill_disjoint_shares_whose_union_is_complete(tmp_path: Path) -> None:
    images, backbone = make_images(), make_backbone()
    cache = tmp_path / "cache"
    first = FeatureStore(backbone.feature_spec(), images, cache_dir=cache)
    first.fill(range(5), progress=False)  # already cached: no rank computes these
    mp.spawn(_rank_fill, args=(str(cache), _free_port(), str(tmp_path)), nprocs=2, join=True)
    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["missing"] for r in reports] == [N_IMAGES - 5] * 2
    shares = [set(r["rows"]) for r in reports]
    assert not shares[0] & shares[1]
    assert shares[0] | shares[1] == set(range(5, N_IMAGES))
    assert abs(len(shares[0]) - len(shares[1])) <= 1  # an even split
    # on disk: each rank's shards hold exactly its share's images
    by_pid = shard_keys(first.root)
    keys = images.content_keys(np.arange(N_IMAGES))
    for report, share in zip(reports, shares, strict=True):
        assert by_pid[str(report["pid"])] == {keys[r] for r in share}
    store = FeatureStore(backbone.feature_spec(), images, cache_dir=cache)
    counts = count_encoded(store)
    assert len(store) == N_IMAGES
    torch.testing.assert_close(
        torch.from_numpy(store.features(range(N_IMAGES))),
        direct(backbone, images, list(range(N_IMAGES))),
    )
    assert sum(counts) == 0


@pytest.mark.slow
def test_the_features_command_fills_with_two_processes(tmp_path: Path) -> None:
    """``python -m lightning_mlsr features`` with ``--trainer.devices=2``, as a user runs it:
    the two processes write disjoint shards whose union is the run's images."""
    from tests.helpers import write_atomic

    collection = write_atomic(tmp_path / "col")
    cache = tmp_path / "cache"
    env = dict(os.environ, WANDB_MODE="offline", TOKENIZERS_PARALLELISM="false")
    env["PYTHONPATH"] = f"{ROOT}{os.pathsep}{env.get('PYTHONPATH', '')}"
    args = [
        "features",
        "--config",
        str(ROOT / "experiments" / "paper" / "m1_mlm_mlm_image.yaml"),
        f"--data.collection={collection}",
        f"--data.features.cache_dir={cache}",
        "--model.doc_encoder.init_args.image_backbone=test_efficientnet",
        "--model.doc_encoder.init_args.image_pretrained=false",
        "--model.doc_encoder.init_args.image_size=32",
        "--trainer.accelerator=cpu",
        "--trainer.devices=2",
        "--trainer.strategy=ddp",
    ]
    proc = subprocess.run(
        [sys.executable, "-m", "lightning_mlsr", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "filled 4 missing image features with 2 process(es)" in proc.stdout
    (root,) = {p.parent for p in cache.rglob("*.index.npz")}  # one store: the same weights
    by_pid = shard_keys(root)
    assert len(by_pid) == 2  # both processes wrote
    first, second = by_pid.values()
    assert not first & second and len(first | second) == 4  # the collection's 4 images


def test_features_is_a_subcommand_of_the_cli_with_its_own_help(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``python -m lightning_mlsr --help`` lists ``features`` beside the Trainer's
    subcommands, and ``features --help`` shows the fit's options and ``--rows``."""
    from lightning_mlsr.training.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    assert "{fit,validate,test,predict,features}" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_:
        main(["features", "--help"])
    assert exit_.value.code == 0
    shown = capsys.readouterr().out
    assert "Fill the frozen image-feature cache" in shown
    assert "--rows {run,all}" in shown and "--trainer.devices" in shown
