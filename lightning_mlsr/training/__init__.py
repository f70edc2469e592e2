"""Training with Lightning, by role.

- :mod:`~lightning_mlsr.training.system`: the LightningModule (``SparseBiEncoder``), its
  optimisation, its teacher-free checkpoints, and what its encoders tell the DataModule.
- :mod:`~lightning_mlsr.training.callbacks`: what the Trainer is given beside it: the
  retrieval evaluator, the vector writer, run checkpoints, fault tolerance, progress lines
  and the W&B logger with its panels.
- :mod:`~lightning_mlsr.training.cli`: ``python -m lightning_mlsr``.
- :mod:`~lightning_mlsr.training.runs`: the run's own directory, for all of them;
  :mod:`~lightning_mlsr.training.trusted_classes`: which classes a file may ask to build,
  and :mod:`~lightning_mlsr.training.moved_classes`: the class paths that moved;
  :mod:`~lightning_mlsr.training.model_loading`: a model for a notebook.
"""
