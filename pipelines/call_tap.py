"""Notes on the call session what crosses the pipeline: caller audio, DTMF, bot speech."""

from __future__ import annotations

import time

from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    Frame,
    InputAudioRawFrame,
    InputDTMFFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from bot.call_session import CallSession
from pipelines.dtmf_actions import DTMFActions
from pipelines.recorder import CallRecorder


class CallTap(FrameProcessor):
    """Counts caller audio (and hands it to the call's recorder), records DTMF digits (and
    runs the campaign's key actions) and when the bot started/stopped speaking.

    Sits right after the input transport, so it sees bot-speaking frames on their way
    upstream; BotStoppedSpeaking arrives once the caller has heard the utterance (the
    Exotel transport holds it for the mark). Passes every frame on unchanged.
    """

    def __init__(self, session: CallSession, recorder: CallRecorder | None = None,
                 dtmf: DTMFActions | None = None, **kwargs):
        kwargs.setdefault("enable_direct_mode", True)  # see pipelines/caller_audio_stop.py
        super().__init__(**kwargs)
        self._session = session
        self._recorder = recorder
        self._dtmf = dtmf

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, InputAudioRawFrame):
            self._session.inbound_audio_bytes += len(frame.audio)
            if self._recorder is not None:
                self._recorder.add_caller_audio(frame.audio)
        elif isinstance(frame, InputDTMFFrame):
            self._session.dtmf.append(frame.button.value)
            if self._dtmf is not None:
                await self._dtmf.on_key(frame.button.value, self.push_frame)
        elif isinstance(frame, BotStartedSpeakingFrame) and direction == FrameDirection.UPSTREAM:
            self._session.bot_speech.append(("started", time.monotonic()))
        elif isinstance(frame, BotStoppedSpeakingFrame) and direction == FrameDirection.UPSTREAM:
            self._session.bot_speech.append(("stopped", time.monotonic()))
        await self.push_frame(frame, direction)
