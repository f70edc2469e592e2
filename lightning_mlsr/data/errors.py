"""The error raised for unusable data, and a helper to name offending ids in it."""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["DataError", "format_ids"]


class DataError(ValueError):
    """A collection on disk cannot be used as asked.

    The message names the offending file, column or ids and says what to do about it.
    """


def format_ids(ids: Iterable[object], limit: int = 10) -> str:
    """``"a, b, c"`` or ``"a, b, ... (25 in total)"``: the first ``limit`` ids and the count."""
    ids = list(ids)
    shown = ", ".join(repr(str(i)) for i in ids[:limit])
    return shown if len(ids) <= limit else f"{shown}, ... ({len(ids)} in total)"
