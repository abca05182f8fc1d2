"""The call's frame watchers (turn metrics, idle handling), fed by the processors that push
the frames they need.

Each source processor gets an `on_before_push_frame` handler (Pipecat calls these inline,
before the frame moves on) that passes on only the frame types that processor originates, each
frame once. The handlers only read: every frame still travels, and any Pipecat observer of the
call (build_call_pipeline's `observers`) sees it. Not an observer itself: Pipecat hands an
observer every frame pushed and processed through a queue and a task of its own; the same
watchers as one BaseObserver (first pushes only) measured 16.36 -> 16.73 ms CPU per
call-second (+1.7%, paired A/B, 2 x 12 calls, 4 rounds, every round higher:
bench/results/call_watchers_as_observer_paired_ab.json).
"""

from __future__ import annotations

from collections import deque
from typing import Protocol

from pipecat.frames.frames import Frame
from pipecat.processors.frame_processor import FrameProcessor


class FrameWatcher(Protocol):
    async def on_frame(self, frame: Frame) -> None: ...


class CallWatch:
    """Hands each watched frame to every watcher, in order, once."""

    def __init__(self, watchers: list[FrameWatcher]):
        self.watchers = watchers
        # Frames already handed on. A frame passed along by a later processor, or the other
        # half of a frame broadcast both ways, is not handed on again.
        self._seen: deque[int] = deque(maxlen=64)

    def tap(self, processor: FrameProcessor, *frame_types: type[Frame]) -> None:
        """Watch the frames of `frame_types` that `processor` pushes (either way)."""

        @processor.event_handler("on_before_push_frame")
        async def _pushed(_processor: FrameProcessor, frame: Frame) -> None:
            if isinstance(frame, frame_types) and self._first_sighting(frame):
                for watcher in self.watchers:
                    await watcher.on_frame(frame)

    def _first_sighting(self, frame: Frame) -> bool:
        if frame.id in self._seen or frame.broadcast_sibling_id in self._seen:
            return False
        self._seen.append(frame.id)
        return True

    def stop(self) -> None:
        """The call is over: stop the watchers' timers."""
        for watcher in self.watchers:
            stop = getattr(watcher, "stop", None)
            if stop is not None:
                stop()
