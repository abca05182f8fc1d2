"""The campaign job engine in a test: a worker in this process on a server's services, and
waiting for a run to settle."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

from bot.jobs.campaign_work import CampaignWork
from bot.jobs.campaigns import Campaigns
from bot.jobs.worker import campaign_worker
from bot.store.runs import RunProgress

FAST = {"job_sweep_secs": 1, "reconcile_after_secs": 3.0}


@asynccontextmanager
async def campaign_engine(server: Any, *, clock: Callable[[], datetime] | None = None,
                          **settings: Any) -> AsyncIterator[tuple[CampaignWork, Campaigns]]:
    """A job worker on `server`'s store and dialler (sweep every second unless overridden)."""
    services = server.app.state.services
    fast = services.settings.model_copy(update={**FAST, **settings})
    async with campaign_worker(fast, services.store, services.dialer, services.exotel, clock=clock) as work:
        yield work, Campaigns(services.store, work.app, work.account)


async def until_settled(store: Any, run_id: str, timeout: float = 120.0) -> RunProgress:
    """The run's progress once no lead is pending, dialling or in call."""
    async with asyncio.timeout(timeout):
        while True:
            progress = await store.run_progress(run_id)
            if progress is not None and progress.finished:
                return progress
            await asyncio.sleep(0.1)
