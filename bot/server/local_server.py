"""Serve the real app in-process on a loopback port (for the demo, tests and benchmarks)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi import FastAPI

from bot.config.settings import Settings
from bot.server.app import create_app
from bot.server.app_server import AppServer, server_config


@dataclass
class LocalServer:
    """A running app: its settings, app object and URLs."""

    settings: Settings
    app: FastAPI
    port: int

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/media"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@asynccontextmanager
async def serve_locally(settings: Settings) -> AsyncIterator[LocalServer]:
    """Start uvicorn with the app on 127.0.0.1:`settings.port` (0 = a free port)."""
    port = settings.port if settings.port else free_port()
    app = create_app(settings)
    server = AppServer(server_config(app, settings, host="127.0.0.1", port=port, lifespan="on"),
                       drain=app.state.services.drain)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()  # surfaces the start-up error
            raise RuntimeError("uvicorn exited before starting")
        await asyncio.sleep(0.01)
    try:
        yield LocalServer(settings, app, port)
    finally:
        server.should_exit = True  # drains as on SIGTERM: live calls finish (SHUTDOWN_GRACE_SECS)
        stop_within = settings.shutdown_grace_secs + 60
        try:
            await asyncio.wait_for(task, timeout=stop_within)
        except TimeoutError:
            raise RuntimeError(f"the in-process server did not stop within {stop_within:g} s") from None
