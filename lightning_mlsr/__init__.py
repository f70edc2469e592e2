"""lightning_mlsr: multimodal learned sparse retrieval with PyTorch Lightning."""

__version__ = "0.1.0"
