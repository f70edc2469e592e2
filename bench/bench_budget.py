"""What quality costs at each term budget: validation nDCG@10 of a trained model with its
query and document vectors cut to the top ``q`` and ``d`` terms, without retraining.

A model trained with budgets (``max_terms`` on its heads: the MiniLM MLM models keep 32
terms per query and 128 per document) is encoded once with no budget; every pair of budgets
is then applied to the same vectors (the top weights of each row, as ``keep_top_terms`` keeps
them in the model) and searched with the exact inverted index; beside the measures, the share
of relevant (query, document) pairs that share no term, which no ranking can recover. At the budgets the model was
trained with, the figures are the model's own: the script checks that against the run's
``metrics.json`` when ``--metrics`` names it. Validation only: budgets are a design choice.

    python bench/bench_budget.py --ckpt "distilled MLM/MLM · MiniLM=/path/seed42.ckpt" \\
        --metrics results/runs/minilm_kl_mlm_query_scaled/seed42/metrics.json

Writes ``bench/results/budget-<date>/budget.{json,md,png}`` (``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import scipy.sparse as sp
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from lightning_mlsr.analysis.inputs import row_top_ids  # noqa: E402
from lightning_mlsr.retrieval.evaluation import retrieve, score, sparse_efficiency  # noqa: E402
from lightning_mlsr.retrieval.index import InvertedIndex  # noqa: E402

MEASURES = ("nDCG@10", "R@1000")


def top_terms(matrix: sp.csr_matrix, k: int | None) -> sp.csr_matrix:
    """Each row's ``k`` largest weights (all of them for ``None`` or a shorter row); ties
    between equal weights are broken towards the lower term id (:func:`row_top_ids`).

    Shape: ``(N, V)`` -> ``(N, V)``."""
    matrix = sp.csr_matrix(matrix, copy=True)
    matrix.sort_indices()
    if k is None:
        return matrix
    rows = [row_top_ids(matrix, row, k) for row in range(matrix.shape[0])]
    orders = [np.argsort(ids) for ids, _ in rows]  # CSR keeps each row's ids ascending
    indptr = np.concatenate([[0], np.cumsum([len(ids) for ids, _ in rows])])
    return sp.csr_matrix(
        (
            np.concatenate([w[o] for (_, w), o in zip(rows, orders, strict=True)]),
            np.concatenate([ids[o] for (ids, _), o in zip(rows, orders, strict=True)]),
            indptr,
        ),
        shape=matrix.shape,
    )


def encode_without_budgets(
    path: Path, split: str
) -> tuple[Any, dict[str, dict[str, int]], dict[str, int | None]]:
    """A checkpoint's vectors of the evaluation corpus and ``split``'s queries with every
    head's ``max_terms`` lifted, ``split``'s judgments, and the budgets it was trained with."""
    from lightning_mlsr.training.callbacks.split_encoding import encode_split
    from lightning_mlsr.training.model_loading import load_model

    loaded = load_model(path)
    model = loaded.model.eval()
    trained: dict[str, int | None] = {}
    for side, encoder in (("query", model.query_encoder), ("doc", model.doc_encoder)):
        if not hasattr(encoder, "max_terms"):
            raise SystemExit(f"{path}: the {side} head has no term budget (max_terms) to vary")
        trained[side] = encoder.max_terms
        encoder.max_terms = None
    with torch.no_grad():
        encoded = encode_split(model, loaded.datamodule, split)
    return encoded, loaded.datamodule.qrels(split), trained


def unmatched_pairs(
    docs: sp.csr_matrix,
    doc_ids: list[str],
    queries: sp.csr_matrix,
    query_ids: list[str],
    qrels: dict[str, dict[str, int]],
) -> float:
    """The share of judged (query, relevant document) pairs whose vectors share no term:
    pairs the exact index can never score, whatever the ranking."""
    row_of = {d: i for i, d in enumerate(doc_ids)}
    total = unmatched = 0
    for i, qid in enumerate(query_ids):
        terms = queries.indices[queries.indptr[i] : queries.indptr[i + 1]]
        for doc, grade in qrels.get(qid, {}).items():
            if grade <= 0 or doc not in row_of:
                continue
            j = row_of[doc]
            total += 1
            unmatched += not np.intersect1d(
                terms, docs.indices[docs.indptr[j] : docs.indptr[j + 1]]
            ).size
    return unmatched / total if total else 0.0


def budget_grid(
    encoded: Any,
    qrels: dict[str, dict[str, int]],
    query_budgets: list[int | None],
    doc_budgets: list[int | None],
) -> list[dict[str, Any]]:
    """One row per (document budget, query budget): the measures and the sparsity figures."""
    rows = []
    cut_queries = {q_budget: top_terms(encoded.queries, q_budget) for q_budget in query_budgets}
    for d_budget in doc_budgets:
        docs = top_terms(encoded.docs, d_budget)
        index = InvertedIndex.from_matrix(docs, encoded.doc_ids)
        for q_budget, queries in cut_queries.items():
            run = retrieve(docs, encoded.doc_ids, queries, encoded.query_ids, 1000, index=index)
            got = score(run, qrels, MEASURES)
            rows.append(
                {
                    "doc_budget": d_budget,
                    "query_budget": q_budget,
                    **got.means,
                    "unmatched": unmatched_pairs(
                        docs, encoded.doc_ids, queries, encoded.query_ids, qrels
                    ),
                    **sparse_efficiency(index, docs, queries),
                }
            )
    return rows


def _label(budget: int | None) -> str:
    return "all" if budget is None else str(budget)


def markdown(results: list[dict[str, Any]]) -> str:
    lines = []
    for model in results:
        trained = model["trained_budgets"]
        lines += [
            f"### {model['label']} (trained with {_label(trained['query'])} query / "
            f"{_label(trained['doc'])} document terms; {model['split']}, "
            f"{model['queries']} queries, {model['documents']} documents)",
            "",
            "| doc terms | query terms | nDCG@10 | R@1000 | relevant pairs sharing no term "
            "| mean query nnz | mean doc nnz | postings per query |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in model["grid"]:
            mark = (
                " *"
                if (r["query_budget"], r["doc_budget"]) == (trained["query"], trained["doc"])
                else ""
            )
            lines.append(
                f"| {_label(r['doc_budget'])} | {_label(r['query_budget'])}{mark} "
                f"| {r['nDCG@10']:.4f} | {r['R@1000']:.4f} | {r['unmatched']:.3f} "
                f"| {r['q_nnz']:.1f} | {r['d_nnz']:.1f} "
                f"| {r['flops_per_query']:.0f} |"
            )
        lines += ["", "`*`: the budgets the model was trained and evaluated with.", ""]
    return "\n".join(lines)


def plot(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(
        1, len(results), figsize=(5.2 * len(results), 4), dpi=110, squeeze=False
    )
    for ax, model in zip(axes[0], results, strict=True):
        for d_budget in dict.fromkeys(r["doc_budget"] for r in model["grid"]):
            rows = [r for r in model["grid"] if r["doc_budget"] == d_budget]
            ax.plot(
                [r["flops_per_query"] for r in rows],
                [r["nDCG@10"] for r in rows],
                marker="o",
                label=f"{_label(d_budget)} doc terms",
            )
            for r in rows:
                ax.annotate(
                    _label(r["query_budget"]),
                    (r["flops_per_query"], r["nDCG@10"]),
                    fontsize=6,
                    xytext=(2, 2),
                    textcoords="offset points",
                )
        ax.set_xscale("log")
        ax.set_xlabel("postings touched per query (labels: query terms)")
        ax.set_ylabel(f"{model['split']} nDCG@10")
        ax.set_title(model["label"], fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, metadata={"Software": None})
    plt.close(fig)


def _budgets(values: list[int]) -> list[int | None]:
    if any(v < 0 for v in values):
        raise SystemExit(f"budgets must be positive (0 for no budget), got {values}")
    return [None if v == 0 else v for v in values]


def _ordered(budgets: list[int | None]) -> list[int | None]:
    """Distinct budgets, smallest first, no budget last."""
    return sorted(set(budgets), key=lambda b: (b is None, b or 0))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", action="append", required=True, help="LABEL=PATH, repeatable")
    parser.add_argument(
        "--metrics",
        action="append",
        default=[],
        help="the run's metrics.json for each --ckpt, in order: checks the trained budgets",
    )
    parser.add_argument("--query-budgets", type=int, nargs="+", default=[4, 8, 16, 32, 64, 0])
    parser.add_argument("--doc-budgets", type=int, nargs="+", default=[32, 64, 128, 256, 0])
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    query_budgets, doc_budgets = _budgets(args.query_budgets), _budgets(args.doc_budgets)
    if args.metrics and len(args.metrics) != len(args.ckpt):
        raise SystemExit("give one --metrics per --ckpt, or none")
    out = args.out or ROOT / "bench" / "results" / f"budget-{time.strftime('%Y-%m-%d')}"
    out.mkdir(parents=True, exist_ok=True)
    split = "validation"
    results = []
    for i, spec in enumerate(args.ckpt):
        label, sep, path = spec.partition("=")
        if not sep or not Path(path).is_file():
            raise SystemExit(f"--ckpt {spec!r}: give LABEL=PATH to an existing checkpoint")
        started = time.perf_counter()
        encoded, qrels, trained = encode_without_budgets(Path(path), split)
        grid = budget_grid(
            encoded,
            qrels,
            _ordered([*query_budgets, trained["query"]]),
            _ordered([*doc_budgets, trained["doc"]]),
        )
        model = {
            "label": label,
            "checkpoint": Path(path).name,
            "split": split,
            "queries": len(encoded.query_ids),
            "documents": len(encoded.doc_ids),
            "trained_budgets": trained,
            "grid": grid,
            "seconds": time.perf_counter() - started,
        }
        if args.metrics:
            recorded = json.loads(Path(args.metrics[i]).read_text())[split]["nDCG@10"]
            own = next(
                r["nDCG@10"]
                for r in grid
                if (r["query_budget"], r["doc_budget"]) == (trained["query"], trained["doc"])
            )
            model["recorded_nDCG@10"] = recorded
            if abs(own - recorded) > 1e-4:
                raise SystemExit(
                    f"{label}: at its trained budgets the vectors give nDCG@10 {own:.6f}, "
                    f"the run recorded {recorded:.6f}: these are not the run's vectors"
                )
        results.append(model)
        print(f"{label}: {len(grid)} budget pairs in {model['seconds']:.0f} s", flush=True)
    meta = {
        "command": " ".join(["python", "bench/bench_budget.py", *(argv or sys.argv[1:])]),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores",
        "date": time.strftime("%Y-%m-%d"),
    }
    (out / "budget.json").write_text(json.dumps({**meta, "models": results}, indent=1) + "\n")
    (out / "budget.md").write_text(markdown(results) + "\n")
    plot(results, out / "budget.png")
    print(markdown(results))


if __name__ == "__main__":
    main()
