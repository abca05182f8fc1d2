"""Connect to a provider in the background, so a call starts without waiting for it.

Pipecat's Deepgram STT and ElevenLabs TTS open their websocket in `setup()`, and the
pipeline holds its StartFrame until every setup is done: the call's first audio (even a
greeting synthesized ahead of time) waits for the slowest TLS handshake with a provider,
easily 200-400 ms from India. With this mixin the first connect runs as a task; the work
that needs the connection (sending caller audio, synthesizing) waits for it, in order, so
nothing is lost; reconnects behave as before.
"""

from __future__ import annotations

import asyncio

from loguru import logger

FIRST_CONNECT_TIMEOUT_SECS = 10.0


class ConnectInBackground:
    """Mixin for Pipecat websocket services whose `setup()` awaits `_connect()`."""

    _first_connect_started: bool = False
    _first_connect: asyncio.Task | None = None

    async def _connect(self):
        if not self._first_connect_started:
            self._first_connect_started = True
            self._first_connect = self.create_task(super()._connect(), name=f"{self}-first-connect")
            return
        await super()._connect()

    @property
    def connecting(self) -> bool:
        """The first connect is still under way."""
        return self._first_connect is not None and not self._first_connect.done()

    async def wait_connected(self) -> None:
        """Wait (bounded) for the background connect, if it's still under way."""
        task = self._first_connect
        if task is None:
            return
        if not task.done():
            try:
                await asyncio.wait_for(asyncio.shield(task), timeout=FIRST_CONNECT_TIMEOUT_SECS)
            except TimeoutError:
                logger.warning(f"{self}: provider connection still not up after {FIRST_CONNECT_TIMEOUT_SECS:g}s")
                return
            except Exception:
                pass  # the service reports its own connection errors
        self._first_connect = None

    async def _disconnect(self):
        task, self._first_connect = self._first_connect, None
        if task is not None and not task.done():
            await self.cancel_task(task)
        await super()._disconnect()
