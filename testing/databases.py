"""The databases tests run on: SQLite files and PostgreSQL (TEST_POSTGRES_URL, default the
machine's 127.0.0.1:5432 database `test`), with the reason a PostgreSQL case is skipped."""

from __future__ import annotations

import os
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url

from bot.store import CallStore

PG_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
TABLES = {"call_records", "campaign_runs", "campaign_leads", "alembic_version"}

_pg_reason: dict[str, str | None] = {}


def pg_dsn() -> str:
    return make_url(PG_URL).set(drivername="postgresql").render_as_string(hide_password=False)


async def postgres_unreachable() -> str | None:
    if "reason" not in _pg_reason:
        try:
            conn = await asyncpg.connect(pg_dsn(), timeout=3)
            await conn.close()
            _pg_reason["reason"] = None
        except Exception as exc:  # noqa: BLE001 - any failure means "not here"
            shown = make_url(PG_URL).render_as_string(hide_password=True)
            _pg_reason["reason"] = (
                f"PostgreSQL not reachable at {shown} ({type(exc).__name__}: {exc}); "
                "set TEST_POSTGRES_URL to run the PostgreSQL cases"
            )
    return _pg_reason["reason"]


class Backend:
    """One database for one test: opens stores on it (like separate worker processes)."""

    def __init__(self, name: str, url: str, connect_args: dict[str, Any] | None = None):
        self.name = name
        self.url = url
        self.connect_args = connect_args
        self.stores: list[CallStore] = []

    async def open(self, migrate: bool = True) -> CallStore:
        store = await CallStore.open(self.url, migrate=migrate, connect_args=self.connect_args)
        self.stores.append(store)
        return store

    async def close_all(self) -> None:
        for store in self.stores:
            await store.close()
