"""Waiting for what a live server does after a call, bounded and with a clear failure."""

from __future__ import annotations

import asyncio
from typing import Any

FINISH_TIMEOUT_SECS = 20.0  # generous: a busy machine finishes a call's teardown late


async def wait_finished(server: Any, call_sid: str, timeout: float = FINISH_TIMEOUT_SECS):
    """The call's session once the server has finished it (`server`: a LocalServer, or an
    AgentStack whose `.server` is one); AssertionError after `timeout` seconds."""
    sink = getattr(server, "server", server).app.state.services.call_sink
    for _ in range(int(timeout / 0.02)):
        session = sink.get(call_sid)
        if session is not None:
            return session
        await asyncio.sleep(0.02)
    raise AssertionError(f"call {call_sid} never finished on the server (waited {timeout:g} s)")
