"""Visual concepts as document text: each image's top ImageNet classes, named in words.

One of the paper's open questions is whether visual features help beside the captions. Here
the frozen image backbone's own ImageNet classifier (the packaged EfficientNet-Lite0 by
default) looks at every image, and the names of its ``top_k`` most probable classes (the
first lemma of each WordNet synset timm ships, ``"goldfish"``, ``"Granny Smith"``) become a
caption field of their own, ``caption_visual_concepts``. A text model then reads the image
through those words: with ``data.reading.caption_fields=[caption_visual_concepts]`` alone, or
beside the label (``[caption_reference_description, caption_visual_concepts]``).

The output is an ordinary collection directory (AToMiC layout) that any experiment reads
with ``data.collection: DIR``: the texts are symlinks to the source's, the qrels are the
source's, and the images are the source's parquet files with one more column, a list
aligned with ``language`` that holds the concepts at the English entries (at every entry
when there is no ``language`` column) and empty strings elsewhere. A collection whose
documents are read in other languages than English (``stamps``: its English captions are the
queries) gets them at the first of its default caption languages each image has instead, so
that a model reading its documents as configured reads the concepts once. ``collection.json`` keeps
the source's defaults and records how the concepts were made; ``visual_concepts.tsv`` lists
each image's classes with their probabilities, to read. No query or judgment is read: the
concepts come from the pixels alone. An image that cannot be decoded gets no concepts
(counted, and named in the TSV).

    python -m lightning_mlsr.generate.visual_concepts emoji --out DIR --top-k 5
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from lightning_mlsr.data.collection.layout import find_layout
from lightning_mlsr.data.collection.load import load_collection
from lightning_mlsr.data.errors import DataError
from lightning_mlsr.generate.output_collection import empty_output, write_defaults

__all__ = ["FIELD", "build_visual_concept_collection", "class_names", "top_classes"]

#: the caption column the concepts are written to
FIELD = "caption_visual_concepts"


def class_names() -> list[str]:
    """The 1000 ImageNet-1k class names in the classifier's order: the first lemma of each
    synset's description as timm ships it (``"tench, Tinca tinca"`` -> ``"tench"``)."""
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    return [info.index_to_description(i).split(",")[0].strip() for i in range(1000)]


@torch.no_grad()
def top_classes(
    collection: Any,
    backbone: str = "tf_efficientnet_lite0",
    top_k: int = 5,
    batch_size: int = 64,
) -> tuple[np.ndarray, np.ndarray, list[str | None]]:
    """The ``top_k`` ImageNet classes of every image of ``collection``: class indices and
    softmax probabilities ``(N, top_k)`` (-1 / 0 where undecodable), and each row's decode
    error or None."""
    from lightning_mlsr.data.features.fill import DecodedImages
    from lightning_mlsr.models.image_backbone import ImageBackbone

    model = ImageBackbone(backbone, pretrained=True).eval()
    classes = getattr(model.model, "num_classes", 0)
    if classes != 1000:
        raise ValueError(
            f"image backbone {backbone!r} has {classes} output classes, not ImageNet-1k's "
            f"1000: visual concepts need its ImageNet classifier"
        )
    images = collection.images
    rows = np.arange(len(images))
    dataset = DecodedImages(images, rows, model.transform(), model.data_config["input_size"])
    loader = DataLoader(dataset, batch_size=batch_size, collate_fn=dataset.collate)
    indices = np.full((len(images), top_k), -1, dtype=np.int64)
    probs = np.zeros((len(images), top_k), dtype=np.float32)
    errors: list[str | None] = [None] * len(images)
    for batch_rows, pixels, batch_errors in tqdm(loader, desc="visual concepts", unit="batch"):
        top = model.classify(pixels).softmax(dim=-1).topk(top_k, dim=-1)
        for k, row in enumerate(batch_rows.tolist()):
            if batch_errors[k] is not None:
                errors[row] = batch_errors[k]
                continue
            indices[row] = top.indices[k].numpy()
            probs[row] = top.values[k].numpy()
    return indices, probs, errors


def concept_languages(caption_languages: Sequence[str] | None) -> tuple[str, ...]:
    """Where the concepts are written: ``("en",)`` (every English entry) unless the
    collection's default caption languages leave English out; then those languages, in
    order, of which each image's first present one gets the concepts once."""
    if caption_languages is None or not caption_languages or "en" in caption_languages:
        return ("en",)
    return tuple(caption_languages)


