"""Call records: one row per Exotel CallSid, from the dial to the media session's end.

Call statuses only move forward: initiated -> ringing -> in-progress -> a terminal status
(completed, busy, no-answer, failed, canceled, dial-failed), and the first terminal status is
final. That makes Exotel's status callbacks safe to apply repeatedly and in any order.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from loguru import logger
from sqlalchemy import case, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from bot.config.utc import as_utc
from bot.exotel.call_status import CALL_STATUSES, STATUS_RANK, TERMINAL_CALL_STATUSES, normalize_status
from bot.exotel.callback_refs import ref_matches
from bot.exotel.callbacks import StatusUpdate, status_update
from bot.store.engine import Database
from bot.store.models import CallRecord, utcnow
from bot.store.record_json import jsonable

# End reasons a finished call's own session may still replace: a record closed for a lost
# worker is completed by that call's session when its spooled record arrives later.
REPLACEABLE_END_REASONS = frozenset({"worker_lost"})


class CallbackNotForThisCall(ValueError):
    """A status callback whose signed address was issued for another call (or none we placed)."""


@dataclass(frozen=True)
class KnownCall:
    """A call the store knows of, as a starting media session sees it."""

    campaign: str | None
    lead: dict[str, Any]
    ended: bool  # a media session for it has already finished: its record is final




def _assign(row: Any, values: Mapping[str, Any]) -> bool:
    """Set the attributes that differ; stamp updated_at if any did. True if something changed."""
    changed = False
    for key, value in values.items():
        if getattr(row, key) != value:
            setattr(row, key, value)
            changed = True
    if changed:
        row.updated_at = utcnow()
    return changed



class CallRecords(Database):
    """The call-record queries of the store (`CallStore`)."""

    async def _locked_call(self, session: AsyncSession, call_sid: str) -> CallRecord | None:
        stmt = select(CallRecord).where(CallRecord.call_sid == call_sid)
        if not self.is_sqlite:
            stmt = stmt.with_for_update()
        return (await session.execute(stmt)).scalar_one_or_none()

    async def _upsert_call(self, call_sid: str,
                           change: Callable[[CallRecord, bool], bool]) -> tuple[CallRecord, bool]:
        """Load (locked) or create the record, let `change(row, is_new) -> bool` edit it; commit.

        A concurrent insert of the same Sid (PostgreSQL) is retried once as an update.
        """
        for attempt in (1, 2):
            try:
                async with self._write() as session:
                    row = await self._locked_call(session, call_sid)
                    is_new = row is None
                    if row is None:
                        now = utcnow()
                        row = CallRecord(
                            call_sid=call_sid,
                            status="initiated",
                            lead={},
                            transcript=[],
                            collected={},
                            metrics={},
                            turns=[],
                            escalated=False,
                            attempt=1,
                            created_at=now,
                            updated_at=now,
                        )
                        session.add(row)
                    changed = change(row, is_new) or is_new
                return row, changed
            except IntegrityError:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    # -- call records ------------------------------------------------------------------------

    async def record_dialled(
        self,
        call_sid: str,
        campaign: str | None,
        lead: Mapping[str, Any] | None,
        to_number: str | None,
        custom_field: str | None = None,
        attempt: int = 1,
        *,
        from_number: str | None = None,
        status: str = "initiated",
        error: str | None = None,
    ) -> CallRecord:
        """Store a call we placed, against its Sid, before it is answered (the "pending call").

        If a status callback created the row first, its status is kept (statuses only advance).
        """
        if status not in CALL_STATUSES:
            raise ValueError(f"unknown call status {status!r}")
        lead_data = jsonable(dict(lead or {}))
        lead_id = lead_data.get("id", lead_data.get("lead_id"))

        def change(row: CallRecord, is_new: bool) -> bool:
            values: dict[str, Any] = {
                "campaign": campaign,
                "lead": lead_data,
                "lead_id": str(lead_id) if lead_id is not None else None,
                "to_number": to_number,
                "custom_field": custom_field,
                "attempt": attempt,
            }
            if from_number is not None:
                values["from_number"] = from_number
            if error is not None:
                values["error"] = error
            if is_new or (
                row.status not in TERMINAL_CALL_STATUSES and STATUS_RANK[status] > STATUS_RANK.get(row.status, 0)
            ):
                values["status"] = status
                if status in TERMINAL_CALL_STATUSES and row.ended_at is None:
                    values["ended_at"] = utcnow()
            return _assign(row, values)

        row, _ = await self._upsert_call(call_sid, change)
        return row

    async def find_call(self, call_sid: str) -> CallRecord | None:
        async with self._read() as session:
            return await session.get(CallRecord, call_sid)

    async def find_calls_by_prefix(self, prefix: str, limit: int = 2) -> list[CallRecord]:
        """Calls whose sid starts with `prefix` (at most `limit`: enough to tell unique from not)."""
        escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        async with self._read() as session:
            result = await session.execute(
                select(CallRecord).where(CallRecord.call_sid.like(f"{escaped}%", escape="\\"))
                .order_by(CallRecord.call_sid).limit(limit)
            )
            return list(result.scalars())

    async def lead_for_call(self, call_sid: str) -> tuple[str | None, dict[str, Any]] | None:
        """(campaign, lead) stored when the call was dialled; None if we know nothing of it."""
        async with self._read() as session:
            row = (
                await session.execute(
                    select(CallRecord.campaign, CallRecord.lead).where(CallRecord.call_sid == call_sid)
                )
            ).one_or_none()
        if row is None or (row.campaign is None and not row.lead):
            return None
        return row.campaign, dict(row.lead or {})

    async def call_for_media(self, call_sid: str) -> KnownCall | None:
        """What a media session starting for `call_sid` needs to know, in one read: the
        dialled call's campaign and lead, and whether a media session already ended it."""
        async with self._read() as session:
            row = (
                await session.execute(
                    select(CallRecord.campaign, CallRecord.lead, CallRecord.end_reason)
                    .where(CallRecord.call_sid == call_sid)
                )
            ).one_or_none()
        if row is None:
            return None
        return KnownCall(row.campaign, dict(row.lead or {}), ended=row.end_reason is not None)

    async def apply_status(self, update_: StatusUpdate | Mapping[str, Any], expected_ref: str | None = None) -> bool:
        """Apply one status callback; True if the record changed.

        Idempotent and order-safe: the status only moves to a later stage (a terminal status is
        final, so `completed` followed by a late `ringing` stays `completed`), RecordingUrl,
        AnsweredBy and (from a terminal callback) the duration are merged in when given (a later
        non-empty value wins; empty ones never erase), and re-applying the same callback changes nothing (not even
        updated_at). An unknown Sid gets a row (e.g. a call that started elsewhere); unknown
        status words are ignored but the other fields are still merged.

        A mapping is read as Exotel's callback fields (bot/exotel/callbacks.py).
        `expected_ref`: apply only to a call we dialled with that ref (bot/exotel/callback_refs.py),
        checked in the same transaction; otherwise CallbackNotForThisCall and nothing changes.
        """
        upd = update_ if isinstance(update_, StatusUpdate) else status_update(update_, require_status=False)
        status = normalize_status(upd.status)
        if (upd.status or upd.raw_status) and status is None:
            logger.bind(call_sid=upd.call_sid).warning("ignoring unknown call status {!r}",
                                                       upd.status or upd.raw_status)
        at = as_utc(upd.at) or utcnow()

        def change(row: CallRecord, is_new: bool) -> bool:
            if expected_ref is not None and (is_new or not ref_matches(row.custom_field, expected_ref)):
                raise CallbackNotForThisCall(f"the callback's address was not issued for {upd.call_sid}")
            values: dict[str, Any] = {}
            current = row.status
            advances = status is not None and (
                (is_new and status != current)
                or (current not in TERMINAL_CALL_STATUSES and STATUS_RANK[status] > STATUS_RANK.get(current, 0))
            )
            if advances:
                values["status"] = status
                if status == "in-progress" and row.started_at is None:
                    values["started_at"] = at
                if status in TERMINAL_CALL_STATUSES and row.ended_at is None:
                    values["ended_at"] = at
            if upd.recording_url:
                values["recording_url"] = upd.recording_url
            if upd.answered_by:
                values["answered_by"] = upd.answered_by
            # Only an ended call's figure is its duration: `answered` callbacks carry 0.
            if (upd.duration_secs is not None and math.isfinite(upd.duration_secs)
                    and status in TERMINAL_CALL_STATUSES):
                values["duration_secs"] = float(upd.duration_secs)
            return _assign(row, values)

        _, changed = await self._upsert_call(upd.call_sid, change)
        return changed

    async def complete_from_session(self, session_like: Any) -> CallRecord:
        """Write what a finished call knows (anything with `CallSession`'s attributes).

        Transcript, outcome, summary, collected, metrics, turns, end_reason, escalated,
        ended_at and recording_path (when set) are the session's; campaign, lead, numbers and started_at fill in what the row
        lacks (the dialled lead, with all its fields, wins over the session's partial copy). A
        call that streamed was answered, so a non-terminal status becomes `completed`. Creates
        the row for a call we never dialled (an inbound stream).
        """
        s = session_like
        call_sid = str(s.call_sid)
        session_lead = jsonable(dict(getattr(s, "lead", None) or {}))
        started = as_utc(getattr(s, "started_at", None))
        ended = as_utc(getattr(s, "ended_at", None)) or utcnow()

        def change(row: CallRecord, is_new: bool) -> bool:
            if row.end_reason is not None and row.end_reason not in REPLACEABLE_END_REASONS:
                logger.bind(call_sid=call_sid).warning(
                    "a second media session for a finished call was not recorded over it"
                )
                return False
            lead = {**session_lead, **(row.lead or {})}
            lead_id = lead.get("id", lead.get("lead_id"))
            values: dict[str, Any] = {
                "campaign": row.campaign or getattr(s, "campaign", None),
                "lead": lead,
                "lead_id": row.lead_id or (str(lead_id) if lead_id is not None else None),
                "to_number": row.to_number or getattr(s, "to_number", None),
                "from_number": row.from_number or getattr(s, "from_number", None),
                "outcome": getattr(s, "outcome", None),
                "summary": getattr(s, "summary", None),
                "end_reason": getattr(s, "end_reason", None),
                "transcript": jsonable(list(getattr(s, "transcript", None) or [])),
                "collected": jsonable(dict(getattr(s, "collected", None) or {})),
                "metrics": jsonable(dict(getattr(s, "metrics", None) or {})),
                "turns": jsonable(list(getattr(s, "turns", None) or [])),
                "escalated": bool(getattr(s, "escalated", False)),
                "ended_at": ended,
            }
            if row.started_at is None and started is not None:
                values["started_at"] = started
            if getattr(s, "recording_path", None):  # the local WAV, when this process recorded it
                values["recording_path"] = str(s.recording_path)
            if row.status not in TERMINAL_CALL_STATUSES:
                values["status"] = "completed"
            begin = values.get("started_at") or row.started_at
            if row.duration_secs is None and begin is not None and ended is not None:
                values["duration_secs"] = round(max(0.0, (ended - begin).total_seconds()), 3)
            return _assign(row, values)

        row, _ = await self._upsert_call(call_sid, change)
        return row

    async def calls_for_lead(self, campaign: str, lead_id: str, since: datetime | None = None) -> list[CallRecord]:
        """Calls placed for a lead (newest first): how a resumed run finds a call whose Sid
        it never got to store on the lead."""
        stmt = select(CallRecord).where(CallRecord.campaign == campaign, CallRecord.lead_id == str(lead_id))
        if since is not None:
            stmt = stmt.where(CallRecord.created_at >= as_utc(since))
        async with self._read() as session:
            return list((await session.execute(stmt.order_by(CallRecord.created_at.desc()))).scalars())

    async def save_progress(self, call_sid: str, transcript: list[dict[str, Any]], collected: dict[str, Any]) -> bool:
        """A live call's transcript and details so far (for `bot run` following it); the
        status only moves forward to in-progress. True if a record was written.

        Every live call saves every few seconds, so this is one UPDATE statement (a third
        less CPU on the event loop than loading, editing and flushing the ORM row); only a
        call with no record yet (one we did not dial) goes the ORM way to create it."""
        forward = case((CallRecord.status.in_(("initiated", "ringing")), "in-progress"), else_=CallRecord.status)
        statement = (
            update(CallRecord)
            .where(CallRecord.call_sid == call_sid)
            .values(transcript=list(transcript), collected=dict(collected), status=forward, updated_at=utcnow())
        )
        async with self._write_engine.begin() as connection:
            if (await connection.execute(statement)).rowcount:
                return True

        def apply(row: CallRecord, _new: bool) -> bool:
            changed = _assign(row, {"transcript": list(transcript), "collected": dict(collected)})
            if row.status in ("initiated", "ringing"):
                row.status = "in-progress"
                changed = True
            return changed

        _, changed = await self._upsert_call(call_sid, apply)
        return changed

    async def set_recording_path(self, call_sid: str, path: str | Path) -> bool:
        """Where this process saved the call's audio (the URL comes from Exotel's callback)."""
        _, changed = await self._upsert_call(call_sid, lambda row, _new: _assign(row, {"recording_path": str(path)}))
        return changed

    async def list_calls(
        self,
        campaign: str | None = None,
        status: str | None = None,
        outcome: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[CallRecord]:
        """Newest first (created_at); `since` inclusive, `until` exclusive; limit capped at 1000."""
        stmt = select(CallRecord)
        if campaign is not None:
            stmt = stmt.where(CallRecord.campaign == campaign)
        if status is not None:
            stmt = stmt.where(CallRecord.status == status)
        if outcome is not None:
            stmt = stmt.where(CallRecord.outcome == outcome)
        if since is not None:
            stmt = stmt.where(CallRecord.created_at >= as_utc(since))
        if until is not None:
            stmt = stmt.where(CallRecord.created_at < as_utc(until))
        stmt = stmt.order_by(CallRecord.created_at.desc(), CallRecord.call_sid.desc())
        stmt = stmt.limit(max(0, min(int(limit), 1000))).offset(max(0, int(offset)))
        async with self._read() as session:
            return list((await session.execute(stmt)).scalars())
