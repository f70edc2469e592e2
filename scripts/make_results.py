"""Regenerate RESULTS.md: every experiment over several seeds, resumable, with statistics.

    python scripts/make_results.py                          # all experiments, 3 seeds
    python scripts/make_results.py --seeds 5 --experiments m2_mlp_mlm_caption
    python scripts/make_results.py --report-only            # rebuild RESULTS.md from runs

Each (experiment, seed) is trained with its YAML exactly as ``python -m lightning_mlsr fit``
does (``seed_everything`` set to the seed), then its best checkpoint (by ``val/nDCG@10``)
is evaluated on validation and test. What a finished run leaves under
``results/runs/<experiment>/seed<k>/`` (committed): ``metrics.json`` (means, sparsity,
share of empty vectors, fit time, co-activation statistics for image-only models) and
``per_query.json`` (every measure per query and split). A run whose ``metrics.json`` exists
is skipped, so an interrupted regeneration resumes where it stopped, and a fit stopped
midway resumes from the newest checkpoint it left under ``--work`` (``on_exception.ckpt``,
which a SIGTERM saves at the step reached, else ``last.ckpt`` from an epoch's end;
``--restart-unfinished`` starts it over); the baselines are kept the same way under
``results/runs/baselines/``. The distilled experiments learn from the
trained ``dense_caption`` model of the same seed (its checkpoint kept under ``--work``)
when that run finished in the same work folder, else from that of seed 42;
``mlm_pseudo_distilled`` also trains on pseudo-queries that teacher labels (the collection
built once per teacher under ``--work/pseudo/``). RESULTS.md is rebuilt from whatever has
finished: mean ± standard deviation over seeds, paired t-tests over queries (per-query
values averaged over seeds; ``scipy.stats.ttest_rel``) for every comparison a finding rests
on, with the Benjamini-Hochberg correction over all of them
(``scipy.stats.false_discovery_control``), a breakdown into queries whose wordpieces all
occur in training queries vs the rest, and the findings of BRIEF.md recomputed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import time
import traceback
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RUNS = REPO / "results" / "runs"
EXPERIMENTS = [
    ("M1", "m1_mlm_mlm_image"),
    ("M2", "m2_mlp_mlm_caption"),
    ("M3", "m3_mlp_mlp_caption"),
    ("M4", "m4_mlp_mlp_image_caption"),
    ("M4x (expanding)", "m4x_mlp_mlm_image_caption"),
    ("MLP-q image", "mlp_mlm_image"),
    ("M2 distilled", "m2_distilled"),
    ("MLM/MLM distilled", "mlm_distilled"),
    ("MLM/MLM distilled + pseudo-queries", "mlm_pseudo_distilled"),
    ("MLM/MLM distilled + pseudo-queries, top 3", "mlm_pseudo_top3_distilled"),
    ("MLM/MLM distilled + English pseudo-queries", "mlm_pseudo_english_distilled"),
    (
        "MLM/MLM distilled + English pseudo-queries + hard negatives",
        "mlm_pseudo_english_hardneg_distilled",
    ),
    (
        "MLM/MLM distilled + English pseudo-queries + expanded captions",
        "mlm_pseudo_english_docexp_distilled",
    ),
    (
        "MLM/MLM distilled + English pseudo-queries + captions expanded to the top 3",
        "mlm_pseudo_english_docexp3_distilled",
    ),
    ("dense caption", "dense_caption"),
    ("dense image", "dense_image"),
]
#: training order: dense_caption before the distilled models, whose teacher it is
ORDER = [
    "mlp_mlm_image",
    "m1_mlm_mlm_image",
    "dense_caption",
    "m2_distilled",
    "mlm_distilled",
    "mlm_pseudo_distilled",
    "mlm_pseudo_top3_distilled",
    "mlm_pseudo_english_distilled",
    "mlm_pseudo_english_hardneg_distilled",
    "mlm_pseudo_english_docexp_distilled",
    "mlm_pseudo_english_docexp3_distilled",
    "m4x_mlp_mlm_image_caption",
    "m2_mlp_mlm_caption",
    "m3_mlp_mlp_caption",
    "m4_mlp_mlp_image_caption",
    "dense_image",
]
LABELS = {name: label for label, name in EXPERIMENTS}
IMAGE_ONLY = ("m1_mlm_mlm_image", "mlp_mlm_image")
DISTILLED = (
    "m2_distilled",
    "mlm_distilled",
    "mlm_pseudo_distilled",
    "mlm_pseudo_top3_distilled",
    "mlm_pseudo_english_distilled",
    "mlm_pseudo_english_hardneg_distilled",
    "mlm_pseudo_english_docexp_distilled",
    "mlm_pseudo_english_docexp3_distilled",
)
#: experiments trained on a collection with pseudo-queries labelled by their teacher, and how
#: it is built (lightning_mlsr.data.pseudo_queries; the YAML says the same)
_ENGLISH = {"min_score": 0.4, "max_queries": None, "english": 50000}
PSEUDO_QUERIES = {
    "mlm_pseudo_distilled": {"min_score": 0.4, "max_queries": None},
    "mlm_pseudo_top3_distilled": {"min_score": 0.4, "max_queries": None, "positives": 3},
    "mlm_pseudo_english_distilled": _ENGLISH,
    "mlm_pseudo_english_hardneg_distilled": _ENGLISH,  # the same collection, built once
    "mlm_pseudo_english_docexp_distilled": {**_ENGLISH, "expand_captions": 1},
    "mlm_pseudo_english_docexp3_distilled": {**_ENGLISH, "expand_captions": 3},
}
#: experiments whose training batches hold teacher-mined hard negatives, and how deep each
#: query's list is mined (lightning_mlsr.data.negatives; the YAML says the same)
HARD_NEGATIVES = {"mlm_pseudo_english_hardneg_distilled": 30}
BASELINES = ("bm25", "splade-zero-shot", "dense-zero-shot")
MEASURES = ["nDCG@10", "AP", "RR@10", "R@10", "R@100", "R@1000"]
FIRST_SEED = 42
#: (finding, A, B, measure): is A different from B? Names are experiments or baselines.
COMPARISONS = [
    ("1", "m1_mlm_mlm_image", "m2_mlp_mlm_caption", "nDCG@10"),
    ("1", "m1_mlm_mlm_image", "m3_mlp_mlp_caption", "nDCG@10"),
    ("1", "m1_mlm_mlm_image", "m4_mlp_mlp_image_caption", "nDCG@10"),
    ("2", "m4_mlp_mlp_image_caption", "m2_mlp_mlm_caption", "nDCG@10"),
    ("2", "m4_mlp_mlp_image_caption", "m3_mlp_mlp_caption", "nDCG@10"),
    ("2", "m4x_mlp_mlm_image_caption", "m3_mlp_mlp_caption", "nDCG@10"),
    ("2", "m4x_mlp_mlm_image_caption", "m3_mlp_mlp_caption", "R@1000"),
    ("image", "mlp_mlm_image", "m1_mlm_mlm_image", "nDCG@10"),
    ("distil", "m2_distilled", "m2_mlp_mlm_caption", "nDCG@10"),
    ("distil", "m2_distilled", "splade-zero-shot", "nDCG@10"),
    ("distil", "mlm_distilled", "splade-zero-shot", "nDCG@10"),
    ("distil", "mlm_distilled", "m2_distilled", "nDCG@10"),
    ("distil", "m2_mlp_mlm_caption", "splade-zero-shot", "nDCG@10"),
    ("distil", "mlm_pseudo_distilled", "mlm_distilled", "nDCG@10"),
    ("distil", "mlm_pseudo_distilled", "splade-zero-shot", "nDCG@10"),
    ("distil", "mlm_pseudo_top3_distilled", "mlm_pseudo_distilled", "nDCG@10"),
    ("distil", "mlm_pseudo_english_distilled", "mlm_pseudo_distilled", "nDCG@10"),
    ("distil", "mlm_pseudo_english_distilled", "splade-zero-shot", "nDCG@10"),
    ("distil", "mlm_pseudo_english_hardneg_distilled", "mlm_pseudo_english_distilled", "nDCG@10"),
    ("distil", "mlm_pseudo_english_hardneg_distilled", "splade-zero-shot", "nDCG@10"),
    ("distil", "mlm_pseudo_english_docexp_distilled", "mlm_pseudo_english_distilled", "nDCG@10"),
    ("distil", "mlm_pseudo_english_docexp_distilled", "splade-zero-shot", "nDCG@10"),
    (
        "distil",
        "mlm_pseudo_english_docexp3_distilled",
        "mlm_pseudo_english_docexp_distilled",
        "nDCG@10",
    ),
    ("distil", "mlm_pseudo_english_docexp3_distilled", "splade-zero-shot", "nDCG@10"),
]


# ---------------------------------------------------------------------- statistics


def paired_test(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
    """Paired t-test over the queries both runs scored: is ``mean(a - b)`` different from 0?

    Returns ``n``, ``mean_a``, ``mean_b``, ``diff`` (mean of a - b), ``t`` and two-sided ``p``
    (``scipy.stats.ttest_rel``; ``p = 1`` when every difference is 0).
    """
    from scipy import stats

    qids = sorted(set(a) & set(b))
    if len(qids) < 2:
        raise ValueError(f"paired_test needs at least 2 shared queries, got {len(qids)}")
    x = np.array([a[q] for q in qids], dtype=float)
    y = np.array([b[q] for q in qids], dtype=float)
    diff = x - y
    if not np.any(diff != 0):
        t, p = 0.0, 1.0
    else:
        result = stats.ttest_rel(x, y)
        t, p = float(result.statistic), float(result.pvalue)
    return {
        "n": len(qids),
        "mean_a": float(x.mean()),
        "mean_b": float(y.mean()),
        "diff": float(diff.mean()),
        "t": t,
        "p": p,
    }


def adjust(pvalues: Sequence[float]) -> list[float]:
    """Benjamini-Hochberg adjusted p-values (``scipy.stats.false_discovery_control``)."""
    from scipy import stats

    if not pvalues:
        return []
    return [float(p) for p in stats.false_discovery_control(np.asarray(pvalues), method="bh")]


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    arr = np.asarray(values, dtype=float)
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0


def seed_average(per_query: Sequence[dict[str, float]]) -> dict[str, float]:
    """Per-query values averaged over seeds (queries every seed scored)."""
    shared = set.intersection(*(set(r) for r in per_query))
    return {q: float(np.mean([r[q] for r in per_query])) for q in sorted(shared)}


# ---------------------------------------------------------------------- running


def run_dir(name: str, seed: int) -> Path:
    return RUNS / name / f"seed{seed}"


def is_finished(name: str, seed: int) -> bool:
    return (run_dir(name, seed) / "metrics.json").is_file()


def _write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=True, default=float))
    tmp.replace(path)  # a run is finished only once its file is complete


def _empty_share(matrix: Any) -> float:
    return float(np.mean(np.diff(matrix.indptr) == 0))


def unfinished_checkpoint(root: Path) -> Path | None:
    """The newest checkpoint an interrupted fit left under ``root``: ``on_exception.ckpt``
    (a fit stopped by SIGTERM or an error saves it at the step it reached) or ``last.ckpt``
    (saved at each epoch's end); None when there is none."""
    found = [
        p for p in root.glob("version_*/checkpoints/*.ckpt") if p.stem in ("on_exception", "last")
    ]
    return max(found, key=lambda p: p.stat().st_mtime, default=None)


def train_and_evaluate(
    name: str, seed: int, work: Path, extra: list[str], resume_unfinished: bool = True
) -> None:
    """Train one (experiment, seed), evaluate its best checkpoint, keep what the report needs.

    A fit that an earlier invocation left unfinished (killed, out of time) is resumed from
    its newest checkpoint (``unfinished_checkpoint``) unless ``resume_unfinished`` is False;
    a finished run removes its checkpoints, so it never resumes by mistake.
    """
    from lightning_mlsr.callbacks import RetrievalEvaluator
    from lightning_mlsr.cli import main
    from lightning_mlsr.metrics import evaluate

    root = work / name / f"seed{seed}"
    resume = unfinished_checkpoint(root) if resume_unfinished else None
    if resume is None:
        shutil.rmtree(root, ignore_errors=True)  # an unfinished earlier attempt
    else:
        print(f"=== {name} seed {seed}: resuming the unfinished fit from {resume}", flush=True)
    start = time.perf_counter()
    cli = main(
        [
            "fit",
            "--config",
            str(REPO / "experiments" / f"{name}.yaml"),
            f"--seed_everything={seed}",
            f"--trainer.default_root_dir={root}",
            "--trainer.logger=lightning.pytorch.loggers.CSVLogger",
            f"--trainer.logger.save_dir={root}",
            "--trainer.enable_progress_bar=false",
            "--test_after_fit=false",
            *([f"--ckpt_path={resume}"] if resume else []),
            *extra,
        ]
    )
    fit_seconds = time.perf_counter() - start
    trainer = cli.trainer
    evaluator = next(c for c in trainer.callbacks if isinstance(c, RetrievalEvaluator))
    best = trainer.checkpoint_callback.best_model_path or None
    metrics: dict[str, Any] = {
        "experiment": name,
        "seed": seed,
        "epochs": int(trainer.current_epoch),
        "steps": int(trainer.global_step),
        "fit_seconds": fit_seconds,  # of this attempt only, when it resumed another
        "overrides": extra,
    }
    if resume is not None:
        metrics["resumed_from"] = str(resume.relative_to(root))
    per_query: dict[str, Any] = {}
    for split, run_eval in (("validation", trainer.validate), ("test", trainer.test)):
        run_eval(cli.model, datamodule=cli.datamodule, ckpt_path=best)
        encoded = evaluator.last_encoded
        means = dict(evaluator.last_results)
        if not hasattr(encoded.docs, "indptr"):  # dense baselines: no sparsity
            means["empty_docs"] = means["empty_queries"] = None
        else:
            means["empty_docs"] = _empty_share(encoded.docs)
            means["empty_queries"] = _empty_share(encoded.queries)
        metrics[split] = means
        qrels = cli.datamodule.qrels(split)
        per_query[split] = evaluate(evaluator.last_run, qrels, MEASURES, per_query=True)
    if name in IMAGE_ONLY:
        metrics["coactivation"] = _coactivation(evaluator.last_encoded.docs, cli.datamodule)
    _write_json(run_dir(name, seed) / "per_query.json", per_query)
    _write_json(run_dir(name, seed) / "metrics.json", metrics)
    if name == "dense_caption" and best:  # the teacher of the distilled models, same seed
        shutil.copyfile(best, teacher_path(work, seed))
    for ckpt in root.rglob("*.ckpt"):  # hundreds of MB per run; the numbers are kept
        ckpt.unlink()


def teacher_path(work: Path, seed: int) -> Path:
    """Where the trained dense caption model of ``seed`` is kept as a distillation teacher."""
    return work / "dense_caption" / f"seed{seed}" / "teacher.pt"


def overrides_for(name: str, seed: int, work: Path) -> list[str]:
    """The distilled models learn from the trained dense caption model of the same seed
    when that run has finished here, else from that of the first seed (say so in the
    report: the student's spread then leaves out the teacher's), else from MiniLM as
    shipped, as their YAMLs say."""
    if name not in DISTILLED:
        return []
    for teacher in (teacher_path(work, seed), teacher_path(work, FIRST_SEED)):
        if teacher.is_file():
            options = [f"--model.distillation.init_args.checkpoint={teacher}"]
            if name in PSEUDO_QUERIES:
                collection = pseudo_collection(name, teacher, work)
                options.append(f"--data.collection={collection}")
                if name in HARD_NEGATIVES:
                    negatives = hard_negatives(collection, teacher, HARD_NEGATIVES[name])
                    options.append(f"--data.hard_negatives={negatives}")
            return options
    if name in PSEUDO_QUERIES:
        raise FileNotFoundError(
            f"{name} needs a trained dense caption teacher to label its pseudo-queries; none "
            f"at {teacher_path(work, seed)} or {teacher_path(work, FIRST_SEED)}: run "
            "`python scripts/make_results.py --experiments dense_caption` first"
        )
    return []


def pseudo_collection(name: str, teacher: Path, work: Path) -> Path:
    """The bundled collection plus pseudo-queries labelled by ``teacher``, built once per
    teacher under ``work/pseudo/`` (lightning_mlsr.data.pseudo_queries)."""
    from lightning_mlsr.data.pseudo_queries import build_pseudo_query_collection

    options = PSEUDO_QUERIES[name]
    tag = "-".join(f"{k}{v}" for k, v in sorted(options.items()))
    out = work / "pseudo" / f"{teacher.parent.name}-{tag}"
    if not (out / "collection.json").is_file():
        # built aside and renamed: queues running side by side never read a half-written one
        tmp = out.with_name(f"{out.name}.tmp{os.getpid()}")
        build_pseudo_query_collection("emoji", tmp, teacher, **options)  # type: ignore[arg-type]
        try:
            tmp.rename(out)
        except OSError:  # another queue finished first: keep its copy
            shutil.rmtree(tmp)
    return out


def hard_negatives(collection: Path, teacher: Path, depth: int) -> Path:
    """The teacher's top ``depth`` non-relevant captions of every training query of
    ``collection``, mined once beside it (lightning_mlsr.data.negatives; written aside and
    renamed, so a parallel queue never reads half a file)."""
    from lightning_mlsr.data.negatives import mine_hard_negatives

    out = collection / f"hard_negatives-depth{depth}.tsv"
    if not out.is_file():
        mine_hard_negatives(collection, out, teacher, depth=depth)
    return out


def teacher_seed(run: dict[str, Any]) -> int | None:
    """The seed of the dense caption model a distilled run learnt from (None: MiniLM)."""
    for option in run.get("overrides", []):
        if "distillation.init_args.checkpoint=" in option:
            return int(Path(option.split("=", 1)[1]).parent.name.removeprefix("seed"))
    return None


def _coactivation(docs: Any, datamodule: Any) -> dict[str, Any]:
    from lightning_mlsr.analysis import compare_models
    from lightning_mlsr.backbones import load_tokenizer

    tokenizer = load_tokenizer("splade-tiny")
    vocab = tokenizer.convert_ids_to_tokens(list(range(tokenizer.vocab_size)))
    captions = datamodule.collection.images.captions()
    stats = compare_models({"m": docs}, vocab, captions=captions, tokenize=tokenizer)["m"]
    return {k: (v if isinstance(v, str) else float(v)) for k, v in stats.items()}


def run_baselines() -> None:
    from lightning_mlsr.baselines import run_baseline
    from lightning_mlsr.data import load_collection
    from lightning_mlsr.metrics import evaluate

    collection = load_collection("emoji")
    for method in BASELINES:
        out = RUNS / "baselines" / method
        if (out / "metrics.json").is_file():
            continue
        metrics: dict[str, Any] = {"experiment": method}
        per_query: dict[str, Any] = {}
        for split in ("validation", "test"):
            result = run_baseline(method, collection, split)  # type: ignore[arg-type]
            metrics[split] = {
                **result.metrics,
                "q_nnz": result.q_nnz,
                "d_nnz": result.d_nnz,
                "flops_per_query": result.flops_per_query,
                "seconds": result.seconds,
            }
            qrels = collection.qrels[split]
            per_query[split] = evaluate(result.run, qrels, MEASURES, per_query=True)
        _write_json(out / "per_query.json", per_query)
        _write_json(out / "metrics.json", metrics)


# ---------------------------------------------------------------------- report


def load_runs() -> dict[str, list[dict[str, Any]]]:
    """Every finished run: ``{experiment: [metrics + per_query, ...]}`` (baselines included)."""
    runs: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(RUNS.glob("*/*/metrics.json")):
        record = json.loads(path.read_text())
        record["per_query"] = json.loads((path.parent / "per_query.json").read_text())
        runs.setdefault(record["experiment"], []).append(record)
    return runs


def seen_query_ids(split: str = "test") -> tuple[set[str], set[str]]:
    """Queries of ``split`` whose wordpieces all occur in some training query, and the rest."""
    from lightning_mlsr.backbones import load_tokenizer
    from lightning_mlsr.baselines.common import split_texts
    from lightning_mlsr.data import load_collection

    collection = load_collection("emoji")
    tokenizer = load_tokenizer("splade-tiny")
    train = set().union(*(tokenizer.tokenize(t) for t in split_texts(collection, "train")[1]))
    ids, texts = split_texts(collection, split)
    seen = {q for q, t in zip(ids, texts, strict=True) if set(tokenizer.tokenize(t)) <= train}
    return seen, set(ids) - seen


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _pm(values: Sequence[float | None], digits: int = 4) -> str:
    kept = [float(v) for v in values if v is not None]
    if not kept:
        return "–"
    mean, std = mean_std(kept)
    return f"{mean:.{digits}f}" if len(kept) == 1 else f"{mean:.{digits}f} ± {std:.{digits}f}"


def _label(name: str) -> str:
    return LABELS.get(name, f"{name} (baseline)" if name in BASELINES else name)


def _order(runs: dict[str, list[dict[str, Any]]]) -> list[str]:
    known = [n for _, n in EXPERIMENTS if n in runs] + [b for b in BASELINES if b in runs]
    return known + sorted(set(runs) - set(known))


def metrics_table(runs: dict[str, list[dict[str, Any]]], split: str) -> list[str]:
    cols = MEASURES + ["q_nnz", "d_nnz", "flops_per_query", "empty_docs"]
    lines = ["| model | seeds | " + " | ".join(cols) + " |", "|---|---:|" + "---:|" * len(cols)]
    for name in _order(runs):
        records = runs[name]
        cells = []
        for col in cols:
            values = [r[split].get(col) for r in records]
            digits = 0 if col == "flops_per_query" else 1 if col.endswith("nnz") else 4
            if col == "empty_docs":
                values = [None if v is None else 100 * v for v in values]
                digits = 1
            cells.append(_pm(values, digits))
        n = len(records) if name not in BASELINES else "–"
        lines.append(f"| {_label(name)} | {n} | " + " | ".join(cells) + " |")
    return lines


def significance(
    runs: dict[str, list[dict[str, Any]]], split: str = "test"
) -> list[dict[str, Any]]:
    """Every comparison in COMPARISONS whose two sides have finished runs, BH-adjusted."""
    rows = []
    for finding, a, b, measure in COMPARISONS:
        if a not in runs or b not in runs:
            continue
        per_a = seed_average([r["per_query"][split][measure] for r in runs[a]])
        per_b = seed_average([r["per_query"][split][measure] for r in runs[b]])
        rows.append(
            {"finding": finding, "a": a, "b": b, "measure": measure} | paired_test(per_a, per_b)
        )
    for row, p_adj in zip(rows, adjust([r["p"] for r in rows])):
        row["p_adj"] = p_adj
    return rows


def _mean_metric(
    runs: dict[str, list[dict[str, Any]]], name: str, key: str = "nDCG@10", split: str = "test"
) -> float | None:
    if name not in runs:
        return None
    return float(np.mean([r[split][key] for r in runs[name]]))


def findings(runs: dict[str, list[dict[str, Any]]], tests: list[dict[str, Any]]) -> list[str]:
    def sig(a: str, b: str, measure: str = "nDCG@10") -> dict[str, Any] | None:
        return next((t for t in tests if (t["a"], t["b"], t["measure"]) == (a, b, measure)), None)

    def sig_text(t: dict[str, Any] | None) -> str:
        return "no test" if t is None else f"{t['diff']:+.4f}, p_adj={t['p_adj']:.2g}"

    out = []
    m1, m2, m3, m4 = (
        _mean_metric(runs, n)
        for n in (
            "m1_mlm_mlm_image",
            "m2_mlp_mlm_caption",
            "m3_mlp_mlp_caption",
            "m4_mlp_mlp_image_caption",
        )
    )
    if None not in (m1, m2, m3, m4):
        assert m1 is not None and m2 is not None and m3 is not None and m4 is not None
        tests1 = [
            sig("m1_mlm_mlm_image", c)
            for c in ("m2_mlp_mlm_caption", "m3_mlp_mlp_caption", "m4_mlp_mlp_image_caption")
        ]
        significant = all(t is not None and t["p_adj"] < 0.05 and t["diff"] < 0 for t in tests1)
        holds = m1 < 0.5 * min(m2, m3, m4) and significant
        out.append(
            f"1. **Image-only (M1) much worse than every caption model** — "
            f"{'holds' if holds else 'does not hold'}: mean test nDCG@10 M1 {m1:.4f} vs "
            f"M2/M3/M4 {m2:.4f}/{m3:.4f}/{m4:.4f}; paired differences "
            + "; ".join(sig_text(t) for t in tests1)
            + " (criterion: M1 below half the worst caption model, every difference significant)."
        )
        best = max(m2, m3)
        tests2 = [
            sig("m4_mlp_mlp_image_caption", c) for c in ("m2_mlp_mlm_caption", "m3_mlp_mlp_caption")
        ]
        better = any(t is not None and t["p_adj"] < 0.05 and t["diff"] > 0.02 for t in tests2)
        out.append(
            f"2. **Adding the image (M4) does not clearly beat caption-only** — "
            f"{'does not hold' if better else 'holds'}: M4 {m4:.4f} vs best of M2/M3 {best:.4f}; "
            "M4 − M2, M4 − M3: "
            + "; ".join(sig_text(t) for t in tests2)
            + " (criterion: no significant gain above 0.02)."
        )
        m4x = _mean_metric(runs, "m4x_mlp_mlm_image_caption")
        if m4x is not None:
            t_ndcg = sig("m4x_mlp_mlm_image_caption", "m3_mlp_mlp_caption")
            t_recall = sig("m4x_mlp_mlm_image_caption", "m3_mlp_mlp_caption", "R@1000")
            out.append(
                f"   The expanding image+caption model M4x: nDCG@10 {m4x:.4f} "
                f"(vs M3 {sig_text(t_ndcg)}), R@1000 vs M3 {sig_text(t_recall)}."
            )
    a = [r.get("coactivation") for r in runs.get("m1_mlm_mlm_image", [])]
    b = [r.get("coactivation") for r in runs.get("mlp_mlm_image", [])]
    a, b = [x for x in a if x], [x for x in b if x]
    if a and b:
        co_a, co_b = (mean_std([x["coactivation"] for x in v])[0] for v in (a, b))
        ov_a, ov_b = (mean_std([x["caption_overlap@10"] for x in v])[0] for v in (a, b))
        empty_b = mean_std([r["test"]["empty_docs"] for r in runs["mlp_mlm_image"]])[0]
        less, more = co_b < co_a, ov_b > ov_a
        verdict = (
            "holds" if less and more else ("partly holds" if less or more else "does not hold")
        )
        out.append(
            f"3. **An MLP query head makes image representations more interpretable and less "
            f"co-activated than an MLM query head** — {verdict} (means over {len(b)}/{len(a)} "
            f"seeds, no significance test: one value per seed): co-activation (mean pairwise "
            f"Jaccard of active terms) {co_b:.4f} (MLP-q) vs {co_a:.4f} (M1); share of top-10 "
            f"terms found in the caption {ov_b:.4f} vs {ov_a:.4f}; "
            f"{100 * empty_b:.1f}% of MLP-q image vectors are empty."
        )
    return out


DISTILLATION_TRIED = (
    "  {lead}: (1) the KL divergence between the "
    "teacher's and the student's in-batch score distributions (`losses.Distillation`, weight "
    "1.0, teacher temperature 0.05 as the dense model was trained, student temperature 1.0) "
    "added to InfoNCE, with the trained dense caption model of the table above as the "
    "teacher, for two students: MLP queries as M2 (`m2_distilled`) and MLM queries that can "
    "expand (`mlm_distilled`), 5 epochs of batch 64. A batch's other captions are mostly "
    "unrelated to the query, so the teacher's in-batch distribution says little beyond "
    "InfoNCE's label, and it is only ever computed for training queries, while most test "
    "tags share no wordpiece with them (see the seen/unseen table). (2) Pseudo-queries "
    "(`mlm_pseudo_distilled`): the same MLM/MLM student also trained on every whole word of "
    "the vocabulary that the teacher matches to some caption with cosine ≥ 0.4 ({pseudo}), "
    "each judged relevant to the teacher's top caption, 4 epochs; the table of test queries "
    "that were pseudo-queries shows where that gains and how far the student stays below "
    "the teacher on words it was trained on. (3) The same words judged relevant to the "
    "teacher's top 3 captions (`mlm_pseudo_top3_distilled`, 2 epochs, seed 42 only): no "
    "gain, so the ranking below the teacher's first caption is not what the student lacks. "
    "(4) `mlm_pseudo_english_distilled`: candidates also the 50,000 most frequent English "
    "words of `wordfreq` (most uncovered tags are words the WordPiece vocabulary splits into "
    "pieces) and a 5x learning rate for the student (2.5e-4; with 5e-5 it under-fits the "
    "words it is trained on), 2 epochs. (5) `mlm_pseudo_english_hardneg_distilled`: as (4), "
    "plus one teacher-mined hard negative per training pair (drawn from the teacher's 30 "
    "best captions not judged relevant to the query, `lightning_mlsr.data.negatives`), so "
    "the KL term sees the teacher's scores over captions that compete with the positive, as "
    "in SPLADE++ / D2S. (6) `mlm_pseudo_english_docexp_distilled`: as (4), with the "
    "documents expanded by the same teacher (doc2query-style: each pseudo-query appended to "
    "the caption it ranks first, in training and in the index; documents up to 48 "
    "wordpieces). (7) `mlm_pseudo_english_docexp3_distilled`: as (6), each pseudo-query "
    "appended to the captions of the teacher's top 3 (BM25 on validation: 0.345 with top-1 "
    "expansions, 0.374 with top-3), documents up to 64 wordpieces. Validation nDCG@10 "
    "against the counterparts: "
    "{gains} (no MLM/MLM model was trained without distillation, so the mlm_distilled gain "
    "mixes training and distillation). {untried}: expansion to the top 2 captions or "
    "longer documents, Margin-MSE over the hard negatives, "
    "more than one negative per pair or other mining depths, topic-aware batches (TAS-B), "
    "a student larger than SPLADE-tiny (2 layers, 128 hidden; no larger pretrained MLM head "
    "ships offline, and an untrained MLM head on MiniLM-L6 activates ~27.8k of 30.5k terms "
    "per text at init), a learning-rate sweep over seeds, other weights and temperatures."
)


def _run_collection(run: dict[str, Any]) -> Path:
    """The pseudo-query collection a run trained on (its ``--data.collection`` override)."""
    option = next(o for o in run["overrides"] if o.startswith("--data.collection="))
    return Path(option.split("=", 1)[1])


def _first_pseudo_run(runs: dict[str, list[dict[str, Any]]]) -> tuple[str, Path] | None:
    """The first finished pseudo-query experiment and the collection its first run trained on."""
    name = next((n for n in PSEUDO_QUERIES if n in runs), None)
    if name is None:
        return None
    return name, _run_collection(runs[name][0])


def _pseudo_summary(runs: dict[str, list[dict[str, Any]]]) -> str:
    """How many pseudo-queries the first pseudo-query run learnt from, from its collection."""
    found = _first_pseudo_run(runs)
    if found is None:
        return "no run finished yet"
    name, collection = found
    info = collection / "collection.json"
    if not info.is_file():
        return "collection not on this machine"
    made = json.loads(info.read_text("utf-8"))["pseudo_queries"]
    return (
        f"{made['pseudo_queries']:,} of {made['candidates']:,} words with the seed-"
        f"{teacher_seed(runs[name][0])} teacher"
    )


def targets(runs: dict[str, list[dict[str, Any]]]) -> list[str]:
    """The issue's targets, met or missed, from the numbers."""
    out = []
    dense_image = _mean_metric(runs, "dense_image")
    best_image = max(
        (v for v in (_mean_metric(runs, n) for n in IMAGE_ONLY) if v is not None), default=None
    )
    if dense_image is not None and best_image is not None:
        ok = best_image >= 0.5 * dense_image
        out.append(
            f"- Best image-only sparse model {best_image:.4f} vs 0.5 × dense image "
            f"{0.5 * dense_image:.4f}: {'met' if ok else 'missed'}."
        )
    for name in IMAGE_ONLY:
        if name in runs:
            shares = [100 * r["test"]["empty_docs"] for r in runs[name]]
            mean = float(np.mean(shares))
            out.append(
                f"- {_label(name)}: {mean:.1f}% empty test image vectors, mean of "
                f"{len(shares)} seed(s) (target ≤ 10%: {'met' if mean <= 10 else 'missed'}); "
                f"per seed: " + ", ".join(f"{v:.1f}%" for v in shares) + "."
            )
    met = False  # by some distilled model, on a 3-seed mean
    for name in DISTILLED:
        distilled = _mean_metric(runs, name)
        if distilled is None:
            continue
        teachers = [teacher_seed(r) for r in runs[name]]
        pairs = ", ".join(
            f"seed {r['seed']} from {'MiniLM as shipped' if t is None else f'seed {t}'}"
            for r, t in zip(runs[name], teachers, strict=True)
        )
        n = len(runs[name])
        q_nnz, d_nnz, flops = (
            _mean_metric(runs, name, key) or 0.0 for key in ("q_nnz", "d_nnz", "flops_per_query")
        )
        if distilled < 0.42:
            verdict = f"missed by {0.42 - distilled:.4f}"
        elif n >= 3:
            verdict, met = "met", True
        else:  # the target is a mean over 3 seeds
            verdict = f"reached on {n} seed(s) so far; the target is a mean of 3"
        out.append(
            f"- {_label(name)}: {distilled:.4f} test nDCG@10, mean of {n} seed(s) (target ≥ "
            f"0.42: {verdict}); "
            f"teachers (trained dense caption models): {pairs}; mean over the seeds: "
            f"{q_nnz:.1f} query / {d_nnz:.1f} document non-zeros, {flops:.0f} FLOPS/query."
        )
    if any(n in runs for n in DISTILLED):  # missed or met, the account stays
        gains = []
        for name, base in (
            ("m2_distilled", "m2_mlp_mlm_caption"),
            ("mlm_distilled", "splade-zero-shot"),
            ("mlm_pseudo_distilled", "mlm_distilled"),
            ("mlm_pseudo_top3_distilled", "mlm_pseudo_distilled"),
            ("mlm_pseudo_english_distilled", "mlm_pseudo_distilled"),
            ("mlm_pseudo_english_hardneg_distilled", "mlm_pseudo_english_distilled"),
            ("mlm_pseudo_english_docexp_distilled", "mlm_pseudo_english_distilled"),
            ("mlm_pseudo_english_docexp3_distilled", "mlm_pseudo_english_docexp_distilled"),
        ):
            a, b = (_mean_metric(runs, n, split="validation") for n in (name, base))
            if a is not None and b is not None:
                gains.append(f"{_label(name)} {a:.4f} vs {_label(base)} {b:.4f} ({a - b:+.4f})")
        out.append(
            DISTILLATION_TRIED.format(
                lead="How the distillation target was reached, step by step"
                if met
                else "What was tried for the distillation target",
                untried="Not tried" if met else "Not tried yet",
                gains="; ".join(gains) or "not available",
                pseudo=_pseudo_summary(runs),
            )
        )
    m4x, m3 = (
        _mean_metric(runs, n, "R@1000") for n in ("m4x_mlp_mlm_image_caption", "m3_mlp_mlp_caption")
    )
    if m4x is not None and m3 is not None:
        out.append(f"- M4x R@1000 {m4x:.4f} vs M3 {m3:.4f}: {'met' if m4x > m3 else 'missed'}.")
    return out


def breakdown(
    runs: dict[str, list[dict[str, Any]]],
    groups: dict[str, set[str]] | None = None,
    names: Sequence[str] | None = None,
) -> list[str]:
    """Test nDCG@10 per group of queries (default: seen / unseen), per model."""
    if groups is None:
        seen, unseen = seen_query_ids("test")
        groups = {"seen": seen, "unseen": unseen}
    lines = [
        "| model | " + " | ".join(f"{g} ({len(ids)} queries)" for g, ids in groups.items()) + " |",
        "|---" + "|---:" * len(groups) + "|",
    ]
    for name in names or _order(runs):
        if name not in runs:
            continue
        per = seed_average([r["per_query"]["test"]["nDCG@10"] for r in runs[name]])
        cells = [
            _fmt(float(np.mean([per[q] for q in group if q in per])) if group else None)
            for group in groups.values()
        ]
        lines.append(f"| {_label(name)} | " + " | ".join(cells) + " |")
    return lines


def pseudo_coverage(runs: dict[str, list[dict[str, Any]]]) -> list[str]:
    """Per list of pseudo-queries (that of each pseudo-query experiment's first run; runs with
    the same words share a table): test queries that were among them vs the rest."""
    from lightning_mlsr.baselines.common import split_texts
    from lightning_mlsr.data import load_collection

    ids, queries = split_texts(load_collection("emoji"), "test")
    tables: dict[frozenset[str], tuple[Path, list[str]]] = {}
    out: list[str] = []
    for name in (n for n in PSEUDO_QUERIES if n in runs):
        tsv = _run_collection(runs[name][0]) / "pseudo_queries.tsv"
        if not tsv.is_file():
            out += [f"(Not computed for {_label(name)}: {tsv} is not on this machine.)", ""]
            continue
        lines = tsv.read_text("utf-8").splitlines()[1:]
        words = frozenset(line.split("\t")[1].lower() for line in lines)
        tables.setdefault(words, (tsv, []))[1].append(name)
    for words, (tsv, students) in tables.items():
        inside = {q for q, text in zip(ids, queries, strict=True) if text.lower() in words}
        groups = {"a pseudo-query": inside, "not a pseudo-query": set(ids) - inside}
        out += [
            f"{len(words)} pseudo-queries (`{tsv.parent.name}` under the work folder), those "
            f"of {', '.join(_label(n) for n in students)}; a test query is counted as a "
            "pseudo-query when its text equals one of them (case-insensitive). The student saw "
            "those words with the teacher's labels, never with the test judgments.",
            "",
            *breakdown(
                runs, groups, [*students, "mlm_distilled", "splade-zero-shot", "dense_caption"]
            ),
            "",
        ]
    return out[:-1] if out else out


def report(runs: dict[str, list[dict[str, Any]]]) -> str:
    tests = significance(runs)
    lines = [
        "# Results on the bundled `emoji` collection",
        "",
        f"Generated by `python scripts/make_results.py` on {date.today().isoformat()} "
        f"({platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, no GPU) from "
        "the finished runs under `results/runs/` (each row says how many seeds finished). "
        "Corpus: all 1911 images for every split; queries: the split's judged keyword tags "
        "(DATA.md). Metrics: trec_eval semantics (`lightning_mlsr.metrics`), top-1000 from the "
        "exact inverted index, best checkpoint by `val/nDCG@10`. Cells: mean ± sample standard "
        "deviation over seeds (42, 43, ...). `empty_docs`: % of image/caption vectors with no "
        "active term.",
        "",
    ]
    missing = [label for label, name in EXPERIMENTS if name not in runs]
    if missing:
        lines += [
            f"**Incomplete:** no finished run yet for {', '.join(missing)}; the regeneration "
            "is resumable (`python scripts/make_results.py`). Numbers of earlier code versions "
            "are in the git history of this file, not here.",
            "",
        ]
    for split in ("validation", "test"):
        lines += [f"## {split.capitalize()}", "", *metrics_table(runs, split), ""]
    lines += [
        "## Paired significance tests (test split)",
        "",
        "Paired t-test over queries (`scipy.stats.ttest_rel`) on per-query values averaged "
        "over each model's seeds; `p_adj`: Benjamini-Hochberg over all rows "
        "(`scipy.stats.false_discovery_control`).",
        "",
        "| finding | A | B | measure | queries | A | B | A − B | t | p | p_adj |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for t in tests:
        lines.append(
            f"| {t['finding']} | {_label(t['a'])} | {_label(t['b'])} | {t['measure']} | {t['n']} | "
            f"{t['mean_a']:.4f} | {t['mean_b']:.4f} | {t['diff']:+.4f} | {t['t']:.2f} | "
            f"{t['p']:.2g} | {t['p_adj']:.2g} |"
        )
    lines += [
        "",
        "## Seen vs unseen test queries (nDCG@10)",
        "",
        "Seen: every wordpiece of the query occurs in some training query; unseen: the rest.",
        "",
        *breakdown(runs),
        "",
        *(
            ["## Test queries that were pseudo-queries (nDCG@10)", "", *coverage, ""]
            if (coverage := pseudo_coverage(runs))
            else []
        ),
        "## Findings of BRIEF.md on this data",
        "",
        *findings(runs, tests),
        "",
        "## Targets of issue 12",
        "",
        *targets(runs),
        "",
        "## Runs",
        "",
        "| model | seed | epochs | optimizer steps | fit time |",
        "|---|---:|---:|---:|---:|",
    ]
    for name in _order(runs):
        for r in runs[name]:
            if "seed" in r:
                lines.append(
                    f"| {_label(name)} | {r['seed']} | {r['epochs']} | {r['steps']} | "
                    f"{r['fit_seconds'] / 60:.1f} min"
                    + (" (resumed: this attempt only)" if "resumed_from" in r else "")
                    + " |"
                )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--experiments", nargs="*", default=ORDER)
    parser.add_argument("--seeds", type=int, default=3, help="seeds per experiment (42, 43, ...)")
    parser.add_argument(
        "--seed-list", type=int, nargs="+", default=None, help="these seeds instead of --seeds"
    )
    parser.add_argument("--work", default=str(REPO / "outputs" / "results"), help="logs, ckpts")
    parser.add_argument("--results", default=str(REPO / "RESULTS.md"))
    parser.add_argument("--runs", default=None, help="where finished runs are kept")
    parser.add_argument("--no-baselines", action="store_true")
    parser.add_argument("--report-only", action="store_true", help="rebuild RESULTS.md only")
    parser.add_argument(
        "--restart-unfinished",
        action="store_true",
        help="start an interrupted (experiment, seed) fit over instead of resuming it",
    )
    parser.add_argument(
        "--cli-args",
        default="",
        help="extra `fit` overrides in one string: --cli-args='--trainer.limit_train_batches=5'",
    )
    args = parser.parse_args()
    if args.runs:
        globals()["RUNS"] = Path(args.runs)  # default: results/runs in the repository
    os.environ.setdefault("WANDB_MODE", "offline")
    extra = shlex.split(args.cli_args)
    if not args.report_only:
        if not args.no_baselines:
            run_baselines()
        # seed-major: every experiment gets a first seed before any gets a second
        seeds = args.seed_list or range(FIRST_SEED, FIRST_SEED + args.seeds)
        for seed in seeds:
            for name in args.experiments:
                if is_finished(name, seed):
                    continue
                print(f"=== {name} seed {seed}", flush=True)
                try:
                    work = Path(args.work)
                    options = extra + overrides_for(name, seed, work)
                    train_and_evaluate(name, seed, work, options, not args.restart_unfinished)
                except Exception:  # one failed run must not stop the regeneration
                    traceback.print_exc()
                    print(f"=== {name} seed {seed} FAILED; continuing", flush=True)
                Path(args.results).write_text(report(load_runs()))
    text = report(load_runs())
    Path(args.results).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
