"""Scale benchmark of the collection reader: load, first training batch, evaluation pass.

Writes synthetic collections in the AToMiC schema and Hugging Face download layout (real
JPEG bytes of ~16 KB each, multilingual caption lists, section texts, TREC qrels as
parquet) and measures, each in a fresh process, for every size:

- ``load``: ``load_collection`` wall time and peak RSS;
- ``first batch``: from process start to the first training batch of a model that reads
  pixels (unfrozen tiny image backbone: every batch decodes its images from the parquet
  row groups), with its peak RSS;
- ``eval``: one evaluation pass (encode the corpus and the validation queries with a
  caption model, build the inverted index, search, score) over a corpus of
  ``--eval-corpus`` images (``evaluation.corpus="judged+sampled"``), time per corpus image.

    python bench/bench_scale.py --sizes 100000 300000 --root /tmp/bench_scale
    python bench/bench_scale.py --sizes 1000 --eval-corpus 500   # smoke run

Targets (issue 11, 2-core machine): at 1M images load ≤ 60 s and peak RSS ≤ 1.5 GB;
first training batch within 2 minutes; eval time per image flat (±20%) from 100k to 1M.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

WORDS = [
    "river",
    "castle",
    "bridge",
    "church",
    "mountain",
    "portrait",
    "station",
    "museum",
    "garden",
    "harbour",
    "tower",
    "painting",
    "village",
    "school",
    "market",
    "street",
    "festival",
    "forest",
    "lake",
    "statue",
    "map",
    "flag",
    "team",
    "Brücke",
    "Kirche",
    "Berg",
    "Schloss",
    "Fluss",
    "église",
    "rivière",
    "montagne",
    "château",
    "pont",
    "iglesia",
    "río",
]
LANGUAGES = ["en", "de", "fr"]
SHARD_ROWS = 25_000
ROW_GROUP = 100  # what Hugging Face `datasets` writes for image datasets


def _jpeg_pool(n: int, seed: int = 0) -> list[bytes]:
    """Distinct real JPEGs of roughly 16 KB (smooth gradients plus noise, 192 px)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    pool = []
    yy, xx = np.mgrid[0:192, 0:192]
    for _ in range(n):
        base = np.stack([(xx * rng.uniform(0.5, 2) + yy * rng.uniform(0, 1)) % 256] * 3, -1)
        noise = rng.normal(0, 30, base.shape)
        pixels = np.clip(base * rng.uniform(0.5, 1, 3) + noise, 0, 255).astype(np.uint8)
        out = io.BytesIO()
        Image.fromarray(pixels).save(out, format="JPEG", quality=80)
        pool.append(out.getvalue())
    return pool


def _unique(jpeg: bytes, row: int) -> bytes:
    """The same picture with a COM segment naming the row: distinct bytes, still valid."""
    comment = f"row {row}".encode()
    return jpeg[:2] + b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment + jpeg[2:]


class _Sentences:
    """Random sentences of ``n`` words, drawn from a pool (fast for millions of rows)."""

    def __init__(self, rng: np.random.Generator, pool: int = 4096) -> None:
        self.rng = rng
        self.pool = pool
        self.cache: dict[int, list[str]] = {}

    def __call__(self, n: int) -> str:
        if n not in self.cache:
            self.cache[n] = [" ".join(self.rng.choice(WORDS, size=n)) for _ in range(self.pool)]
        return self.cache[n][int(self.rng.integers(self.pool))]


