"""How late this process's event loop runs: the first thing to look at when audio stutters.

Every call in a worker shares one event loop; anything that holds it (a slow synchronous
call, a burst of call set-ups, a long GC pause) delays every call's audio. A tick every 50 ms
records how late it woke up; /health reports the last minute's p50/p95/max, and a stall over
`warn_ms` is logged (at most once per 10 s). Garbage-collector pauses are timed too (they
hold the loop like any other work): count, total and longest over the last minute.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections import deque

from loguru import logger

TICK_SECS = 0.05
WINDOW_SECS = 60.0


class LoopLagMonitor:
    def __init__(self, warn_ms: float = 100.0):
        self.warn_ms = warn_ms
        self._lags: deque[tuple[float, float]] = deque()  # (when, lag seconds)
        self._task: asyncio.Task | None = None
        self._last_warning = 0.0
        self.stalls = 0  # ticks late by more than warn_ms, since start
        self._gc_pauses: deque[tuple[float, int, float]] = deque()  # (when, generation, seconds)
        self._gc_started = 0.0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="loop-lag-monitor")
        gc.callbacks.append(self._on_gc)

    def _on_gc(self, phase: str, info: dict) -> None:
        now = time.perf_counter()
        if phase == "start":
            self._gc_started = now
        else:
            self._gc_pauses.append((time.monotonic(), info.get("generation", -1), now - self._gc_started))

    async def stop(self) -> None:
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            before = time.monotonic()
            await asyncio.sleep(TICK_SECS)
            now = time.monotonic()
            lag = max(0.0, now - before - TICK_SECS)
            self._lags.append((now, lag))
            while self._lags and self._lags[0][0] < now - WINDOW_SECS:
                self._lags.popleft()
            while self._gc_pauses and self._gc_pauses[0][0] < now - WINDOW_SECS:
                self._gc_pauses.popleft()
            if lag * 1000 > self.warn_ms:
                self.stalls += 1
                if now - self._last_warning > 10:
                    self._last_warning = now
                    logger.warning(f"event loop stalled {lag * 1000:.0f} ms (calls' audio waits meanwhile)")

    def summary(self) -> dict[str, float | int | dict]:
        """Lag over the last minute, in ms: p50, p95, max; stalls since start; GC pauses."""
        pauses = [secs for _, _, secs in self._gc_pauses]
        gc_pauses = {"count": len(pauses), "full": sum(1 for _, gen, _ in self._gc_pauses if gen == 2),
                     "total_ms": round(sum(pauses) * 1000, 1), "max_ms": round(max(pauses, default=0.0) * 1000, 1)}
        lags = sorted(lag for _, lag in self._lags)
        if not lags:
            return {"p50_ms": 0.0, "p95_ms": 0.0, "max_ms": 0.0, "stalls": self.stalls, "gc": gc_pauses}
        pick = lambda q: round(lags[min(len(lags) - 1, int(q * (len(lags) - 1) + 0.5))] * 1000, 1)  # noqa: E731
        return {"p50_ms": pick(0.5), "p95_ms": pick(0.95), "max_ms": round(lags[-1] * 1000, 1), "stalls": self.stalls,
                "gc": gc_pauses}
