"""One rule for timestamps everywhere: aware and in UTC; a naive one is taken to be UTC already
(SQLite keeps no time zone, and Exotel's callbacks and old records may carry none)."""

from __future__ import annotations

from datetime import UTC, datetime


def as_utc(value: datetime | None) -> datetime | None:
    """`value` as an aware UTC datetime (None stays None)."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