def generate(root: Path, n: int, seed: int = 0) -> Path:
    """Write an ``n``-image collection in the HF layout under ``root`` (skipped if there)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    done = root / "DONE"
    if done.is_file():
        return root
    rng = np.random.default_rng(seed)
    sentence = _Sentences(rng)
    pool = _jpeg_pool(64, seed)
    images_dir = root / "AToMiC-Images-v0.2" / "data"
    texts_dir = root / "AToMiC-Texts-v0.2.1" / "data"
    qrels_dir = root / "AToMiC-Qrels-v0.2" / "data"
    for d in (images_dir, texts_dir, qrels_dir):
        d.mkdir(parents=True, exist_ok=True)
    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    shards = range(0, n, SHARD_ROWS)
    for k, start in enumerate(shards):
        rows = range(start, min(start + SHARD_ROWS, n))
        # English first (every image has an English caption), then 0-2 other languages
        langs = [["en", *LANGUAGES[1 : 1 + int(rng.integers(0, 3))]] for _ in rows]
        table = pa.table(
            {
                "image_url": [f"https://upload.example.org/{r}.jpg" for r in rows],
                "image_id": [f"{r:08x}" for r in rows],
                "language": langs,
                "caption_reference_description": [[sentence(8) for _ in ls] for ls in langs],
                "caption_alt_text_description": [[sentence(4) for _ in ls] for ls in langs],
                "caption_attribution_description": [[sentence(12) for _ in ls] for ls in langs],
                "image": pa.array(
                    [{"bytes": _unique(pool[r % len(pool)], r), "path": None} for r in rows],
                    image_type,
                ),
            }
        )
        pq.write_table(
            table,
            images_dir / f"train-{k:05d}-of-{len(shards):05d}.parquet",
            row_group_size=ROW_GROUP,
            use_dictionary=["image_url", "image_id", "language"],
        )
        del table
    n_texts = n
    texts = pa.table(
        {
            "text_id": [f"t{r:08x}" for r in range(n_texts)],
            "page_title": [sentence(3) for _ in range(n_texts)],
            "section_title": [sentence(2) for _ in range(n_texts)],
            "hierachy": [[sentence(2)] for _ in range(n_texts)],
            "context_page_description": [sentence(30) for _ in range(n_texts)],
            "context_section_description": [sentence(40) for _ in range(n_texts)],
            "media": [[f"{r:08x}"] for r in range(n_texts)],
        }
    )
    pq.write_table(texts, texts_dir / "train-00000-of-00001.parquet")
    n_val = min(5000, n // 10)
    perm = rng.permutation(n)
    for split, texts_of in (("train", range(n_val, n)), ("validation", range(n_val))):
        t = np.asarray(texts_of)
        qrels = pa.table(
            {
                "text_id": [f"t{r:08x}" for r in t],
                "Q0": ["Q0"] * len(t),
                "image_id": [f"{r:08x}" for r in perm[t]],
                "rel": np.ones(len(t), np.int64),
            }
        )
        pq.write_table(qrels, qrels_dir / f"{split}-00000-of-00001.parquet")
    done.write_text(str(n))
    return root


# ----------------------------------------------------------------------------- measurements
# Each runs in a fresh interpreter: ``python bench_scale.py --measure KIND ROOT ...``


def _peak_rss_mb() -> float:
    """This process's peak RSS (``VmHWM``; ``ru_maxrss`` would carry the parent's over)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure_load(root: str) -> dict[str, float]:
    from lightning_mlsr.data import load_collection

    rss_imports = _peak_rss_mb()
    start = time.perf_counter()
    c = load_collection(root)
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "peak_rss_mb": _peak_rss_mb(),
        "rss_after_imports_mb": rss_imports,
        "images": len(c.images),
        "resident_image_bytes": getattr(getattr(c.images, "store", None), "resident_bytes", -1),
    }


def measure_first_batch(root: str, started: float) -> dict[str, float]:
    from lightning_mlsr.data.datamodule import RetrievalDataModule
    from lightning_mlsr.data.settings import BatchingSettings
    from lightning_mlsr.io.encoder_reads import BatchInputs
    from lightning_mlsr.models import ImageMLMHead, MLPHead

    dm = RetrievalDataModule(root, batching=BatchingSettings(batch_size=64, num_workers=1))
    image = ImageMLMHead(
        image_backbone="test_efficientnet",
        image_pretrained=False,
        image_size=64,
        freeze_image_backbone=False,
    )
    dm.set_batch_inputs(BatchInputs(MLPHead().reads(), image.reads()))
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["doc"]["pixel_values"].shape[0] == 64
    return {"seconds_since_start": time.time() - started, "peak_rss_mb": _peak_rss_mb()}


