"""Shared fixtures: the real app served by uvicorn on a loopback port, per test."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
import uvicorn

from bot.app import create_app
from bot.logging_setup import setup_logging
from bot.settings import Settings, load_settings

setup_logging("INFO")


@dataclass
class LiveServer:
    """A running server: its settings and base URLs."""

    settings: Settings
    port: int
    app: object

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


async def start_server(**overrides) -> tuple[LiveServer, uvicorn.Server, asyncio.Task]:
    port = free_port()
    settings = load_settings(_env_file=None, port=port, host="127.0.0.1", **overrides)
    app = create_app(settings)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on",
                       ws_max_size=2**22)
    )
    task = asyncio.create_task(server.serve())
    for _ in range(500):
        if server.started:
            break
        await asyncio.sleep(0.01)
    assert server.started, "uvicorn did not start"
    return LiveServer(settings, port, app), server, task


@pytest.fixture
async def live_server(request) -> AsyncIterator[LiveServer]:
    """The real app on a free loopback port; overrides via @pytest.mark.settings(...)."""
    marker = request.node.get_closest_marker("settings")
    overrides = marker.kwargs if marker else {}
    live, server, task = await start_server(**overrides)
    try:
        yield live
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=10)


def pytest_configure(config):
    config.addinivalue_line("markers", "settings(**kw): settings overrides for live_server")
