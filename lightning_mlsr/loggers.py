"""Lightning's W&B logger without the deprecated ``anonymous`` setting.

Lightning 2.6 always passes ``anonymous=None`` to ``wandb.init``; wandb >= 0.22 deprecated
the setting and warns on every run ("The anonymous setting has no effect ..."). Dropping the
key when the user did not set it removes the warning and changes nothing else.
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch.loggers import WandbLogger as _LightningWandbLogger

__all__ = ["WandbLogger"]


class WandbLogger(_LightningWandbLogger):
    """:class:`lightning.pytorch.loggers.WandbLogger`, minus an unset ``anonymous``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self._wandb_init.get("anonymous") is None:
            self._wandb_init.pop("anonymous", None)
