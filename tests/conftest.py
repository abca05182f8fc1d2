"""Shared fixtures: the real app served by uvicorn on a loopback port, per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from bot.config.logging_setup import setup_logging
from bot.config.settings import load_settings
from bot.server.local_server import LocalServer, free_port, serve_locally
from testing.databases import PG_URL, Backend, pg_dsn, postgres_unreachable

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


@pytest.fixture(params=["sqlite", "postgresql"])
async def backend(request, tmp_path) -> AsyncIterator[Backend]:
    if request.param == "sqlite":
        db = Backend("sqlite", f"sqlite+aiosqlite:///{tmp_path / 'db' / 'calls.db'}")
        yield db
        await db.close_all()
        return
    reason = await postgres_unreachable()
    if reason:
        if os.environ.get("TEST_POSTGRES_REQUIRED"):
            pytest.fail(reason)
        pytest.skip(reason)
    schema = f"store_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(pg_dsn())
    try:
        await admin.execute(f'CREATE SCHEMA "{schema}"')
        db = Backend("postgresql", PG_URL, {"server_settings": {"search_path": schema}})
        try:
            yield db
        finally:
            await db.close_all()
            await admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
    finally:
        await admin.close()
