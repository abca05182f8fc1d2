"""The database under the call-record store: its URL, its engine, its sessions, its schema.

URLs: `sqlite+aiosqlite:///data/calls.db` (relative to the working directory; four slashes for
an absolute path) or `postgresql+asyncpg://user@host:5432/db`. Plain `sqlite:///...` and
`postgresql://...` / `postgres://...` are accepted and given the async driver.

SQLite: WAL, foreign keys and a busy timeout (`timeout_secs`, 30 s by default) are set on every
connection, and SQLAlchemy (not the sqlite3 module) emits BEGIN, so transactions are real:
writes use BEGIN IMMEDIATE (they take the write lock up front and queue behind each other
instead of failing with "database is locked" halfway), reads a deferred BEGIN. Several
processes may share the file.

Every query of the store is one short transaction on its own session (`Database._read()`,
`Database._write()`); nothing blocks the event loop (aiosqlite runs SQLite in its own thread;
asyncpg is natively async). Rows handed back are detached snapshots: reading their columns is
fine, changing them does nothing. The schema is Alembic's (bot/store/migrations).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Self

from loguru import logger
from sqlalchemy import event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from bot.config.private_files import private_file, private_folder

DEFAULT_DB_FILENAME = "calls.db"
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
DEFAULT_TIMEOUT_SECS = 30.0  # SQLite's busy timeout; PostgreSQL's connect and statement timeouts
_PG_MIGRATION_LOCK = 0x0CA11_5704E  # pg_advisory_xact_lock key: one migrator at a time
# The newest migration in migrations/versions (tests/test_store_migrations.py checks it is
# Alembic's head). A database already there is opened without loading Alembic: every server
# worker opens the store, and Alembic with its migration scripts stays in a process's memory.
HEAD_REVISION = "0003"


# --- URLs -----------------------------------------------------------------------------------


def default_database_url(data_dir: str | Path | None = None) -> str:
    """The embedded default: `sqlite+aiosqlite:///<data_dir>/calls.db` (data_dir: the repo's data/)."""
    folder = Path(data_dir) if data_dir is not None else Path(__file__).resolve().parents[2] / "data"
    return f"sqlite+aiosqlite:///{folder / DEFAULT_DB_FILENAME}"


def normalize_database_url(url: str | URL) -> URL:
    """Give a sync URL its async driver: sqlite -> aiosqlite, postgres(ql) -> asyncpg."""
    parsed = make_url(url) if isinstance(url, str) else url
    backend, _, driver = parsed.drivername.partition("+")
    if backend == "postgres":
        backend = "postgresql"
    if backend == "sqlite" and driver in ("", "pysqlite"):
        driver = "aiosqlite"
    elif backend == "postgresql" and driver in ("", "psycopg2", "psycopg"):
        driver = "asyncpg"
    return parsed.set(drivername=f"{backend}+{driver}" if driver else backend)


def ensure_sqlite_folder(url: URL) -> None:
    """Create the folder of a SQLite file (0700 when we create it) and the file itself (0600:
    it holds people's numbers and conversations); not for :memory: or `file:` URIs."""
    if url.get_backend_name() != "sqlite":
        return
    database = url.database or ""
    if database in ("", ":memory:") or database.startswith("file:"):
        return
    path = Path(database).expanduser()
    if not path.parent.exists():
        private_folder(path.parent)
    private_file(path)


def mask_url(url: str | URL) -> str:
    """The URL with any password hidden (for logs and skip reasons)."""
    parsed = make_url(url) if isinstance(url, str) else url
    return parsed.render_as_string(hide_password=True)


def install_sqlite_hooks(engine: AsyncEngine, busy_timeout_secs: float = DEFAULT_TIMEOUT_SECS) -> None:
    """WAL + foreign keys + busy timeout per connection; SQLAlchemy emits BEGIN [IMMEDIATE]."""
    busy_timeout_ms = max(1, int(busy_timeout_secs * 1000))

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # the sqlite3 module stops emitting BEGIN itself
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {busy_timeout_ms}")  # first: WAL may wait
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = NORMAL")
            cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        immediate = conn.get_execution_options().get("sqlite_immediate", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")



def create_engine(
    url: str | URL,
    *,
    echo: bool = False,
    connect_args: Mapping[str, Any] | None = None,
    timeout_secs: float = DEFAULT_TIMEOUT_SECS,
) -> AsyncEngine:
    """The engine for `url` (SQLite: its folder and file, WAL, foreign keys, busy timeout).

    `connect_args` go to the driver (e.g. asyncpg's `{"server_settings": {"search_path": "x"}}`).
    `timeout_secs` bounds one operation's waits: SQLite's busy timeout (a locked file fails
    with "database is locked" after it), PostgreSQL's connect and statement timeouts, and
    the wait for a free pooled connection; callers that must not lose a write retry it
    (bot.store.durable).
    """
    parsed = normalize_database_url(url)
    ensure_sqlite_folder(parsed)
    is_sqlite = parsed.get_backend_name() == "sqlite"
    kwargs: dict[str, Any] = {"echo": echo, "pool_pre_ping": not is_sqlite}
    if not (is_sqlite and (parsed.database or ":memory:") == ":memory:"):  # a StaticPool has no queue
        kwargs["pool_timeout"] = timeout_secs
    args = dict(connect_args or {})
    args.setdefault("timeout", timeout_secs)  # sqlite3: busy timeout; asyncpg: connect timeout
    if not is_sqlite:
        args.setdefault("command_timeout", timeout_secs)
    kwargs["connect_args"] = args
    engine = create_async_engine(parsed, **kwargs)
    if is_sqlite:
        install_sqlite_hooks(engine, timeout_secs)
    return engine


# --- sessions and schema ----------------------------------------------------------------------


class Database:
    """An engine and its sessions: what each part of the store (calls.py, runs.py, owners.py)
    queries through. Open with `await <class>.open(url)`, close at shutdown."""

    def __init__(self, engine: AsyncEngine):
        self.engine = engine
        self.url: URL = engine.url
        self.is_sqlite = engine.dialect.name == "sqlite"
        # Writes: BEGIN IMMEDIATE on SQLite (an execution option the begin hook reads).
        self._write_engine = engine.execution_options(sqlite_immediate=True) if self.is_sqlite else engine
        self._read_sessions = async_sessionmaker(engine, expire_on_commit=False)
        self._write_sessions = async_sessionmaker(self._write_engine, expire_on_commit=False)

    @classmethod
    async def open(
        cls,
        url: str | URL,
        *,
        migrate: bool = False,
        echo: bool = False,
        connect_args: Mapping[str, Any] | None = None,
        timeout_secs: float = DEFAULT_TIMEOUT_SECS,
    ) -> Self:
        """Create the engine (`create_engine`) and optionally migrate to head.

        `migrate=True` is safe with several workers starting at once: PostgreSQL migrations hold an
        advisory lock, SQLite ones the write lock.
        """
        engine = create_engine(url, echo=echo, connect_args=connect_args, timeout_secs=timeout_secs)
        database = cls(engine)
        try:
            if migrate:
                await database.migrate()
        except BaseException:
            await engine.dispose()
            raise
        logger.debug("call store open at {}", mask_url(engine.url))
        return database

    async def close(self) -> None:
        await self.engine.dispose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def migrate(self, revision: str = "head") -> None:
        """Run the Alembic migrations (bot/store/migrations) to `revision` on this engine.

        Alembic's command API is synchronous; it runs through `AsyncConnection.run_sync` on one
        of this engine's connections (the documented connection-sharing recipe), so the DDL goes
        through the async driver and the loop is never blocked on I/O.
        """
        if revision == "head" and await self.schema_revision_quick() == HEAD_REVISION:
            return
        async with self._write_engine.connect() as conn:
            async with conn.begin():
                if not self.is_sqlite:
                    await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_MIGRATION_LOCK})
                await conn.run_sync(_alembic_upgrade, revision)

    async def schema_revision_quick(self) -> str | None:
        """The revision in Alembic's version table, read with plain SQL (None without one)."""
        try:
            async with self.engine.connect() as conn:
                rows = (await conn.execute(text("SELECT version_num FROM alembic_version"))).all()
        except Exception:  # no version table yet (a new database): Alembic creates it
            return None
        return rows[0][0] if len(rows) == 1 else None

    async def schema_revision(self) -> str | None:
        """The Alembic revision the database is at (None before any migration)."""
        async with self.engine.connect() as conn:
            return await conn.run_sync(_current_revision)

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[AsyncSession]:
        async with self._write_sessions() as session, session.begin():
            yield session

    @asynccontextmanager
    async def _read(self) -> AsyncIterator[AsyncSession]:
        async with self._read_sessions() as session, session.begin():
            yield session


# --- alembic (sync, run via AsyncConnection.run_sync) --------------------------------------------


def alembic_config(url: str | URL | None = None):
    """An Alembic Config pointing at the packaged migrations (no alembic.ini needed)."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url is not None:
        rendered = normalize_database_url(url).render_as_string(hide_password=False)
        cfg.set_main_option("sqlalchemy.url", rendered.replace("%", "%%"))
    return cfg


def _alembic_upgrade(sync_conn: Any, revision: str) -> None:
    from alembic import command

    cfg = alembic_config()
    cfg.attributes["connection"] = sync_conn
    command.upgrade(cfg, revision)


def _current_revision(sync_conn: Any) -> str | None:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(sync_conn).get_current_revision()

