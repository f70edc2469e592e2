"""What one query costs, sparse against dense, beside the quality it buys.

For every model (run checkpoints from ``python -m lightning_mlsr fit``, zero-shot SPLADE-tiny,
untrained dense MiniLM), on the bundled collection's test queries, ONE thread, one query at
a time: encode latency (tokenizer + query encoder + the vector handed to search), search
latency (the exact ``InvertedIndex.search_one`` for sparse, faiss ``IndexFlatIP`` for dense),
end to end, postings touched and multiply-adds per query, index bytes, mean non-zeros, and
test nDCG@10 through the project's metrics. Rounds are interleaved (each round times every
model over every query, the order rotated), so machine load hits all models alike; ratios to
the baseline are medians of per-round ratios. Each span is timed as the calling thread's CPU
time (what the query costs, whatever else runs on the machine) and as wall time. With
``--wordnet`` the same per-query search cost is measured on WordNet glosses
(``bench_index.py --data wordnet``'s corpus and lemma queries).

    python bench/bench_query_cost.py                                   # zero-shot models only
    python bench/bench_query_cost.py --ckpt "M2 (SPLADE-tiny)=/path/epoch4-ndcg0.34.ckpt"
    python bench/bench_query_cost.py --wordnet /tmp/wn/usr/share/wordnet --wordnet-docs 102400

Writes ``bench/results/query-cost-<date>/query_cost.{json,md,png}`` (``--out``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("NUMBA_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import scipy.sparse as sp
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from lightning_mlsr.retrieval.cost import (  # noqa: E402
    cost_report,
    csc_bytes,
    dense_bytes,
    dense_multiply_adds,
    percentiles,
    postings_touched,
)
from research.report.costs import write_cost_figure  # noqa: E402

BASELINE = "MiniLM dense (untrained)"


@dataclass
class Model:
    name: str
    system: Any  # SparseBiEncoder
    datamodule: Any  # RetrievalDataModule
    dense: bool
    backbone: str
    source: str = ""  # what the cached WordNet vectors are keyed by


def zero_shot(name: str) -> Model:
    """The zero-shot baselines as bi-encoders, with the baselines' token limits."""
    from lightning_mlsr.data.datamodule import RetrievalDataModule
    from lightning_mlsr.data.settings import BatchingSettings
    from lightning_mlsr.models.dense import DenseTextHead
    from lightning_mlsr.models.text import MLMHead
    from lightning_mlsr.training.system.module import SparseBiEncoder

    if name == "splade":  # lightning_mlsr.baselines.splade: max pooling, 32 wordpieces
        system = SparseBiEncoder(MLMHead("splade-tiny"), MLMHead("splade-tiny"))
        limits, label, backbone = 32, "SPLADE-tiny (zero-shot)", "splade-tiny"
    else:  # lightning_mlsr.baselines.dense: mean pooling, normalised, 256 wordpieces
        system = SparseBiEncoder(DenseTextHead("minilm-l6"), DenseTextHead("minilm-l6"))
        limits, label, backbone = 256, BASELINE, "minilm-l6"
    batching = BatchingSettings(query_max_length=limits, doc_max_length=limits)
    dm = RetrievalDataModule("emoji", batching=batching)
    dm.set_batch_inputs(system.batch_inputs())
    return Model(label, system.eval(), dm, name != "splade", backbone)


def from_checkpoint(spec: str) -> Model:
    """``NAME=PATH`` or ``PATH`` of a ``.ckpt``, loaded as the notebooks and ``test`` load it."""
    from lightning_mlsr.models import is_dense_model
    from lightning_mlsr.training.model_loading import load_model

    name, _, path = spec.rpartition("=")
    loaded, source = load_model(path), f"{Path(path).resolve()}@{Path(path).stat().st_mtime_ns}"
    backbone = getattr(loaded.model.query_encoder, "text_backbone_name", None) or "?"
    label, dense = name or Path(path).parent.parent.name, is_dense_model(loaded.model)
    return Model(label, loaded.model, loaded.datamodule, dense, backbone, source)


