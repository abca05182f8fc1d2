"""Where the frames nothing downstream (or upstream) reads stop: one hop from where Pipecat
pushes them, so every observer still sees each of them exactly as Pipecat pushes it.

An observer is told of a frame when a processor pushes it to the next one; a FrameStop placed
next to the frame's origin receives it (observers see that push, from the origin) and does not
pass it on. What stops, and what letting it travel every hop costs (paired A/B, 2 x 12 calls,
4 rounds, ms CPU per call-second, bench/results/*_paired_ab.json):

- Caller audio (InputAudioRawFrame, 10 a second) after the user aggregator, which runs the VAD
  on it: nothing past it reads raw caller audio (the recording takes it at the input
  transport). Travelling: 17.86 -> 18.48, +3.0% (caller_audio_past_the_aggregator).
- The speaking pulses, five a second each while someone speaks (Pipecat broadcasts them down
  and up through every processor), and the 200 ms payloads the output transport has sent,
  which it passes on downstream. The user aggregator's UserSpeakingFrame stops on its way down
  beside the aggregator (its way up, to the input transport, is short and goes on); the output
  transport's BotSpeakingFrame stops on its way up in the filler injector beside the transport
  (pipelines/fillers.py), and with the sent audio on its way down right after the transport.
  In Pipecat 1.14 only the pipeline idle timeout, RTVI and the wake-phrase turn start read the
  pulses (all off here); nothing reads sent audio past the transport. Travelling every hop:
  21.04 -> 22.14, +5.2% (speaking_pulses; per-round ratio stopped/travelling 0.954).

A processor that needs one of these past its stop (an AudioBufferProcessor after the output
transport, say) would not get it: move the stop, and measure.
"""

from __future__ import annotations

from pipecat.frames.frames import Frame
from pipecat.processors.frame_processor import FrameCallback, FrameDirection, FrameProcessor


class FrameStop(FrameProcessor):
    """Passes every frame on except `downstream` types going down and `upstream` types going up.

    Runs in Pipecat's direct mode, as do the other processors here that only look at frames
    and pass them on (VoicemailDetector, FillerInjector): a frame is handled in the task of
    the processor that pushed it, instead of being queued for a task of this one. A stopped
    frame ends where it is handed over (queue_frame): observers have seen it pushed here, and
    it skips the processing hooks it would only be dropped after.
    """

    def __init__(
        self, *, downstream: tuple[type[Frame], ...] = (), upstream: tuple[type[Frame], ...] = (), **kwargs
    ):
        kwargs.setdefault("enable_direct_mode", True)
        super().__init__(**kwargs)
        self._stops = {FrameDirection.DOWNSTREAM: downstream, FrameDirection.UPSTREAM: upstream}

    async def queue_frame(
        self, frame: Frame, direction: FrameDirection = FrameDirection.DOWNSTREAM, callback: FrameCallback | None = None
    ):
        if callback is None and isinstance(frame, self._stops[direction]):
            return
        await super().queue_frame(frame, direction, callback)

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, self._stops[direction]):
            return
        await self.push_frame(frame, direction)
