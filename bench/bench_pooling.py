"""Benchmark MLM pooling: the vocabulary projection at kept positions only vs everywhere.

An MLM head (SPLADE) projects every token onto the vocabulary (``(., H) @ (H, V)``, V/H =
238 for SPLADE-tiny) and max-pools ``log(1 + relu(.))`` over the attention mask. Over a
dynamically padded batch the padded path projects all ``B x L`` positions and masks the
padding afterwards; the packed path (``models.pooling.pool_kept_vocab_logits``, what the heads
run) projects only the kept positions. This times one side's encoder, forward and backward
(the work of a training step on that side), both ways, on the same real training batches of
an experiment, alternating the two paths batch by batch so that load from other processes
hits both alike; it reports medians, packed ÷ padded time, the share of positions that are
tokens, and the largest difference between the two paths' vectors (rounding only).

Usage::

    python bench/bench_pooling.py [--config experiments/paper/m2_mlp_mlm_caption.yaml]
                                  [--side doc] [--steps 6] [--batch-size 64] [--threads 1]
                                  [--set data.batching.doc_max_length=64]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lightning_mlsr.models.pooling import pool_vocab_logits  # noqa: E402
from lightning_mlsr.models.transformer import TextTransformerEncoder  # noqa: E402
from lightning_mlsr.training.cli import BASE_CONFIG, main  # noqa: E402


def _parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="experiments/paper/m2_mlp_mlm_caption.yaml")
    parser.add_argument("--side", choices=["query", "doc"], default="doc")
    parser.add_argument("--steps", type=int, default=6, help="timed batches (each both ways)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed batches")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="config override"
    )
    args = parser.parse_args(argv)
    if args.steps < 1 or args.warmup < 0 or args.batch_size < 1:
        parser.error("need --steps >= 1, --warmup >= 0, --batch-size >= 1")
    return args


def _padded(head: TextTransformerEncoder) -> Callable[..., torch.Tensor]:
    """The head's term weights computed the padded way (every position projected)."""

    def expanded(hidden: torch.Tensor, keep: torch.Tensor, pooling: Any) -> torch.Tensor:
        assert head.mlm_head is not None
        return head._mask_special_terms(pool_vocab_logits(head.mlm_head(hidden), keep, pooling))

    return expanded


def _step(encoder: torch.nn.Module, inputs: dict[str, Any], weights: torch.Tensor) -> Any:
    encoder.zero_grad(set_to_none=True)
    start = time.perf_counter()
    out = encoder(inputs)
    (out * weights).sum().backward()
    return time.perf_counter() - start, out.detach()


def main_bench(args: argparse.Namespace) -> dict[str, float]:
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    cli = main(
        [
            "--config", str(BASE_CONFIG),
            "--config", str(ROOT / args.config),
            "--trainer.logger=false",
            "--trainer.callbacks=[]",
            "--trainer.enable_checkpointing=false",
            f"--data.batching.batch_size={args.batch_size}",
            *(f"--{kv}" for kv in args.set),
        ],
        run=False,
    )  # fmt: skip
    model, datamodule = cli.model, cli.datamodule
    encoder = model.doc_encoder if args.side == "doc" else model.query_encoder
    if not isinstance(encoder, TextTransformerEncoder) or encoder.mlm_head is None:
        raise SystemExit(f"{args.config}: the {args.side} encoder has no MLM head to pool")
    datamodule.set_batch_inputs(model.batch_inputs())
    datamodule.setup("fit")
    torch.manual_seed(0)
    batches = []
    while len(batches) < args.warmup + args.steps:
        for batch in datamodule.train_dataloader():
            batches.append(batch[args.side])
            if len(batches) == args.warmup + args.steps:
                break
    encoder.train()
    packed_times, padded_times, kept, diff = [], [], [], 0.0
    for i, inputs in enumerate(batches):
        weights = torch.rand(inputs["input_ids"].shape[0], encoder.vocab_size)
        order = ("packed", "padded") if i % 2 == 0 else ("padded", "packed")
        outs = {}
        for path in order:
            if path == "padded":
                encoder._expanded_term_weights = _padded(encoder)  # type: ignore[method-assign]
            torch.manual_seed(i)  # the same dropout masks both ways
            seconds, outs[path] = _step(encoder, inputs, weights)
            if path == "padded":
                del encoder._expanded_term_weights  # back to the class's (packed) method
            if i >= args.warmup:
                (packed_times if path == "packed" else padded_times).append(seconds)
        diff = max(diff, float((outs["packed"] - outs["padded"]).abs().max()))
        kept.append(float(inputs["attention_mask"].float().mean()))
    packed, padded = statistics.median(packed_times), statistics.median(padded_times)
    return {
        "packed_s": packed,
        "padded_s": padded,
        "ratio": packed / padded,
        "kept_share": statistics.mean(kept),
        "max_abs_diff": diff,
    }


def main_cli(argv: list[str] | None = None) -> None:
    args = _parse_args(argv)
    r = main_bench(args)
    print(
        f"{args.config} ({args.side} side, batch {args.batch_size}, {args.threads} thread(s), "
        f"{' '.join(args.set) or 'no overrides'}; {args.steps} timed batches, medians)\n\n"
        "| positions that are tokens | padded s/step | packed s/step | packed ÷ padded "
        "| max abs diff |\n|---|---|---|---|---|\n"
        f"| {r['kept_share']:.2f} | {r['padded_s']:.3f} | {r['packed_s']:.3f} "
        f"| {r['ratio']:.2f} | {r['max_abs_diff']:.1e} |"
    )


if __name__ == "__main__":
    main_cli()
