"""The call-record store's tables (SQLAlchemy 2 declarative, typed `Mapped[...]`).

Five tables, the same on SQLite and PostgreSQL:

* `call_records`: one row per call Sid, from the moment we dial (or the first thing we hear
  about it) to the finished conversation. It doubles as the "pending call" table: the lead and
  the campaign of a dialled call are stored against its Sid before it is answered, so whichever
  worker process takes the media socket finds them from the `start` message's call_sid.
* `campaign_runs` and `campaign_leads`: a resumable campaign run, one row per lead, whose
  `state` moves pending -> dialling -> in-call -> done / failed / pending (retry) through
  conditional UPDATEs (see `bot.store.runs`). A run is running, paused or cancelled, and
  carries the options every job worker reads (bot/jobs).
* `dial_grants`: one row per dial, so the calls-per-minute limits of an Exotel account and of
  a run hold across every job worker (`bot.store.dial_claims`).
* `server_workers`: one row per live server process, its heartbeat. A call record taken by a
  process names it (`owner_id`); a record whose owner stopped beating is closed by a sweep
  (`CallStore.close_lost_calls`), whichever server runs it.

Times are timezone-aware UTC in Python on both back ends (`UTCDateTime`). JSON columns are
replaced, never mutated in place, so the ORM sees every change.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from bot.config.utc import as_utc
from bot.exotel.call_status import CALL_STATUSES

# --- vocabularies ---------------------------------------------------------------------------

LEAD_STATES: tuple[str, ...] = ("pending", "dialling", "in-call", "done", "failed", "skipped")
FINAL_LEAD_STATES: frozenset[str] = frozenset({"done", "failed", "skipped"})
ACTIVE_LEAD_STATES: frozenset[str] = frozenset({"pending", "dialling", "in-call"})
LIVE_LEAD_STATES: tuple[str, ...] = ("dialling", "in-call")  # what a run's concurrency counts
RUN_STATES: tuple[str, ...] = ("running", "paused", "cancelled")


def utcnow() -> datetime:
    return datetime.now(UTC)


def _in_list(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that is always timezone-aware UTC in Python.

    PostgreSQL stores `timestamptz`; SQLite has no time zones, so the value is converted to UTC
    and stored naive (SQLAlchemy's fixed-width text format, which sorts and compares correctly),
    then read back as UTC. A naive datetime handed in is taken to be UTC already.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        value = as_utc(value)
        return value.replace(tzinfo=None) if value is not None and dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return as_utc(value)


NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UTCDateTime()}


# --- call records -----------------------------------------------------------------------------


class CallRecord(Base):
    """Everything known about one call, keyed by Exotel's CallSid."""

    __tablename__ = "call_records"

    call_sid: Mapped[str] = mapped_column(String(64), primary_key=True)
    campaign: Mapped[str | None] = mapped_column(String(100))
    lead_id: Mapped[str | None] = mapped_column(String(100))
    lead: Mapped[dict[str, Any]] = mapped_column(JSON, default=lambda: {}, server_default=text("'{}'"))
    to_number: Mapped[str | None] = mapped_column(String(32))
    from_number: Mapped[str | None] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(20), default="initiated", server_default="initiated")
    outcome: Mapped[str | None] = mapped_column(String(50))
    summary: Mapped[str | None] = mapped_column(Text)
    end_reason: Mapped[str | None] = mapped_column(String(100))
    transcript: Mapped[list[dict[str, Any]]] = mapped_column(
        JSON, default=lambda: [], server_default=text("'[]'")
    )
    collected: Mapped[dict[str, Any]] = mapped_column(JSON, default=lambda: {}, server_default=text("'{}'"))
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=lambda: {}, server_default=text("'{}'"))
    turns: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=lambda: [], server_default=text("'[]'"))
    recording_path: Mapped[str | None] = mapped_column(Text)
    recording_url: Mapped[str | None] = mapped_column(Text)
    answered_by: Mapped[str | None] = mapped_column(String(50))
    duration_secs: Mapped[float | None] = mapped_column(Float)
    escalated: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    attempt: Mapped[int] = mapped_column(Integer, default=1, server_default=text("1"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column()
    ended_at: Mapped[datetime | None] = mapped_column()
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    custom_field: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    owner_id: Mapped[str | None] = mapped_column(String(100))  # the server process running the call

    __table_args__ = (
        CheckConstraint(_in_list("status", CALL_STATUSES), name="status"),
        Index(None, "owner_id"),
        Index(None, "campaign"),
        Index(None, "status"),
        Index(None, "outcome"),
        Index(None, "created_at"),
    )

    def __repr__(self) -> str:
        return f"CallRecord(call_sid={self.call_sid!r}, status={self.status!r}, outcome={self.outcome!r})"


class ServerWorker(Base):
    """A server process that may own live calls, and when it last showed it is alive."""

    __tablename__ = "server_workers"

    id: Mapped[str] = mapped_column(String(100), primary_key=True)  # host/pid/random: unique per process
    host: Mapped[str | None] = mapped_column(String(255))
    pid: Mapped[int | None] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(default=utcnow)

    def __repr__(self) -> str:
        return f"ServerWorker(id={self.id!r}, heartbeat_at={self.heartbeat_at!r})"


# --- campaign runs ------------------------------------------------------------------------------


class CampaignRun(Base):
    """One run of a campaign over a lead file; its leads say how far it got."""

    __tablename__ = "campaign_runs"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    campaign: Mapped[str] = mapped_column(String(100))
    source_file: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    state: Mapped[str] = mapped_column(String(12), default="running", server_default="running")
    options: Mapped[dict[str, Any]] = mapped_column(JSON, default=lambda: {}, server_default=text("'{}'"))
    account: Mapped[str | None] = mapped_column(String(100))  # the Exotel account whose rate it shares

    __table_args__ = (CheckConstraint(_in_list("state", RUN_STATES), name="state"),)

    def __repr__(self) -> str:
        return f"CampaignRun(id={self.id!r}, campaign={self.campaign!r}, state={self.state!r})"


class CampaignLead(Base):
    """One lead of a run and where it is: pending, dialling, in-call, done, failed, skipped."""

    __tablename__ = "campaign_leads"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(String(36), ForeignKey("campaign_runs.id", ondelete="CASCADE"))
    line_number: Mapped[int] = mapped_column(Integer)
    lead_id: Mapped[str] = mapped_column(String(100))
    phone: Mapped[str] = mapped_column(String(20))  # E.164
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=lambda: {}, server_default=text("'{}'"))
    state: Mapped[str] = mapped_column(String(12), default="pending", server_default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    next_attempt_at: Mapped[datetime | None] = mapped_column()
    last_call_sid: Mapped[str | None] = mapped_column(String(64))
    last_status: Mapped[str | None] = mapped_column(String(20))
    last_outcome: Mapped[str | None] = mapped_column(String(50))
    last_error: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    claimed_at: Mapped[datetime | None] = mapped_column()  # the last claim: a dial may be under way

    __table_args__ = (
        UniqueConstraint("run_id", "lead_id"),
        CheckConstraint(_in_list("state", LEAD_STATES), name="state"),
        Index(None, "run_id", "state", "line_number"),
        Index(None, "last_call_sid"),
    )

    def __repr__(self) -> str:
        return f"CampaignLead(id={self.id!r}, run_id={self.run_id!r}, lead_id={self.lead_id!r}, state={self.state!r})"


class DialGrant(Base):
    """One dial a worker was allowed to place: the calls-per-minute limits of an Exotel account
    and of a run are counted over these rows, so they hold across every worker together."""

    __tablename__ = "dial_grants"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    account: Mapped[str] = mapped_column(String(100))
    run_id: Mapped[str] = mapped_column(String(36))
    lead_row_id: Mapped[int] = mapped_column(Integer)
    granted_at: Mapped[datetime] = mapped_column()

    __table_args__ = (Index(None, "account", "granted_at"), Index(None, "run_id", "granted_at"))