class Searcher:
    """One model's index, searched one query at a time on 1 thread."""

    def __init__(self, docs: Any, dense: bool) -> None:
        self.dense = dense
        self.index: Any
        if dense:
            import faiss

            faiss.omp_set_num_threads(1)
            self.index = faiss.IndexFlatIP(docs.shape[1])
            self.index.add(np.ascontiguousarray(docs, dtype=np.float32))
            self.bytes = dense_bytes(*docs.shape)
        else:
            from lightning_mlsr.retrieval.index import InvertedIndex

            self.index = InvertedIndex.from_matrix(docs)
            self.bytes = csc_bytes(self.index.postings)
        self.n_docs = docs.shape[0]

    def vector(self, weights: torch.Tensor) -> Any:
        """What search takes from the encoder's ``(1, W)`` output."""
        w = weights[0].float()
        if self.dense:
            return w.numpy()[None, :]
        terms = torch.nonzero(w > 0).squeeze(1)
        return terms.numpy(), w[terms].numpy()

    def search(self, vector: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
        if self.dense:
            scores, idx = self.index.search(vector, min(k, self.n_docs))
            return scores[0], idx[0]
        return self.index.search_one(vector[0], vector[1], k, num_threads=1)


def encode_one(m: Model, row: int) -> torch.Tensor:
    """Tokenise one judged query through the datamodule's collator and encode it."""
    batch = m.datamodule.collator.query_batch([row])
    return m.system.encode_queries(batch["query"])  # (1, W)


@dataclass
class Lane:
    """A model's index and its timed queries: rows (encoded when timed) or vectors."""

    model: Model
    searcher: Searcher
    inputs: list[Any]
    record: dict[str, Any]
    encode: bool = True
    times: list[tuple[float, ...]] = field(default_factory=list)  # enc cpu/wall, search cpu/wall
    rounds: list[np.ndarray] = field(default_factory=list)  # per round: median e2e [cpu, wall]
    results: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)  # first round


def time_rounds(lanes: list[Lane], n_rounds: int, k: int) -> None:
    """Every lane over all its queries per round, lanes rotated round by round."""
    clock = (time.thread_time, time.perf_counter)
    for r in range(n_rounds):
        for lane in lanes[r % len(lanes) :] + lanes[: r % len(lanes)]:
            start, m, searcher = len(lane.times), lane.model, lane.searcher
            for x in lane.inputs:
                t0 = [c() for c in clock]
                vector = searcher.vector(encode_one(m, int(x))) if lane.encode else x
                t1 = [c() for c in clock]
                found = searcher.search(vector, k)
                t2 = [c() for c in clock]
                lane.times.append((t1[0] - t0[0], t1[1] - t0[1], t2[0] - t1[0], t2[1] - t1[1]))
                if r == 0:
                    lane.results.append(found)
            done = np.asarray(lane.times[start:])
            lane.rounds.append(np.median(done[:, [0, 1]] + done[:, [2, 3]], axis=0))
        print(f"round {r + 1}/{n_rounds}, load {os.getloadavg()[0]:.1f}", flush=True)


def summarise(lanes: list[Lane]) -> list[dict[str, Any]]:
    """Percentiles per lane and medians of per-round ratios to the baseline's lane."""
    base = next((lane for lane in lanes if lane.model.name == BASELINE), lanes[0])
    for lane in lanes:
        t, rec = np.asarray(lane.times), lane.record
        for key, cols in (("encode", [0, 1]), ("search", [2, 3]), ("e2e", None)):
            both = t[:, [0, 1]] + t[:, [2, 3]] if cols is None else t[:, cols]
            rec[f"{key}_cpu_ms"], rec[f"{key}_ms"] = (
                percentiles(both[:, 0]),
                percentiles(both[:, 1]),
            )
        ratios = np.divide(lane.rounds, base.rounds)  # (rounds, [cpu, wall])
        rec["e2e_ratio"], rec["e2e_wall_ratio"] = np.median(ratios, axis=0).tolist()
        rec["e2e_ratio_per_round"] = ratios[:, 0].tolist()
        rec["bytes_ratio"] = rec["index_bytes"] / base.record["index_bytes"]
    return [lane.record for lane in lanes]