def _with_concepts(
    table: pa.Table, concepts: dict[str, str], languages: tuple[str, ...] = ("en",)
) -> pa.Table:
    """``table`` with :data:`FIELD` added: the concepts of each image at its English
    entries, or (``languages`` other than English) at the first entry of the first of
    ``languages`` it has; every entry when there is no ``language`` column; empty elsewhere."""
    ids = table.column("image_id").to_pylist()
    has_language = "language" in table.column_names
    langs = table.column("language").to_pylist() if has_language else [None] * len(ids)
    column = []
    for image_id, lang in zip(ids, langs, strict=True):
        text = concepts.get(image_id, "")
        codes = list(lang or [])
        if not has_language:
            column.append([text])
        elif languages == ("en",):
            column.append([text if code == "en" else "" for code in codes])
        else:
            first = next((c for c in languages if c in codes), None)
            at = codes.index(first) if first is not None else -1
            column.append([text if k == at else "" for k in range(len(codes))])
    if FIELD in table.column_names:
        raise DataError(f"the source images already have a {FIELD!r} column")
    return table.append_column(FIELD, pa.array(column, pa.list_(pa.string())))


def build_visual_concept_collection(
    source: str | os.PathLike[str],
    out: str | os.PathLike[str],
    backbone: str = "tf_efficientnet_lite0",
    top_k: int = 5,
    batch_size: int = 64,
) -> dict[str, Any]:
    """Write the collection ``source`` with each image's ``top_k`` ImageNet class names as
    the caption field :data:`FIELD` into ``out``; returns how they were made."""
    if not 1 <= top_k <= 20:
        raise ValueError(f"top_k must be in 1..20, got {top_k}")
    collection = load_collection(source, on_missing_caption="keep")
    layout = find_layout(collection.root)
    out = Path(out)
    if out.resolve() == collection.root.resolve():
        raise DataError(f"--out {out} is the source collection itself; pick a new directory")
    names = class_names()
    indices, probs, errors = top_classes(collection, backbone, top_k, batch_size)
    image_ids = list(collection.images.ids)
    concepts = {
        image_id: ", ".join(names[j] for j in indices[row])
        for row, image_id in enumerate(image_ids)
        if errors[row] is None
    }

    empty_output(out)
    for i, path in enumerate(layout.text_files):
        os.symlink(path.resolve(), out / "texts" / f"{i:05d}-{path.name}")
    for path in layout.qrels_files:
        os.symlink(path.resolve(), out / "qrels" / path.name)
    languages = concept_languages(collection.caption_languages)
    for i, path in enumerate(layout.image_files):
        table = _with_concepts(pq.read_table(path), concepts, languages)
        pq.write_table(table, out / "images" / f"{i:05d}-{path.name}")
    unusable = collection.root / "unusable_images.tsv"
    if unusable.is_file():
        (out / "unusable_images.tsv").write_text(unusable.read_text("utf-8"), "utf-8")

    with (out / "visual_concepts.tsv").open("w", encoding="utf-8") as f:
        f.write("image_id\tcaption\tconcepts\tprobabilities\n")
        for row, image_id in enumerate(image_ids):
            if errors[row] is not None:
                f.write(f"{image_id}\t{collection.images.caption(row)}\t\t{errors[row]}\n")
                continue
            p = " ".join(f"{v:.3f}" for v in probs[row])
            f.write(f"{image_id}\t{collection.images.caption(row)}\t{concepts[image_id]}\t{p}\n")

    made = {
        "source": str(collection.root.resolve()),
        "backbone": backbone,
        "classes": "ImageNet-1k (timm ImageNetInfo, first lemma of each synset)",
        "top_k": top_k,
        "languages": list(languages),
        "images": len(image_ids),
        "undecodable": sum(e is not None for e in errors),
        "distinct_concepts": len({int(j) for j in indices[indices >= 0].ravel()}),
        "mean_top1_probability": float(probs[:, 0][indices[:, 0] >= 0].mean())
        if (indices[:, 0] >= 0).any()
        else 0.0,
    }
    write_defaults(collection, out, "visual_concepts", visual_concepts=made)
    return made


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lightning_mlsr.generate.visual_concepts",
        description="Write a collection whose images carry their top ImageNet class names "
        f"as the caption field {FIELD}.",
    )
    parser.add_argument("source", help="collection directory or bundled name (emoji)")
    parser.add_argument("--out", required=True, help="directory of the new collection")
    parser.add_argument("--backbone", default="tf_efficientnet_lite0", help="a timm model")
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args(argv)
    made = build_visual_concept_collection(
        args.source, args.out, args.backbone, args.top_k, args.batch_size
    )
    print(
        f"{made['images']} images, top {made['top_k']} of {made['distinct_concepts']} distinct "
        f"ImageNet classes (mean top-1 probability {made['mean_top1_probability']:.3f}, "
        f"{made['undecodable']} undecodable) -> {args.out}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
