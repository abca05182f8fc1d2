"""The call's frame watchers (turn metrics, idle handling) behind one Pipecat observer.

Pipecat gives every observer its own queue and task, and queues to each of them every frame
every processor handles (FrameProcessed) and, unless it opts out, every hop of every frame:
with ~13 processors and an audio chunk every 100 ms that is hundreds of queue operations a
second per observer, per call. Our watchers only need each frame once, when it is first
pushed, so they share one observer that asks for first pushes only.
"""

from __future__ import annotations

from typing import Protocol

from pipecat.observers.base_observer import BaseObserver, FramePushed


class FrameWatcher(Protocol):
    async def on_push_frame(self, data: FramePushed) -> None: ...


class CallObservers(BaseObserver):
    """Hands each frame's first push to every watcher, in order."""

    def __init__(self, watchers: list[FrameWatcher]):
        super().__init__(observe_every_push=False)
        self.watchers = watchers

    async def on_push_frame(self, data: FramePushed) -> None:
        for watcher in self.watchers:
            await watcher.on_push_frame(data)
