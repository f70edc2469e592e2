"""``python -m lightning_mlsr.retrieval.index export --engine pisa|anserini|seismic ...``"""

import sys

from lightning_mlsr.retrieval.index.engines.cli import main

if __name__ == "__main__":
    sys.exit(main())
