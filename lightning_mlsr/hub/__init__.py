"""Sharing and starting points: trained heads as self-describing folders (loadable by
``lightning_mlsr`` and, for text MLM and static heads, by sentence-transformers) with model
cards, and public sparse checkpoints (masked-LM SPLADE, sentence-transformers) as
initialisations."""

from __future__ import annotations

from lightning_mlsr.hub.folder import ExportError, load_encoder, save_encoder
from lightning_mlsr.io.public_checkpoints import load_static_weights, masked_lm_folder

__all__ = ["ExportError", "load_encoder", "load_static_weights", "masked_lm_folder", "save_encoder"]
