"""Emulated Exotel calls that only connect, hear the bot and hang up: for tests of where calls
land (the supervisor's balancer, a load balancer in front of nodes)."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

from bot.simulator.exotel_emulator import EmulatorConfig, EmulatorResult, ExotelEmulator, HangUp


async def emulated_calls(url: str, sids: list[str], hang_up_at: float, apart: float) -> list[EmulatorResult]:
    """One call per sid to the media socket at `url`, started `apart` seconds apart, each
    hanging up `hang_up_at` seconds in; raises if any could not connect."""

    async def one(i: int, sid: str) -> EmulatorResult:
        await asyncio.sleep(i * apart)
        config = EmulatorConfig(url=url, call_sid=sid, max_secs=hang_up_at + 30)
        return await ExotelEmulator(config).run([HangUp(at=hang_up_at)])

    results = await asyncio.gather(*(one(i, sid) for i, sid in enumerate(sids)))
    assert all(r.connect_error is None for r in results), [r.connect_error for r in results]
    return list(results)


def recorded_sids(database: Path, sids: list[str]) -> set[str]:
    """Which of `sids` have a record in this node's SQLite store."""
    if not database.exists():
        return set()
    with sqlite3.connect(database) as db:
        rows = db.execute(f"select call_sid from call_records where call_sid in ({','.join('?' * len(sids))})",
                          sids).fetchall()
    return {sid for (sid,) in rows}


def wait_for_records(databases: list[Path], sids: list[str], within: float = 60.0) -> list[set[str]]:
    """Per database, which of `sids` it holds, once every sid is held by one of them."""
    deadline = time.monotonic() + within
    while True:
        found = [recorded_sids(database, sids) for database in databases]
        if set().union(*found) == set(sids):
            return found
        assert time.monotonic() < deadline, f"records of {sids} not all written within {within:.0f} s: {found}"
        time.sleep(0.2)
