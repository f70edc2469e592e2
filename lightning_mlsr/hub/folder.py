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
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lightning_mlsr.io.pretrained import load_tokenizer, resolve_text_backbone
from lightning_mlsr.models.encoder import Encoder, SparseEncoder
from lightning_mlsr.models.fusion import FusedImageTextHead, LateFusionHead
from lightning_mlsr.models.image import ImageMLMHead
from lightning_mlsr.models.static import StaticQueryHead
from lightning_mlsr.models.text import MLMHead, MLPHead
from lightning_mlsr.models.transformer import mlm_head_parts, split_masked_lm
from lightning_mlsr.training.trusted_classes import check_head_config, head_class

__all__ = ["ExportError", "load_encoder", "save_encoder", "silence_special_terms"]

MANIFEST = "lightning_mlsr.json"
EXTRA_WEIGHTS = "lightning_mlsr_head.safetensors"
FORMAT = "lightning_mlsr-encoder"
VERSION = 1
_HERE = "."  # a constructor argument that names the folder itself
_PARTS = ("image_head", "text_head")  # a LateFusionHead's sub-folders
_ST_TRANSFORMER = "sentence_transformers.base.modules.transformer.Transformer"
_ST_POOLING = "sentence_transformers.sparse_encoder.modules.splade_pooling.SpladePooling"
_ST_STATIC = (
    "sentence_transformers.sparse_encoder.modules.sparse_static_embedding.SparseStaticEmbedding"
)
_ST_REFUSAL = "lightning_mlsr.hub.lightning_mlsr_only.LoadWithLightningMLSR"
#: files of a folder its manifest does not pin: the manifest itself and the model card
_UNPINNED = (MANIFEST, "README.md")


class ExportError(ValueError):
    """A head (or folder) this module cannot write (or read)."""


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
        "modalities": sorted(head.modalities),
        "sentence_transformers": None,
    }
    if isinstance(head, LateFusionHead):
        parts = {"text_head": head.text_head, "image_head": head.image_head}
        for name, part in parts.items():
            save_encoder(part, out / name, max_length)
        manifest["init_args"] = {"combine": head.combine}
        manifest["parts"] = sorted(parts)
    elif isinstance(head, MLMHead):
        _save_masked_lm(head, out, silence=True)
        manifest["init_args"] = {
            "backbone": _HERE,
            "pooling": head.pooling,
            "exclude_special_tokens": head.exclude_special_tokens,
        }
        if not head.exclude_special_tokens:  # SpladePooling pools over the attention mask
            _write_st_splade(out, head.pooling)
            manifest["sentence_transformers"] = "SparseEncoder"
    elif isinstance(head, MLPHead):
        _save_transformer(head.encoder, out)
        manifest["init_args"] = {"backbone": _HERE, "pooling": head.pooling}
    elif isinstance(head, StaticQueryHead):
        _write_st_static(head, out)
        manifest["init_args"] = {"backbone": _HERE, "checkpoint": _HERE}
        manifest["sentence_transformers"] = "SparseEncoder"
    elif isinstance(head, FusedImageTextHead):
        if head.mlm_head is not None:
            _save_masked_lm(head, out, silence=False)
        else:
            _save_transformer(head.encoder, out)
        manifest["init_args"] = {
            "backbone": _HERE,
            "head": head.head,
            "pooling": head.pooling,
            **_image_args(head),
        }
    elif isinstance(head, ImageMLMHead):
        _save_masked_lm(head, out, silence=False)
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
        extras = _extra_weights(head)
        if extras:
            from safetensors.torch import save_file

            save_file(extras, str(out / EXTRA_WEIGHTS))
    if manifest["sentence_transformers"] is None:
        _write_json(
            out / "modules.json", [{"idx": 0, "name": "0", "path": "", "type": _ST_REFUSAL}]
        )
    manifest["sha256"] = _file_hashes(out)
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


def _file_hashes(folder: Path) -> dict[str, str]:
    """``relative path -> sha256`` of every file in ``folder`` but its manifests and card."""
    return {
        path.relative_to(folder).as_posix(): _sha256(path)
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name not in _UNPINNED
    }


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()


def _verify_files(folder: Path, manifest: dict[str, Any], manifest_file: Path) -> None:
    """Every file the manifest pins is there, unchanged (folders exported before the hashes
    were recorded have none to check)."""
    pinned = manifest.get("sha256") or {}
    if not isinstance(pinned, dict):
        raise ExportError(f"{str(manifest_file)!r}: sha256 is not a mapping of file -> hash")
    for name, expected in pinned.items():
        path = (folder / str(name)).resolve()
        if not path.is_relative_to(folder):
            raise ExportError(f"{str(manifest_file)!r}: sha256 names {name!r}, outside the folder")
        if not path.is_file():
            raise ExportError(
                f"{str(path)!r} is missing: {MANIFEST} lists it as part of the export. Copy or "
                "download the whole folder again"
            )
        if _sha256(path) != expected:
            raise ExportError(
                f"{str(path)!r} is not the file that was exported (its sha256 differs from the "
                f"one {MANIFEST} records): it was edited or damaged since. Restore the "
                "exported file (download or copy the folder again, or re-export the checkpoint)"
            )


def _image_args(head: Any) -> dict[str, Any]:
    """Constructor arguments of a head's image backbone; its weights travel in the extras."""
    size = head.image_backbone.data_config["input_size"][-1]
    return {
        "image_backbone": head.image_backbone.name,
        "image_pretrained": False,
        "image_size": int(size),
        "freeze_image_backbone": bool(head.freeze_image_backbone),
    }


