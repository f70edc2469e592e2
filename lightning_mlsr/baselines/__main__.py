"""``python -m lightning_mlsr.baselines``."""

from lightning_mlsr.baselines.cli import main

if __name__ == "__main__":
    main()
