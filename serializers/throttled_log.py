"""Log a recurring problem once, then at most once per interval with a suppressed count.

A misbehaving peer can send thousands of bad messages a minute; one line per problem kind
keeps the log readable and the hot path cheap.
"""

from __future__ import annotations

import time

from loguru import logger


class ThrottledLog:
    """Per-stream, per-kind rate limiter for warnings."""

    def __init__(self, interval_secs: float = 10.0):
        self._interval = interval_secs
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        self.counts: dict[str, int] = {}

    def warn(self, kind: str, message: str, **context: object) -> None:
        """Count the problem; log it if this kind hasn't been logged within the interval."""
        self.counts[kind] = self.counts.get(kind, 0) + 1
        now = time.monotonic()
        last = self._last.get(kind)
        if last is not None and now - last < self._interval:
            self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
            return
        suppressed = self._suppressed.pop(kind, 0)
        self._last[kind] = now
        more = f" (+{suppressed} more since last report)" if suppressed else ""
        logger.bind(**context).warning(f"exotel {kind}: {message}{more}")

    @property
    def total(self) -> int:
        return sum(self.counts.values())
