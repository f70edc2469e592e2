"""The sentence-transformers files of an exported folder: the module list and configs that
make a text MLM head a ``SparseEncoder`` (``Transformer`` + ``SpladePooling``) and a static
query head a ``SparseStaticEmbedding``, or, for every other head, a module list naming
:class:`~lightning_mlsr.hub.lightning_mlsr_only.LoadWithLightningMLSR` so that
sentence-transformers refuses the folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lightning_mlsr.models.static import StaticQueryHead

__all__ = ["write_st_refusal", "write_st_splade", "write_st_static"]

_ST_TRANSFORMER = "sentence_transformers.base.modules.transformer.Transformer"
_ST_POOLING = "sentence_transformers.sparse_encoder.modules.splade_pooling.SpladePooling"
_ST_STATIC = (
    "sentence_transformers.sparse_encoder.modules.sparse_static_embedding.SparseStaticEmbedding"
)
_ST_REFUSAL = "lightning_mlsr.hub.lightning_mlsr_only.LoadWithLightningMLSR"


def write_st_splade(out: Path, pooling: str) -> None:
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


def write_st_static(head: StaticQueryHead, out: Path) -> None:
    from safetensors.torch import save_file

    weight = head.term_weights().detach().cpu().float().clone()  # (V,)
    weight[head.special_token_ids.cpu()] = 0.0
    save_file({"weight": weight.contiguous()}, str(out / "model.safetensors"))
    _write_json(out / "config.json", {"frozen": False})
    _write_json(out / "modules.json", [{"idx": 0, "name": "0", "path": "", "type": _ST_STATIC}])
    _write_st_model_config(out)


def write_st_refusal(out: Path) -> None:
    """A module list that sentence-transformers refuses with a message naming lightning_mlsr."""
    _write_json(out / "modules.json", [{"idx": 0, "name": "0", "path": "", "type": _ST_REFUSAL}])


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
