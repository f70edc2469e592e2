"""What the CLI keeps out of a run's output: start-up noise that tells a researcher nothing."""

from __future__ import annotations

import contextlib
import logging
import warnings

__all__ = ["quiet_startup_noise"]


class _DropMessages(logging.Filter):
    """Drops log records whose message starts with one of ``prefixes``."""

    def __init__(self, *prefixes: str) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith(self.prefixes)


def quiet_startup_noise() -> None:
    """Silence start-up output that tells a researcher nothing, and only that.

    - Lightning's advertisement for litlogger (an info record, every run);
    - PyTorch's ``LeafSpec`` deprecation raised from inside Lightning's own pytree helper
      (nothing a user can act on; other deprecations stay visible);
    - transformers' "Loading weights" bars for the 2-layer backbones (instant here).

    The W&B "anonymous" warning is avoided at its source by
    :class:`lightning_mlsr.training.callbacks.loggers.WandbLogger`.
    """
    rank_zero = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _DropMessages) for f in rank_zero.filters):
        rank_zero.addFilter(_DropMessages("💡 Tip: For seamless cloud logging"))
    warnings.filterwarnings(
        "ignore", message=r".*isinstance\(treespec, LeafSpec\).*", category=FutureWarning
    )
    with contextlib.suppress(ImportError):
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
