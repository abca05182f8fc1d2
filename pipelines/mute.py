"""Mute the caller while the call is ending, so a goodbye or handoff is never cut off."""

from __future__ import annotations

from pipecat.frames.frames import Frame
from pipecat.turns.user_mute.base_user_mute_strategy import BaseUserMuteStrategy

from pipelines.call_control import CallControl


class MuteWhileEnding(BaseUserMuteStrategy):
    """Muted once the call control started ending the call."""

    def __init__(self, control: CallControl):
        super().__init__()
        self._control = control

    async def process_frame(self, frame: Frame) -> bool:
        await super().process_frame(frame)
        return self._control.ending
