"""The call-record store on SQLite (a file under tmp_path) and PostgreSQL (a fresh schema per test).

PostgreSQL comes from TEST_POSTGRES_URL (default postgresql+asyncpg://postgres@127.0.0.1:5432/test);
when it is unreachable those cases skip and say why (TEST_POSTGRES_REQUIRED=1 makes that a failure).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect
from sqlalchemy.exc import IntegrityError

from bot.exotel.callbacks import StatusUpdate, status_update
from bot.store import Base, CallStore, LeadInput, call_to_dict, normalize_database_url, normalize_status
from bot.store.engine import HEAD_REVISION, alembic_config
from pipelines.call_session import CallSession
from testing.databases import TABLES, Backend

REPO_ROOT = Path(__file__).resolve().parent.parent
@pytest.fixture
async def store(backend: Backend) -> CallStore:
    return await backend.open()


def _head() -> str:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


# --- schema ---------------------------------------------------------------------------------------


async def test_migrations_to_head_create_the_tables(backend: Backend):
    store = await backend.open(migrate=True)
    assert await store.schema_revision() == _head()

    def look(sync_conn):
        insp = inspect(sync_conn)
        tables = set(insp.get_table_names())
        indexed = {tuple(ix["column_names"]) for ix in insp.get_indexes("call_records")}
        diff = compare_metadata(MigrationContext.configure(sync_conn), Base.metadata)
        return tables, indexed, diff

    async with store.engine.connect() as conn:
        tables, indexed, diff = await conn.run_sync(look)
    assert TABLES <= tables
    assert {("campaign",), ("status",), ("outcome",), ("created_at",)} <= indexed
    assert diff == [], f"models and migrations disagree: {diff}"

    await store.migrate()  # again: nothing to do
    assert await store.schema_revision() == _head()


def test_the_head_revision_the_store_opens_without_alembic_is_alembics_head():
    assert HEAD_REVISION == _head(), "a migration was added: set HEAD_REVISION in bot/store/engine.py"


def test_a_store_at_head_opens_without_loading_alembic(tmp_path):
    """Every server worker opens the store with migrate=True; at head it reads the version with
    plain SQL and never imports Alembic (its modules and scripts would stay in the worker's memory)."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'calls.db'}"
    script = (
        "import asyncio, sys\n"
        "from bot.store import CallStore\n"
        "async def main():\n"
        f"    store = await CallStore.open({url!r}, migrate=True)\n"
        "    revision = await store.schema_revision_quick()\n"
        "    await store.close()\n"
        "    print(revision, 'alembic' in sys.modules)\n"
        "asyncio.run(main())\n"
    )
    first = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO_ROOT)
    assert first.returncode == 0, first.stderr
    assert first.stdout.split() == [HEAD_REVISION, "True"]  # a new database: Alembic migrates it
    again = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO_ROOT)
    assert again.returncode == 0, again.stderr
    assert again.stdout.split() == [HEAD_REVISION, "False"]