def emoji_lane(m: Model, args: argparse.Namespace) -> Lane:
    """nDCG@10 through the project's evaluation path (batched encoding, the index, trec_eval
    metrics), and the lane that times the same queries one by one."""
    from lightning_mlsr.retrieval.evaluation import retrieve, score
    from lightning_mlsr.retrieval.index import InvertedIndex
    from lightning_mlsr.training.callbacks.split_encoding import encode_split

    enc = encode_split(m.system, m.datamodule, args.split)
    index = None
    if m.dense:
        flops = np.full(len(enc.query_ids), dense_multiply_adds(*enc.docs.shape))
    else:
        index = InvertedIndex.from_matrix(enc.docs, enc.doc_ids)
        flops = postings_touched(index.posting_lengths, enc.queries)
    run = retrieve(enc.docs, enc.doc_ids, enc.queries, enc.query_ids, args.k, index=index)
    ndcg = score(run, m.datamodule.qrels(args.split), ["nDCG@10"]).means["nDCG@10"]
    rows = m.datamodule.query_rows(args.split)[: args.max_queries]
    searcher = Searcher(enc.docs, m.dense)
    for row in rows[:5]:  # warm-up: first calls load kernels and allocate
        searcher.search(searcher.vector(encode_one(m, int(row))), args.k)
    nnz = [None] * 2 if m.dense else [np.diff(x.indptr).mean() for x in (enc.queries, enc.docs)]
    print(f"{m.name}: nDCG@10 {ndcg:.4f}", flush=True)
    params = sum(p.numel() for p in m.system.query_encoder.parameters()) / 1e6  # query side
    record: dict[str, Any] = dict(name=m.name, backbone=f"{m.backbone} ({params:.1f}M params)")
    record |= dict(search_kind="faiss IndexFlatIP" if m.dense else "exact inverted index")
    record |= dict(ndcg10=ndcg, n_queries=len(rows), n_docs=len(enc.doc_ids))
    record |= dict(postings_per_query=None if m.dense else float(flops.mean()))
    record |= dict(flops_per_query=float(flops.mean()), index_bytes=searcher.bytes)
    record |= dict(q_nnz=nnz[0] and float(nnz[0]), d_nnz=nnz[1] and float(nnz[1]))
    return Lane(m, searcher, list(rows), record | {"_run": run, "_doc_ids": enc.doc_ids})


def check_timed_path(lane: Lane, args: argparse.Namespace) -> None:
    """nDCG@10 of the timed one-query path and of the batch path over the timed queries."""
    from lightning_mlsr.retrieval.evaluation import score

    m, rec = lane.model, lane.record
    ids, doc_ids = m.datamodule.collection.texts.ids, rec.pop("_doc_ids")
    single = {
        ids[row]: {doc_ids[i]: float(v) for i, v in zip(idx[idx >= 0], sc[idx >= 0], strict=True)}
        for row, (sc, idx) in zip(lane.inputs, lane.results, strict=True)
    }
    qrels = {q: m.datamodule.qrels(args.split)[q] for q in single}
    for key, run in (("single_query_path", single), ("batch_path", rec.pop("_run"))):
        got = score({q: run.get(q, {}) for q in qrels}, qrels, ["nDCG@10"]).means
        rec[f"ndcg10_timed_queries_{key}"] = got["nDCG@10"]


