"""A graceful stop of one server process: live calls finish, new ones go elsewhere.

On SIGTERM the process drains before uvicorn's own shutdown (which would close every
WebSocket at once with 1012): `/health` answers 503 `draining`, so a load balancer stops
sending calls; a new media socket is refused with HTTP 503 (Exotel's flow moves on, another
server takes the next call); each live call runs to its natural end. After
SHUTDOWN_GRACE_SECS the calls still running hear the campaign's apology and are closed
cleanly, and their records are written as at any hang-up. Only then does uvicorn shut down.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from loguru import logger

END_WAIT_SECS = 30.0  # after the grace: the apology plays, its mark comes back, the record is written
DRAINING_BODY = json.dumps({"status": "draining"}).encode()


class Drain:
    """Counts this process's media sockets and drains them on shutdown."""

    def __init__(self, live_calls: dict[str, Any], grace_secs: float):
        self.live_calls = live_calls  # sid -> CallSession, kept by the media route
        self.grace_secs = grace_secs
        self.draining = False
        self.media_sockets = 0  # media handlers running, from before `start` to the record written
        self._none_left = asyncio.Event()
        self._none_left.set()

    def socket_opened(self) -> None:
        self.media_sockets += 1
        self._none_left.clear()

    def socket_closed(self) -> None:
        self.media_sockets -= 1
        if self.media_sockets == 0:
            self._none_left.set()

    async def run(self) -> None:
        """Refuse new calls, wait up to the grace for live ones to end, then end the rest with
        the apology and wait (bounded) for their sockets to close and records to be written."""
        self.draining = True
        started = time.monotonic()
        if self.media_sockets:
            logger.info(f"draining: {len(self.live_calls)} live call(s) finish first (up to "
                        f"{self.grace_secs:g} s); new calls are refused")
        if await self._all_ended_within(self.grace_secs):
            if time.monotonic() - started > 0.5:
                logger.info(f"drained: every call ended in {time.monotonic() - started:.1f} s")
            return
        cut = list(self.live_calls.values())
        logger.warning(f"shutdown grace of {self.grace_secs:g} s is over: ending {len(cut)} live call(s) "
                       f"with the apology")
        for session in cut:
            await end_for_shutdown(session)
        if not await self._all_ended_within(END_WAIT_SECS):
            logger.error(f"{self.media_sockets} media socket(s) still open {END_WAIT_SECS:g} s after the "
                         f"apology; closing them")

    async def _all_ended_within(self, secs: float) -> bool:
        try:
            await asyncio.wait_for(self._none_left.wait(), secs)
            return True
        except TimeoutError:
            return False


class DrainMiddleware:
    """Counts every WebSocket (the media sockets) while it is served, and refuses new ones with
    HTTP 503 once the process is draining. Plain ASGI: nothing is added to HTTP requests."""

    def __init__(self, app: Any, drain: Drain):
        self.app = app
        self.drain = drain

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            await self.app(scope, receive, send)
        elif self.drain.draining:
            await _refuse(scope, receive, send)
        else:
            self.drain.socket_opened()
            try:
                await self.app(scope, receive, send)
            finally:
                self.drain.socket_closed()


async def end_for_shutdown(session: Any) -> None:
    """End one live call because the server is stopping: the campaign's apology, then hang-up."""
    control = getattr(session, "control", None)
    log = logger.bind(call_sid=session.call_sid)
    if control is None:
        log.warning("live call has no call control yet; it closes with the server")
        return
    session.end("server_shutdown")
    session.set_outcome("no_outcome", "the server shut down before the call ended")
    try:
        await control.apologize_and_end("server shutting down")
    except Exception as error:
        log.warning(f"could not end the call for shutdown: {type(error).__name__}: {error}")


async def _refuse(scope: dict, receive: Any, send: Any) -> None:
    """HTTP 503 to a WebSocket handshake (403 where the server can't send a response body)."""
    await receive()  # websocket.connect
    if "websocket.http.response" in scope.get("extensions", {}):
        await send({"type": "websocket.http.response.start", "status": 503,
                    "headers": [(b"content-type", b"application/json"), (b"retry-after", b"5")]})
        await send({"type": "websocket.http.response.body", "body": DRAINING_BODY})
    else:
        await send({"type": "websocket.close", "code": 1013})
