"""Exotel's status callbacks, read in one place: the webhook, the store and the journal's
replay all take the `StatusUpdate` made here.

Exotel POSTs to the StatusCallback address form-encoded (its default), as multipart/form-data
or as JSON (`StatusCallbackContentType`), and its docs and callbacks spell fields more than
one way: `CallSid` / `call_sid` / `callSid` / `Sid`; `Status` / `CallStatus` /
`DialCallStatus`; `ConversationDuration`, else `Duration` / `CallDuration` /
`DialCallDuration`, else the first leg's `OnCallDuration`; `RecordingUrl` / `recording_url`;
`AnsweredBy`, else a leg's; the legs as a JSON list, a JSON string, `{"0": {...}}`, or form
fields `Legs[0][Status]` / `Legs[0].Status`. Names are compared without case, `_`, `-` or
spaces, and the first non-empty value among a field's spellings wins.

Form bodies (url-encoded or multipart) are parsed by the web framework (Starlette's
`request.form()`): hand their fields to `status_update`. `parse_status_callback` reads a
raw JSON or url-encoded body.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl

from bot.exotel.call_status import TERMINAL_CALL_STATUSES, exotel_status
from bot.exotel.errors import ExotelError
from bot.exotel.values import seconds, snippet, text

FORM_CONTENT_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
CallbackFields = Mapping[str, Any] | Iterable[tuple[str, Any]]


class InvalidStatusCallback(ExotelError, ValueError):
    """A status callback body without a CallSid or with a status we cannot read."""


@dataclass(frozen=True)
class CallLeg:
    """One entry of the callback's `Legs`."""

    status: str | None
    on_call_duration: float | None
    answered_by: str | None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class StatusUpdate:
    """What one status callback says about one call (None: it says nothing of that).

    The first six fields are what the store applies (and the journal keeps); the rest is
    what else the callback said."""

    call_sid: str
    status: str | None = None  # one of CALL_STATUSES
    recording_url: str | None = None
    answered_by: str | None = None
    duration_secs: float | None = None  # ConversationDuration, else Duration, else the first leg's
    at: datetime | None = None  # when it happened; default: when it is applied
    raw_status: str | None = None  # Exotel's own word
    event_type: str | None = None  # "terminal", "answered", or None (a callback without events)
    custom_field: str | None = None
    direction: str | None = None
    to: str | None = None
    from_: str | None = None
    date_created: str | None = None
    date_updated: str | None = None
    start_time: str | None = None
    end_time: str | None = None
    legs: list[CallLeg] = field(default_factory=list)
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_CALL_STATUSES

    @property
    def duration(self) -> int | None:
        """`duration_secs` in whole seconds."""
        return None if self.duration_secs is None else int(round(self.duration_secs))


def is_form(content_type: str | None) -> bool:
    """A body the web framework parses as a form (url-encoded or multipart)."""
    return _media_type(content_type) in FORM_CONTENT_TYPES


def parse_status_callback(content_type: str | None, body: bytes | str, *,
                          at: datetime | None = None) -> StatusUpdate:
    """Read a raw JSON or url-encoded StatusCallback body (JSON is sniffed when the content
    type says neither). A multipart body is the web framework's to parse (`status_update`).

    Raises `InvalidStatusCallback` (a ValueError) as `status_update` does; answer such a
    request 400 (Exotel retries non-2xx twice)."""
    decoded = body.decode("utf-8", errors="replace") if isinstance(body, bytes) else (body or "")
    kind = _media_type(content_type)
    if kind == "multipart/form-data":
        raise InvalidStatusCallback("a multipart body is parsed by the web framework, not here")
    if kind.endswith("json") or (kind != FORM_CONTENT_TYPES[0] and decoded.lstrip().startswith("{")):
        try:
            data = json.loads(decoded)
        except ValueError:
            raise InvalidStatusCallback(f"status callback is not valid JSON: {snippet(decoded, 80)!r}") from None
        if not isinstance(data, dict):
            raise InvalidStatusCallback("status callback JSON is not an object")
        return status_update(data, at=at)
    return status_update(parse_qsl(decoded, keep_blank_values=True), at=at)


