"""`CallStore`: call records and resumable campaign runs over SQLAlchemy's asyncio engine.

One store per process, opened once (`await CallStore.open(url, migrate=True)`) and closed at
shutdown. Every method is one short transaction on its own session; nothing blocks the event
loop (aiosqlite runs SQLite in its own thread; asyncpg is natively async). Rows handed back are
detached snapshots: reading their columns is fine, changing them does nothing.

URLs: `sqlite+aiosqlite:///data/calls.db` (relative to the working directory; four slashes for
an absolute path) or `postgresql+asyncpg://user@host:5432/db`. Plain `sqlite:///...` and
`postgresql://...` / `postgres://...` are accepted and given the async driver.

SQLite: WAL, foreign keys and a busy timeout (`timeout_secs`, 30 s by default) are set on every
connection, and SQLAlchemy
(not the sqlite3 module) emits BEGIN, so transactions are real: writes use BEGIN IMMEDIATE (they
take the write lock up front and queue behind each other instead of failing with "database is
locked" halfway), reads a deferred BEGIN. Several processes may share the file.

Call statuses only move forward: initiated -> ringing -> in-progress -> a terminal status
(completed, busy, no-answer, failed, canceled, dial-failed), and the first terminal status is
final. That makes Exotel's status callbacks safe to apply repeatedly and in any order.

Campaign leads move pending -> dialling -> in-call -> done | failed | pending (retry), each
step a conditional UPDATE (`... WHERE state = 'pending'`), so two processes never claim the
same lead. The dialler commits `dialling` (`claim_next_lead`) BEFORE it sends the REST request,
and stores the Sid (`mark_lead_dialled`) as soon as Exotel answers it.

The resume rule (what a restarted dialler does with a run that a crash interrupted):
* `pending` leads are claimed as usual (retries wait for their `next_attempt_at`).
* `dialling` leads are NEVER claimed again automatically: the REST request may or may not
  have reached Exotel, and a redial could ring the person twice. They are reported by
  `leads_to_reconcile(run_id)` (and counted in `run_progress(...).to_reconcile`) for someone,
  or a reconciler that asks Exotel for calls by the lead's CustomField, to settle: there was a
  call -> `mark_lead_dialled(lead, sid)`; there was none -> `reschedule_lead(lead, at)` to dial
  again, or `finish_lead(lead, state="failed")`.
* `in-call` leads have a Sid: their call record (status callbacks, `complete_from_session`)
  says how the call ended; the dialler settles them with `finish_lead` / `reschedule_lead`.
A run is unfinished while any of its leads is pending, dialling or in-call.
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

from loguru import logger
from sqlalchemy import and_, case, event, func, or_, select, text, update
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from bot.config.private_files import private_file, private_folder
from bot.config.utc import as_utc
from bot.exotel.call_status import CALL_STATUSES, STATUS_RANK, TERMINAL_CALL_STATUSES, normalize_status
from bot.exotel.callback_refs import ref_matches
from bot.store.models import (
    ACTIVE_LEAD_STATES,
    FINAL_LEAD_STATES,
    LEAD_STATES,
    CallRecord,
    CampaignLead,
    CampaignRun,
    utcnow,
)
from bot.store.owners import CallOwnershipQueries

DEFAULT_DB_FILENAME = "calls.db"
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
DEFAULT_TIMEOUT_SECS = 30.0  # SQLite's busy timeout; PostgreSQL's connect and statement timeouts
_E164 = re.compile(r"^\+[1-9]\d{6,14}$")
_PG_MIGRATION_LOCK = 0x0CA11_5704E  # pg_advisory_xact_lock key: one migrator at a time
# End reasons a finished call's own session may still replace: a record closed for a lost
# worker is completed by that call's session when its spooled record arrives later.
REPLACEABLE_END_REASONS = frozenset({"worker_lost"})


# --- URLs -----------------------------------------------------------------------------------


def default_database_url(data_dir: str | Path | None = None) -> str:
    """The embedded default: `sqlite+aiosqlite:///<data_dir>/calls.db` (data_dir: the repo's data/)."""
    folder = Path(data_dir) if data_dir is not None else Path(__file__).resolve().parents[2] / "data"
    return f"sqlite+aiosqlite:///{folder / DEFAULT_DB_FILENAME}"


def normalize_database_url(url: str | URL) -> URL:
    """Give a sync URL its async driver: sqlite -> aiosqlite, postgres(ql) -> asyncpg."""
    parsed = make_url(url) if isinstance(url, str) else url
    backend, _, driver = parsed.drivername.partition("+")
    if backend == "postgres":
        backend = "postgresql"
    if backend == "sqlite" and driver in ("", "pysqlite"):
        driver = "aiosqlite"
    elif backend == "postgresql" and driver in ("", "psycopg2", "psycopg"):
        driver = "asyncpg"
    return parsed.set(drivername=f"{backend}+{driver}" if driver else backend)


def ensure_sqlite_folder(url: URL) -> None:
    """Create the folder of a SQLite file (0700 when we create it) and the file itself (0600:
    it holds people's numbers and conversations); not for :memory: or `file:` URIs."""
    if url.get_backend_name() != "sqlite":
        return
    database = url.database or ""
    if database in ("", ":memory:") or database.startswith("file:"):
        return
    path = Path(database).expanduser()
    if not path.parent.exists():
        private_folder(path.parent)
    private_file(path)


def mask_url(url: str | URL) -> str:
    """The URL with any password hidden (for logs and skip reasons)."""
    parsed = make_url(url) if isinstance(url, str) else url
    return parsed.render_as_string(hide_password=True)


def install_sqlite_hooks(engine: AsyncEngine, busy_timeout_secs: float = DEFAULT_TIMEOUT_SECS) -> None:
    """WAL + foreign keys + busy timeout per connection; SQLAlchemy emits BEGIN [IMMEDIATE]."""
    busy_timeout_ms = max(1, int(busy_timeout_secs * 1000))

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # the sqlite3 module stops emitting BEGIN itself
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {busy_timeout_ms}")  # first: WAL may wait
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = NORMAL")
            cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        immediate = conn.get_execution_options().get("sqlite_immediate", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


# --- value objects --------------------------------------------------------------------------


def _first(form: Mapping[str, Any], *keys: str) -> Any:
    for key in keys:
        value = form.get(key)
        if isinstance(value, (list, tuple)):
            value = value[-1] if value else None
        if value not in (None, ""):
            return value
    return None


@dataclass(frozen=True)
class StatusUpdate:
    """One status callback: what it says about one call (None = says nothing about it)."""

    call_sid: str
    status: str | None = None
    recording_url: str | None = None
    answered_by: str | None = None
    duration_secs: float | None = None
    at: datetime | None = None  # when it happened; default: when it is applied

    @classmethod
    def from_exotel(cls, form: Mapping[str, Any]) -> StatusUpdate:
        """From Exotel's StatusCallback form fields (CallSid, Status, RecordingUrl, ...)."""
        call_sid = _first(form, "CallSid", "call_sid", "Sid")
        if not call_sid:
            raise ValueError("status callback without CallSid")
        raw_status = _first(form, "Status", "CallStatus", "DialCallStatus", "status")
        if not raw_status and str(_first(form, "EventType") or "").lower() == "answered":
            raw_status = "in-progress"
        duration = _first(form, "ConversationDuration", "Duration", "DialCallDuration", "duration")
        try:
            duration_secs = float(duration) if duration is not None else None
        except (TypeError, ValueError):
            duration_secs = None
        return cls(
            call_sid=str(call_sid),
            status=str(raw_status) if raw_status else None,
            recording_url=_first(form, "RecordingUrl", "recording_url"),
            answered_by=_first(form, "AnsweredBy", "answered_by"),
            duration_secs=duration_secs,
        )


class CallbackNotForThisCall(ValueError):
    """A status callback whose signed address was issued for another call (or none we placed)."""


@dataclass(frozen=True)
class KnownCall:
    """A call the store knows of, as a starting media session sees it."""

    campaign: str | None
    lead: dict[str, Any]
    ended: bool  # a media session for it has already finished: its record is final


@dataclass(frozen=True)
class LeadInput:
    """One lead of a lead file, as `add_leads` takes it (mappings with these keys work too)."""

    line_number: int
    lead_id: str
    phone: str  # E.164, e.g. +919876543210
    payload: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunProgress:
    """How far a campaign run got."""

    run_id: str
    campaign: str
    source_file: str | None
    created_at: datetime
    total: int
    counts: dict[str, int]  # per state, every state present (0 when none)
    to_reconcile: list[int]  # lead row ids left `dialling` with no Sid (see the module doc)
    next_attempt_at: datetime | None  # earliest scheduled retry among pending leads

    @property
    def finished(self) -> bool:
        return not any(self.counts.get(state, 0) for state in ACTIVE_LEAD_STATES)


# --- helpers ----------------------------------------------------------------------------------


def _jsonable(value: Any) -> Any:
    """A JSON-safe copy: str keys, lists for tuples, NaN/inf -> None, datetimes -> ISO strings."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in value]
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


def _lead_value(lead: Any, key: str) -> Any:
    return lead.get(key) if isinstance(lead, Mapping) else getattr(lead, key, None)


def call_to_dict(record: CallRecord) -> dict[str, Any]:
    """The JSON shape of a call record (API, reports): see `CallStore.to_dict`."""
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


# --- the store --------------------------------------------------------------------------------


class CallStore(CallOwnershipQueries):
    """Call records and campaign runs. Open with `await CallStore.open(url)`; see the module doc.
    Which process runs each live call, and closing those of dead processes: bot/store/owners.py."""

    def __init__(self, engine: AsyncEngine):
        self.engine = engine
        self.url: URL = engine.url
        self.is_sqlite = engine.dialect.name == "sqlite"
        # Writes: BEGIN IMMEDIATE on SQLite (an execution option the begin hook reads).
        self._write_engine = engine.execution_options(sqlite_immediate=True) if self.is_sqlite else engine
        self._read_sessions = async_sessionmaker(engine, expire_on_commit=False)
        self._write_sessions = async_sessionmaker(self._write_engine, expire_on_commit=False)

    # -- lifecycle ---------------------------------------------------------------------------

    @classmethod
    async def open(
        cls,
        url: str | URL,
        *,
        migrate: bool = False,
        echo: bool = False,
        connect_args: Mapping[str, Any] | None = None,
        timeout_secs: float = DEFAULT_TIMEOUT_SECS,
    ) -> CallStore:
        """Create the engine (SQLite: its folder, WAL, foreign keys) and optionally migrate to head.

        `connect_args` go to the driver (e.g. asyncpg's `{"server_settings": {"search_path": "x"}}`).
        `timeout_secs` bounds one operation's waits: SQLite's busy timeout (a locked file fails
        with "database is locked" after it), PostgreSQL's connect and statement timeouts, and
        the wait for a free pooled connection; callers that must not lose a write retry it
        (bot.store.durable).
        `migrate=True` is safe with several workers starting at once: PostgreSQL migrations hold an
        advisory lock, SQLite ones the write lock.
        """
        parsed = normalize_database_url(url)
        ensure_sqlite_folder(parsed)
        is_sqlite = parsed.get_backend_name() == "sqlite"
        kwargs: dict[str, Any] = {"echo": echo, "pool_pre_ping": not is_sqlite}
        if not (is_sqlite and (parsed.database or ":memory:") == ":memory:"):  # a StaticPool has no queue
            kwargs["pool_timeout"] = timeout_secs
        args = dict(connect_args or {})
        args.setdefault("timeout", timeout_secs)  # sqlite3: busy timeout; asyncpg: connect timeout
        if not is_sqlite:
            args.setdefault("command_timeout", timeout_secs)
        kwargs["connect_args"] = args
        engine = create_async_engine(parsed, **kwargs)
        if is_sqlite:
            install_sqlite_hooks(engine, timeout_secs)
        store = cls(engine)
        try:
            if migrate:
                await store.migrate()
        except BaseException:
            await engine.dispose()
            raise
        logger.debug("call store open at {}", mask_url(parsed))
        return store

    async def close(self) -> None:
        await self.engine.dispose()

    async def __aenter__(self) -> CallStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def migrate(self, revision: str = "head") -> None:
        """Run the Alembic migrations (bot/store/migrations) to `revision` on this engine.

        Alembic's command API is synchronous; it runs through `AsyncConnection.run_sync` on one
        of this engine's connections (the documented connection-sharing recipe), so the DDL goes
        through the async driver and the loop is never blocked on I/O.
        """
        async with self._write_engine.connect() as conn:
            async with conn.begin():
                if not self.is_sqlite:
                    await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_MIGRATION_LOCK})
                await conn.run_sync(_alembic_upgrade, revision)

    async def schema_revision(self) -> str | None:
        """The Alembic revision the database is at (None before any migration)."""
        async with self.engine.connect() as conn:
            return await conn.run_sync(_current_revision)

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[AsyncSession]:
        async with self._write_sessions() as session, session.begin():
            yield session

    @asynccontextmanager
    async def _read(self) -> AsyncIterator[AsyncSession]:
        async with self._read_sessions() as session, session.begin():
            yield session

    async def _locked_call(self, session: AsyncSession, call_sid: str) -> CallRecord | None:
        stmt = select(CallRecord).where(CallRecord.call_sid == call_sid)
        if not self.is_sqlite:
            stmt = stmt.with_for_update()
        return (await session.execute(stmt)).scalar_one_or_none()

    async def _upsert_call(self, call_sid: str, change: Any) -> tuple[CallRecord, bool]:
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
        lead_data = _jsonable(dict(lead or {}))
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

        `expected_ref`: apply only to a call we dialled with that ref (bot/exotel/callback_refs.py),
        checked in the same transaction; otherwise CallbackNotForThisCall and nothing changes.
        """
        upd = update_ if isinstance(update_, StatusUpdate) else StatusUpdate.from_exotel(update_)
        status = normalize_status(upd.status)
        if upd.status and status is None:
            logger.bind(call_sid=upd.call_sid).warning("ignoring unknown call status {!r}", upd.status)
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
        session_lead = _jsonable(dict(getattr(s, "lead", None) or {}))
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
                "transcript": _jsonable(list(getattr(s, "transcript", None) or [])),
                "collected": _jsonable(dict(getattr(s, "collected", None) or {})),
                "metrics": _jsonable(dict(getattr(s, "metrics", None) or {})),
                "turns": _jsonable(list(getattr(s, "turns", None) or [])),
                "escalated": bool(getattr(s, "escalated", False)),
                "ended_at": ended,
            }
            if row.started_at is None and started is not None:
                values["started_at"] = started
            if getattr(s, "recording_path", None):  # the local WAV, when this process recorded it
                values["recording_path"] = str(s.recording_path)
            if row.status not in TERMINAL_CALL_STATUSES:
                values["status"] = "completed"
            if row.duration_secs is None and (values.get("started_at") or row.started_at):
                begin = values.get("started_at") or row.started_at
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

    @staticmethod
    def to_dict(record: CallRecord) -> dict[str, Any]:
        """JSON shape: call_sid, status, outcome, summary, transcript [{role, text, t, ...}],
        collected, lead, campaign, started_at, ended_at (ISO 8601 UTC), end_reason, recording
        ({url, path} or None), metrics, turns, escalated, duration_secs, answered_by."""
        return call_to_dict(record)

    # -- campaign runs -----------------------------------------------------------------------

    async def create_run(self, campaign: str, source_file: str | Path | None = None, run_id: str | None = None) -> CampaignRun:
        run = CampaignRun(
            id=run_id or uuid.uuid4().hex,
            campaign=campaign,
            source_file=str(source_file) if source_file is not None else None,
            created_at=utcnow(),
        )
        async with self._write() as session:
            session.add(run)
        return run

    async def get_run(self, run_id: str) -> CampaignRun | None:
        async with self._read() as session:
            return await session.get(CampaignRun, run_id)

    async def add_leads(self, run_id: str, leads: Iterable[LeadInput | Mapping[str, Any]]) -> int:
        """Add leads as `pending`; ones already in the run (same lead_id) are left alone, so
        adding a file again is harmless. Phones must be E.164. Returns how many were added."""
        rows: dict[str, dict[str, Any]] = {}
        for lead in leads:
            line = _lead_value(lead, "line_number")
            lead_id = _lead_value(lead, "lead_id")
            phone = str(_lead_value(lead, "phone") or "").strip()
            if lead_id in (None, ""):
                raise ValueError(f"lead on line {line}: no lead_id")
            if not _E164.match(phone):
                raise ValueError(f"lead {lead_id!r} on line {line}: phone is not E.164 (+<country><number>)")
            rows.setdefault(
                str(lead_id),
                {
                    "run_id": run_id,
                    "line_number": int(line) if line is not None else 0,
                    "lead_id": str(lead_id),
                    "phone": phone,
                    "payload": _jsonable(dict(_lead_value(lead, "payload") or {})),
                },
            )
        if not rows:
            return 0
        now = utcnow()
        async with self._write() as session:
            existing = set(
                (
                    await session.execute(
                        select(CampaignLead.lead_id).where(
                            CampaignLead.run_id == run_id, CampaignLead.lead_id.in_(list(rows))
                        )
                    )
                ).scalars()
            )
            new = [
                CampaignLead(**r, state="pending", attempts=0, updated_at=now)
                for key, r in rows.items()
                if key not in existing
            ]
            session.add_all(new)
        return len(new)

    async def get_lead(self, lead_row_id: int) -> CampaignLead | None:
        async with self._read() as session:
            return await session.get(CampaignLead, lead_row_id)

    async def list_leads(self, run_id: str, state: str | None = None) -> list[CampaignLead]:
        stmt = select(CampaignLead).where(CampaignLead.run_id == run_id)
        if state is not None:
            stmt = stmt.where(CampaignLead.state == state)
        async with self._read() as session:
            return list((await session.execute(stmt.order_by(CampaignLead.line_number, CampaignLead.id))).scalars())

    async def claim_next_lead(self, run_id: str, now: datetime | None = None) -> CampaignLead | None:
        """Atomically take the next due `pending` lead (file order) and make it `dialling`.

        Commit this BEFORE sending the REST request. `attempts` counts the claim. Due means
        `next_attempt_at` is unset or <= now. Two processes never get the same lead: the claim
        is `UPDATE ... WHERE id = :id AND state = 'pending'`, and a lost race tries the next one
        (PostgreSQL picks with FOR UPDATE SKIP LOCKED so claimers rarely collide; SQLite writes
        are serialized by BEGIN IMMEDIATE).
        Returns None when no lead is due (some may still be scheduled for later).
        """
        now = as_utc(now) or utcnow()
        due = and_(
            CampaignLead.run_id == run_id,
            CampaignLead.state == "pending",
            or_(CampaignLead.next_attempt_at.is_(None), CampaignLead.next_attempt_at <= now),
        )
        pick = select(CampaignLead.id).where(due).order_by(CampaignLead.line_number, CampaignLead.id).limit(1)
        if not self.is_sqlite:  # PostgreSQL: concurrent claimers pick different rows instead of racing
            pick = pick.with_for_update(skip_locked=True)
        while True:
            async with self._write() as session:
                candidate = (await session.execute(pick)).scalar_one_or_none()
                if candidate is None:
                    return None
                result = await session.execute(
                    update(CampaignLead)
                    .where(CampaignLead.id == candidate, CampaignLead.state == "pending")
                    .values(state="dialling", attempts=CampaignLead.attempts + 1, updated_at=utcnow())
                    .execution_options(synchronize_session=False)
                )
                if result.rowcount == 1:
                    return await session.get(CampaignLead, candidate, populate_existing=True)
            # another process took it between our SELECT and UPDATE: look again

    async def _move_lead(self, lead_row_id: int, from_states: Sequence[str], values: dict[str, Any]) -> bool:
        async with self._write() as session:
            result = await session.execute(
                update(CampaignLead)
                .where(CampaignLead.id == lead_row_id, CampaignLead.state.in_(list(from_states)))
                .values(**values, updated_at=utcnow())
                .execution_options(synchronize_session=False)
            )
            return result.rowcount == 1

    async def mark_lead_dialled(self, lead_row_id: int, call_sid: str) -> bool:
        """dialling -> in-call with the Sid Exotel gave. False if the lead was not `dialling`."""
        return await self._move_lead(
            lead_row_id, ("dialling",), {"state": "in-call", "last_call_sid": call_sid, "last_status": "initiated"}
        )

    async def finish_lead(
        self,
        lead_row_id: int,
        state: str = "done",
        *,
        status: str | None = None,
        outcome: str | None = None,
        error: str | None = None,
    ) -> bool:
        """The lead is settled: `done`, `failed` or `skipped` (from any unsettled state).

        False if it was already settled (a repeated call changes nothing).
        """
        if state not in FINAL_LEAD_STATES:
            raise ValueError(f"finish_lead state must be one of {sorted(FINAL_LEAD_STATES)}, not {state!r}")
        values: dict[str, Any] = {"state": state, "next_attempt_at": None}
        for key, value in (("last_status", status), ("last_outcome", outcome), ("last_error", error)):
            if value is not None:
                values[key] = value
        return await self._move_lead(lead_row_id, tuple(ACTIVE_LEAD_STATES), values)

    async def reschedule_lead(
        self,
        lead_row_id: int,
        at: datetime,
        *,
        status: str | None = None,
        outcome: str | None = None,
        error: str | None = None,
        not_an_attempt: bool = False,
    ) -> bool:
        """dialling / in-call -> pending, due again at `at` (a retry). False otherwise.

        `not_an_attempt`: the claim didn't dial (e.g. outside the calling window), so it
        doesn't count against the lead's attempts."""
        values: dict[str, Any] = {"state": "pending", "next_attempt_at": as_utc(at)}
        if not_an_attempt:
            values["attempts"] = CampaignLead.attempts - 1
        for key, value in (("last_status", status), ("last_outcome", outcome), ("last_error", error)):
            if value is not None:
                values[key] = value
        return await self._move_lead(lead_row_id, ("dialling", "in-call"), values)

    async def leads_to_reconcile(self, run_id: str, claimed_before: datetime | None = None) -> list[CampaignLead]:
        """Leads left `dialling` with no Sid (see the resume rule in the module doc).

        `claimed_before` leaves out claims newer than that (a dialler may still be in its REST call).
        """
        stmt = select(CampaignLead).where(
            CampaignLead.run_id == run_id, CampaignLead.state == "dialling", CampaignLead.last_call_sid.is_(None)
        )
        if claimed_before is not None:
            stmt = stmt.where(CampaignLead.updated_at < as_utc(claimed_before))
        async with self._read() as session:
            return list((await session.execute(stmt.order_by(CampaignLead.line_number, CampaignLead.id))).scalars())

    async def run_progress(self, run_id: str) -> RunProgress | None:
        """Counts per state, leads to reconcile, the next retry; None for an unknown run."""
        progress = await self._progress([run_id])
        return progress[0] if progress else None

    async def unfinished_runs(self) -> list[RunProgress]:
        """Runs with a lead still pending, dialling or in-call, oldest first."""
        async with self._read() as session:
            run_ids = list(
                (
                    await session.execute(
                        select(CampaignLead.run_id)
                        .where(CampaignLead.state.in_(list(ACTIVE_LEAD_STATES)))
                        .distinct()
                    )
                ).scalars()
            )
        return await self._progress(run_ids) if run_ids else []

    async def _progress(self, run_ids: list[str]) -> list[RunProgress]:
        async with self._read() as session:
            runs = list(
                (
                    await session.execute(
                        select(CampaignRun).where(CampaignRun.id.in_(run_ids)).order_by(CampaignRun.created_at, CampaignRun.id)
                    )
                ).scalars()
            )
            counts = (
                await session.execute(
                    select(CampaignLead.run_id, CampaignLead.state, func.count())
                    .where(CampaignLead.run_id.in_(run_ids))
                    .group_by(CampaignLead.run_id, CampaignLead.state)
                )
            ).all()
            stale = (
                await session.execute(
                    select(CampaignLead.run_id, CampaignLead.id)
                    .where(
                        CampaignLead.run_id.in_(run_ids),
                        CampaignLead.state == "dialling",
                        CampaignLead.last_call_sid.is_(None),
                    )
                    .order_by(CampaignLead.line_number, CampaignLead.id)
                )
            ).all()
            retries = (
                await session.execute(
                    select(CampaignLead.run_id, func.min(CampaignLead.next_attempt_at))
                    .where(CampaignLead.run_id.in_(run_ids), CampaignLead.state == "pending")
                    .group_by(CampaignLead.run_id)
                )
            ).all()
        result = []
        for run in runs:
            per_state = {state: 0 for state in LEAD_STATES}
            for rid, state, n in counts:
                if rid == run.id:
                    per_state[state] = int(n)
            next_at = next((at for rid, at in retries if rid == run.id), None)
            result.append(
                RunProgress(
                    run_id=run.id,
                    campaign=run.campaign,
                    source_file=run.source_file,
                    created_at=run.created_at,
                    total=sum(per_state.values()),
                    counts=per_state,
                    to_reconcile=[lead_id for rid, lead_id in stale if rid == run.id],
                    next_attempt_at=as_utc(next_at),
                )
            )
        return result


# --- alembic (sync, run via AsyncConnection.run_sync) --------------------------------------------


def alembic_config(url: str | URL | None = None):
    """An Alembic Config pointing at the packaged migrations (no alembic.ini needed)."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url is not None:
        rendered = normalize_database_url(url).render_as_string(hide_password=False)
        cfg.set_main_option("sqlalchemy.url", rendered.replace("%", "%%"))
    return cfg


def _alembic_upgrade(sync_conn: Any, revision: str) -> None:
    from alembic import command

    cfg = alembic_config()
    cfg.attributes["connection"] = sync_conn
    command.upgrade(cfg, revision)


def _current_revision(sync_conn: Any) -> str | None:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(sync_conn).get_current_revision()


__all__ = [
    "CallStore",
    "CallbackNotForThisCall",
    "KnownCall",
    "LeadInput",
    "RunProgress",
    "StatusUpdate",
    "call_to_dict",
    "default_database_url",
    "normalize_database_url",
    "normalize_status",
]
