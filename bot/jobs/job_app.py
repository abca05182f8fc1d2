"""The procrastinate App of this process: PostgreSQL where the store is, in memory otherwise.

PostgreSQL: the jobs share the store's database (procrastinate's own tables, created once by
whichever process gets there first, under an advisory lock). SQLite: jobs cannot cross
processes, so the app is in memory and exists only in a process that runs a worker
(`bot run --leads`); a server in another process then has no app and leaves settling the
leads to that worker's sweep.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from loguru import logger
from sqlalchemy.engine import make_url

from bot.config.settings import Settings
from bot.jobs.task_names import QUEUE
from bot.store.engine import mask_url, normalize_database_url

if TYPE_CHECKING:  # procrastinate (and psycopg) load only in a process that uses the jobs
    from procrastinate import App

_SCHEMA_LOCK = 0x0CA11_70B5  # pg_advisory_lock key: one process creates procrastinate's tables
_in_memory_apps: dict[str, App] = {}


def uses_postgres(settings: Settings) -> bool:
    return normalize_database_url(settings.store_url).get_backend_name() == "postgresql"


def libpq_url(store_url: str) -> str:
    """The store's URL as psycopg takes it (no SQLAlchemy driver name, no asyncpg-only options)."""
    url = normalize_database_url(make_url(store_url)).set(drivername="postgresql")
    kept = {key: value for key, value in url.query.items() if key in ("sslmode", "sslrootcert", "application_name")}
    return url.set(query=kept).render_as_string(hide_password=False)


def postgres_job_app(settings: Settings, *, pool_size: int = 4) -> App:
    """An app on the store's PostgreSQL database (open it with `await app.open_async()`)."""
    from procrastinate import App, PsycopgConnector

    connector = PsycopgConnector(conninfo=libpq_url(settings.store_url), min_size=1, max_size=pool_size,
                                 kwargs={"connect_timeout": max(1, int(settings.database_timeout_secs))})
    return App(connector=connector)


def in_process_job_app(settings: Settings, *, create: bool) -> App | None:
    """The in-memory app of this process for the store (created by the process's worker)."""
    key = str(settings.store_url)
    if key not in _in_memory_apps and create:
        from procrastinate import App

        _in_memory_apps[key] = App(connector=_bounded_in_memory_connector())
    return _in_memory_apps.get(key)


def _bounded_in_memory_connector() -> Any:
    """procrastinate's in-memory connector (made for tests) keeps every query it ran and the
    events of deleted jobs; in a long-lived process both would grow without end."""
    from procrastinate.testing import InMemoryConnector

    class BoundedInMemoryConnector(InMemoryConnector):
        async def generic_execute(self, query: str, suffix: Any, **arguments: Any) -> Any:
            result = await super().generic_execute(query, suffix, **arguments)
            self.queries.clear()
            return result

        async def finish_job_run(self, job_id: int, status: str, delete_job: bool) -> None:
            await super().finish_job_run(job_id, status, delete_job)
            if delete_job:
                self.events.pop(job_id, None)

    return BoundedInMemoryConnector()


def forget_in_process_job_app(settings: Settings) -> None:
    """Drop the in-memory app when its worker stops (its jobs go with it; the leads stay)."""
    _in_memory_apps.pop(str(settings.store_url), None)


async def ensure_job_schema(settings: Settings) -> None:
    """Create procrastinate's tables in the store's PostgreSQL database if they are not there."""
    import psycopg
    from procrastinate.schema import SchemaManager

    async with await psycopg.AsyncConnection.connect(libpq_url(settings.store_url), autocommit=True,
                                                     connect_timeout=max(1, int(settings.database_timeout_secs))) as conn:
        await conn.execute("SELECT pg_advisory_lock(%s)", (_SCHEMA_LOCK,))
        try:
            row = await (await conn.execute("SELECT to_regclass('procrastinate_jobs')")).fetchone()
            if row is None or row[0] is None:
                await conn.execute(SchemaManager.get_schema())
                logger.info(f"job tables created in {mask_url(settings.store_url)}")
        finally:
            await conn.execute("SELECT pg_advisory_unlock(%s)", (_SCHEMA_LOCK,))


async def defer(app: App, task_name: str, *, queueing_lock: str | None = None, schedule_at: Any = None,
                **kwargs: Any) -> bool:
    """Defer a job by name; False if an identical one is already waiting (its queueing lock)."""
    from procrastinate.exceptions import AlreadyEnqueued

    try:
        await app.configure_task(name=task_name, queue=QUEUE, queueing_lock=queueing_lock,
                                 schedule_at=schedule_at).defer_async(**kwargs)
    except AlreadyEnqueued:
        return False
    return True
