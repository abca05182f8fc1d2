"""A call whose server process died is closed (end_reason worker_lost), on SQLite and
PostgreSQL, by any number of servers sweeping at once; and end to end: a WORKERS=2 server
whose worker is SIGKILLed mid-call closes that call's record."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import time
from datetime import timedelta

from sqlalchemy import select, update

from bot.simulator.exotel_emulator import EmulatorConfig, ExotelEmulator
from bot.store import CallStore, ServerWorker
from bot.store.models import utcnow
from testing.databases import Backend
from testing.server_process import server_process

LOST_AFTER = 30.0


async def _age(store: CallStore, owner_id: str, secs: float) -> None:
    """Make `owner_id`'s last heartbeat `secs` old (it stopped beating then)."""
    async with store.engine.begin() as conn:
        await conn.execute(update(ServerWorker).where(ServerWorker.id == owner_id)
                           .values(heartbeat_at=utcnow() - timedelta(seconds=secs)))


async def _owners(store: CallStore) -> set[str]:
    async with store.engine.connect() as conn:
        return set((await conn.execute(select(ServerWorker.id))).scalars())


async def test_calls_of_a_silent_owner_are_closed_and_nothing_else(backend: Backend):
    a, b = await backend.open(), await backend.open()  # two server processes on one database
    await a.beat("node-a/1/x", "node-a", 1)
    await b.beat("node-b/2/y", "node-b", 2)
    await a.record_dialled("CA-dialled", "real_estate", {"id": "L1", "name": "Asha"}, "+919876543210")
    await a.claim_call("CA-dialled", "node-a/1/x")  # dialled, then answered on A
    await a.claim_call("CA-inbound", "node-a/1/x")  # no record before: created by the claim
    await b.claim_call("CA-on-b", "node-b/2/y")
    await a.claim_call("CA-finished", "node-a/1/x")
    await a.apply_status({"CallSid": "CA-finished", "Status": "completed"})
    await a.apply_status({"CallSid": "CA-no-owner", "Status": "in-progress"})  # callback only, never claimed
    await a.record_dialled("CA-ringing", "real_estate", {"id": "L2"}, "+919876543211")
    claimed = await a.find_call("CA-dialled")
    assert (claimed.status, claimed.owner_id, claimed.lead_id) == ("in-progress", "node-a/1/x", "L1")

    assert await b.close_lost_calls(LOST_AFTER) == [], "both owners beat: nothing is lost"
    await _age(a, "node-a/1/x", LOST_AFTER + 5)  # A was killed
    closed = await b.close_lost_calls(LOST_AFTER)
    assert sorted(closed) == ["CA-dialled", "CA-inbound"]
    for sid in closed:
        row = await b.find_call(sid)
        assert (row.status, row.end_reason, row.outcome) == ("completed", "worker_lost", "error")
        assert row.ended_at is not None and row.summary
    assert (await b.find_call("CA-on-b")).status == "in-progress"
    assert (await b.find_call("CA-finished")).end_reason is None
    assert (await b.find_call("CA-no-owner")).status == "in-progress"
    assert (await b.find_call("CA-ringing")).status == "initiated"
    assert await _owners(b) == {"node-b/2/y"}, "the dead owner's heartbeat row is gone"
    assert await a.close_lost_calls(LOST_AFTER) == [], "a record is closed once"

    # Exotel's terminal callback still lands its figures on the closed record.
    await b.apply_status({"CallSid": "CA-dialled", "Status": "completed", "ConversationDuration": "42"})
    row = await b.find_call("CA-dialled")
    assert (row.status, row.end_reason, row.duration_secs) == ("completed", "worker_lost", 42.0)

    # An owner that stopped cleanly (its row removed) loses what it still owned at once; a
    # process that was only stalled beats again and is alive again.
    await b.forget_owner("node-b/2/y")
    assert await a.close_lost_calls(LOST_AFTER) == ["CA-on-b"]
    await b.beat("node-b/2/y", "node-b", 2)
    assert "node-b/2/y" in await _owners(a)


async def test_servers_sweeping_at_once_close_each_call_once(backend: Backend):
    stores = [await backend.open() for _ in range(4)]
    await stores[0].beat("dead/1/z")
    sids = [f"CA-{i:02d}" for i in range(30)]
    for sid in sids:
        await stores[0].claim_call(sid, "dead/1/z")
    await stores[0].beat("alive/2/w")
    await stores[0].claim_call("CA-alive", "alive/2/w")
    await _age(stores[0], "dead/1/z", LOST_AFTER * 2)
    results = await asyncio.gather(*(store.close_lost_calls(LOST_AFTER) for store in stores))
    every = [sid for closed in results for sid in closed]
    assert sorted(every) == sids, "every lost call closed, none twice"
    assert (await stores[0].find_call("CA-alive")).status == "in-progress"


def test_a_sigkilled_workers_call_is_closed_as_worker_lost(tmp_path):
    """WORKERS=2 server.py, a live call, SIGKILL the worker serving it: the call's record is
    closed with end_reason worker_lost by the sweep (heartbeats shortened for the test)."""
    env = {"WORKER_HEARTBEAT_SECS": "0.5", "WORKER_LOST_AFTER_SECS": "3"}
    with server_process(tmp_path, 2, **env) as server:
        database = tmp_path / "calls.db"

        def record() -> tuple | None:
            with sqlite3.connect(database) as db:
                return db.execute("select status, end_reason, owner_id, outcome from call_records "
                                  "where call_sid = 'CA-killed'").fetchone()

        async def call_then_kill() -> tuple:
            caller = ExotelEmulator(EmulatorConfig(url=server.ws_url, call_sid="CA-killed", max_secs=60))
            running = asyncio.create_task(caller.run([]))  # the caller stays on the line
            try:
                deadline = time.monotonic() + 30
                while (row := record()) is None or row[2] is None:
                    assert time.monotonic() < deadline, f"the call was never claimed by a worker: {row}"
                    assert not running.done(), f"the call ended early: {running.result()}"
                    await asyncio.sleep(0.2)
                owner = row[2]
                assert row[0] == "in-progress"
                os.kill(int(owner.split("/")[1]), signal.SIGKILL)
                result = await asyncio.wait_for(running, 30)
                return owner, result
            finally:
                running.cancel()

        owner, result = asyncio.run(call_then_kill())
        assert result.closed_by == "server", "the caller's socket dropped with the worker"
        deadline = time.monotonic() + 60
        while (row := record())[0] == "in-progress":
            assert time.monotonic() < deadline, f"still in-progress 60 s after its worker was killed: {row}"
            time.sleep(0.3)
        assert row == ("completed", "worker_lost", owner, "error")
        assert "worker_lost" in server.log() and "CA-killed" in server.log()
