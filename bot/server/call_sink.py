"""Where finished calls go: the call-record store (through `DurableRecords`, so an outage
never loses a record), a post-call webhook, and a short in-process history (for
`/health`-style introspection and tests)."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

import httpx
from loguru import logger
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from bot.store.durable import DurableRecords, RecordNotSaved
from bot.store.record_json import call_to_dict
from pipelines.call_session import CallSession


class CallSink:
    """Completes the call record at hang-up (whatever ended the call) and notifies the campaign
    of every completed record, also one written later from the journal."""

    def __init__(self, records: DurableRecords | None, campaigns: Any, size: int = 200):
        self._records = records
        self._campaigns = campaigns
        self.sessions: deque[CallSession] = deque(maxlen=size)
        self._background: set[asyncio.Task] = set()
        if records is not None:
            records.on_completed = self.record_completed

    async def call_finished(self, session: CallSession) -> None:
        """Store the record (committed, or journalled for replay), then list the session: a
        finished session in the history means its record is safe."""
        try:
            if self._records is not None:
                await self._records.complete_from_session(session)
        except RecordNotSaved as error:
            logger.bind(call_sid=session.call_sid).error(f"could not save the call record: {error}")
        except Exception as error:  # never let the record's trouble escape into the socket handler
            logger.bind(call_sid=session.call_sid).exception(f"could not save the call record: {error}")
        finally:
            self.sessions.append(session)

    def record_completed(self, record: Any) -> None:
        """A final record is in the database: POST it to the campaign's webhook, if it has one."""
        campaign = self._campaign(record.campaign)
        url = getattr(campaign, "webhook_url", None) if campaign else None
        if url:
            task = asyncio.create_task(post_call_webhook(url, call_to_dict(record)))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    def _campaign(self, name: str | None) -> Any:
        try:
            return self._campaigns.get(name, name or "")
        except Exception:
            return None

    def get(self, call_sid: str) -> CallSession | None:
        return next((s for s in reversed(self.sessions) if s.call_sid == call_sid), None)

    async def drain(self) -> None:
        """Wait for post-call webhooks still being delivered (graceful shutdown)."""
        if self._background:
            await asyncio.wait(self._background, timeout=30)


async def post_call_webhook(url: str, record: dict[str, Any], attempts: int = 5) -> bool:
    """POST the record to the campaign's webhook, retried with exponential backoff."""
    log = logger.bind(call_sid=record.get("call_sid"))
    try:
        async for attempt in AsyncRetrying(
            stop=stop_after_attempt(attempts), wait=wait_exponential(multiplier=0.5, max=30),
            retry=retry_if_exception_type(httpx.HTTPError), reraise=True,
        ):
            with attempt:
                async with httpx.AsyncClient(timeout=10.0) as client:
                    response = await client.post(url, json=record)
                    response.raise_for_status()
        log.info("post-call webhook delivered")
        return True
    except httpx.HTTPError as error:
        log.warning(f"post-call webhook failed after {attempts} attempts: {error}")
        return False