def test_the_server_has_a_new_database_migrated_by_a_child_process(tmp_path):
    """The server's start-up check (run_server) migrates a new database in a spawned child, so
    the process that goes on to serve calls never imports Alembic; a database that cannot be
    migrated fails there with DatabaseUnavailable, in one line."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'calls.db'}"
    script = (
        "import asyncio, sys\n"
        "from bot.store import CallStore\n"
        "from bot.store.database_check import check_database\n"
        "async def main():\n"
        f"    await check_database({url!r}, migrate_in_child=True, log_level='WARNING')\n"
        f"    store = await CallStore.open({url!r}, migrate=False)\n"
        "    print(await store.schema_revision_quick(), 'alembic' in sys.modules)\n"
        "    await store.close()\n"
        "if __name__ == '__main__':\n"
        "    asyncio.run(main())\n"
    )
    path = tmp_path / "start.py"
    path.write_text(script)
    started = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, cwd=REPO_ROOT,
                             env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, timeout=120)
    assert started.returncode == 0, started.stderr
    assert started.stdout.split() == [HEAD_REVISION, "False"]
    # The child's failure reaches the parent as the one-line error (nothing listens on port 1).
    bad = "postgresql+asyncpg://agent:secret@127.0.0.1:1/calls"
    failing = subprocess.run([sys.executable, "-c", (
        "import asyncio\n"
        "from bot.store.database_check import DatabaseUnavailable, migrate_in_child_process\n"
        "try:\n"
        f"    asyncio.run(migrate_in_child_process({bad!r}, 'WARNING'))\n"
        "except DatabaseUnavailable as error:\n"
        "    print('unavailable:', error)\n")], capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)
    assert failing.stdout.startswith("unavailable: cannot open the database at"), failing.stdout + failing.stderr
    assert "secret" not in failing.stdout + failing.stderr and len(failing.stdout.splitlines()) == 1


async def test_workers_migrating_at_once_do_not_collide(backend: Backend):
    a = await backend.open(migrate=False)
    b = await backend.open(migrate=False)
    assert await a.schema_revision() is None
    await asyncio.gather(a.migrate(), b.migrate())
    assert await a.schema_revision() == await b.schema_revision() == _head()


async def test_sqlite_file_gets_its_folder_wal_and_foreign_keys(tmp_path):
    path = tmp_path / "nested" / "deeper" / "calls.db"
    store = await CallStore.open(f"sqlite:///{path}", migrate=True)  # sync URL: given aiosqlite
    try:
        assert path.exists()
        assert store.engine.url.drivername == "sqlite+aiosqlite"
        async with store.engine.connect() as conn:
            assert (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar() == "wal"
            assert (await conn.exec_driver_sql("PRAGMA foreign_keys")).scalar() == 1
            assert (await conn.exec_driver_sql("PRAGMA busy_timeout")).scalar() == 30000
    finally:
        await store.close()


def test_alembic_command_line_reads_database_url_and_x_url(tmp_path):
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'env' / 'a.db'}"}
    alembic = [sys.executable, "-m", "alembic", "-c", str(REPO_ROOT / "alembic.ini")]
    done = subprocess.run([*alembic, "upgrade", "head"], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "env" / "a.db").exists()

    x_url = f"sqlite+aiosqlite:///{tmp_path / 'x' / 'b.db'}"  # -x url wins over DATABASE_URL
    done = subprocess.run(
        [*alembic, "-x", f"url={x_url}", "upgrade", "head"], env=env, cwd=tmp_path, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "x" / "b.db").exists()
    current = subprocess.run(
        [*alembic, "-x", f"url={x_url}", "current"], env=env, cwd=tmp_path, capture_output=True, text=True
    )
    assert _head() in current.stdout


def test_urls_and_statuses_are_normalized():
    assert normalize_database_url("sqlite:///data/calls.db").drivername == "sqlite+aiosqlite"
    assert normalize_database_url("postgres://u@h/db").drivername == "postgresql+asyncpg"
    assert normalize_database_url("postgresql+asyncpg://u@h/db").drivername == "postgresql+asyncpg"
    assert [normalize_status(s) for s in ("Completed", "no_answer", "in progress", "queued", "cancelled", "?")] == [
        "completed", "no-answer", "in-progress", "initiated", "canceled", None,
    ]
    upd = status_update(
        {"CallSid": "CA9", "Status": "completed", "RecordingUrl": "https://r/1.mp3", "ConversationDuration": "42"}
    )
    assert (upd.call_sid, upd.status, upd.recording_url, upd.answered_by, upd.duration_secs) == (
        "CA9", "completed", "https://r/1.mp3", None, 42.0)
    with pytest.raises(ValueError):
        status_update({"Status": "completed"})


# --- call records -----------------------------------------------------------------------------------


async def test_dialled_call_is_found_by_any_worker(backend: Backend, store: CallStore):
    lead = {"id": "L-7", "name": "Asha", "phone": "+919876543210", "budget": 90}
    row = await store.record_dialled("CA100", "real_estate", lead, "+919876543210", custom_field="run:1", attempt=2)
    assert (row.status, row.lead_id, row.attempt, row.custom_field) == ("initiated", "L-7", 2, "run:1")
    assert row.created_at.tzinfo is not None

    other_worker = await backend.open(migrate=False)
    assert await other_worker.lead_for_call("CA100") == ("real_estate", lead)
    assert await other_worker.lead_for_call("CA-unknown") is None
    assert await other_worker.find_call("CA-unknown") is None


async def test_live_progress_moves_status_forward_only_and_creates_unknown_calls(backend: Backend, store: CallStore):
    """save_progress (one UPDATE): transcript and details replaced, initiated/ringing become
    in-progress, a finished call keeps its status, an unknown Sid gets a record."""
    await store.record_dialled("CA20", "real_estate", {"id": "L20"}, "+919876543210")
    line = [{"role": "user", "text": "Maybe eighty lakhs", "t": 4.2}]
    assert await store.save_progress("CA20", line, {"budget": "80 lakhs"})
    other_worker = await backend.open(migrate=False)
    row = await other_worker.find_call("CA20")
    assert (row.status, row.transcript, row.collected) == ("in-progress", line, {"budget": "80 lakhs"})
    assert row.lead == {"id": "L20"} and row.campaign == "real_estate"
    await store.apply_status({"CallSid": "CA20", "Status": "completed"})
    assert await store.save_progress("CA20", line * 2, {})
    row = await other_worker.find_call("CA20")
    assert (row.status, len(row.transcript), row.collected) == ("completed", 2, {})
    assert await store.save_progress("CA-inbound", line, {"bhk": 2})
    row = await other_worker.find_call("CA-inbound")
    assert (row.status, row.transcript, row.collected) == ("in-progress", line, {"bhk": 2})


async def test_status_callbacks_are_idempotent_and_order_safe(store: CallStore):
    await store.record_dialled("CA1", "c", {"id": "L1"}, "+919800000001")
    assert await store.apply_status({"CallSid": "CA1", "Status": "ringing"})
    assert not await store.apply_status({"CallSid": "CA1", "Status": "ringing"})
    assert await store.apply_status({"CallSid": "CA1", "Status": "in-progress"})
    answered = await store.find_call("CA1")
    assert answered.status == "in-progress" and answered.started_at is not None

    final = {"CallSid": "CA1", "Status": "completed", "RecordingUrl": "https://rec/CA1.mp3", "ConversationDuration": "37"}
    assert await store.apply_status(final)
    first = await store.find_call("CA1")
    assert (first.status, first.recording_url, first.duration_secs) == ("completed", "https://rec/CA1.mp3", 37.0)
    assert first.ended_at is not None

    # the same callback again, and late or contradicting ones: nothing changes, not even updated_at
    assert not await store.apply_status(final)
    assert not await store.apply_status({"CallSid": "CA1", "Status": "ringing"})
    assert not await store.apply_status({"CallSid": "CA1", "Status": "in-progress", "RecordingUrl": ""})
    assert not await store.apply_status(StatusUpdate("CA1", "failed"))
    again = await store.find_call("CA1")
    assert (again.status, again.recording_url, again.updated_at, again.ended_at) == (
        "completed", "https://rec/CA1.mp3", first.updated_at, first.ended_at,
    )

    # a later callback that only adds a field merges it
    assert await store.apply_status({"CallSid": "CA1", "AnsweredBy": "human"})
    assert (await store.find_call("CA1")).answered_by == "human"

    # out of order from the start: terminal first, then the stale ones
    assert await store.apply_status({"CallSid": "CA2", "Status": "busy"})  # unknown Sid: row created
    assert not await store.apply_status({"CallSid": "CA2", "Status": "ringing"})
    assert not await store.apply_status({"CallSid": "CA2", "Status": "in-progress"})
    late = await store.find_call("CA2")
    assert late.status == "busy" and late.started_at is None
    # and the dialler recording it afterwards keeps the status the callback gave
    await store.record_dialled("CA2", "c", {"id": "L2"}, "+919800000002")
    assert (await store.find_call("CA2")).status == "busy"
    assert await store.lead_for_call("CA2") == ("c", {"id": "L2"})


def _finished_session(call_sid: str, **overrides: Any) -> CallSession:
    session = CallSession(
        call_sid=call_sid,
        stream_sid="ST-" + call_sid,
        from_number="+918000000000",
        to_number="+919876543210",
        campaign="real_estate",
        lead={"id": "L-7", "name": "Asha"},
        **overrides,
    )
    session.add_transcript("assistant", "Hello Asha, this is Riya from Acme Homes.")
    session.add_transcript("user", "Hi, yes, tell me more.", confidence=0.93)
    session.set_outcome("interested", "Wants a 2BHK near the metro; call back Friday.")
    session.collected = {"budget": "90 lakh", "callback": "Friday"}
    session.metrics = {"ttfb_secs": 0.61, "bad": float("nan")}
    session.turns = [{"turn": 1, "llm_secs": 0.4, "tts_secs": 0.2}]
    session.escalated = True
    session.recording_path = f"data/recordings/{call_sid}.wav"
    session.finish("caller_hangup")
    return session


async def test_complete_from_session_writes_the_conversation(store: CallStore):
    dialled_lead = {"id": "L-7", "name": "Asha", "phone": "+919876543210", "city": "Pune"}
    await store.record_dialled("CA10", "real_estate", dialled_lead, "+919876543210")
    await store.apply_status({"CallSid": "CA10", "Status": "in-progress"})
    session = _finished_session("CA10")

    row = await store.complete_from_session(session)
    assert row.status == "completed"
    assert row.outcome == "interested" and row.summary.startswith("Wants a 2BHK")
    assert [t["role"] for t in row.transcript] == ["assistant", "user"]
    assert row.transcript[1]["confidence"] == 0.93
    assert row.collected == {"budget": "90 lakh", "callback": "Friday"}
    assert row.metrics == {"ttfb_secs": 0.61, "bad": None}  # NaN is not JSON
    assert row.turns == [{"turn": 1, "llm_secs": 0.4, "tts_secs": 0.2}]
    assert row.end_reason == "caller_hangup" and row.escalated is True
    assert row.ended_at == session.ended_at
    assert row.lead == dialled_lead  # the dialled lead, with every field, wins
    assert row.recording_path == "data/recordings/CA10.wav"

    stored = await store.find_call("CA10")
    assert stored.transcript == row.transcript and stored.ended_at == session.ended_at
    # Exotel's terminal callback afterwards: status stays, its duration is the one kept
    assert not await store.apply_status({"CallSid": "CA10", "Status": "ringing"})
    assert await store.apply_status({"CallSid": "CA10", "Status": "completed", "ConversationDuration": "64"})
    assert (await store.find_call("CA10")).duration_secs == 64.0


async def test_the_answered_callbacks_zero_duration_is_not_the_calls_duration(store: CallStore):
    """Exotel's `answered` callback carries ConversationDuration 0 (the call has only begun).
    Taken as the duration, it stuck: the session's end then kept 0 s for a 30 s call."""
    import dataclasses

    await store.record_dialled("CA11", "real_estate", {"id": "L-8"}, "+919876543210")
    answered = dataclasses.replace(
        status_update({"CallSid": "CA11", "EventType": "answered", "Status": "in-progress",
                                  "ConversationDuration": "0"}),
        at=datetime.now(UTC) - timedelta(seconds=30),
    )
    await store.apply_status(answered)
    assert (await store.find_call("CA11")).duration_secs is None
    row = await store.complete_from_session(_finished_session("CA11"))
    assert row.duration_secs == pytest.approx(30, abs=5)
    # Exotel's terminal figure, when it comes, is the one kept
    assert await store.apply_status({"CallSid": "CA11", "Status": "completed", "ConversationDuration": "31"})
    assert (await store.find_call("CA11")).duration_secs == 31.0


