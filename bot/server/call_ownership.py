"""This server process as the owner of its live calls, and the sweep for dead owners' calls.

Each process beats every WORKER_HEARTBEAT_SECS in the shared database and writes its id into
each call it takes. Every process also sweeps: at start-up (a server restarted after a crash
closes what the crash left) and every third of WORKER_LOST_AFTER_SECS, it closes the records
of owners silent for WORKER_LOST_AFTER_SECS (bot/store/owners.py). With the defaults (5 s,
30 s) a killed worker's calls are closed within ~40 s, by whichever server sweeps first.
"""

from __future__ import annotations

import asyncio
import os
import random
import secrets
import socket

from loguru import logger

from bot.config.settings import Settings


def new_owner_id() -> str:
    """Unique per process, and readable in a record: host/pid/random (a pid is reused)."""
    return f"{socket.gethostname()[:60]}/{os.getpid()}/{secrets.token_hex(4)}"


class CallOwnership:
    """Heartbeat, claims and sweeps for one process (started and stopped by the app's lifespan)."""

    def __init__(self, store, settings: Settings, owner_id: str | None = None):
        self.store = store
        self.owner_id = owner_id or new_owner_id()
        self.host, self.pid = socket.gethostname()[:255], os.getpid()
        self.heartbeat_secs = settings.worker_heartbeat_secs
        self.lost_after_secs = settings.worker_lost_after_secs
        self._task: asyncio.Task | None = None
        self._claims: set[asyncio.Task] = set()

    async def start(self) -> None:
        """First heartbeat (before any call is taken), a sweep, then both on their timers."""
        await self.store.beat(self.owner_id, self.host, self.pid)
        await self.sweep()
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        """No more heartbeats; the row goes, so anything still owned is closed by the next sweep."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._claims:
            await asyncio.wait(self._claims, timeout=5)
        try:
            await self.store.forget_owner(self.owner_id)
        except Exception as error:
            logger.warning(f"could not remove this process's heartbeat: {type(error).__name__}: {error}")

    def claim_soon(self, call_sid: str) -> None:
        """Write this process into the call's record, off the call's path (the greeting does not
        wait for a database write)."""
        task = asyncio.create_task(self._claim(call_sid))
        self._claims.add(task)
        task.add_done_callback(self._claims.discard)

    async def _claim(self, call_sid: str) -> None:
        try:
            await self.store.claim_call(call_sid, self.owner_id)
        except Exception as error:
            logger.bind(call_sid=call_sid).warning(f"could not record this process as the call's owner: "
                                                   f"{type(error).__name__}: {error}")

    async def sweep(self) -> list[str]:
        """Close the calls of owners silent for WORKER_LOST_AFTER_SECS; one log line per call."""
        try:
            closed = await self.store.close_lost_calls(self.lost_after_secs)
        except Exception as error:
            logger.warning(f"sweep for calls of lost workers failed: {type(error).__name__}: {error}")
            return []
        for call_sid in closed:
            logger.bind(call_sid=call_sid).warning("call record closed: the server process running it stopped "
                                                   "(end_reason worker_lost)")
        return closed

    async def _run(self) -> None:
        sweep_every = self.lost_after_secs / 3
        next_sweep = asyncio.get_running_loop().time() + sweep_every * random.uniform(0.5, 1.0)  # spread servers
        while True:
            await asyncio.sleep(self.heartbeat_secs)
            try:
                await self.store.beat(self.owner_id, self.host, self.pid)
            except Exception as error:
                logger.warning(f"heartbeat failed: {type(error).__name__}: {error}")
            if asyncio.get_running_loop().time() >= next_sweep:
                await self.sweep()
                next_sweep = asyncio.get_running_loop().time() + sweep_every
