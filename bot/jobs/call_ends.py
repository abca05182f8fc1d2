"""A node tells the job workers that a call ended, so its lead is settled at once.

The records layer calls this when a call's end is written (`DurableRecords.on_call_end_written`);
it defers `settle_call` without waiting on the call path. If the job database does not take it,
nothing is lost: the workers' sweep settles the lead from the record.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

from loguru import logger

from bot.jobs.job_app import defer
from bot.jobs.task_names import SETTLE_CALL

if TYPE_CHECKING:
    from procrastinate import App

MAX_PENDING = 1000  # settle requests in flight per process: above that the sweep settles them


class CallEnds:
    """Defers one settle job per ended call, in the background, bounded."""

    def __init__(self, app_now: Callable[[], App | None]):
        self._app_now = app_now  # the app to defer on, when there is one (see bot/server/campaign_jobs.py)
        self._pending: set[asyncio.Task] = set()

    def __call__(self, call_sid: str) -> None:
        app = self._app_now()
        if app is None:  # no job app in this process (SQLite without a worker here): the sweep settles it
            return
        if len(self._pending) >= MAX_PENDING:
            logger.bind(call_sid=call_sid).warning("settle not deferred (too many in flight): the sweep settles it")
            return
        task = asyncio.get_running_loop().create_task(self._defer(app, call_sid))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _defer(self, app: App, call_sid: str) -> None:
        try:
            await defer(app, SETTLE_CALL, queueing_lock=f"settle-{call_sid}", call_sid=call_sid)
        except Exception as error:
            logger.bind(call_sid=call_sid).warning(f"settle not deferred ({str(error)[:200]}): the sweep settles it")

    async def wait(self) -> None:
        """Let the deferrals in flight finish (at shutdown)."""
        if self._pending:
            await asyncio.wait(set(self._pending), timeout=5.0)
