"""Lightning's W&B logger without the deprecated ``anonymous`` setting.

Lightning 2.6 always passes ``anonymous=None`` to ``wandb.init``; wandb >= 0.22 deprecated
the setting and warns on every run ("The anonymous setting has no effect ..."). Dropping the
key when the user did not set it removes the warning and changes nothing else.
"""

from __future__ import annotations

import os
from typing import Any

from lightning.pytorch.loggers import WandbLogger as _LightningWandbLogger

__all__ = ["WandbLogger"]


class WandbLogger(_LightningWandbLogger):
    """:class:`lightning.pytorch.loggers.WandbLogger`, minus an unset ``anonymous``, and
    offline unless told otherwise.

    Args:
        offline: ``None`` (default) logs offline unless the environment variable
            ``WANDB_MODE`` says otherwise (``python -m lightning_mlsr`` sets it to ``offline``
            when unset); ``true``/``false`` force it. Every other argument is Lightning's.
    """

    def __init__(self, *args: Any, offline: bool | None = None, **kwargs: Any) -> None:
        if offline is None:
            offline = os.environ.get("WANDB_MODE", "offline") in ("offline", "dryrun")
        kwargs["offline"] = offline
        super().__init__(*args, **kwargs)
        if self._wandb_init.get("anonymous") is None:
            self._wandb_init.pop("anonymous", None)
