"""Shared by test modules: tiny images, a tiny AToMiC-layout collection, a search oracle,
every registered head at test size.

Test modules import these from here, never from one another.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from PIL import Image

from lightning_mlsr.io.encoder_reads import BatchInputs
from lightning_mlsr.models import HEADS, Encoder, ImageMLMHead, MLPHead, list_heads


def png(color: tuple[int, int, int, int], size: int = 8) -> bytes:
    out = io.BytesIO()
    Image.new("RGBA", (size, size), color).save(out, format="PNG")
    return out.getvalue()


def jpeg(color: tuple[int, int, int], size: int = 8) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (size, size), color).save(out, format="JPEG", quality=95)
    return out.getvalue()


RED = png((255, 0, 0, 255))
TRANSPARENT = png((0, 0, 255, 0))  # fully transparent: composites to white
BLUE_JPEG = jpeg((0, 0, 255))
YELLOW = png((255, 255, 0, 255))

IMAGE_STRUCT = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
STRINGS = pa.list_(pa.string())


def image_row(image_id, data, languages, reference, alt=None, **extra):
    return {
        "image_id": image_id,
        "image": data,
        "image_url": None,
        "language": languages,
        "caption_reference_description": reference,
        "caption_alt_text_description": alt if alt is not None else [""] * len(reference),
        "caption_attribution_description": [None] * len(reference),
        **extra,
    }


def default_images() -> tuple[list[dict], list[dict]]:
    """Two image files: the first with a struct image column, the second binary."""
    first = [
        image_row("I1", RED, ["en", "de"], ["red square", "rotes Quadrat"], ["Red", ""]),
        # whitespace to normalise, the English entry repeated, a null alt text
        image_row(
            "I2",
            BLUE_JPEG,
            ["en", "de", "en"],
            [" blue\n square ", "blaues Quadrat", "blue square"],
            ["a photo", None, None],
        ),  # fmt: skip
        # languages in another order: captions follow the language list, not positions
        image_row("I3", TRANSPARENT, ["de", "en"], ["durchsichtig", "see-through"]),
    ]
    second = [image_row("I4", YELLOW, ["en", "de"], ["yellow square", None])]
    return first, second


def default_texts() -> list[dict]:
    return [
        {
            "text_id": "T1",
            "page_title": "Colours",
            "section_title": "Red  things",
            "context_page_description": "page",
            "context_section_description": "  about\nred\tthings ",
            "page_url": "https://example.org/colours",  # an extra AToMiC column
        },
        {
            "text_id": "T2",
            "page_title": "Colours",
            "section_title": "Blue",
            "context_page_description": "",
            "context_section_description": None,
            "page_url": None,
        },
        {
            "text_id": "T3",
            "page_title": "Shapes",
            "section_title": "Yellow",
            "context_page_description": "",
            "context_section_description": "",
            "page_url": None,
        },
        {  # never judged, so an empty query is fine
            "text_id": "T4",
            "page_title": "",
            "section_title": "",
            "context_page_description": "",
            "context_section_description": "",
            "page_url": None,
        },
    ]


DEFAULT_QRELS = {
    "train.trec": "T1 Q0 I1 1\nT1 Q0 I2 0\n\nT2 Q0 I2 2\n",
    "test.trec": "T3 Q0 I4 1\n",
}
DEFAULT_QRELS_PARQUET = {  # validation comes as parquet with the TREC Q0 column
    "validation.parquet": {"text_id": ["T2"], "Q0": ["Q0"], "image_id": ["I3"], "rel": [1]}
}


def images_table(rows: list[dict], binary: bool = False) -> pa.Table:
    rows = [dict(r) for r in rows]
    if not binary:
        for r in rows:
            r["image"] = None if r["image"] is None else {"bytes": r["image"], "path": "x.png"}
    schema = pa.schema(
        [
            ("image_id", pa.string()),
            ("image", pa.binary() if binary else IMAGE_STRUCT),
            ("image_url", pa.string()),
            ("language", STRINGS),
            ("caption_reference_description", STRINGS),
            ("caption_alt_text_description", STRINGS),
            ("caption_attribution_description", STRINGS),
        ]
    )
    return pa.Table.from_pylist(rows, schema=schema)


def write_atomic(
    root: Path,
    images: tuple[list[dict], ...] | None = None,
    texts: list[dict] | None = None,
    qrels: dict[str, str] | None = None,
    qrels_parquet: dict[str, dict] | None = None,
    collection_json: dict | None = None,
) -> Path:
    """Write a tiny AToMiC-layout collection under ``root``."""
    images = default_images() if images is None else images
    (root / "images").mkdir(parents=True)
    for k, rows in enumerate(images):
        pq.write_table(images_table(rows, binary=k % 2 == 1), root / "images" / f"part-{k}.parquet")
    (root / "texts").mkdir()
    pq.write_table(pa.Table.from_pylist(texts or default_texts()), root / "texts" / "texts.parquet")
    (root / "qrels").mkdir()
    for name, text in (DEFAULT_QRELS if qrels is None else qrels).items():
        (root / "qrels" / name).write_text(text)
    for name, columns in (
        DEFAULT_QRELS_PARQUET if qrels_parquet is None else qrels_parquet
    ).items():
        pq.write_table(pa.table(columns), root / "qrels" / name)
    if collection_json is not None:
        (root / "collection.json").write_text(json.dumps(collection_json))
    return root


def brute_force_run(encoded: Any, k: int, dense: bool) -> dict[str, dict[str, float]]:
    """The top ``k`` documents of every query from the full ``(Q, N)`` score matrix.

    The oracle for the evaluator's index/faiss search: no index, every pair scored. Sparse
    runs keep only scores > 0 (as the inverted index does); ties go to the lower document
    row, the index's order. ``encoded`` is a :class:`lightning_mlsr.training.callbacks.split_encoding.EncodedSplit`.
    """
    queries, docs = encoded.queries, encoded.docs
    scores = (queries @ docs.T).toarray() if sp.issparse(queries) else queries @ docs.T  # (Q, N)
    run: dict[str, dict[str, float]] = {}
    for qid, row in zip(encoded.query_ids, np.asarray(scores)):
        candidates = np.arange(len(row)) if dense else np.flatnonzero(row > 0)
        best = candidates[np.lexsort((candidates, -row[candidates]))][:k]
        run[qid] = {encoded.doc_ids[j]: float(row[j]) for j in best}
    return run


def quiet_trainer(root: Path, callbacks: list[Any], **kwargs: Any) -> Any:
    """A Lightning Trainer for in-process tests: no logger, bar, summary; ``root`` for files."""
    import lightning as L

    return L.Trainer(
        logger=False,
        callbacks=callbacks,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=root,
        **kwargs,
    )


def dense_teacher_checkpoint(path: Path) -> Path:
    """A bi-encoder checkpoint whose query and document encoders are MiniLM-L6 as shipped,
    with the document side's last layer perturbed (so the two sides differ)."""
    from lightning_mlsr.models.dense import DenseTextHead

    q = DenseTextHead(backbone="minilm-l6", pooling="mean")
    d = DenseTextHead(backbone="minilm-l6", pooling="mean")
    with torch.no_grad():
        for p in d.encoder.encoder.layer[-1].parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=torch.Generator().manual_seed(0)))
    state = {f"query_encoder.{k}": v for k, v in q.state_dict().items()}
    state.update({f"doc_encoder.{k}": v for k, v in d.state_dict().items()})
    torch.save({"state_dict": state}, path)
    return path