async def test_complete_from_session_creates_an_inbound_call(store: CallStore):
    session = _finished_session("CA-in-1")
    await store.complete_from_session(session)
    row = await store.find_call("CA-in-1")
    assert row is not None and row.status == "completed"
    assert (row.campaign, row.lead, row.lead_id) == ("real_estate", {"id": "L-7", "name": "Asha"}, "L-7")
    assert (row.from_number, row.to_number) == ("+918000000000", "+919876543210")
    assert row.started_at == session.started_at and row.duration_secs is not None
    # the same session again changes nothing
    before = row.updated_at
    await store.complete_from_session(session)
    assert (await store.find_call("CA-in-1")).updated_at == before


async def test_list_calls_filters_and_pages(store: CallStore):
    specs = [
        ("CA-a", "alpha", "completed", "interested"),
        ("CA-b", "alpha", "busy", None),
        ("CA-c", "beta", "completed", "not_interested"),
        ("CA-d", "alpha", "completed", "interested"),
        ("CA-e", "beta", "no-answer", None),
    ]
    for sid, campaign, status, outcome in specs:
        await store.record_dialled(sid, campaign, {"id": sid}, "+919800000000")
        await store.apply_status({"CallSid": sid, "Status": status})
        if outcome:
            s = CallSession(call_sid=sid, stream_sid=None, campaign=campaign)
            s.set_outcome(outcome)
            s.finish("done")
            await store.complete_from_session(s)

    def sids(rows):
        return [r.call_sid for r in rows]

    assert sids(await store.list_calls()) == ["CA-e", "CA-d", "CA-c", "CA-b", "CA-a"]  # newest first
    assert sids(await store.list_calls(campaign="alpha")) == ["CA-d", "CA-b", "CA-a"]
    assert sids(await store.list_calls(status="completed")) == ["CA-d", "CA-c", "CA-a"]
    assert sids(await store.list_calls(campaign="alpha", outcome="interested")) == ["CA-d", "CA-a"]
    assert sids(await store.list_calls(limit=2, offset=1)) == ["CA-d", "CA-c"]
    created = {r.call_sid: r.created_at for r in await store.list_calls()}
    window = await store.list_calls(since=created["CA-b"], until=created["CA-d"])
    assert sids(window) == ["CA-c", "CA-b"]  # since inclusive, until exclusive
    assert sids(await store.list_calls(since=created["CA-e"] + timedelta(seconds=1))) == []
    assert await store.list_calls(campaign="nope") == []


