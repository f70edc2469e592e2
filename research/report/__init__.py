"""RESULTS.md from a registry in data: ``results/registry.yaml`` (experiments, seeds,
baselines, comparison families, thresholds), ``results/protocol.yaml`` (what may be evaluated
on test) and ``results/report_text.md`` (the prose).

- :mod:`.registry` holds what those files say, :mod:`.registry_file` reads and checks them;
- :mod:`.runner` trains and evaluates every (experiment, seed) through the CLI, resumably,
  into ``results/runs/`` (:mod:`.fitting`: one fit; :mod:`.teachers`: the teachers of the
  distilled ones; :mod:`.cross_domain`: the tests on other collections; :mod:`.evaluations`:
  what an evaluation wrote); :mod:`.pipelines` makes the teacher-labelled data some of them
  train on;
- :mod:`.builder` renders RESULTS.md from the finished runs (:mod:`.tables`,
  :mod:`.statistics`, :mod:`.findings`, :mod:`.targets`, :mod:`.figures`).

Run from the repository root (``research`` is not installed)::

    python -m research.report run        # every experiment, 3 seeds, then RESULTS.md
    python -m research.report build      # RESULTS.md from results/runs only
"""
