"""RESULTS.md from a registry in data: ``results/registry.yaml`` (experiments, seeds,
baselines, comparison families, thresholds), ``results/protocol.yaml`` (what may be evaluated
on test) and ``results/report_text.md`` (the prose).

- :mod:`.registry` reads and checks those files;
- :mod:`.runner` trains and evaluates every (experiment, seed) through the CLI, resumably,
  into ``results/runs/``; :mod:`.pipelines` makes the teacher-labelled data some of them train on;
- :mod:`.builder` renders RESULTS.md from the finished runs.

Run from the repository root (``research`` is not installed)::

    python -m research.report run        # every experiment, 3 seeds, then RESULTS.md
    python -m research.report build      # RESULTS.md from results/runs only
"""