async def test_to_dict_json_shape(store: CallStore):
    await store.record_dialled("CA-j", "real_estate", {"id": "L-7", "name": "Asha"}, "+919876543210")
    await store.apply_status({"CallSid": "CA-j", "Status": "completed", "RecordingUrl": "https://rec/j.mp3",
                              "AnsweredBy": "human", "ConversationDuration": "12"})
    await store.set_recording_path("CA-j", "elsewhere/CA-j.wav")
    await store.complete_from_session(_finished_session("CA-j"))  # its recording_path wins
    data = call_to_dict(await store.find_call("CA-j"))

    assert list(data) == [
        "call_sid", "status", "outcome", "summary", "transcript", "collected", "lead", "campaign",
        "to_number", "started_at", "ended_at", "end_reason", "recording", "metrics", "turns", "escalated",
        "duration_secs", "answered_by",
    ]
    assert json.loads(json.dumps(data)) == data
    assert data["call_sid"] == "CA-j" and data["status"] == "completed" and data["outcome"] == "interested"
    assert all({"role", "text", "t"} <= set(entry) for entry in data["transcript"])
    assert data["transcript"][0]["role"] == "assistant" and isinstance(data["transcript"][0]["t"], float)
    assert data["recording"] == {"url": "https://rec/j.mp3", "path": "data/recordings/CA-j.wav"}
    assert data["collected"]["budget"] == "90 lakh" and data["lead"]["id"] == "L-7"
    assert data["started_at"].endswith("+00:00") and datetime.fromisoformat(data["ended_at"]).tzinfo == UTC
    assert (data["escalated"], data["duration_secs"], data["answered_by"]) == (True, 12.0, "human")
    assert isinstance(data["turns"], list) and isinstance(data["metrics"], dict)

    bare = call_to_dict(await store.record_dialled("CA-k", None, None, None))
    assert bare["recording"] is None and bare["transcript"] == [] and bare["started_at"] is None


