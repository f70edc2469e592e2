"""Scan a whole collection's images in parallel and list the unusable ones.

    python -m lightning_mlsr.data check PATH [--workers N] [--output FILE]

Decodes every image (row group by row group, one worker process per CPU) with a progress
bar, and writes ``image_id<TAB>reason`` for every image that is missing or undecodable
to ``PATH/unusable_images.tsv`` (or ``--output``); on the way it keeps every row group's
content keys (:mod:`~lightning_mlsr.data.features.content_keys`), so feature lookups never need to
read the bytes again. Later ``load_collection`` calls skip
the images it lists (``on_corrupt_image="skip"``) or name them (``"error"``), so training
never meets them.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import sys
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pyarrow.parquet as pq
from tqdm.auto import tqdm

from lightning_mlsr.data.collection.arrow import as_ids
from lightning_mlsr.data.collection.decode import CorruptImageError, decode_image
from lightning_mlsr.data.collection.image_store import binary_column
from lightning_mlsr.data.collection.layout import (
    BUNDLED_DIR,
    UNUSABLE_IMAGES_FILE,
    find_layout,
    resolve_root,
)
from lightning_mlsr.data.errors import DataError
from lightning_mlsr.data.features.content_keys import GroupKeyCache, keys_of
from lightning_mlsr.io.atomic import atomic_write_text

__all__ = ["check_images", "main"]


def _check_group(task: tuple[str, int]) -> tuple[int, list[tuple[str, str]]]:
    """Decode every image of one row group: (rows checked, [(image_id, reason)])."""
    path, group = task
    table = pq.ParquetFile(path).read_row_group(group, columns=["image_id", "image"])
    ids = as_ids(table, "image_id", Path(path)).to_pylist()
    data = binary_column(table["image"], path)
    GroupKeyCache().save(path, group, keys_of(data))  # later feature lookups skip the bytes
    bad = []
    for i, image_id in enumerate(ids):
        try:
            decode_image(data[i].as_py(), image_id)
        except CorruptImageError as err:
            bad.append((image_id, err.reason))
    return len(ids), bad


def check_images(
    path_or_name: str | os.PathLike[str],
    workers: int | None = None,
    output: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> tuple[Path, dict[str, str]]:
    """Decode every image of a collection; write and return the unusable ones.

    Where the list goes is checked before the scan (a read-only collection, or a bundled one
    inside the installed package, needs ``output``), so a long scan never ends in an error.
    """
    if isinstance(workers, bool) or (workers is not None and workers < 1):
        raise DataError(f"--workers must be a positive number of processes, got {workers}")
    root = resolve_root(path_or_name)
    if output is None and root.resolve().is_relative_to(BUNDLED_DIR.resolve()):
        raise DataError(
            f"{path_or_name!r} is a bundled collection inside the installed package "
            f"({root}); its images are checked by the test suite, and the package folder is "
            "no place for output: pass --output FILE to check it anyway"
        )
    out = Path(output) if output is not None else root / UNUSABLE_IMAGES_FILE
    _check_writable(out, given=output is not None)
    files = find_layout(root).image_files
    tasks = [(str(f), g) for f in files for g in range(pq.ParquetFile(f).metadata.num_row_groups)]
    total = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    bad: dict[str, str] = {}
    workers = workers or os.cpu_count() or 1
    with tqdm(total=total, desc="checking images", unit=" img", disable=not progress) as bar:
        if workers == 1:
            results = map(_check_group, tasks)
            for n, found in results:
                bad.update(found)
                bar.update(n)
        else:
            with ProcessPoolExecutor(workers) as pool:
                for n, found in pool.map(_check_group, tasks, chunksize=4):
                    bad.update(found)
                    bar.update(n)
    table = io.StringIO(newline="")
    writer = csv.writer(table, delimiter="\t", lineterminator="\n")
    writer.writerow(["image_id", "reason"])
    writer.writerows(sorted(bad.items()))
    atomic_write_text(out, table.getvalue())
    return out, bad


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive number of processes, got {text!r}")
    return value


def _check_writable(out: Path, given: bool) -> None:
    """Fail now, naming the file, if ``out`` cannot be written (not after the scan)."""
    folder = out.parent
    probe = folder / f".{out.name}.probe{os.getpid()}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe.touch()
        probe.unlink()
    except OSError as err:
        hint = "choose another --output" if given else "pass --output FILE somewhere writable"
        raise DataError(
            f"cannot write the list of unusable images to {out} ({err.strerror}); {hint}"
        ) from err


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lightning_mlsr.data",
        description="Tools for image-suggestion collections.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="decode every image, write the unusable ids")
    check.add_argument("path", help="collection directory or bundled collection name")
    check.add_argument(
        "--workers", type=_positive_int, default=None, help="processes (default: CPUs)"
    )
    check.add_argument("--output", default=None, help=f"default: PATH/{UNUSABLE_IMAGES_FILE}")
    args = parser.parse_args(argv)
    try:
        out, bad = check_images(args.path, args.workers, args.output)
    except (DataError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{len(bad)} unusable image(s) written to {out}")
    return 0
