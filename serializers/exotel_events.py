"""Tolerant readers for Exotel's inbound events.

Exotel's own pages disagree (`stream_sid` vs `streamSid`, numbers as strings or ints, a
`start` that may never come), so every field is read through these helpers, which never
raise: a missing or malformed field reads as None.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

SUPPORTED_RATES = (8000, 16000, 24000)
# Exotel's call and stream ids are short letters-digits strings. Anything else in those fields
# is not Exotel speaking: such an id must never reach a file name, a log line or the database.
_SID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_STREAM_SID = re.compile(r"[A-Za-z0-9_.:-]{1,128}")


def is_call_sid(value: str | None) -> bool:
    """True for an id shaped like Exotel's CallSid (1-64 of A-Z a-z 0-9 _ -)."""
    return isinstance(value, str) and _SID.fullmatch(value) is not None


def is_stream_sid(value: str | None) -> bool:
    """True for an id shaped like Exotel's stream_sid (1-128 of A-Z a-z 0-9 _ - . :)."""
    return isinstance(value, str) and _STREAM_SID.fullmatch(value) is not None


def pick(obj: Any, *names: str) -> Any:
    """First present, non-None value among `names` in a mapping (None when obj isn't one)."""
    if not isinstance(obj, Mapping):
        return None
    for name in names:
        value = obj.get(name)
        if value is not None:
            return value
    return None


def as_str(value: Any) -> str | None:
    """A non-empty string from a str or a number; None otherwise."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value) if abs(value) < 10**30 else None
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        return str(int(value)) if value.is_integer() else str(value)
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


def as_int(value: Any) -> int | None:
    """An int from an int, an integral float or a numeric string; None otherwise."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
        return int(number) if math.isfinite(number) else None
    return None


def stream_sid_of(message: Mapping[str, Any]) -> str | None:
    """The stream id, wherever this variant of the protocol put it."""
    names = ("stream_sid", "streamSid", "stream_id", "streamId")
    return as_str(pick(message, *names)) or as_str(
        pick(pick(message, "start", "media", "stop", "mark", "dtmf"), *names)
    )


def custom_parameters_of(value: Any) -> dict[str, str]:
    """`custom_parameters` as a flat str->str dict (it may come as a dict, JSON or a query)."""
    if isinstance(value, str):
        text = value.strip()
        try:
            value = json.loads(text) if text.startswith("{") else dict(parse_qsl(text.lstrip("?")))
        except ValueError:
            return {}
    if not isinstance(value, Mapping):
        return {}
    result = {}
    for key, item in value.items():
        shown = as_str(item) if not isinstance(item, (dict, list)) else json.dumps(item)
        if isinstance(key, str) and shown is not None:
            result[key] = shown
    return result


@dataclass(frozen=True)
class StreamStart:
    """What Exotel's `start` event (or a first `media` without one) tells about the call."""

    stream_sid: str | None = None
    call_sid: str | None = None
    account_sid: str | None = None
    from_number: str | None = None
    to_number: str | None = None
    custom_parameters: dict[str, str] = field(default_factory=dict)
    sample_rate: int | None = None
    encoding: str | None = None

    @classmethod
    def from_message(cls, message: Mapping[str, Any]) -> "StreamStart":
        """Read a `start` event in any of its documented spellings."""
        start = pick(message, "start") or {}
        media_format = pick(start, "media_format", "mediaFormat") or pick(
            message, "media_format", "mediaFormat"
        )
        rate = as_int(pick(media_format, "sample_rate", "sampleRate"))
        return cls(
            stream_sid=stream_sid_of(message),
            call_sid=as_str(pick(start, "call_sid", "callSid", "CallSid"))
            or as_str(pick(message, "call_sid", "callSid")),
            account_sid=as_str(pick(start, "account_sid", "accountSid"))
            or as_str(pick(message, "account_sid", "accountSid")),
            from_number=as_str(pick(start, "from", "from_number", "From")),
            to_number=as_str(pick(start, "to", "to_number", "To")),
            custom_parameters=custom_parameters_of(
                pick(start, "custom_parameters", "customParameters")
            ),
            sample_rate=rate if rate in SUPPORTED_RATES else None,
            encoding=as_str(pick(media_format, "encoding")),
        )
