"""A short "Hmm." when the reply is slow, so the caller never sits in dead air.

Sits just before the output transport. When the caller's turn ends it starts a timer; if no
reply audio has come by `after_ms`, it plays one pre-synthesized filler (plain output audio:
it never enters the LLM context, and barge-in drops it like any bot audio). At most one
filler per turn. Every frame it is given goes on (MetricsFrames and the TTS's progress
frames included: observers and processors past it may read them), but for the output
transport's BotSpeakingFrame pulse on its way up: beside the transport, this is where that
stops (see pipelines/frame_stops.py).
"""

from __future__ import annotations

import asyncio
import itertools

from pipecat.frames.frames import (
    BotSpeakingFrame,
    BotStartedSpeakingFrame,
    EndFrame,
    Frame,
    InterruptionFrame,
    OutputAudioRawFrame,
    TTSAudioRawFrame,
    TTSStartedFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
)
from pipecat.processors.frame_processor import FrameDirection

from pipelines.frame_stops import FrameStop


class FillerInjector(FrameStop):
    """Plays a filler if the reply to a caller turn is slower than `after_ms`."""

    def __init__(self, *, after_ms: int, sample_rate: int, **kwargs):
        super().__init__(upstream=(BotSpeakingFrame,), **kwargs)  # in direct mode, as every FrameStop
        self._after = after_ms / 1000
        self._sample_rate = sample_rate
        self._fillers: list[bytes] = []
        self._cycle = itertools.cycle([0])
        self._timer: asyncio.Task | None = None
        self.played = 0

    def set_fillers(self, fillers: list[bytes]) -> None:
        """Hand in the pre-synthesized fillers (they may arrive after the call started)."""
        self._fillers = [pcm for pcm in fillers if pcm]
        self._cycle = itertools.cycle(range(len(self._fillers))) if self._fillers else itertools.cycle([0])

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        if isinstance(frame, UserStoppedSpeakingFrame):
            self._arm()
        elif isinstance(
            frame,
            (UserStartedSpeakingFrame, InterruptionFrame, TTSStartedFrame, TTSAudioRawFrame,
             BotStartedSpeakingFrame, EndFrame),
        ):
            await self._disarm()
        await super().process_frame(frame, direction)  # passed on (or stopped, see FrameStop)

    def _arm(self) -> None:
        if self._timer is None and self._fillers:
            self._timer = self.create_task(self._play_after_delay(), name="filler-timer")

    async def _disarm(self) -> None:
        if self._timer is not None:
            timer, self._timer = self._timer, None
            if timer is not asyncio.current_task():
                await self.cancel_task(timer)

    async def _play_after_delay(self) -> None:
        await asyncio.sleep(self._after)
        self._timer = None
        pcm = self._fillers[next(self._cycle)]
        self.played += 1
        await self.push_frame(
            OutputAudioRawFrame(audio=pcm, sample_rate=self._sample_rate, num_channels=1)
        )

    async def play_prepared(self, pcm: bytes, text: str = "", context_id: str | None = None) -> None:
        """Play synthesized-ahead speech now, as bot speech (a TTS-like context); `text` is
        what it says (for the transcript)."""
        from pipelines.prepared_speech import prepared_speech_frames

        await self._disarm()
        for frame in prepared_speech_frames(pcm, self._sample_rate, text, context_id):
            await self.push_frame(frame)

    async def cleanup(self):
        await self._disarm()
        await super().cleanup()
