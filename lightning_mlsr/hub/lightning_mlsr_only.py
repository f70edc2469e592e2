"""The sentence-transformers module of a folder that only lightning_mlsr can load.

An exported side with no sentence-transformers equivalent (an MLP term scorer, an image input, a
fusion) still holds a Hugging Face ``config.json``, from which sentence-transformers would
silently build a SPLADE model with an untrained MLM head. Its ``modules.json`` therefore names
:class:`LoadWithLightningMLSR`: sentence-transformers refuses a module class outside its own
package unless ``trust_remote_code=True``, and with it this class's ``load`` refuses, saying how
to load the folder. Imports nothing.
"""

from __future__ import annotations

from typing import Any, NoReturn

__all__ = ["LoadWithLightningMLSR"]


class LoadWithLightningMLSR:
    """Stands in a ``modules.json`` for a head sentence-transformers cannot compute."""

    @classmethod
    def load(cls, model_name_or_path: str, *args: Any, **kwargs: Any) -> NoReturn:
        raise ValueError(
            f"{model_name_or_path} is a lightning_mlsr encoder that sentence-transformers cannot "
            "run (its term scorer or image input has no sentence-transformers module; a "
            "SparseEncoder built from its config.json would have an untrained MLM head). Load "
            "it with: from lightning_mlsr.hub import load_encoder; "
            f"load_encoder({str(model_name_or_path)!r})"
        )