def teacher_cosines(ckpt: Path, words: list[str], captions: list[str]) -> torch.Tensor:
    """A dense bi-encoder checkpoint's cosines ``(len(words), len(captions))`` straight from
    its encoders, one text at a time (no padding): mean of the last hidden states,
    L2-normalised. The oracle for what a teacher ranks (pseudo-queries, hard negatives)."""
    from lightning_mlsr.io.pretrained import load_tokenizer
    from lightning_mlsr.models.backbones import load_text_encoder

    state = torch.load(ckpt, weights_only=False)["state_dict"]
    tok = load_tokenizer("minilm-l6")
    out = []
    for prefix, texts, length in (("query_encoder.", words, 16), ("doc_encoder.", captions, 32)):
        enc = load_text_encoder("minilm-l6").eval()
        enc.load_state_dict(
            {
                k[len(prefix) + len("encoder.") :]: v
                for k, v in state.items()
                if k.startswith(prefix)
            }
        )
        embs = []
        with torch.no_grad():
            for text in texts:  # one at a time: no padding at all
                b = tok([text], truncation=True, max_length=length, return_tensors="pt")
                h = enc(
                    input_ids=b["input_ids"], attention_mask=b["attention_mask"]
                ).last_hidden_state
                embs.append(F.normalize(h.mean(1), dim=-1)[0])
        out.append(torch.stack(embs))
    return out[0] @ out[1].T


