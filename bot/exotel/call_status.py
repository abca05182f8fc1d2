"""The call-status vocabulary, in one place: what Exotel's words mean, which statuses end a
call, and how far along each one is (a status only ever moves forward)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from bot.config.utc import as_utc

# Ours: Exotel's, plus `dial-failed` (our REST request to Exotel failed; Exotel never says it).
CALL_STATUSES: tuple[str, ...] = (
    "initiated", "ringing", "in-progress", "completed", "busy", "no-answer", "failed", "canceled",
    "dial-failed",
)
TERMINAL_CALL_STATUSES: frozenset[str] = frozenset(
    {"completed", "busy", "no-answer", "failed", "canceled", "dial-failed"}
)
STATUS_RANK: dict[str, int] = {
    "initiated": 0,
    "ringing": 1,
    "in-progress": 2,
    **{status: 3 for status in TERMINAL_CALL_STATUSES},
}

# Exotel's status words (and the spellings its docs and callbacks use) -> ours.
_EXOTEL_WORDS = {
    "queued": "initiated", "initiated": "initiated", "initiating": "initiated",
    "ringing": "ringing",
    "in-progress": "in-progress", "inprogress": "in-progress", "answered": "in-progress",
    "completed": "completed", "complete": "completed",
    "busy": "busy",
    "no-answer": "no-answer", "noanswer": "no-answer", "not-answered": "no-answer",
    "failed": "failed",
    "canceled": "canceled", "cancelled": "canceled",
}


def _word(value: Any) -> str:
    return re.sub(r"[\s_]+", "-", str(value).strip().lower())


def exotel_status(value: Any) -> str | None:
    """One of Exotel's status words as ours (`no_answer`, `Cancelled` tolerated); None if unknown."""
    if value is None or value == "":
        return None
    return _EXOTEL_WORDS.get(_word(value))


def normalize_status(value: Any) -> str | None:
    """Any status we may store: Exotel's words, or our own `dial-failed`; None if unknown."""
    if value is None or value == "":
        return None
    word = _word(value)
    return "dial-failed" if word == "dial-failed" else _EXOTEL_WORDS.get(word)


# An answered call whose media session never wrote its end (the flow never reached the
# Voicebot applet, or the worker died) is final this long after Exotel reported it completed.
SESSION_END_GRACE_SECS = 30.0


def call_is_over(status: str | None, ended_at: datetime | str | None, end_reason: str | None = None,
                 now: datetime | None = None) -> bool:
    """A record is final: a terminal status, and for answered calls also the media session's
    own end (`end_reason`, with the outcome and transcript). Exotel's `completed` callback can
    land a moment before the session has written its end; it sets `ended_at` but not that."""
    if status not in TERMINAL_CALL_STATUSES:
        return False
    if status != "completed" or end_reason:
        return True
    if not ended_at:
        return False
    ended = as_utc(datetime.fromisoformat(ended_at) if isinstance(ended_at, str) else ended_at)
    if ended is None:
        return False
    return ((now or datetime.now(UTC)) - ended).total_seconds() >= SESSION_END_GRACE_SECS