def _jsonable(config: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in config.items()}


def _extra_weights(head: nn.Module) -> dict[str, torch.Tensor]:
    """The state a Hugging Face folder does not hold: everything outside the transformer
    and MLM head (the special-id buffer is rebuilt from the tokenizer)."""
    skip = ("encoder.", "mlm_head.")
    state = head.state_dict()
    return {
        k: v.detach().cpu().contiguous().clone()
        for k, v in state.items()
        if not k.startswith(skip)
        and k != "special_token_ids"
        and not isinstance(head, StaticQueryHead)
    }


def _save_transformer(encoder: nn.Module, out: Path) -> None:
    cast_encoder: Any = encoder
    cast_encoder.save_pretrained(out)


def _save_masked_lm(head: Any, out: Path, silence: bool) -> None:
    """Reassemble the head's transformer and MLM head as one ``*ForMaskedLM`` and save it;
    an image head (no transformer of its own) gets a transformer of zero layers, so the
    folder holds its MLM head, vocabulary and embeddings and nothing unused."""
    from transformers import AutoConfig, AutoModelForMaskedLM

    encoder = getattr(head, "encoder", None)
    if encoder is not None:
        config = copy.deepcopy(encoder.config)
    else:
        config = AutoConfig.from_pretrained(resolve_text_backbone(head.mlm_backbone_name))
        config.num_hidden_layers = 0
    decoder: Any = mlm_head_parts(head.mlm_head)[1]
    tied = encoder is None or decoder.weight is encoder.get_input_embeddings().weight
    config.tie_word_embeddings = bool(tied)
    model: Any = AutoModelForMaskedLM.from_config(config)
    split: tuple[Any, Any] = split_masked_lm(model)
    new_encoder, new_head = split
    if encoder is not None:
        new_encoder.load_state_dict(encoder.state_dict())
    new_head.load_state_dict(head.mlm_head.state_dict())
    if encoder is None:  # the word embeddings are the decoder's (tied), nothing else is used
        cast_embeddings: Any = new_encoder.get_input_embeddings()
        cast_embeddings.weight.data.copy_(decoder.weight.data)
    if silence:
        silence_special_terms(new_head, head.special_token_ids)
    model.save_pretrained(out)


def silence_special_terms(
    mlm_head: nn.Module, special_ids: torch.Tensor, margin: float = 1.0
) -> None:
    """Lower the decoder bias of ``special_ids`` until their logit is below ``-margin`` for
    every possible input, so ``log(1 + relu(.))`` gives them 0 as ``MLMHead`` does.

    The decoder reads a LayerNorm output ``gamma * x + beta`` with ``||x||_2 <= sqrt(H)``, so
    row ``s`` of the decoder gives at most ``sqrt(H) * ||W_s * gamma||_2 + |W_s . beta|``
    plus its bias; the bias is set to minus that bound minus ``margin``.
    """
    parts: tuple[Any, Any] = mlm_head_parts(mlm_head)
    layer_norm, decoder = parts
    if decoder.bias is None:
        raise ExportError("the MLM decoder has no bias to silence special tokens with")
    ids = special_ids.to(decoder.weight.device)
    with torch.no_grad():
        rows = decoder.weight[ids].double()  # (S, H)
        gamma, beta = layer_norm.weight.double(), layer_norm.bias.double()  # (H,)
        bound = math.sqrt(rows.shape[1]) * (rows * gamma).norm(dim=1) + (rows @ beta).abs()
        decoder.bias[ids] = (-(bound + margin)).to(decoder.bias.dtype)


def _write_st_splade(out: Path, pooling: str) -> None:
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": _ST_TRANSFORMER},
        {"idx": 1, "name": "1", "path": "1_SpladePooling", "type": _ST_POOLING},
    ]
    _write_json(out / "modules.json", modules)
    _write_json(
        out / "sentence_bert_config.json",
        {
            "transformer_task": "fill-mask",
            "modality_config": {"text": {"method": "forward", "method_output_name": "logits"}},
            "module_output_name": "token_embeddings",
        },
    )
    (out / "1_SpladePooling").mkdir(exist_ok=True)
    _write_json(
        out / "1_SpladePooling" / "config.json",
        {"pooling_strategy": pooling, "activation_function": "relu", "embedding_dimension": None},
    )
    _write_st_model_config(out)


def _write_st_static(head: StaticQueryHead, out: Path) -> None:
    from safetensors.torch import save_file

    weight = head.term_weights().detach().cpu().float().clone()  # (V,)
    weight[head.special_token_ids.cpu()] = 0.0
    save_file({"weight": weight.contiguous()}, str(out / "model.safetensors"))
    _write_json(out / "config.json", {"frozen": False})
    _write_json(out / "modules.json", [{"idx": 0, "name": "0", "path": "", "type": _ST_STATIC}])
    _write_st_model_config(out)


def _write_st_model_config(out: Path) -> None:
    _write_json(
        out / "config_sentence_transformers.json",
        {
            "model_type": "SparseEncoder",
            "prompts": {"query": "", "document": ""},
            "default_prompt_name": None,
            "similarity_fn_name": "dot",
        },
    )


def _write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2) + "\n", encoding="utf-8")


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
    _verify_files(folder, manifest, manifest_file)
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
        expected = set(_extra_weights(head))
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