class TableTeacher(torch.nn.Module):
    """A tiny dense teacher: the mean of a seeded ``(50, 6)`` embedding table over the
    unpadded tokens; ``seen`` counts the texts it encodes (what a cache must save)."""

    def __init__(self) -> None:
        super().__init__()
        self.table = torch.nn.Parameter(
            torch.randn(50, 6, generator=torch.Generator().manual_seed(3))
        )
        self.seen = 0

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        self.seen += inputs["input_ids"].shape[0]
        m = inputs["attention_mask"].unsqueeze(-1).to(self.table.dtype)  # (B, L, 1)
        return (self.table[inputs["input_ids"]] * m).sum(1) / m.sum(1)  # (B, H)


def token_batch(rows: list[list[int]], length: int) -> dict[str, torch.Tensor]:
    """``input_ids``/``attention_mask`` ``(B, length)`` of token-id rows, right-padded."""
    ids = torch.zeros(len(rows), length, dtype=torch.long)
    mask = torch.zeros(len(rows), length, dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)], mask[i, : len(row)] = torch.tensor(row), 1
    return {"input_ids": ids, "attention_mask": mask}


# --------------------------------------------------------------------------- heads

TINY_IMAGE = {"image_backbone": "test_efficientnet", "image_pretrained": False}
#: test-sized arguments for the registered heads whose defaults are too big (a new head
#: with small defaults needs no entry: the registry puts it under the contract test)
TINY_ARGS: dict[str, Callable[[], dict[str, Any]]] = {
    "image_mlm": lambda: TINY_IMAGE,
    "fused": lambda: TINY_IMAGE,
    "late_fusion": lambda: {"text_head": MLPHead(), "image_head": ImageMLMHead(**TINY_IMAGE)},
    "dense_image": lambda: TINY_IMAGE,
    "d2s": lambda: {"backbone": "splade-tiny"},
}
#: configurations beyond each head's defaults: (registry name, non-default arguments)
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "mlp-max": ("mlp", {"pooling": "max"}),
    "fused-mlm": ("fused", {"head": "mlm"}),
}
#: every registered head with its defaults, plus the variants
HEAD_CONFIGS: dict[str, tuple[str, dict[str, Any]]] = {
    **{name: (name, {}) for name in list_heads()},
    **VARIANTS,
}


def make_head(config: str) -> Encoder:
    """A new head of a configuration of :data:`HEAD_CONFIGS`, built through the registry."""
    name, overrides = HEAD_CONFIGS[config]
    args = TINY_ARGS.get(name, dict)()
    return HEADS[name](**{**args, **overrides})


def batch_inputs(query: Encoder, doc: Encoder) -> BatchInputs:
    """What a model of these encoders hands the DataModule (``model.batch_inputs()``)."""
    return BatchInputs(query.reads(), doc.reads())
