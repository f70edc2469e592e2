"""The research around the product: what the repository's results are made of, not part of
the installed package.

``lightning_mlsr`` is what ``pip install`` gives a user; ``research`` lives only in this
checkout (``setup.cfg`` installs ``lightning_mlsr*`` alone) and is run from the repository
root. It uses the package's public interface (the CLI, the evaluator's run and metrics files,
:mod:`lightning_mlsr.retrieval.evaluation`); the package never imports it.

- :mod:`research.report`: trains the registered experiments (``results/registry.yaml``) and
  builds RESULTS.md (``python -m research.report run|build|prepare``);
- :mod:`research.significance`: the statistics behind RESULTS.md and the analysis notebook.
"""
