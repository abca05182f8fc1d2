"""Call records survive a database outage: the real app, calls over the Exotel emulator, the
database made unavailable before or during them (a SQLite file locked by another connection;
PostgreSQL behind a loopback proxy the test cuts), and afterwards (live, or after a restart of
the app) every call has one complete record.

These tests look at the journal only through the file system (DATA_DIR/journal)."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy.engine import make_url

from bot.exotel.applet import applet_url
from bot.exotel.callback_refs import custom_field
from bot.exotel.signing import sign
from bot.simulator.exotel_emulator import HangUp
from bot.simulator.exotel_rest import FakeExotelREST
from testing.agent_scripts import EL_FAST, SHORT_GREETING, qualifying_agent
from testing.agent_stack import agent_stack
from testing.databases import PG_URL, pg_dsn, postgres_unreachable
from testing.dialling import EXOTEL
from testing.tcp_proxy import TcpProxy

# Short database waits so an outage shows in a second, not in the production 30 s / 60 s.
OUTAGE_SETTINGS = {"database_timeout_secs": 1.5, "database_retry_secs": 1.0, "journal_replay_secs": 0.2}


async def eventually(check: Callable[[], Awaitable[Any] | Any], message: str, timeout: float = 30.0) -> Any:
    """Poll `check` until it returns something truthy; fail with `message` after `timeout` s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last = None
    while loop.time() < deadline:
        last = check()
        if asyncio.iscoroutine(last):
            last = await last
        if last:
            return last
        await asyncio.sleep(0.05)
    raise AssertionError(f"{message} (after {timeout:.0f} s; last: {last!r})")


def journal_files(data_dir: Path, held_too: bool = False) -> list[str]:
    """Entries waiting in the journal for a replayer (`*.json`); `held_too`: also those a
    process holds while it tries the database itself (`*.json.claim-*`)."""
    folder = data_dir / "journal"
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")
                  and (p.name.endswith(".json") or (held_too and ".json.claim-" in p.name)))


def lock_sqlite(path: Path) -> sqlite3.Connection:
    """Take the file's write lock as another process would (BEGIN EXCLUSIVE) and hold it."""
    connection = sqlite3.connect(path, isolation_level=None, timeout=10)
    connection.execute("BEGIN EXCLUSIVE")
    return connection


def sqlite_rows(path: Path, sids: list[str]) -> dict[str, list[tuple]]:
    connection = sqlite3.connect(path, timeout=10)
    try:
        marks = ",".join("?" * len(sids))
        rows = connection.execute(
            f"SELECT call_sid, status, outcome, end_reason, transcript FROM call_records WHERE call_sid IN ({marks})",
            sids).fetchall()
    finally:
        connection.close()
    return {sid: [r for r in rows if r[0] == sid] for sid in sids}


def is_complete(record: dict | None) -> bool:
    return bool(record and record["status"] == "completed" and record["end_reason"] and record["outcome"]
                and record["transcript"])


async def fetch(client: httpx.AsyncClient, sid: str) -> dict | None:
    response = await client.get(f"/calls/{sid}")
    return response.json() if response.status_code == 200 else None