# --- campaign runs ----------------------------------------------------------------------------------


def _leads(n: int) -> list[LeadInput]:
    return [LeadInput(line_number=i + 2, lead_id=f"L{i}", phone=f"+9198000000{i:02d}", payload={"name": f"N{i}"})
            for i in range(n)]


async def test_claim_is_atomic_under_concurrency(backend: Backend):
    first = await backend.open()
    second = await backend.open(migrate=False)  # a second "process": its own engine and pool
    run = await first.create_run("alpha", "leads.csv")
    assert await first.add_leads(run.id, _leads(10)) == 10

    async def worker(store: CallStore) -> list[int]:
        got = []
        while (lead := await store.claim_next_lead(run.id)) is not None:
            got.append(lead.id)
        return got

    results = await asyncio.gather(*(worker(first if i % 2 else second) for i in range(20)))
    claimed = [lead_id for got in results for lead_id in got]
    assert len(claimed) == 10 and len(set(claimed)) == 10
    leads = await first.list_leads(run.id)
    assert {(lead.state, lead.attempts) for lead in leads} == {("dialling", 1)}


async def test_lead_lifecycle_retry_and_settling(store: CallStore):
    run = await store.create_run("alpha", Path("leads/alpha.csv"))
    assert (await store.get_run(run.id)).source_file == "leads/alpha.csv"
    assert await store.add_leads(run.id, [*_leads(2), {"line_number": 9, "lead_id": "L0", "phone": "+919811111111"}]) == 2
    assert await store.add_leads(run.id, _leads(2)) == 0  # the same file again: nothing new
    with pytest.raises(ValueError, match="E.164"):
        await store.add_leads(run.id, [LeadInput(5, "L9", "98765 43210")])
    with pytest.raises(IntegrityError):  # foreign keys hold on both back ends
        await store.add_leads("no-such-run", _leads(1))

    now = datetime.now(UTC)
    lead = await store.claim_next_lead(run.id, now)
    assert (lead.lead_id, lead.state, lead.attempts, lead.payload) == ("L0", "dialling", 1, {"name": "N0"})
    assert await store.mark_lead_dialled(lead.id, "CA-L0-1")
    assert not await store.mark_lead_dialled(lead.id, "CA-L0-x")  # no longer dialling
    assert (await store.get_lead(lead.id)).last_call_sid == "CA-L0-1"

    # no answer: retry in an hour; not due before then, the next lead is
    assert await store.reschedule_lead(lead.id, now + timedelta(hours=1), status="no-answer")
    other = await store.claim_next_lead(run.id, now)
    assert other.lead_id == "L1"
    assert await store.claim_next_lead(run.id, now) is None
    progress = await store.run_progress(run.id)
    assert progress.next_attempt_at == now + timedelta(hours=1)
    retry = await store.claim_next_lead(run.id, now + timedelta(hours=2))
    assert (retry.id, retry.attempts, retry.last_status) == (lead.id, 2, "no-answer")

    assert await store.finish_lead(retry.id, "done", status="completed", outcome="interested")
    assert not await store.finish_lead(retry.id, "failed")  # settled stays settled
    assert not await store.reschedule_lead(retry.id, now)
    assert await store.finish_lead(other.id, "failed", status="dial-failed", error="HTTP 500")
    with pytest.raises(ValueError):
        await store.finish_lead(other.id, "pending")

    progress = await store.run_progress(run.id)
    assert progress.total == 2 and progress.counts["done"] == 1 and progress.counts["failed"] == 1
    assert progress.finished and progress.to_reconcile == []
    assert await store.run_progress("no-such-run") is None
    assert await store.unfinished_runs() == []


