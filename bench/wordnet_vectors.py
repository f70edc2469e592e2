"""Realistic vectors for the index benchmark: WordNet 3.0's glosses (documents) and lemmas
(queries), encoded by the bundled SPLADE-tiny, and proxy documents of any collection size
made from them.

Imports neither numba nor lightning_mlsr at load (the benchmark sets its thread pools'
sizes first); the encoder is imported when first needed.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

VOCAB = 30522  # BERT-uncased wordpieces: SPLADE-tiny's vocabulary, every vector's width
WORDNET_HELP = (
    "WordNet 3.0's database files (data.noun, data.verb, data.adj, data.adv), e.g. from "
    "Debian's wordnet-base package without installing it: `apt-get download wordnet-base && "
    "dpkg-deb -x wordnet-base_*.deb wn` then `--wordnet wn/usr/share/wordnet`"
)


WORDNET_FILES = ("data.noun", "data.verb", "data.adj", "data.adv")


@dataclass
class WordNet:
    ids: list[str]  # "<pos><offset>", unique
    glosses: list[str]  # definition and examples
    lemmas: list[list[str]]  # the synset's words, underscores as spaces


def read_wordnet(directory: str | Path) -> WordNet:
    """Every synset of WordNet's ``data.*`` files: id, gloss and lemmas."""
    root = Path(directory)
    missing = [f for f in WORDNET_FILES if not (root / f).is_file()]
    if missing:
        raise FileNotFoundError(f"{root} lacks {', '.join(missing)}: pass {WORDNET_HELP}")
    out = WordNet([], [], [])
    for name in WORDNET_FILES:
        with (root / name).open(encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("  ") or " | " not in line:  # license header
                    continue
                head, gloss = line.split(" | ", 1)
                fields = head.split()
                n_words = int(fields[3], 16)
                out.ids.append(f"{fields[2]}{fields[0]}")
                out.glosses.append(gloss.strip())
                out.lemmas.append([w.replace("_", " ") for w in fields[4 : 4 + 2 * n_words : 2]])
    return out


def lemma_queries(wn: WordNet, n: int, seed: int) -> list[str]:
    """``n`` distinct lemmas of synsets drawn at random (keyword queries of 1-3 words)."""
    rng = np.random.default_rng(seed)
    seen: dict[str, None] = {}
    for s in rng.permutation(len(wn.ids)):
        lemma = wn.lemmas[s][int(rng.integers(len(wn.lemmas[s])))]
        seen.setdefault(lemma.split("(")[0].strip(), None)
        if len(seen) == n:
            break
    return list(seen)


def encode_texts(
    texts: list[str],
    max_length: int,
    cache_dir: Path | None,
    batch_size: int = 128,
    chunk: int = 4096,
) -> sp.csr_matrix:
    """Zero-shot SPLADE-tiny vectors of ``texts`` (the bundled MLM head, max pooling).

    Encoded in chunks of ``chunk`` texts, each cached on disk under a hash of its texts and
    settings, so an interrupted run resumes and a larger run reuses a smaller one's chunks
    (the realistic collection is a seeded permutation, so ``--max-docs N`` takes a prefix).
    Shape: (len(texts), 30522).
    """
    import hashlib

    head: Any = None
    blocks = []
    for start in range(0, len(texts), chunk):
        part = texts[start : start + chunk]
        digest = hashlib.sha1(
            "\n".join([f"splade-tiny max {max_length}", *part]).encode("utf-8")
        ).hexdigest()[:16]
        path = cache_dir / f"splade-tiny-{len(part)}-{digest}.npz" if cache_dir else None
        if path is not None and path.exists():
            blocks.append(sp.load_npz(path).tocsr())
            continue
        if head is None:
            from lightning_mlsr.baselines.common import text_batches
            from lightning_mlsr.io.pretrained import load_tokenizer
            from lightning_mlsr.models.text import MLMHead
            from lightning_mlsr.retrieval.batch_encoding import encode_loader

            head = MLMHead("splade-tiny", pooling="max").eval()
            tokenizer = load_tokenizer("splade-tiny")
        t0 = time.perf_counter()
        batches = text_batches(part, tokenizer, batch_size, max_length, "encode", False)
        block = encode_loader(head, batches, width=head.vocab_size, device="cpu")[1]
        if len(texts) > chunk:
            print(
                f"encoded texts {start:,}-{start + len(part):,} of {len(texts):,} "
                f"in {time.perf_counter() - t0:.0f} s",
                file=sys.stderr,
                flush=True,
            )
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            sp.save_npz(path, block)
        blocks.append(block)
    if not blocks:
        return sp.csr_matrix((0, VOCAB), dtype=np.float32)
    return sp.vstack(blocks, format="csr")


def proxy_documents(
    vectors: sp.csr_matrix, n_docs: int, seed: int, chunk: int = 1_000_000
) -> sp.csr_matrix:
    """``n_docs`` documents, each the first half (rounded up) of one random row's entries
    and the second half of another's, duplicate terms summed: real term statistics and
    weights at any collection size. Built ``chunk`` documents at a time.

    Shape: vectors (n_rows, V) -> (n_docs, V)
    """
    rng = np.random.default_rng(seed)
    lengths = np.diff(vectors.indptr)
    first_half = (lengths + 1) // 2
    blocks = []
    for start in range(0, n_docs, chunk):
        n = min(chunk, n_docs - start)
        a, b = rng.integers(vectors.shape[0], size=(2, n))
        starts = np.stack([vectors.indptr[a], vectors.indptr[b] + first_half[b]], axis=1).ravel()
        lens = np.stack([first_half[a], lengths[b] - first_half[b]], axis=1).ravel()
        offsets = np.cumsum(lens) - lens  # (2n,) where each half starts in the output
        pos = np.repeat(starts - offsets, lens) + np.arange(int(lens.sum()))
        indptr = np.concatenate([[0], np.cumsum(lens.reshape(n, 2).sum(axis=1))])
        block = sp.csr_matrix(
            (vectors.data[pos], vectors.indices[pos], indptr), shape=(n, vectors.shape[1])
        )
        block.sum_duplicates()
        blocks.append(block)
    return sp.vstack(blocks, format="csr")
