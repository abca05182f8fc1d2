"""Shared fixtures: the real app served by uvicorn on a loopback port, per test."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from bot.config.logging_setup import setup_logging
from bot.config.settings import load_settings
from bot.server.local_server import LocalServer, free_port, serve_locally

setup_logging("INFO")


@pytest.fixture
async def live_server(request, tmp_path) -> AsyncIterator[LocalServer]:
    """The real app on a free loopback port, with its own DATA_DIR (records, recordings) under
    the test's tmp_path; overrides via @pytest.mark.settings(...)."""
    marker = request.node.get_closest_marker("settings")
    overrides = {"data_dir": tmp_path / "data", **(marker.kwargs if marker else {})}
    settings = load_settings(_env_file=None, port=free_port(), host="127.0.0.1", **overrides)
    async with serve_locally(settings) as server:
        yield server


def pytest_configure(config):
    config.addinivalue_line("markers", "settings(**kw): settings overrides for live_server")
