"""Saving a live call's transcript as it grows, so `bot run` and the API can follow the call."""

from __future__ import annotations

import asyncio
import time
from typing import Any, Protocol

from loguru import logger

PROGRESS_SAVE_EVERY_SECS = 2.0


class LiveCall(Protocol):
    """What a saver reads of a live call (a `CallSession`)."""

    call_sid: str
    transcript: list[dict[str, Any]]
    collected: dict[str, Any]


class ProgressRecords(Protocol):
    """Where progress goes: `DurableRecords` (or the `CallStore` itself)."""

    async def save_progress(self, call_sid: str, transcript: list[dict[str, Any]],
                            collected: dict[str, Any]) -> bool: ...


class ProgressSaver:
    """Save a live call's transcript as it grows, off the audio path: at most one write per
    call every PROGRESS_SAVE_EVERY_SECS (the latest state wins), never two at once, none
    after hang-up (the completed record is written then). With a hundred calls on one SQLite
    file, a write per transcript line queued the writers on the file's lock and left a new
    call's lead lookup waiting ~1 s for a pooled connection. A change that lands while a
    write is under way is saved by the next one, not left for the next change; so is one the
    database did not take (`DurableRecords.save_progress` skips saves while it is down, so
    they never queue up). Call it on every change; `cancel()` it at hang-up."""

    def __init__(self, records: ProgressRecords, session: LiveCall, every_secs: float = PROGRESS_SAVE_EVERY_SECS):
        self._records, self._session, self._every = records, session, every_secs
        self._task: asyncio.Task | None = None
        self._last_saved = 0.0
        self._writing = False
        self._dirty = False
        self._stopped = False

    def __call__(self) -> None:
        self._dirty = True
        if not self._stopped and (self._task is None or self._task.done()):
            self._task = asyncio.create_task(self._save_while_dirty())

    def cancel(self) -> None:
        """Drop a save still waiting its turn (one already writing finishes: never cut a
        transaction off half-way)."""
        self._stopped = True
        self._dirty = False
        if self._task is not None and not self._writing:
            self._task.cancel()

    async def _save_while_dirty(self) -> None:
        while self._dirty and not self._stopped:
            delay = self._last_saved + self._every - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            self._last_saved = time.monotonic()
            self._dirty = False
            session = self._session
            self._writing = True
            try:
                saved = await self._records.save_progress(
                    session.call_sid, list(session.transcript), dict(session.collected))
            except Exception as error:
                saved = False
                logger.bind(call_sid=session.call_sid).warning(f"could not save call progress: {error}")
            finally:
                self._writing = False
            if not saved and not self._stopped:
                self._dirty = True  # try again next turn
