"""A campaign job worker in this process: `bot worker`, and the in-process worker of
`bot run --leads` (on the embedded SQLite default, the only one there is)."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

from loguru import logger

from bot.config.campaigns import CampaignBook
from bot.config.settings import Settings
from bot.jobs.campaign_work import CampaignWork, register_campaign_jobs
from bot.jobs.job_app import (
    ensure_job_schema,
    forget_in_process_job_app,
    in_process_job_app,
    postgres_job_app,
    uses_postgres,
)
from bot.jobs.task_names import QUEUE
from bot.store import CallStore

HEARTBEAT_SECS = 5.0
STALLED_AFTER_SECS = 30.0
_in_process_work: dict[str, CampaignWork] = {}  # SQLite: the one worker of this process per store


@asynccontextmanager
async def campaign_worker(settings: Settings, store: CallStore, dialer: Any, exotel: Any, *,
                          on_event: Callable[[str, dict[str, Any]], None] | None = None,
                          concurrency: int | None = None,
                          clock: Callable[[], datetime] | None = None,
                          campaigns: dict[str, Any] | None = None) -> AsyncIterator[CampaignWork]:
    """Run a worker for the campaign jobs while the block runs; stop it (its jobs in flight
    cancelled: the sweep of any worker redoes them from the lead table) on the way out."""
    import pipelines.voices  # noqa: F401  # Pipecat, loaded now rather than between a dial's grant and its request

    running = _in_process_work.get(str(settings.store_url))
    if running is not None and not uses_postgres(settings):  # one in-memory queue, one worker: share it
        running.extra_campaigns.update(campaigns or {})
        yield running
        return
    if uses_postgres(settings):
        await ensure_job_schema(settings)
        app = postgres_job_app(settings, pool_size=4)
    else:
        in_process = in_process_job_app(settings, create=True)
        assert in_process is not None
        app = in_process
    work = CampaignWork(settings, store, CampaignBook(settings.campaigns_dir), dialer, exotel, app, on_event=on_event)
    if clock is not None:
        work.clock = clock
    work.extra_campaigns.update(campaigns or {})
    register_campaign_jobs(app, work, sweep_secs=settings.job_sweep_secs)
    name = f"{socket.gethostname()}/{os.getpid()}"
    if not uses_postgres(settings):
        _in_process_work[str(settings.store_url)] = work
    try:
        async with app.open_async():
            runner = asyncio.create_task(_keep_working(app, dict(
                queues=[QUEUE], name=name, concurrency=concurrency or settings.job_worker_concurrency,
                fetch_job_polling_interval=1.0, install_signal_handlers=False, delete_jobs="successful",
                update_heartbeat_interval=HEARTBEAT_SECS, stalled_worker_timeout=STALLED_AFTER_SECS,
                shutdown_graceful_timeout=5.0,
            )))
            logger.info(f"campaign job worker {name} started ({'PostgreSQL' if uses_postgres(settings) else 'in process'})")
            try:
                yield work
            finally:
                runner.cancel()
                await asyncio.gather(runner, return_exceptions=True)
                logger.info(f"campaign job worker {name} stopped")
    finally:
        if not uses_postgres(settings):
            _in_process_work.pop(str(settings.store_url), None)
            forget_in_process_job_app(settings)


async def _keep_working(app: Any, options: dict[str, Any]) -> None:
    """procrastinate's worker, started again after it stops on an error (a database outage):
    the jobs wait in the database meanwhile, and the sweep settles whatever failed."""
    pause = 1.0
    while True:
        started = asyncio.get_running_loop().time()
        try:
            await app.run_worker_async(**options)
            why = "its listener lost the database"  # procrastinate stops its worker then, without raising
        except asyncio.CancelledError:
            raise
        except Exception as error:
            why = str(error)[:200]
        if asyncio.get_running_loop().time() - started > 60:
            pause = 1.0  # it had been working: this is a new outage
        logger.warning(f"campaign job worker stopped ({why}); starting again in {pause:.0f} s")
        await asyncio.sleep(pause)
        pause = min(pause * 2, 30.0)
