"""Images per second of the frozen-feature fill (:func:`lightning_mlsr.data.features.fill.fill_features`).

Images: the bundled emoji collection's PNGs re-encoded as JPEGs of AToMiC's typical size
(``--size`` px on the long side, quality 85, a little noise so they do not compress to
nothing; the mean file size is printed: AToMiC averages ~16 KB an image). Two figures:

- *decode*: reading, decoding and preprocessing only (what a DataLoader worker does), per
  process: the CPU cores a GPU node needs to feed its GPUs;
- *fill*: the whole fill into a fresh store (decode, ``tf_efficientnet_lite0`` at 224 px,
  shard writes) on ``--device``, in float32 and under bf16 autocast.

    python bench/bench_features.py                   # 256 images, CPU
    python bench/bench_features.py --device cuda --images 4096 --batch 512 --workers 8
"""

from __future__ import annotations

import argparse
import io
import os
import tempfile
import time

import numpy as np
import torch
from PIL import Image

from lightning_mlsr.data import ImageTable
from lightning_mlsr.data.collection.load import load_collection
from lightning_mlsr.data.features.fill import DecodedImages, fill_features
from lightning_mlsr.data.features.store import FeatureStore
from lightning_mlsr.models.image_backbone import ImageBackbone


def atomic_like_jpegs(n: int, size: int) -> list[bytes]:
    """``n`` JPEGs of ``size`` px on the long side (4:3) made from emoji images."""
    images = load_collection("emoji").images
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        rgb = images.load_image(i % len(images)).resize((size, size * 3 // 4), Image.BICUBIC)
        pixels = np.asarray(rgb, dtype=np.int16) + rng.integers(-8, 9, (size * 3 // 4, size, 3))
        buffer = io.BytesIO()
        Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=85)
        out.append(buffer.getvalue())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--size", type=int, default=320, help="long side of the JPEGs, px")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (0: torch's)")
    parser.add_argument(
        "--no-bf16",
        action="store_true",
        help="float32 only (bf16 autocast of depthwise convolutions is slow on most CPUs)",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    blobs = atomic_like_jpegs(args.images, args.size)
    table = ImageTable([f"i{k}" for k in range(len(blobs))], blobs, [""] * len(blobs))
    backbone = ImageBackbone("tf_efficientnet_lite0", pretrained=True)
    print(
        f"{len(blobs)} JPEGs of {args.size}x{args.size * 3 // 4} px, mean "
        f"{np.mean([len(b) for b in blobs]) / 1024:.1f} KiB; device {args.device}, batch "
        f"{args.batch}, {args.workers} workers, {torch.get_num_threads()} torch threads, "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )
    decoded = DecodedImages(table, np.arange(len(blobs)), backbone.transform(), (3, 224, 224))
    start = time.perf_counter()
    for i in range(len(decoded)):
        decoded[i]
    print(f"| decode + preprocess, 1 process | {len(blobs) / (time.perf_counter() - start):.1f} |")
    device_type = torch.device(args.device).type
    runs = [("float32", None)]
    if not args.no_bf16:
        runs.append(("bf16 autocast", lambda: torch.autocast(device_type, dtype=torch.bfloat16)))
    for name, autocast in runs:
        with tempfile.TemporaryDirectory() as cache:
            store = FeatureStore(backbone.feature_spec(), table, cache_dir=cache)
            kwargs = {} if autocast is None else {"autocast": autocast}
            report = fill_features(
                store,
                device=args.device,
                batch_size=args.batch,
                num_workers=args.workers,
                progress=False,
                **kwargs,
            )
        print(f"| fill, {name} | {report.images_per_second:.1f} |")


if __name__ == "__main__":
    main()