async def test_sqlite_locked_calls_are_journalled_and_replayed_after_a_restart(tmp_path):
    """Three calls that end while another connection holds the SQLite file's lock, and one that
    also starts during it, keep their final records: journalled, and written by the next
    start-up of the app once the lock is gone. Each has exactly one complete row."""
    data_dir, db = tmp_path / "data", tmp_path / "data" / "calls.db"
    stack_args = dict(stt_script=[], llm=qualifying_agent, campaign_tweaks=SHORT_GREETING,
                      elevenlabs_kwargs=EL_FAST, **OUTAGE_SETTINGS)
    lock = None
    try:
        async with agent_stack(tmp_path, **stack_args) as stack:
            store = stack.server.app.state.services.store
            early = [stack.emulator(custom_parameters={"name": f"Lead{i}", "campaign": "real_estate"})
                     for i in range(3)]
            runs = [asyncio.create_task(e.run([HangUp(at=6.0)])) for e in early]

            async def early_calls_live() -> bool:
                records = [await store.find_call(e.config.call_sid) for e in early]
                return all(r is not None and r.status == "in-progress" and r.transcript for r in records)

            await eventually(early_calls_live, "the early calls never saved their progress")
            lock = lock_sqlite(db)
            late = stack.emulator(custom_parameters={"name": "Late", "campaign": "real_estate"})
            runs.append(asyncio.create_task(late.run([HangUp(at=3.0)])))
            results = await asyncio.wait_for(asyncio.gather(*runs), timeout=40)
            sids = [e.config.call_sid for e in early] + [late.config.call_sid]
            for sid in sids:
                await eventually(lambda sid=sid: stack.finished(sid), f"call {sid} never finished")
            await eventually(lambda: len(journal_files(data_dir, held_too=True)) == 4,
                             "the four final records never reached the journal", timeout=20)
            late_session = stack.finished(late.config.call_sid)
        # The app has stopped; the lock still holds: nothing of the four calls was written.
        during = sqlite_rows(db, sids)
        left = journal_files(data_dir)
        lock.rollback()
        lock.close()
        lock = None

        async with agent_stack(tmp_path, **stack_args) as stack:
            async with httpx.AsyncClient(base_url=stack.server.http_url) as client:
                records = {sid: await eventually(lambda sid=sid: _complete(client, sid),
                                                 f"the record of {sid} was never completed from the journal")
                           for sid in sids}
            await eventually(lambda: journal_files(data_dir, held_too=True) == [], "replayed entries were not deleted")
    finally:
        if lock is not None:
            lock.close()

    assert all(r.violations == [] for r in results)
    assert len(left) == 4 and all("-complete-" in name for name in left), left
    assert late_session.transcript and late_session.lead.get("name") == "Late", "the late call ran normally"
    assert [row[0][1] for sid, row in during.items() if sid != late.config.call_sid] == ["in-progress"] * 3
    assert during[late.config.call_sid] == [], "the call that started during the lock had no row yet"
    for record in records.values():
        assert record["status"] == "completed" and record["end_reason"] == "caller_hangup", record
        assert record["outcome"] == "no_outcome" and record["campaign"] == "real_estate"
        assert record["transcript"][0]["role"] == "assistant" and record["transcript"][0]["text"].startswith("Hello")
    assert records[late.config.call_sid]["lead"]["name"] == "Late"
    assert {sid: len(rows) for sid, rows in sqlite_rows(db, sids).items()} == {sid: 1 for sid in sids}


async def _complete(client: httpx.AsyncClient, sid: str) -> dict | None:
    record = await fetch(client, sid)
    return record if is_complete(record) else None


async def test_a_call_dialled_during_a_sqlite_lock_keeps_its_lead_and_every_callback(tmp_path):
    """Exotel accepted the dial while the file was locked: `POST /calls` still answers with the
    Sid, the answered call greets the lead by name (its dial record is read from the journal),
    Exotel's status callbacks get 200, and once the lock is gone the replayer writes the dial,
    the callbacks and the final record into one row, with no restart."""
    data_dir, db = tmp_path / "data", tmp_path / "data" / "calls.db"
    lock = None
    async with FakeExotelREST(account_sid="acme", api_key="key", api_token="token",
                              caller_script=lambda number: [HangUp(at=4.0)], hangup_after=30.0) as exotel:
        async with agent_stack(tmp_path, stt_script=[], llm=qualifying_agent, campaign_tweaks=SHORT_GREETING,
                               elevenlabs_kwargs=EL_FAST, exotel_api_base_url=exotel.base_url,
                               **EXOTEL, **OUTAGE_SETTINGS) as stack:
            server = stack.server
            exotel.dynamic_url = applet_url(server.settings, server.app.state.services.signing_key).replace(
                server.settings.public_base_url, server.http_url)
            server.settings.public_base_url = server.http_url
            try:
                lock = lock_sqlite(db)
                async with httpx.AsyncClient(base_url=server.http_url, timeout=20) as client:
                    placed = await client.post("/calls", json={
                        "to": "98765 43210", "campaign": "real_estate", "lead": {"id": "L-7", "name": "Kavya"}})
                    assert placed.status_code == 200, placed.text
                    sid = placed.json()["call_sid"]
                    await asyncio.wait_for(exotel.drain(), timeout=40)
                    session = await eventually(lambda: stack.finished(sid), "the dialled call never finished")
                    # the dial, two callbacks and the final record; a replayer may be holding one
                    await eventually(lambda: len(journal_files(data_dir)) >= 3,
                                     "the dial, the callbacks and the final record never reached the journal")
                    during = sqlite_rows(db, [sid])[sid]
                    lock.rollback()
                    lock.close()
                    lock = None
                    record = await eventually(lambda: _complete(client, sid),
                                              "the journal was never replayed into the database")
                    await eventually(lambda: journal_files(data_dir, held_too=True) == [], "replayed entries were not deleted")
                    row = await server.app.state.services.store.find_call(sid)
            finally:
                if lock is not None:
                    lock.close()

    assert during == [], "nothing reached the database during the lock"
    assert [c.status for c in exotel.callbacks_sent] == [200] * len(exotel.callbacks_sent)
    assert len(exotel.callbacks_sent) >= 1
    assert session.lead.get("name") == "Kavya" and session.transcript[0]["text"].startswith("Hello Kavya")
    assert record["campaign"] == "real_estate" and record["lead"]["name"] == "Kavya" and record["lead"]["id"] == "L-7"
    assert record["status"] == "completed" and record["end_reason"] == "caller_hangup"
    assert record["answered_by"] == "human", "the answered callback was replayed too"
    assert row.to_number == "+919876543210" and "L-7" in (row.custom_field or ""), "the dial record was replayed"
    assert len(sqlite_rows(db, [sid])[sid]) == 1


