"""Where finished calls go: the call-record store, a post-call webhook, and a short
in-process history (for `/health`-style introspection and tests)."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

import httpx
from loguru import logger
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from bot.call_session import CallSession


class CallSink:
    """Completes the call record at hang-up (whatever ended the call) and notifies the campaign."""

    def __init__(self, store: Any, campaigns: Any, size: int = 200):
        self._store = store
        self._campaigns = campaigns
        self.sessions: deque[CallSession] = deque(maxlen=size)
        self._background: set[asyncio.Task] = set()

    async def call_finished(self, session: CallSession) -> None:
        self.sessions.append(session)
        log = logger.bind(call_sid=session.call_sid)
        if self._store is None:
            return
        try:
            record = await self._store.complete_from_session(session)
        except Exception as error:
            log.error(f"could not save the call record: {type(error).__name__}: {error}")
            return
        campaign = self._campaign(session.campaign)
        url = getattr(campaign, "webhook_url", None) if campaign else None
        if url:
            task = asyncio.create_task(post_call_webhook(url, self._store.to_dict(record)))
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
