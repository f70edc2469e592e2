"""The table of ``bench_train.py``: per (config, precision) cell, pairs/s of each path,
Lightning ÷ plain from total times and from step pairs, and bf16 ÷ fp32 per path."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from train_paths import PATHS, PRECISIONS


@dataclass
class Cell:
    """Timed step seconds of every repeat of one (config, precision), per path."""

    seconds: dict[str, list[list[float]]] = field(default_factory=lambda: {p: [] for p in PATHS})
    max_loss_diff: float = 0.0  # max |loss_lightning - loss_plain| over steps and repeats

    def pairs_per_s(self, path: str, batch_size: int) -> float:
        """Median over repeats of pairs / total timed seconds."""
        return statistics.median(len(s) * batch_size / sum(s) for s in self.seconds[path])

    def ratio_total(self) -> float:
        """Lightning ÷ plain throughput: median over repeats of plain / lightning total time."""
        pairs = zip(self.seconds["lightning"], self.seconds["plain"])
        return statistics.median(sum(p) / sum(a) for a, p in pairs)

    def _step_pairs(self) -> list[tuple[float, float]]:
        pairs = zip(self.seconds["lightning"], self.seconds["plain"])
        return [sp for a, p in pairs for sp in zip(a, p)]

    def ratio_step(self) -> float:
        """Lightning ÷ plain throughput: median over every timed step pair."""
        return statistics.median(p / a for a, p in self._step_pairs())

    def extra_ms(self) -> float:
        """Median of (lightning - plain) seconds over every timed step pair, in ms."""
        return 1000 * statistics.median(a - p for a, p in self._step_pairs())


def markdown(results: dict[tuple[str, str], Cell], batch_size: int) -> str:
    lines = [
        "| config | precision | lightning pairs/s | plain pairs/s | lightning ÷ plain (total) "
        "| lightning ÷ plain (step pairs) | lightning − plain ms/step | max loss diff |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for (name, precision), cell in results.items():
        lines.append(
            f"| {name.upper()} | {precision} | {cell.pairs_per_s('lightning', batch_size):.1f} "
            f"| {cell.pairs_per_s('plain', batch_size):.1f} | {cell.ratio_total():.3f} "
            f"| {cell.ratio_step():.3f} | {cell.extra_ms():+.1f} | {cell.max_loss_diff:.1e} |"
        )
    names = list(dict.fromkeys(n for n, _ in results))
    if all((n, p) in results for n in names for p in PRECISIONS):
        lines += ["", "| config | path | bf16 ÷ fp32 pairs/s |", "|---|---|---:|"]
        for name in names:
            for path in PATHS:
                bf16 = results[(name, "bf16-mixed")].pairs_per_s(path, batch_size)
                fp32 = results[(name, "32-true")].pairs_per_s(path, batch_size)
                lines.append(f"| {name.upper()} | {path} | {bf16 / fp32:.2f} |")
    return "\n".join(lines)