@pytest.fixture
async def pg_database():
    """A fresh PostgreSQL database for one test (skips, saying why, when PostgreSQL is absent)."""
    reason = await postgres_unreachable()
    if reason:
        pytest.skip(reason)
    name = f"outage_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(pg_dsn())
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield name
        finally:
            await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def proxied_postgres(database: str) -> tuple[TcpProxy, str]:
    """A started TcpProxy in front of PostgreSQL, and the URL of `database` through it."""
    upstream = make_url(PG_URL)
    proxy = await TcpProxy(upstream.host or "127.0.0.1", upstream.port or 5432).start()
    return proxy, upstream.set(host="127.0.0.1", port=proxy.port, database=database).render_as_string(
        hide_password=False)


async def test_postgres_cut_off_mid_call_loses_nothing(tmp_path, pg_database):
    """PostgreSQL goes away (every connection cut, new ones refused) while a call is live: the
    call goes on, a call that starts meanwhile runs on its stream's parameters, a status
    callback is answered 200; when PostgreSQL is back both calls have one complete record and
    the callback's duration, without a restart."""
    proxy, url = await proxied_postgres(pg_database)
    data_dir = tmp_path / "data"
    try:
        async with agent_stack(tmp_path, stt_script=[], llm=qualifying_agent, campaign_tweaks=SHORT_GREETING,
                               elevenlabs_kwargs=EL_FAST, database_url=url, **OUTAGE_SETTINGS) as stack:
            server = stack.server
            store = server.app.state.services.store
            first = stack.emulator(custom_parameters={"name": "Asha", "campaign": "real_estate"})
            sid = first.config.call_sid
            ref = "outage"  # the first call was dialled: its status callbacks carry this ref
            await store.record_dialled(sid, "real_estate", {"name": "Asha"}, "+919876543210",
                                       custom_field("real_estate", {}, ref))
            first_run = asyncio.create_task(first.run([HangUp(at=7.0)]))

            async def first_call_live() -> bool:
                record = await store.find_call(sid)
                return record is not None and record.status == "in-progress" and bool(record.transcript)

            await eventually(first_call_live, "the first call never saved its progress")
            await proxy.stop()
            second = stack.emulator(custom_parameters={"name": "Meera", "campaign": "real_estate"})
            second_result = await asyncio.wait_for(second.run([HangUp(at=3.0)]), timeout=30)
            key = server.app.state.services.signing_key
            async with httpx.AsyncClient(base_url=server.http_url, timeout=20) as client:
                callback = await client.post(
                    f"/webhooks/exotel/call-status?ref={ref}&sig={sign(key, 'status', ref)}",
                    data={"CallSid": sid, "Status": "completed", "ConversationDuration": "42"})
                # While the store can't be asked, these are taken too; it refuses them when it writes them.
                strangers = [await client.post(
                    f"/webhooks/exotel/call-status?ref=other&sig={sign(key, 'status', 'other')}",
                    data={"CallSid": call, "Status": "completed", "RecordingUrl": "https://evil.example/x.mp3"})
                    for call in (sid, "CA-ghost")]
                first_result = await asyncio.wait_for(first_run, timeout=30)
                sessions = [await eventually(lambda s=s: stack.finished(s), f"call {s} never finished")
                            for s in (sid, second.config.call_sid)]
                await eventually(lambda: len(journal_files(data_dir)) == 5,
                                 "two final records and three callbacks never reached the journal", timeout=20)
                connections_before = proxy.connections
                await proxy.start()
                records = {s: await eventually(lambda s=s: _complete(client, s),
                                               f"the record of {s} was never replayed")
                           for s in (sid, second.config.call_sid)}
                records[sid] = await eventually(
                    lambda: _with_duration(client, sid), "the callback's duration was never replayed")
                await eventually(lambda: journal_files(data_dir, held_too=True) == [], "replayed entries were not deleted")
    finally:
        await proxy.stop()

    counted = await _pg_counts(pg_database, [sid, second.config.call_sid, "CA-ghost"])
    assert [r.status_code for r in strangers] == [200, 200]
    assert records[sid]["recording"] is None or records[sid]["recording"]["url"] is None, "a stranger's callback changed nothing"
    assert proxy.connections > connections_before, "the replay went through the proxy"
    assert callback.status_code == 200, callback.text
    assert first_result.violations == [] and second_result.violations == []
    assert sessions[1].lead.get("name") == "Meera" and sessions[1].transcript[0]["text"].startswith("Hello Meera")
    for _s, record in records.items():
        assert record["status"] == "completed" and record["end_reason"] == "caller_hangup", record
        assert record["outcome"] == "no_outcome" and record["transcript"][0]["role"] == "assistant"
    assert records[sid]["duration_secs"] == 42.0
    assert counted == {sid: 1, second.config.call_sid: 1}


