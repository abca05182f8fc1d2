"""Answering machines: recognised by what they say first; leave a message and hang up."""

from __future__ import annotations

import time

from loguru import logger
from pipecat.frames.frames import Frame, TranscriptionFrame
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from bot.config.campaigns import VoicemailConfig
from pipelines.call_control import CallControl


class VoicemailDetector(FrameProcessor):
    """Within the first `listen_secs`, a transcript with a voicemail phrase ends the call
    with the campaign's message; the transcript never reaches the LLM."""

    def __init__(self, config: VoicemailConfig, control: CallControl, **kwargs):
        kwargs.setdefault("enable_direct_mode", True)  # see pipelines/frame_stops.py
        super().__init__(**kwargs)
        self._phrases = [p.lower() for p in config.phrases]
        self._listen_secs = config.listen_secs
        self._control = control
        self._started = time.monotonic()
        self.detected = False

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if (
            isinstance(frame, TranscriptionFrame)
            and not self.detected
            and time.monotonic() - self._started <= self._listen_secs
            and any(phrase in frame.text.lower() for phrase in self._phrases)
        ):
            self.detected = True
            logger.info("voicemail detected; leaving the campaign's message")
            self._control.session.add_transcript("user", frame.text, voicemail=True)
            await self._control.leave_voicemail()
            return  # by design, not for speed: a machine's greeting is no caller turn for the LLM
        await self.push_frame(frame, direction)
