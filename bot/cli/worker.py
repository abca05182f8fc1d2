"""`bot worker`: one campaign job worker until SIGINT or SIGTERM."""

from __future__ import annotations

import asyncio
import signal

from loguru import logger

from bot.cli.services import cli_services
from bot.config.settings import Settings


async def run_worker(settings: Settings) -> int:
    """Serve the campaign jobs of every running run; 0 after a clean stop."""
    from bot.jobs.job_app import uses_postgres
    from bot.jobs.worker import campaign_worker

    if not uses_postgres(settings):
        raise ValueError("bot worker needs DATABASE_URL on PostgreSQL (the jobs live there); on the embedded "
                         "SQLite default, `bot run --leads` runs its own worker")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with cli_services(settings, dialling=True) as services:
        async with campaign_worker(settings, services.store, services.dialer, services.exotel):
            await stop.wait()
            logger.info("stopping the job worker")
    return 0