async def _with_duration(client: httpx.AsyncClient, sid: str) -> dict | None:
    record = await fetch(client, sid)
    return record if record and record["duration_secs"] == 42.0 else None


async def _pg_counts(database: str, sids: list[str]) -> dict[str, int]:
    dsn = make_url(pg_dsn()).set(database=database).render_as_string(hide_password=False)
    connection = await asyncpg.connect(dsn)
    try:
        rows = await connection.fetch(
            "SELECT call_sid, count(*) AS n FROM call_records WHERE call_sid = ANY($1) GROUP BY call_sid", sids)
    finally:
        await connection.close()
    return {row["call_sid"]: row["n"] for row in rows}


async def test_a_status_callback_neither_database_nor_journal_takes_is_answered_503(tmp_path):
    """Exotel retries a callback answered non-2xx: that is the answer when the file is locked
    and the journal is full (and 200 as soon as the journal has room again)."""
    from bot.store.journal import Journal

    data_dir, db = tmp_path / "data", tmp_path / "data" / "calls.db"
    async with agent_stack(tmp_path, stt_script=[], llm=qualifying_agent, journal_max_entries=1,
                           **OUTAGE_SETTINGS) as stack:
        server = stack.server
        url = f"/webhooks/exotel/call-status?ref=r&sig={sign(server.app.state.services.signing_key, 'status', 'r')}"
        await server.app.state.services.store.record_dialled("CA-full", "real_estate", {}, "+919876543210",
                                                    custom_field("real_estate", {}, "r"))
        filler = Journal(data_dir / "journal")
        entry = filler.add("status", "CA-other", {"call_sid": "CA-other"})
        lock = lock_sqlite(db)
        try:
            async with httpx.AsyncClient(base_url=server.http_url, timeout=20) as client:
                refused = await client.post(url, data={"CallSid": "CA-full", "Status": "ringing"})
                for _ in range(100):  # pending, or held by a replayer at that moment
                    left = list((data_dir / "journal").glob(f"{entry.name}*"))
                    if not left:
                        break
                    for path in left:
                        path.unlink(missing_ok=True)
                kept = await client.post(url, data={"CallSid": "CA-full", "Status": "ringing"})
        finally:
            lock.rollback()
            lock.close()
            filler.close()
    assert refused.status_code == 503, refused.text
    assert kept.status_code == 200, kept.text


