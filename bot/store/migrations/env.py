"""Alembic environment for the call-record store (async engines: aiosqlite, asyncpg).

Which database, first match wins:
1. a connection handed in by `CallStore.migrate()` (`config.attributes["connection"]`);
2. `alembic -x url=...`;
3. the DATABASE_URL environment variable;
4. `sqlalchemy.url` in alembic.ini (unset by default);
5. the embedded default, the SQLite file data/calls.db of this checkout.
Sync URLs (sqlite:///, postgresql://) are given their async driver.
"""

from __future__ import annotations

import asyncio
import os
from logging.config import fileConfig

from alembic import context
from sqlalchemy.engine import URL, Connection
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from bot.store.engine import (
    default_database_url,
    ensure_sqlite_folder,
    install_sqlite_hooks,
    normalize_database_url,
)
from bot.store.models import Base

config = context.config
target_metadata = Base.metadata

if config.config_file_name is not None and config.attributes.get("connection") is None:
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def database_url() -> URL:
    x_args = context.get_x_argument(as_dictionary=True)
    url = (
        x_args.get("url")
        or os.environ.get("DATABASE_URL")
        or config.get_main_option("sqlalchemy.url")
        or default_database_url()
    )
    return normalize_database_url(url)


def _configure(*, render_as_batch: bool, **kwargs) -> None:
    # SQLite: our connection hooks make SQLAlchemy emit BEGIN, so its DDL is transactional too
    # (Alembic assumes it is not); batch mode lets later revisions ALTER tables on SQLite.
    context.configure(
        target_metadata=target_metadata,
        compare_type=True,
        render_as_batch=render_as_batch,
        transactional_ddl=True,
        **kwargs,
    )


def run_offline() -> None:
    """`alembic upgrade head --sql`: print the SQL instead of running it."""
    url = database_url()
    _configure(
        url=url.render_as_string(hide_password=False),
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        render_as_batch=url.get_backend_name() == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


def run_on_connection(connection: Connection) -> None:
    _configure(connection=connection, render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()


async def run_online() -> None:
    url = database_url()
    ensure_sqlite_folder(url)
    engine = create_async_engine(url, poolclass=NullPool)
    if url.get_backend_name() == "sqlite":
        install_sqlite_hooks(engine)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(run_on_connection)
    finally:
        await engine.dispose()


if context.is_offline_mode():
    run_offline()
elif (shared := config.attributes.get("connection")) is not None:
    run_on_connection(shared)
else:
    asyncio.run(run_online())
