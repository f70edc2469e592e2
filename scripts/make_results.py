"""Regenerate RESULTS.md: ``python -m lightning_mlsr.report`` under its earlier flags.

    python scripts/make_results.py                          # all experiments, 3 seeds
    python scripts/make_results.py --seeds 5 --experiments m2_mlp_mlm_caption
    python scripts/make_results.py --report-only            # rebuild RESULTS.md from runs
    python scripts/make_results.py --unseen-queries --report-only  # and results/unseen_queries.tsv

What is run and reported is results/registry.yaml (lightning_mlsr/report/ reads it); every
other flag is passed on to ``python -m lightning_mlsr.report run``.
"""

from __future__ import annotations

import sys

from lightning_mlsr.report.cli import main


def translate(argv: list[str]) -> list[list[str]]:
    """The ``lightning_mlsr.report`` commands these flags stand for, in order."""
    commands = []
    if "--unseen-queries" in argv:
        argv = [a for a in argv if a != "--unseen-queries"]
        commands.append(["unseen-queries"])
    if "--report-only" in argv:
        kept = [a for a in argv if a != "--report-only"]
        commands.append(["build", *kept])
    else:
        commands.append(["run", *argv])
    return commands


if __name__ == "__main__":
    for command in translate(sys.argv[1:]):
        main(command)