async def test_resume_reports_dialling_leads_instead_of_redialling(backend: Backend):
    crashed = await backend.open()
    run = await crashed.create_run("alpha", "leads.csv")
    await crashed.add_leads(run.id, _leads(4))
    limbo = await crashed.claim_next_lead(run.id)  # committed `dialling`, then the process died
    live = await crashed.claim_next_lead(run.id)
    assert await crashed.mark_lead_dialled(live.id, "CA-live")
    await crashed.record_dialled("CA-live", "alpha", live.payload, live.phone, attempt=live.attempts)
    await crashed.close()

    resumed = await backend.open()  # a new process; migrating again is a no-op
    [progress] = await resumed.unfinished_runs()
    assert progress.run_id == run.id and progress.to_reconcile == [limbo.id]
    assert (progress.counts["pending"], progress.counts["dialling"], progress.counts["in-call"]) == (2, 1, 1)
    assert not progress.finished

    resumed_at = datetime.now(UTC)
    claimed = []
    while (lead := await resumed.claim_next_lead(run.id)) is not None:
        claimed.append(lead.lead_id)
    assert claimed == ["L2", "L3"]  # neither the lead in limbo nor the one in a call is dialled again

    # this process's own claims (REST calls in flight) are left out by `claimed_before`
    assert [lead.id for lead in await resumed.leads_to_reconcile(run.id, claimed_before=resumed_at)] == [limbo.id]
    assert await resumed.leads_to_reconcile(run.id, claimed_before=datetime.now(UTC) - timedelta(hours=1)) == []

    # reconciled: Exotel shows no call for it, so it may be dialled again
    assert await resumed.reschedule_lead(limbo.id, datetime.now(UTC) - timedelta(seconds=1), error="reconciled: no call")
    again = await resumed.claim_next_lead(run.id)
    assert (again.id, again.attempts) == (limbo.id, 2)
    for lead in await resumed.list_leads(run.id):
        if lead.state != "done":
            assert await resumed.finish_lead(lead.id, "done")
    assert await resumed.unfinished_runs() == []
    assert (await resumed.run_progress(run.id)).counts["done"] == 4


