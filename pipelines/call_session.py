"""What one call knows about itself, from the socket's first message to hang-up.

The session is per call and owned by the call's task: nothing here is shared between calls.
It is the one place the call's record is built. The parts of a call's pipeline see it through
the narrow views below (what each reads and writes), not as the whole session.
"""

from __future__ import annotations

import re
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from loguru import logger

from bot.config.lead_limits import MAX_ID_CHARS, MAX_NAME_CHARS
from bot.config.phone import mask_phone
from serializers.exotel_events import StreamStart, is_call_sid, is_stream_sid

# What the stream may tell us, bounded: Exotel passes at most 3 custom parameters of 256
# characters in all, and its numbers are short digit strings.
MAX_PARAMETERS = 10
MAX_PARAMETER_CHARS = 256
MAX_CAMPAIGN_CHARS = 100
_PHONE_TEXT = re.compile(r"\+?[0-9][0-9 ()-]{0,31}")


class CallClock(Protocol):
    """Seconds since the call's media started."""

    def elapsed(self, at: float | None = None) -> float: ...


class TranscriptLog(CallClock, Protocol):
    """Where the lines said on the call are written."""

    def add_transcript(self, role: str, text: str, t: float | None = None, **extra: Any) -> None: ...


class EdgeNotes(TranscriptLog, Protocol):
    """What the transport's edges note: caller audio, keys pressed, when the bot spoke."""

    inbound_audio_bytes: int
    dtmf: list[str]
    bot_speech: list[tuple[str, float]]


class TurnLog(CallClock, Protocol):
    """Per-turn latency figures."""

    turns: list[dict[str, Any]]


class CallResult(TranscriptLog, Protocol):
    """What the agent decides about the call: outcome, details, hand-off, the end."""

    call_sid: str
    lead: dict[str, Any]
    collected: dict[str, Any]
    escalated: bool
    outcome: str | None
    transcript: list[dict[str, Any]]

    def set_outcome(self, outcome: str, summary: str | None = None) -> None: ...

    def end(self, reason: str) -> None: ...


class InvalidStream(ValueError):
    """The stream's identity is not Exotel's (e.g. a call_sid that is not a short id)."""


