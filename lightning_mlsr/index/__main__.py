"""``python -m lightning_mlsr.index export --engine pisa|anserini|seismic ...``"""

import sys

from lightning_mlsr.index.engines.cli import main

if __name__ == "__main__":
    sys.exit(main())