async def test_a_campaign_run_pauses_through_a_postgres_outage(tmp_path, pg_database):
    """PostgreSQL goes away while a campaign's calls are live and comes back a few seconds
    later: the run waits instead of dying, no lead is failed or dialled twice, and every call
    has its complete record."""
    from collections import Counter
    from datetime import time as clock_time

    from bot.config.settings import load_settings
    from bot.dialing.campaign_options import CampaignOptions
    from bot.server.local_server import free_port, serve_locally
    from testing.campaign_engine import campaign_engine, until_settled

    csv_path = tmp_path / "leads.csv"
    csv_path.write_text("id,name,phone\n" + "\n".join(f"L{i},Lead {i},98765200{i:02d}" for i in range(4)) + "\n")
    proxy, url = await proxied_postgres(pg_database)
    options = CampaignOptions(concurrency=2, calls_per_minute=200, window_start=clock_time(0, 0),
                              window_end=clock_time(23, 59, 59), max_attempts=2, retry_delay_secs=0.3)
    try:
        async with FakeExotelREST(account_sid="acme", api_key="key", api_token="token", outcomes="answered",
                                  caller_script=lambda number: [HangUp(at=4.0)], ring_secs=0.05) as exotel:
            port = free_port()
            settings = load_settings(_env_file=None, host="127.0.0.1", port=port, data_dir=tmp_path / "data",
                                     public_base_url=f"http://127.0.0.1:{port}", exotel_api_base_url=exotel.base_url,
                                     database_url=url, **EXOTEL, **OUTAGE_SETTINGS)
            async with serve_locally(settings) as server:
                exotel.dynamic_url = applet_url(settings, server.app.state.services.signing_key)
                store = server.app.state.services.store
                campaign = server.app.state.services.campaigns.get("real_estate", "real_estate")
                async with campaign_engine(server) as (work, campaigns):
                    report = await campaigns.start(campaign, csv_path, options)
                    await eventually(lambda: len(exotel.calls) >= 2, "the first calls were never placed")
                    await proxy.stop()
                    await asyncio.sleep(5.0)  # the first calls end while the database is away
                    await proxy.start()
                    progress = await until_settled(store, report.run_id, timeout=90)
                    counts = progress.counts
                leads = await store.list_leads(report.run_id)
                sids = [lead.last_call_sid for lead in leads]
                async with httpx.AsyncClient(base_url=server.http_url) as client:
                    records = [await eventually(lambda s=s: _complete(client, s), f"the record of {s} never completed")
                               for s in sids]
                await exotel.drain()
    finally:
        await proxy.stop()
    assert counts["done"] == 4 and counts["failed"] == 0, counts
    assert set(Counter(call.form["From"] for call in exotel.calls).values()) == {1}, "someone was called twice"
    assert all(r["status"] == "completed" and r["end_reason"] == "caller_hangup" for r in records)
    assert await _pg_counts(pg_database, sids) == {sid: 1 for sid in sids}


async def test_a_hung_postgres_costs_a_starting_call_only_the_lookup_timeout(tmp_path, pg_database):
    """PostgreSQL accepts connections but answers nothing: a call that starts meanwhile waits
    LEAD_LOOKUP_TIMEOUT_SECS for its lead, then runs on its stream's parameters; its final
    record waits in the journal until PostgreSQL answers again."""
    proxy, url = await proxied_postgres(pg_database)
    data_dir = tmp_path / "data"
    try:
        async with agent_stack(tmp_path, stt_script=[], llm=qualifying_agent, campaign_tweaks=SHORT_GREETING,
                               elevenlabs_kwargs=EL_FAST, database_url=url, lead_lookup_timeout_secs=0.5,
                               **OUTAGE_SETTINGS) as stack:
            proxy.stall()
            emulator = stack.emulator(custom_parameters={"name": "Ravi", "campaign": "real_estate"})
            result = await asyncio.wait_for(emulator.run([HangUp(at=4.0)]), timeout=30)
            sid = emulator.config.call_sid
            session = await eventually(lambda: stack.finished(sid), "the call never finished")
            await eventually(lambda: len(journal_files(data_dir)) == 1, "the final record never reached the journal")
            proxy.flow()
            async with httpx.AsyncClient(base_url=stack.server.http_url) as client:
                record = await eventually(lambda: _complete(client, sid), "the record was never replayed")
    finally:
        proxy.flow()
        await proxy.stop()
    assert result.violations == [] and result.media_bytes > 0, "the greeting played"
    assert session.lead.get("name") == "Ravi" and session.transcript[0]["text"].startswith("Hello Ravi")
    assert record["status"] == "completed" and record["lead"]["name"] == "Ravi"
    assert await _pg_counts(pg_database, [sid]) == {sid: 1}


async def test_bot_run_follows_its_call_through_a_postgres_outage(tmp_path, pg_database):
    """`bot run --lead` prints the call as it lands in the store: an outage meanwhile pauses
    it (the record is journalled) instead of ending it with a traceback."""
    from bot.cli.runs import follow_call
    from bot.store import CallStore

    proxy, via_proxy = await proxied_postgres(pg_database)
    direct = make_url(PG_URL).set(database=pg_database)
    store = await CallStore.open(via_proxy, migrate=True)
    writer = await CallStore.open(direct)
    try:
        await store.record_dialled("CA-follow", "real_estate", {"name": "Asha"}, "+919876543210")
        following = asyncio.create_task(follow_call(store, "CA-follow", timeout=30, poll=0.05))
        await asyncio.sleep(0.3)
        await proxy.stop()
        await asyncio.sleep(0.5)
        await writer.apply_status({"CallSid": "CA-follow", "Status": "busy"})
        await proxy.start()
        record = await asyncio.wait_for(following, timeout=30)
    finally:
        await proxy.stop()
        await store.close()
        await writer.close()
    assert record is not None and record["status"] == "busy"
