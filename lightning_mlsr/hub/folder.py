"""One side of a bi-encoder as a self-describing folder, and back.

:func:`save_encoder` writes a head's transformer as a Hugging Face folder (``config.json``,
``model.safetensors``, tokenizer files), its other layers (term scorers, image projections,
the image backbone) in ``lightning_mlsr_head.safetensors``, and what rebuilds it in
``lightning_mlsr.json`` (class, constructor arguments, image-backbone name and
preprocessing, and the sha256 of every other file but the card). :func:`load_encoder`
rebuilds the head from the folder alone, with the same vectors, no training configuration
needed; it refuses a file that differs from its recorded hash (a ``config.json`` edited to
another depth would otherwise load with a warning and other vectors) and builds only
registered heads.

What else loads the folder:

- a text :class:`~lightning_mlsr.models.MLMHead` (max or sum pooling over the attention
  mask) is also a sentence-transformers ``SparseEncoder`` (a fill-mask ``Transformer`` and
  ``SpladePooling``), with the same vectors: the decoder bias of every special token is set
  so far below zero that its logit is negative for any input (see
  :func:`silence_special_terms`), which is what ``MLMHead``'s zeroing of those columns does;
- a :class:`~lightning_mlsr.models.StaticQueryHead` is a sentence-transformers
  ``SparseStaticEmbedding`` (its weight table, special tokens at 0);
- MLP heads, image heads and fusion heads (and an MLM head that excludes special tokens)
  load in ``lightning_mlsr`` only (their term scorer or image input has no
  sentence-transformers module). Their ``modules.json`` names
  :class:`~lightning_mlsr.hub.lightning_mlsr_only.LoadWithLightningMLSR`, so that
  sentence-transformers refuses the folder instead of building a SPLADE model with an
  untrained MLM head from its ``config.json``.

The manifest and its file hashes are in :mod:`~lightning_mlsr.hub.manifest`, the weight files
in :mod:`~lightning_mlsr.hub.weight_files`, the sentence-transformers configuration in
:mod:`~lightning_mlsr.hub.sentence_transformers_files`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lightning_mlsr.hub.manifest import (
    EXTRA_WEIGHTS,
    FORMAT,
    MANIFEST,
    VERSION,
    ExportError,
    file_hashes,
    verify_files,
)
from lightning_mlsr.hub.sentence_transformers_files import (
    write_st_refusal,
    write_st_splade,
    write_st_static,
)
from lightning_mlsr.hub.weight_files import (
    extra_weights,
    save_masked_lm,
    save_transformer,
    silence_special_terms,
)
from lightning_mlsr.io.pretrained import load_tokenizer
from lightning_mlsr.models.encoder import Encoder, SparseEncoder
from lightning_mlsr.models.fusion import FusedImageTextHead, LateFusionHead
from lightning_mlsr.models.image import ImageMLMHead
from lightning_mlsr.models.static import StaticQueryHead
from lightning_mlsr.models.text import MLMHead, MLPHead
from lightning_mlsr.training.trusted_classes import check_head_config, head_class

__all__ = ["ExportError", "load_encoder", "save_encoder", "silence_special_terms"]

_HERE = "."  # a constructor argument that names the folder itself
_PARTS = ("image_head", "text_head")  # a LateFusionHead's sub-folders


# --------------------------------------------------------------------------- saving


def save_encoder(head: Encoder, out: str | Path, max_length: int | None = None) -> dict[str, Any]:
    """Write ``head`` as a folder that :func:`load_encoder` rebuilds with the same vectors.

    Args:
        head: a trained head (its weights are copied, the head is not changed).
        out: the folder to write: new or empty.
        max_length: the most tokens the head was trained on, recorded as the tokenizer's
            ``model_max_length`` so that other libraries truncate alike (None: keep it).

    Returns:
        the manifest written to ``lightning_mlsr.json``.
    """
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise ExportError(
            f"{str(out)!r} is not empty; export into a new folder (files left from another "
            "head would be read as this one's)"
        )
    out.mkdir(parents=True, exist_ok=True)
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "class_path": f"{type(head).__module__}.{type(head).__qualname__}",
        "vocab_size": getattr(head, "vocab_size", None),
        "modalities": sorted(head.reads().modalities),
        "sentence_transformers": None,
    }
    if isinstance(head, LateFusionHead):
        parts = {"text_head": head.text_head, "image_head": head.image_head}
        for name, part in parts.items():
            save_encoder(part, out / name, max_length)
        manifest["init_args"] = {"combine": head.combine}
        manifest["parts"] = sorted(parts)
    elif isinstance(head, MLMHead):
        save_masked_lm(head, out, silence=True)
        manifest["init_args"] = {
            "backbone": _HERE,
            "pooling": head.pooling,
            "exclude_special_tokens": head.exclude_special_tokens,
        }
        if not head.exclude_special_tokens:  # SpladePooling pools over the attention mask
            write_st_splade(out, head.pooling)
            manifest["sentence_transformers"] = "SparseEncoder"
    elif isinstance(head, MLPHead):
        save_transformer(head.encoder, out)
        manifest["init_args"] = {"backbone": _HERE, "pooling": head.pooling}
    elif isinstance(head, StaticQueryHead):
        write_st_static(head, out)
        manifest["init_args"] = {"backbone": _HERE, "checkpoint": _HERE}
        manifest["sentence_transformers"] = "SparseEncoder"
    elif isinstance(head, FusedImageTextHead):
        if head.mlm_head is not None:
            save_masked_lm(head, out, silence=False)
        else:
            save_transformer(head.encoder, out)
        manifest["init_args"] = {
            "backbone": _HERE,
            "head": head.head,
            "pooling": head.pooling,
            **_image_args(head),
        }
    elif isinstance(head, ImageMLMHead):
        save_masked_lm(head, out, silence=False)
        manifest["init_args"] = {"text_backbone": _HERE, "wiring": head.wiring, **_image_args(head)}
    else:
        raise ExportError(
            f"cannot export {type(head).__name__}: supported are MLMHead, MLPHead, "
            "StaticQueryHead, ImageMLMHead, FusedImageTextHead and LateFusionHead"
        )
    backbone = getattr(head, "image_backbone", None)
    if backbone is not None and not isinstance(head, LateFusionHead):
        manifest["image_backbone"] = {
            "name": backbone.name,
            "preprocessing": _jsonable(backbone.data_config),
            "num_features": backbone.num_features,
            "cache_key": backbone.cache_key,
        }
    if not isinstance(head, LateFusionHead):
        vocab_name = head.text_backbone_name or getattr(head, "mlm_backbone_name", None)
        tokenizer = load_tokenizer(vocab_name) if vocab_name else None
        if tokenizer is not None:
            if max_length is not None:
                tokenizer.model_max_length = int(max_length)
            tokenizer.save_pretrained(out)
        extras = extra_weights(head)
        if extras:
            from safetensors.torch import save_file

            save_file(extras, str(out / EXTRA_WEIGHTS))
    if manifest["sentence_transformers"] is None:
        write_st_refusal(out)
    manifest["sha256"] = file_hashes(out)
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


def _image_args(head: Any) -> dict[str, Any]:
    """Constructor arguments of a head's image backbone; its weights travel in the extras."""
    size = head.image_backbone.data_config["input_size"][-1]
    return {
        "image_backbone": head.image_backbone.name,
        "image_pretrained": False,
        "image_size": int(size),
        "freeze_image_backbone": bool(head.image_backbone.frozen),
    }