def wordnet_texts(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """``bench_index.py --data wordnet``'s documents (a seeded prefix) and lemma queries."""
    sys.path.insert(0, str(ROOT / "bench"))
    import bench_index

    wn = bench_index.read_wordnet(args.wordnet)
    order = np.random.default_rng(0).permutation(len(wn.ids))[: args.wordnet_docs]
    queries = bench_index.lemma_queries(wn, args.wordnet_queries, 0)
    return [wn.glosses[i] for i in order], queries


def encode_texts(encoder: Any, texts: list[str], dense: bool, key: str, args: Any) -> Any:
    """One side's vectors of ``texts`` (16 wordpieces, as bench_index), cached on disk."""
    from lightning_mlsr.baselines.common import text_batches
    from lightning_mlsr.io.pretrained import load_tokenizer
    from lightning_mlsr.retrieval.batch_encoding import encode_loader

    digest = hashlib.sha1("\n".join([key, *texts]).encode()).hexdigest()[:16]
    cache = Path(args.cache_dir)
    path = cache / f"{digest}.{'npy' if dense else 'npz'}"
    if path.exists():
        return np.load(path) if dense else sp.load_npz(path).tocsr()
    tokenizer = load_tokenizer(encoder.text_backbone_name)
    t0 = time.perf_counter()
    batches = text_batches(texts, tokenizer, 128, 16, key, False)
    width = encoder.width
    out = encode_loader(encoder, batches, width=width, dense=dense)[1]  # type: ignore[call-overload]
    print(f"encoded {len(texts):,} texts ({key}) in {time.perf_counter() - t0:.0f} s", flush=True)
    cache.mkdir(parents=True, exist_ok=True)
    np.save(path, out) if dense else sp.save_npz(path, out)
    return out


def _documents_are_images(m: Model) -> bool:
    """Whether a sparse model's documents are (or include) images: it cannot index glosses."""
    return not m.dense and m.system.doc_encoder.reads().images


def measure_wordnet(models: list[Model], args: argparse.Namespace) -> list[dict[str, Any]]:
    """Per-query search cost on WordNet glosses: encoded lemma queries, one at a time.

    Dense documents are random unit vectors of the model's width: ``IndexFlatIP`` reads every
    row whatever it holds, so its cost is that of the encoded glosses, without encoding them.
    """
    docs_text, queries_text = wordnet_texts(args)
    lanes = []
    for m in models:
        tag = f"{m.name}|{m.backbone}|{m.source}"
        q = encode_texts(m.system.query_encoder, queries_text, m.dense, tag + "|q", args)
        if m.dense:
            d = np.random.default_rng(0).standard_normal((len(docs_text), q.shape[1]), np.float32)
            d /= np.linalg.norm(d, axis=1, keepdims=True)
            flops = np.full(len(q), dense_multiply_adds(*d.shape))
            vectors = [q[i : i + 1] for i in range(len(q))]
        else:
            d = encode_texts(m.system.doc_encoder, docs_text, False, tag + "|d", args)
            vectors = [(q[i].indices, q[i].data) for i in range(q.shape[0])]
        searcher = Searcher(d, m.dense)
        if not m.dense:
            flops = postings_touched(searcher.index.posting_lengths, q)
        for v in vectors[:5]:
            searcher.search(v, args.k)
        record = {
            "name": m.name,
            "n_docs": searcher.n_docs,
            "n_queries": len(vectors),
            "postings_per_query": None if m.dense else float(flops.mean()),
            "flops_per_query": float(flops.mean()),
            "index_bytes": searcher.bytes,
            "d_nnz": None if m.dense else float(searcher.index.nnz / searcher.n_docs),
        }
        lanes.append(Lane(m, searcher, vectors, record, encode=False))
    time_rounds(lanes, args.rounds, args.k)
    records = summarise(lanes)
    for rec in records:  # nothing is encoded in the timed span: search alone
        rec["search_ratio"] = rec.pop("e2e_ratio")
        for key in ("encode_ms", "encode_cpu_ms", "e2e_ms", "e2e_cpu_ms", "e2e_wall_ratio"):
            rec.pop(key)
    return records


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = p.add_argument
    add("--ckpt", action="append", default=[], metavar="[NAME=]PATH", help="a run's .ckpt; repeat")
    add("--zero-shot", nargs="*", default=["splade", "minilm"], choices=["splade", "minilm"])
    add("--split", default="test")
    add("--k", type=int, default=1000, help="results per query (the evaluation's k)")
    add("--rounds", type=int, default=3)
    add("--max-queries", type=int, default=None, help="time the first N judged queries only")
    add("--wordnet", default=None, help="WordNet's dict folder: also measure search at scale")
    add("--wordnet-docs", type=int, default=102_400)
    add("--wordnet-queries", type=int, default=300)
    add("--cache-dir", default=str(Path.home() / ".cache/lightning_mlsr/bench_query_cost"))
    add("--out", default=str(ROOT / f"bench/results/query-cost-{time.strftime('%Y-%m-%d')}"))
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    import numba

    args = parse_args(argv)
    torch.set_num_threads(1)
    torch.set_grad_enabled(False)
    numba.set_num_threads(1)
    load0, started = os.getloadavg(), time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}"
    models = [zero_shot(n) for n in args.zero_shot] + [from_checkpoint(c) for c in args.ckpt]
    lanes = [emoji_lane(m, args) for m in models]
    time_rounds(lanes, args.rounds, args.k)
    for lane in lanes:
        check_timed_path(lane, args)
    records = summarise(lanes)
    # the glosses are texts: a sparse model whose documents are images has no index of them
    reads_images = [m for m in models if _documents_are_images(m)]
    scale = (
        measure_wordnet([m for m in models if m not in reads_images], args) if args.wordnet else []
    )
    meta = dict(date=started, machine=machine, threads=1, split=args.split, k=args.k)
    meta |= dict(rounds=args.rounds, baseline=BASELINE, checkpoints=args.ckpt)
    meta |= dict(load_average_before=load0, load_average_after=os.getloadavg())
    meta["wordnet_skipped"] = [m.name for m in reads_images] if args.wordnet else []
    meta["command"] = shlex.join(["python", "bench/bench_query_cost.py", *sys.argv[1:]])
    data = {"meta": meta, "emoji": records, "wordnet": scale}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "query_cost.json").write_text(json.dumps(data, indent=1) + "\n")
    (out / "query_cost.md").write_text(cost_report(data))
    write_cost_figure(out / "query_cost.png", data)  # the figure RESULTS.md shows, the same code
    print(cost_report(data), f"wrote {out}/query_cost.{{json,md,png}}", sep="\n", flush=True)


if __name__ == "__main__":
    main()
