"""Caller audio goes no further than the user turn aggregator.

Past the aggregator (which runs the VAD on it) nothing needs the caller's raw audio: the LLM,
TTS, filler injector, output transport and assistant aggregator only pass it along, ten frames
a second per call, each hop a queue handoff on the event loop. The recording takes the caller's
audio at the input (CallTap), so it stops here.
"""

from __future__ import annotations

from pipecat.frames.frames import Frame, InputAudioRawFrame
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor


class CallerAudioStop(FrameProcessor):
    """Drops InputAudioRawFrame; passes every other frame on."""

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, InputAudioRawFrame):
            return
        await self.push_frame(frame, direction)
