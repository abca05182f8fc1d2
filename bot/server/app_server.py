"""The one uvicorn server every path runs: `python server.py` with WORKERS=1, each worker
process of a multi-worker server (bot/server/connection_handoff.py), and the in-process server of
the demo, the tests and the benchmarks (bot/server/local_server.py). What a slow or hostile client
may hold (request-head deadline, idle limit) and how a stop drains live calls are the same
on all of them."""

from __future__ import annotations

import asyncio
from typing import Any

import uvicorn
from loguru import logger

from bot.config.settings import Settings
from bot.server.drain import Drain
from bot.server.uvicorn_compat import ServerConfig

# Media is PCM: don't deflate. Exotel's messages are a few KB (100 ms of audio); one larger than
# 1 MiB is refused by the websocket layer (close 1009) before it is buffered whole.
WS_MAX_MESSAGE_BYTES = 1024 * 1024
UVICORN_OPTIONS: dict[str, Any] = {"log_level": "warning", "ws_per_message_deflate": False,
                                   "ws_max_size": WS_MAX_MESSAGE_BYTES}


def server_config(app: Any, settings: Settings, **options: Any) -> ServerConfig:
    """uvicorn's configuration for `app`: our protocols and the settings' timeouts."""
    return ServerConfig(
        app,
        header_timeout_secs=settings.http_header_timeout_secs,
        idle_timeout_secs=settings.http_idle_timeout_secs,
        **{**UVICORN_OPTIONS, **options},
    )



class AppServer(uvicorn.Server):
    """uvicorn's server for one process of the app, draining before it shuts down.

    uvicorn's shutdown closes every WebSocket at once (close 1012, the call cut mid-sentence).
    When it is asked to exit (SIGTERM, or `should_exit`), this server first runs the app's
    drain (bot/server/drain.py) while it keeps serving: live calls finish, `/health` says draining,
    new media sockets are refused. A second SIGINT (Ctrl+C twice) skips the wait."""

    def __init__(self, config: uvicorn.Config, drain: Drain | None = None):
        super().__init__(config)
        self.drain = drain
        self._draining: asyncio.Task | None = None

    async def on_tick(self, counter: int) -> bool:
        if not await super().on_tick(counter):
            return False
        if self.drain is None or self.force_exit:
            return True
        if self._draining is None:
            self._draining = asyncio.create_task(self.drain.run())
        if not self._draining.done():
            return False
        if not self._draining.cancelled() and self._draining.exception() is not None:
            logger.opt(exception=self._draining.exception()).error("drain failed; shutting down")
        return True
