"""Marks we send after bot audio, and the futures that resolve when Exotel echoes them.

Exotel plays audio in order and echoes a mark once everything queued before it has played,
so an echo is the only honest "the caller has heard it" signal. Echoing a later mark also
settles every earlier one. After a `clear` Exotel may or may not echo pending marks (its
docs don't say), so `drop_all` settles them as not-played and late echoes are ignored.
"""

from __future__ import annotations

import asyncio


class PlaybackMarks:
    """Tracks outstanding marks of one stream; never raises on unknown or late echoes."""

    def __init__(self, prefix: str = "bot"):
        self._prefix = prefix
        self._counter = 0
        self._pending: dict[str, asyncio.Future[bool]] = {}
        self.sent = 0
        self.echoed = 0
        self.unknown_echoes = 0
        self.dropped = 0
        self.last_echoed: str | None = None

    def new(self) -> str:
        """Name and register the next mark (call it right before sending the mark)."""
        self._counter += 1
        name = f"{self._prefix}-{self._counter}"
        self._pending[name] = asyncio.get_running_loop().create_future()
        self.sent += 1
        return name

    def echo(self, name: str) -> bool:
        """Exotel says `name` has played; settle it and every mark sent before it."""
        if name not in self._pending:
            self.unknown_echoes += 1
            return False
        for pending in list(self._pending):
            future = self._pending.pop(pending)
            if not future.done():
                future.set_result(True)
            self.echoed += 1
            if pending == name:
                break
        self.last_echoed = name
        return True

    def drop_all(self) -> int:
        """Settle every outstanding mark as not played (after a `clear`)."""
        count = len(self._pending)
        for future in self._pending.values():
            if not future.done():
                future.set_result(False)
        self._pending.clear()
        self.dropped += count
        return count

    @property
    def outstanding(self) -> int:
        return len(self._pending)

    @property
    def ever_echoed(self) -> bool:
        return self.echoed > 0

    async def wait_all(self, timeout: float) -> bool:
        """Wait until every outstanding mark is settled; False on timeout or if any dropped."""
        if not self._pending:
            return True
        last = next(reversed(self._pending.values()))
        try:
            return await asyncio.wait_for(asyncio.shield(last), timeout=max(0.0, timeout))
        except TimeoutError:
            return False
