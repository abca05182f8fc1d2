"""The campaign job engine as a server node sees it.

PostgreSQL: the node opens a small job app at start-up to enqueue campaigns (`POST /campaigns`)
and to tell the workers when a call ends; the `bot worker` processes dial. SQLite (the
embedded default): jobs cannot cross processes, so a server process that starts a campaign, or
finds one running at start-up, runs a job worker itself (it needs the dialler); a process
without one leaves settling its calls' leads to the sweep of a process that has one.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from loguru import logger

from bot.jobs.call_ends import CallEnds
from bot.jobs.job_app import ensure_job_schema, in_process_job_app, postgres_job_app, uses_postgres
from bot.server.services import Services

NO_DIALLER = "campaigns need Exotel credentials (EXOTEL_ACCOUNT_SID, EXOTEL_API_KEY, EXOTEL_API_TOKEN, ...)"


async def open_campaign_jobs(services: Services) -> None:
    """At start-up: the job app (PostgreSQL), the call-end hook, and on SQLite a worker if a run
    is waiting for one."""
    settings = services.settings
    assert services.records is not None and services.store is not None
    if uses_postgres(settings):
        await ensure_job_schema(settings)
        app = postgres_job_app(settings, pool_size=2)
        await app.open_async()
        services.jobs = app
    services.records.on_call_end_written = CallEnds(lambda: services.jobs or in_process_job_app(settings, create=False))
    if services.jobs is None and services.dialer is not None and await services.store.runs_in_state("running"):
        await campaign_jobs_app(services)


async def campaign_jobs_app(services: Services) -> Any:
    """The app campaigns are enqueued on; on SQLite, starting this process's worker first.
    Raises LookupError (one line) where this node cannot run campaigns."""
    if services.jobs is not None:
        return services.jobs
    if services.dialer is None or services.store is None:
        raise LookupError(NO_DIALLER)
    async with _STARTING:
        if services.jobs is not None:  # started by a request that came in at the same moment
            return services.jobs
        return await _start_worker(services)


_STARTING = asyncio.Lock()


async def _start_worker(services: Services) -> Any:
    from bot.jobs.worker import campaign_worker

    assert services.store is not None
    stack = contextlib.AsyncExitStack()
    work = await stack.enter_async_context(
        campaign_worker(services.settings, services.store, services.dialer, services.exotel))
    services.job_worker = stack
    services.jobs = work.app
    logger.info("campaign jobs run in this server process (SQLite: no shared job queue)")
    return work.app


async def close_campaign_jobs(services: Services) -> None:
    """At shutdown: the in-process worker stops, the job app closes."""
    if services.job_worker is not None:
        await services.job_worker.aclose()
        services.job_worker = None
    elif services.jobs is not None:
        await services.jobs.close_async()
    services.jobs = None