async def test_a_line_added_while_progress_is_being_written_is_saved_next(tmp_path):
    """A transcript line that lands during a progress write is saved by a write after it,
    without waiting for another line (it used to wait for the next change or hang-up)."""
    from bot.store.progress import ProgressSaver
    from pipelines.call_session import CallSession
    from serializers.exotel_events import StreamStart

    store = await CallStore.open(f"sqlite+aiosqlite:///{tmp_path / 'calls.db'}", migrate=True)
    writing, release = asyncio.Event(), asyncio.Event()
    save_progress = store.save_progress

    async def slow_first_write(*args):
        if not writing.is_set():
            writing.set()
            await release.wait()  # a write that is still under way when the next line comes
        return await save_progress(*args)

    store.save_progress = slow_first_write
    try:
        session = CallSession.from_handshake(StreamStart(stream_sid="s", call_sid="CA-during"), {})
        session.on_update = ProgressSaver(store, session, every_secs=0.2)
        session.add_transcript("user", "line 0")
        await asyncio.wait_for(writing.wait(), 5)
        session.add_transcript("assistant", "line 1")  # lands mid-write
        release.set()
        await asyncio.sleep(0.6)
        record = await store.find_call("CA-during")
        assert [entry["text"] for entry in record.transcript] == ["line 0", "line 1"]
    finally:
        await store.close()


async def test_live_progress_is_saved_at_most_every_interval_latest_state_wins(tmp_path):
    """A hundred calls on one SQLite file must not queue on its lock: a live call's transcript
    is written at most once per interval (the newest lines win), and not after hang-up."""
    from bot.store.progress import ProgressSaver
    from pipelines.call_session import CallSession
    from serializers.exotel_events import StreamStart

    store = await CallStore.open(f"sqlite+aiosqlite:///{tmp_path / 'calls.db'}", migrate=True)
    try:
        session = CallSession.from_handshake(StreamStart(stream_sid="s", call_sid="CA-progress"), {})
        saver = ProgressSaver(store, session, every_secs=1.0)
        session.on_update = saver

        async def lines_saved() -> int:
            record = await store.find_call("CA-progress")
            return len(record.transcript) if record else 0

        for i in range(5):
            session.add_transcript("user", f"line {i}")
        await asyncio.sleep(0.3)
        assert await lines_saved() == 5  # the first save goes at once, with everything so far
        session.add_transcript("assistant", "line 5")
        await asyncio.sleep(0.3)
        assert await lines_saved() == 5  # the next waits for the interval...
        await asyncio.sleep(1.0)
        assert await lines_saved() == 6  # ...then saves the latest state
        session.add_transcript("user", "line 6")
        saver.cancel()  # hang-up: the completed record is written instead
        await asyncio.sleep(1.3)
        assert await lines_saved() == 6
    finally:
        await store.close()
