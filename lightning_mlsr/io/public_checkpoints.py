"""Starting points from public sparse checkpoints: a Hugging Face masked-LM SPLADE folder
or a sentence-transformers ``SparseEncoder`` folder (SPLADE, or inference-free with a
``SparseStaticEmbedding`` query route), read from disk without sentence-transformers.

A masked-LM folder (``config.json`` + weights + tokenizer) is already a text backbone:
``MLMHead(backbone=FOLDER)``. A sentence-transformers folder is resolved to the module
folder that holds its masked LM (:func:`masked_lm_folder`, used by the backbone resolver),
and its static query weights load into :class:`~lightning_mlsr.models.StaticQueryHead`
(:func:`load_static_weights`).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

__all__ = ["load_static_weights", "masked_lm_folder", "sentence_transformers_modules"]

_MASKED_LM_TYPES = ("MLMTransformer", "Transformer")
_STATIC_TYPE = "SparseStaticEmbedding"


class SparseCheckpointError(ValueError):
    """A folder is not a sparse checkpoint this package can start from."""


def sentence_transformers_modules(folder: str | Path) -> list[tuple[str, str, Path]]:
    """``(route, class name, folder)`` of every module of a sentence-transformers folder, in
    order; ``route`` is ``""`` outside a ``Router`` and e.g. ``"query"`` inside one."""
    root = Path(folder)
    modules_file = root / "modules.json"
    if not modules_file.is_file():
        raise SparseCheckpointError(
            f"{str(root)!r} has no modules.json, so it is not a sentence-transformers folder; "
            "give a SparseEncoder folder (saved with model.save) or a masked-LM folder with "
            "config.json"
        )
    out: list[tuple[str, str, Path]] = []
    for module in json.loads(modules_file.read_text(encoding="utf-8")):
        kind = str(module["type"]).rsplit(".", 1)[-1]
        path = root / module.get("path", "")
        if kind != "Router":
            out.append(("", kind, path))
            continue
        router = json.loads((path / "router_config.json").read_text(encoding="utf-8"))
        for route, names in router["structure"].items():
            for name in names:
                out.append((route, str(router["types"][name]).rsplit(".", 1)[-1], path / name))
    return out


def masked_lm_folder(folder: str | Path) -> Path:
    """The module folder holding the masked LM of a sentence-transformers SPLADE folder (the
    root for a plain SPLADE model, the document route's for an inference-free one)."""
    found = [
        (route, path)
        for route, kind, path in sentence_transformers_modules(folder)
        if kind in _MASKED_LM_TYPES and (path / "config.json").is_file()
    ]
    if len(found) != 1:
        names = [f"{route or 'main'}: {path}" for route, path in found] or ["none"]
        raise SparseCheckpointError(
            f"{str(folder)!r} holds {len(found)} masked-LM modules ({'; '.join(names)}); "
            "give the folder of the one to start from as the backbone"
        )
    return found[0][1]


def load_static_weights(folder: str | Path, vocab_size: int) -> torch.Tensor:
    """The per-term weights of the ``SparseStaticEmbedding`` in a sentence-transformers
    folder (the module's own folder, a model of that module alone, or an inference-free
    model's query route). Shape: ``(V,)`` fp32."""
    from safetensors.torch import load_file

    root = Path(folder)
    if (root / "modules.json").is_file():
        found = [p for _, kind, p in sentence_transformers_modules(root) if kind == _STATIC_TYPE]
        if len(found) != 1:
            raise SparseCheckpointError(
                f"{str(root)!r} holds {len(found)} SparseStaticEmbedding modules; give the "
                "folder of the one to start from"
            )
        root = found[0]
    weights_file = root / "model.safetensors"
    if not weights_file.is_file():
        raise SparseCheckpointError(
            f"{str(root)!r} has no model.safetensors; give a SparseStaticEmbedding folder "
            "saved by sentence-transformers (or by python -m lightning_mlsr.hub export)"
        )
    weight = load_file(str(weights_file)).get("weight")
    if weight is None or weight.ndim != 1:
        raise SparseCheckpointError(f"{str(weights_file)!r} has no 1-d 'weight' tensor")
    if weight.shape[0] != vocab_size:
        raise SparseCheckpointError(
            f"{str(weights_file)!r} weighs {weight.shape[0]} terms but the tokenizer has "
            f"{vocab_size}; use the checkpoint's own tokenizer as the head's backbone"
        )
    if not bool(torch.isfinite(weight).all()):
        raise SparseCheckpointError(f"{str(weights_file)!r}: the weights hold NaN or inf")
    return weight.float()