@dataclass
class CallSession:
    """Identity, routing and outcome of one Exotel media stream."""

    call_sid: str
    stream_sid: str | None
    account_sid: str | None = None
    from_number: str | None = None
    to_number: str | None = None
    custom_parameters: dict[str, str] = field(default_factory=dict)
    query_parameters: dict[str, str] = field(default_factory=dict)
    sample_rate: int = 8000
    campaign: str | None = None
    lead: dict[str, Any] = field(default_factory=dict)
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    ended_at: datetime | None = None
    end_reason: str | None = None
    dtmf: list[str] = field(default_factory=list)
    inbound_audio_bytes: int = 0
    bot_speech: list[tuple[str, float]] = field(default_factory=list)  # (started|stopped, monotonic)
    outcome: str | None = None
    summary: str | None = None
    collected: dict[str, Any] = field(default_factory=dict)
    escalated: bool = False
    transcript: list[dict[str, Any]] = field(default_factory=list)  # {role, text, t, ...}
    turns: list[dict[str, Any]] = field(default_factory=list)  # per-turn latency figures
    recording_path: str | None = None
    on_update: Any = None  # called (no args) when the transcript grows, e.g. to save progress
    control: Any = None  # the running call's CallControl: how a draining server ends it politely
    metrics: dict[str, Any] = field(default_factory=dict)  # figures, and a few lists of them
    socket_opened_monotonic: float = field(default_factory=time.monotonic)
    start_received_monotonic: float = field(default_factory=time.monotonic)

    @classmethod
    def from_handshake(
        cls, start: StreamStart, query: dict[str, str], default_rate: int = 8000
    ) -> "CallSession":
        """Build the session from `start` (or a first `media`) and the socket's query string.

        Raises InvalidStream when the call or stream id is not shaped like Exotel's: those
        ids name the call's files and records. Over-long parameters and numbers are dropped."""
        custom = _bounded(start.custom_parameters)
        params = {**_bounded(query), **custom}  # Exotel's custom parameters win
        call_sid = start.call_sid or params.get("call_sid") or params.get("CallSid")
        if call_sid is not None and not is_call_sid(call_sid):
            raise InvalidStream(f"call_sid {call_sid[:40]!r} is not an Exotel call id")
        if start.stream_sid is not None and not is_stream_sid(start.stream_sid):
            raise InvalidStream(f"stream_sid {start.stream_sid[:40]!r} is not an Exotel stream id")
        call_sid = call_sid or f"unknown-{uuid.uuid4().hex[:16]}"
        rate = start.sample_rate or _rate_from_query(query) or default_rate
        lead: dict[str, Any] = {}
        lead_id = params.get("lead") or params.get("lead_id")
        if lead_id and len(lead_id) <= MAX_ID_CHARS:
            lead["id"] = lead_id
        name = params.get("name") or params.get("lead_name")
        if name and len(name) <= MAX_NAME_CHARS:
            lead["name"] = name
        elif name:
            logger.bind(call_sid=call_sid).warning(f"lead name of {len(name)} characters ignored (at most {MAX_NAME_CHARS})")
        campaign = params.get("campaign")
        return cls(
            call_sid=call_sid,
            stream_sid=start.stream_sid,
            account_sid=start.account_sid if is_call_sid(start.account_sid) else None,
            from_number=_phone_text(start.from_number),
            to_number=_phone_text(start.to_number),
            custom_parameters=custom,
            query_parameters=_bounded(query),
            sample_rate=rate,
            campaign=campaign if campaign and len(campaign) <= MAX_CAMPAIGN_CHARS else None,
            lead=lead,
        )

    def end(self, reason: str) -> None:
        """Record the first end reason only (later ones are consequences of the first)."""
        if self.end_reason is None:
            self.end_reason = reason

    def finish(self, fallback_reason: str) -> None:
        """The call is over: stamp the end time; keep the first reason given."""
        self.end(fallback_reason)
        self.ended_at = datetime.now(UTC)

    @property
    def pipeline_in_rate(self) -> int:
        """The rate the pipeline hears at: the stream's, except 24 kHz (Silero takes 8/16 kHz)."""
        return self.sample_rate if self.sample_rate in (8000, 16000) else 16000

    def elapsed(self, at: float | None = None) -> float:
        """Seconds from the stream's start to `at` (monotonic; default now): the `t` of
        transcript entries."""
        return round((time.monotonic() if at is None else at) - self.start_received_monotonic, 3)

    def add_transcript(self, role: str, text: str, t: float | None = None, **extra: Any) -> None:
        """One line of the conversation; `t` is when its speech started (seconds into the
        call; default now). Lines are added as they end (a bot line once heard or cut, a
        caller's once their turn is over), so a bot line the caller cut comes before the
        caller's words."""
        if text and text.strip():
            entry = {"role": role, "text": text.strip(), "t": self.elapsed() if t is None else t, **extra}
            self.transcript.append(entry)
            if self.on_update is not None:
                self.on_update()

    def set_outcome(self, outcome: str, summary: str | None = None) -> None:
        """The first explicit outcome wins (e.g. `transferred` is not overwritten by `error`)."""
        if self.outcome is None:
            self.outcome = outcome
        if summary and not self.summary:
            self.summary = summary

    def log_summary(self) -> dict[str, Any]:
        """The session as JSON-ready data, with phone numbers masked (for logs)."""
        return {
            "call_sid": self.call_sid,
            "stream_sid": self.stream_sid,
            "from": mask_phone(self.from_number),
            "to": mask_phone(self.to_number),
            "campaign": self.campaign,
            "lead_id": self.lead.get("id"),
            "sample_rate": self.sample_rate,
            "started_at": self.started_at.isoformat(),
            "ended_at": self.ended_at.isoformat() if self.ended_at else None,
            "end_reason": self.end_reason,
            "dtmf": "".join(self.dtmf),
            "outcome": self.outcome,
            "collected": self.collected,
            "turns": len(self.turns),
            "recording": self.recording_path,
            "inbound_audio_secs": round(self.inbound_audio_bytes / (2 * self.pipeline_in_rate), 2),
            **{k: round(v, 4) if isinstance(v, float) else v for k, v in self.metrics.items()},
        }


def _bounded(params: dict[str, str]) -> dict[str, str]:
    """At most MAX_PARAMETERS string parameters of at most MAX_PARAMETER_CHARS each."""
    kept = {k: v for k, v in params.items()
            if isinstance(k, str) and isinstance(v, str) and len(k) <= 64 and len(v) <= MAX_PARAMETER_CHARS}
    return dict(list(kept.items())[:MAX_PARAMETERS])


def _phone_text(value: str | None) -> str | None:
    """A number as the stream gave it, if it looks like one (it is stored and masked in logs)."""
    return value if value is not None and _PHONE_TEXT.fullmatch(value) else None


def _rate_from_query(query: dict[str, str]) -> int | None:
    value = query.get("sample-rate") or query.get("sample_rate")
    return int(value) if value in ("8000", "16000", "24000") else None