def measure_eval(root: str, corpus: int) -> dict[str, float]:
    import torch

    from lightning_mlsr.data.datamodule import RetrievalDataModule
    from lightning_mlsr.data.settings import BatchingSettings, EvaluationSettings
    from lightning_mlsr.models import MLPHead
    from lightning_mlsr.retrieval.evaluation import retrieve, score
    from lightning_mlsr.training.callbacks.split_encoding import encode_split
    from lightning_mlsr.training.system.module import SparseBiEncoder

    torch.manual_seed(0)
    module = SparseBiEncoder(MLPHead(pooling="sum"), MLPHead(pooling="max"))
    dm = RetrievalDataModule(
        root,
        batching=BatchingSettings(eval_batch_size=512),
        evaluation=EvaluationSettings(corpus="judged+sampled", distractors=corpus),
    )
    dm.set_batch_inputs(module.batch_inputs())
    dm.setup("validate")
    n_docs = len(dm.corpus_rows("validation"))
    start = time.perf_counter()
    encoded = encode_split(module, dm, "validation")
    run = retrieve(encoded.docs, encoded.doc_ids, encoded.queries, encoded.query_ids, 1000)
    means = score(run, dm.qrels("validation"), ("RR@10",)).means
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "corpus": n_docs,
        "queries": len(encoded.query_ids),
        "ms_per_image": 1000 * seconds / n_docs,
        "peak_rss_mb": _peak_rss_mb(),
        "rr10": float(next(iter(means.values()))),
    }


def _run(kind: str, root: Path, *extra: str, timeout: int = 900) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--measure", kind, str(root), *extra]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if done.returncode:
        raise RuntimeError(f"{kind} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 300_000, 1_000_000])
    parser.add_argument("--root", type=Path, default=Path("/tmp/bench_scale"))
    parser.add_argument("--eval-corpus", type=int, default=100_000)
    parser.add_argument(
        "--repeats", type=int, default=2, help="evaluation passes per size, interleaved"
    )
    parser.add_argument("--skip", nargs="*", default=[], choices=["load", "batch", "eval"])
    parser.add_argument("--measure", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        kind, root, *rest = args.measure
        if kind == "load":
            out = measure_load(root)
        elif kind == "batch":
            out = measure_first_batch(root, float(rest[0]))
        else:
            out = measure_eval(root, int(rest[0]))
        print(json.dumps(out))
        return
    per_image: dict[int, list[float]] = {n: [] for n in args.sizes}
    for n in args.sizes:
        root = args.root / f"atomic_{n}"
        start = time.perf_counter()
        generate(root, n)
        size = sum(f.stat().st_size for f in root.rglob("*.parquet"))
        row: dict[str, object] = {
            "images": n,
            "parquet_gb": round(size / 1e9, 2),
            "generate_s": round(time.perf_counter() - start, 1),
        }
        if "load" not in args.skip:
            row["load"] = _run("load", root)
        if "batch" not in args.skip:
            row["first_batch"] = _run("batch", root, str(time.time()))
        print(json.dumps(row), flush=True)
    if "eval" in args.skip:
        return
    # evaluation passes interleaved across sizes (A B A B ...), so that a change in the
    # machine's load hits every size alike; the ratio is taken between medians
    for repeat in range(args.repeats):
        for n in args.sizes:
            out = _run("eval", args.root / f"atomic_{n}", str(args.eval_corpus), timeout=3600)
            per_image[n].append(out["ms_per_image"])
            print(json.dumps({"images": n, "repeat": repeat, "eval": out}), flush=True)
    base = float(np.median(per_image[args.sizes[0]]))
    for n in args.sizes:
        median = float(np.median(per_image[n]))
        summary = {"images": n, "eval_ms_per_image_median": round(median, 3)}
        summary["ratio_to_smallest"] = round(median / base, 3)
        print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