def status_update(fields: CallbackFields, *, at: datetime | None = None,
                  require_status: bool = True) -> StatusUpdate:
    """One callback's fields (a JSON object, a form's name/value pairs, or a mapping) as a
    `StatusUpdate` whose status is one of ours.

    Raises `InvalidStatusCallback` for fields without a CallSid and, with `require_status`,
    for a status that is missing or not Exotel's (without it, such a status is None: the
    update says nothing of the status, and `raw_status` keeps the word)."""
    flat, form_legs = _flatten(fields)
    lookup: dict[str, Any] = {}
    for name, value in flat.items():
        key = _key(name)
        if key not in lookup or text(lookup[key]) is None:
            lookup[key] = value

    def get(*names: str) -> Any:
        for name in names:
            value = lookup.get(_key(name))
            if text(value) is not None:
                return value
        return None

    legs = [_leg(leg) for leg in _legs(lookup.get("legs")) or form_legs]
    call_sid = text(get("CallSid", "Sid"))
    if not call_sid:
        raise InvalidStatusCallback("status callback without a CallSid")
    event_type = text(get("EventType"))
    raw_status = text(get("Status", "CallStatus", "DialCallStatus"))
    status = exotel_status(raw_status)
    if status is None and raw_status is None and (event_type or "").lower() == "answered":
        status = "in-progress"
    if status is None and require_status:
        raise InvalidStatusCallback(f"status callback for {call_sid} with unknown Status {raw_status!r}")
    duration = seconds(get("ConversationDuration"))
    if duration is None:
        duration = seconds(get("Duration", "CallDuration", "DialCallDuration"))
    if duration is None and legs:
        duration = legs[0].on_call_duration
    answered_by = text(get("AnsweredBy")) or next((leg.answered_by for leg in legs if leg.answered_by), None)
    return StatusUpdate(
        call_sid=call_sid,
        status=status,
        recording_url=text(get("RecordingUrl")),
        answered_by=answered_by,
        duration_secs=duration,
        at=at,
        raw_status=raw_status,
        event_type=event_type.lower() if event_type else None,
        custom_field=text(get("CustomField")),
        direction=text(get("Direction")),
        to=text(get("To", "CallTo")),
        from_=text(get("From", "CallFrom")),
        date_created=text(get("DateCreated")),
        date_updated=text(get("DateUpdated")),
        start_time=text(get("StartTime")),
        end_time=text(get("EndTime")),
        legs=legs,
        raw=flat,
    )


# --------------------------------------------------------------------------- reading fields

_LEG_KEY = re.compile(r"^legs\[(\d+)\](?:\[([^\]]+)\]|\.(\w+))$", re.I)


def _media_type(content_type: str | None) -> str:
    return (content_type or "").split(";")[0].strip().lower()


def _key(name: str) -> str:
    return re.sub(r"[_\-\s]", "", name).lower()


def _flatten(fields: CallbackFields) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The fields by name, and the legs sent as form fields (`Legs[0][Status]=...`).

    Pairs (a form): a repeated name keeps its first value. A mapping whose values are lists
    (`parse_qs`'s shape) keeps each list's last value, except `Legs`. Uploaded files are not
    fields Exotel sends: they are left out."""
    flat: dict[str, Any] = {}
    legs: dict[int, dict[str, Any]] = {}
    if isinstance(fields, Mapping):
        pairs: Iterable[tuple[str, Any]] = (
            (str(name), value[-1] if isinstance(value, (list, tuple)) and value and _key(str(name)) != "legs"
             else value)
            for name, value in fields.items()
        )
    else:
        pairs = fields
    for name, value in pairs:
        if not isinstance(value, (str, int, float, bool, list, dict)) and value is not None:
            continue  # an UploadFile
        match = _LEG_KEY.match(name)
        if match:
            legs.setdefault(int(match.group(1)), {})[match.group(2) or match.group(3)] = value
        elif name not in flat:
            flat[name] = value
    return flat, [legs[i] for i in sorted(legs)]


def _legs(value: Any) -> list[dict[str, Any]]:
    """`Legs` given whole: a JSON list or string of one, `{"0": {...}}`, or a single leg."""
    if isinstance(value, str) and value.strip().startswith(("[", "{")):
        try:
            value = json.loads(value)
        except ValueError:
            return []
    if isinstance(value, dict):
        value = list(value.values()) if all(isinstance(v, dict) for v in value.values()) else [value]
    return [leg for leg in value if isinstance(leg, dict)] if isinstance(value, list) else []


def _leg(leg: Mapping[str, Any]) -> CallLeg:
    lookup = {_key(str(k)): v for k, v in leg.items()}
    raw_status = text(lookup.get("status"))
    return CallLeg(
        status=exotel_status(raw_status) or raw_status,
        on_call_duration=seconds(lookup.get("oncallduration")),
        answered_by=text(lookup.get("answeredby")),
        raw=dict(leg),
    )
