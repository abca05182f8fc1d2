"""The JSON shape of a call record (the API, `bot calls show`, reports), and the JSON-safe
copies of what goes into the record's JSON columns."""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import date, datetime
from typing import Any

from bot.config.utc import as_utc
from bot.store.models import CallRecord


def jsonable(value: Any) -> Any:
    """A JSON-safe copy: str keys, lists for tuples, NaN/inf -> None, datetimes -> ISO strings."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    return str(value)


def _iso(value: datetime | None) -> str | None:
    value = as_utc(value)
    return value.isoformat() if value else None


def call_to_dict(record: CallRecord) -> dict[str, Any]:
    """call_sid, status, outcome, summary, transcript [{role, text, t, ...}], collected, lead,
    campaign, to_number, started_at, ended_at (ISO 8601 UTC), end_reason, recording ({url, path}
    or None), metrics, turns, escalated, duration_secs, answered_by."""
    transcript = []
    for entry in record.transcript or []:
        entry = dict(entry) if isinstance(entry, Mapping) else {"text": str(entry)}
        transcript.append(
            {"role": entry.pop("role", None), "text": entry.pop("text", ""), "t": entry.pop("t", None), **entry}
        )
    recording = None
    if record.recording_url or record.recording_path:
        recording = {"url": record.recording_url, "path": record.recording_path}
    return {
        "call_sid": record.call_sid,
        "status": record.status,
        "outcome": record.outcome,
        "summary": record.summary,
        "transcript": transcript,
        "collected": dict(record.collected or {}),
        "lead": dict(record.lead or {}),
        "campaign": record.campaign,
        "to_number": record.to_number,
        "started_at": _iso(record.started_at),
        "ended_at": _iso(record.ended_at),
        "end_reason": record.end_reason,
        "recording": recording,
        "metrics": dict(record.metrics or {}),
        "turns": list(record.turns or []),
        "escalated": bool(record.escalated),
        "duration_secs": record.duration_secs,
        "answered_by": record.answered_by,
    }
