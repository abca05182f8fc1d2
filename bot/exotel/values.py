"""Exotel's loosely typed values: numbers sent as strings or numbers, `""`, `null` or
`"None"` for nothing. Read here, once, by the REST client, its error bodies and the status
callbacks."""

from __future__ import annotations

import math
from typing import Any


def text(value: Any) -> str | None:
    """The value as stripped text; None for nothing (None, "", "null", "none")."""
    if value is None:
        return None
    stripped = str(value).strip()
    return None if stripped == "" or stripped.lower() in ("null", "none") else stripped


def seconds(value: Any) -> float | None:
    """A duration in seconds (never negative); None for nothing or a value that is not a number."""
    stripped = text(value)
    if stripped is None:
        return None
    try:
        number = float(stripped)
    except ValueError:
        return None
    return max(0.0, number) if math.isfinite(number) else None


def snippet(value: str, limit: int = 200) -> str:
    """One line of at most `limit` characters, for a log or an error message."""
    return " ".join(value.split())[:limit]
