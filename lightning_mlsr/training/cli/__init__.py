"""``python -m lightning_mlsr fit|validate|test|predict|features``."""

from lightning_mlsr.training.cli.trainer_cli import BASE_CONFIG, main

__all__ = ["BASE_CONFIG", "main"]
