"""Where finished calls go. For now: the log and a short in-process history.

The outbound-dialing issue replaces this with the call-record store (SQLAlchemy); the media
path only ever calls `call_finished`, so the swap does not touch it.
"""

from __future__ import annotations

from collections import deque

from loguru import logger

from bot.call_session import CallSession


class RecentCalls:
    """Keeps the last `size` finished sessions of this process (bounded)."""

    def __init__(self, size: int = 200):
        self.sessions: deque[CallSession] = deque(maxlen=size)

    async def call_finished(self, session: CallSession) -> None:
        self.sessions.append(session)
        logger.bind(call_sid=session.call_sid).debug("call handed to the recent-calls sink")

    def get(self, call_sid: str) -> CallSession | None:
        return next((s for s in reversed(self.sessions) if s.call_sid == call_sid), None)
