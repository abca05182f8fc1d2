"""Caller audio goes no further than the user turn aggregator.

Past the aggregator (which runs the VAD on it) nothing in the call's pipeline reads the caller's
raw audio: the LLM, TTS, filler injector, output transport and assistant aggregator only pass it
along, ten frames a second per call, each hop a queue handoff on the event loop. The recording
takes the caller's audio at the input transport (CallTap). Observers still see every caller
audio frame, pushed from the input transport to here; a processor placed past the aggregator
(an AudioBufferProcessor after the output transport, say) would not get it. Every other frame
goes on as Pipecat sends it (the aggregator's UserSpeakingFrame pulse included).
"""

from __future__ import annotations

from pipecat.frames.frames import Frame, InputAudioRawFrame
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor


class CallerAudioStop(FrameProcessor):
    """Drops InputAudioRawFrame; passes every other frame on.

    Runs in Pipecat's direct mode, as do the other processors here that only look at frames
    and pass them on (VoicemailDetector, FillerInjector): a frame is handled in the
    task of the processor that pushed it instead of being queued for a task of this one
    (one or two queue handoffs and task switches per frame, per hop, saved).
    """

    def __init__(self, **kwargs):
        kwargs.setdefault("enable_direct_mode", True)
        super().__init__(**kwargs)

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, InputAudioRawFrame):
            # Dropped: letting caller audio travel the rest of the pipeline measured 17.86 ->
            # 18.48 ms CPU per call-second (+3.0%, paired A/B, 2 x 12 calls, 4 rounds:
            # bench/results/caller_audio_past_the_aggregator_paired_ab.json).
            return
        await self.push_frame(frame, direction)