def _jsonable(config: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in config.items()}


# --------------------------------------------------------------------------- loading


def load_encoder(folder: str | Path) -> Encoder:
    """The head saved in ``folder`` by :func:`save_encoder`, in eval mode."""
    folder = Path(folder).expanduser().resolve()
    manifest_file = folder / MANIFEST
    if not manifest_file.is_file():
        raise ExportError(
            f"{str(folder)!r} has no {MANIFEST}; it was not written by "
            "`python -m lightning_mlsr.hub export` (a masked-LM or sentence-transformers "
            "folder initialises a head as its backbone instead)"
        )
    try:
        manifest = json.loads(manifest_file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ExportError(
            f"{str(manifest_file)!r} is not valid JSON ({err}): the folder is damaged; copy or "
            "download it again"
        ) from err
    if not isinstance(manifest, dict):
        raise ExportError(f"{str(manifest_file)!r} is not a JSON object: the folder is damaged")
    if manifest.get("format") != FORMAT or int(manifest.get("version", 0)) > VERSION:
        raise ExportError(
            f"{str(manifest_file)!r} is format {manifest.get('format')!r} version "
            f"{manifest.get('version')}; this lightning_mlsr reads {FORMAT!r} up to version "
            f"{VERSION}: upgrade lightning_mlsr"
        )
    verify_files(folder, manifest, manifest_file)
    cls = head_class(manifest.get("class_path"), str(manifest_file))
    init_args = manifest.get("init_args")
    if not isinstance(init_args, dict):
        raise ExportError(f"{str(manifest_file)!r}: init_args is not a mapping of arguments")
    check_head_config(init_args, str(manifest_file), "init_args")
    args = {k: (str(folder) if v == _HERE else v) for k, v in init_args.items()}
    for name in manifest.get("parts") or []:
        if name not in _PARTS:
            raise ExportError(
                f"{str(manifest_file)!r}: parts names {name!r}; a fusion head's parts are "
                f"{sorted(_PARTS)}"
            )
        args[name] = load_encoder(folder / name)
    head: Encoder = cls(**args)
    extras_file = folder / EXTRA_WEIGHTS
    if extras_file.is_file():
        from safetensors.torch import load_file

        result = head.load_state_dict(load_file(str(extras_file)), strict=False)
        if result.unexpected_keys:
            raise ExportError(
                f"{str(extras_file)!r} holds weights {type(head).__name__} does not have: "
                f"{result.unexpected_keys[:5]}; the folder belongs to another version"
            )
        expected = set(extra_weights(head))
        missing = sorted(expected & set(result.missing_keys))
        if missing:
            raise ExportError(f"{str(extras_file)!r} lacks the weights {missing[:5]}")
    if isinstance(head, SparseEncoder) and manifest.get("vocab_size") not in (
        None,
        head.vocab_size,
    ):
        raise ExportError(
            f"{str(folder)!r}: the head scores {head.vocab_size} terms but was saved with "
            f"{manifest['vocab_size']}"
        )
    return head.eval()
