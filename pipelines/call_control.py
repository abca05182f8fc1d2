"""The few ways a call ends or changes hands, shared by tools, DTMF, idle and error handling.

Each way speaks a last line and then ends the pipeline; the Exotel transport closes the
socket only once that line has played (its mark came back), so Exotel's flow moves on to
the next applet (Hangup, or a Connect to a human for transfers). Only the first ending
counts: a tool, a DTMF key and an error racing each other end the call once.
"""

from __future__ import annotations

from loguru import logger
from pipecat.frames.frames import EndFrame, TTSSpeakFrame
from pipecat.pipeline.worker import PipelineWorker

from bot.config.campaigns import Campaign
from pipelines.call_session import CallResult
from pipelines.prepared_speech import PreparedLine


def unstoppable_line(text: str, append_to_context: bool = True) -> TTSSpeakFrame:
    """A line the caller's speech can't cut off (goodbyes, handoffs, apologies)."""
    frame = TTSSpeakFrame(text, append_to_context=append_to_context)
    frame.interruptible = False
    return frame


class CallControl:
    """Ends or transfers one call; knows whether it is already ending."""

    def __init__(self, session: CallResult, campaign: Campaign):
        self.session = session
        self.campaign = campaign
        self.worker: PipelineWorker | None = None
        self.injector = None  # plays prepared audio just before the output transport
        self.prepared_apology: PreparedLine | None = None
        self.ending = False

    def attach(self, worker: PipelineWorker, injector=None) -> None:
        self.worker = worker
        self.injector = injector

    async def say(self, text: str) -> None:
        """Speak a line now (a re-prompt); it goes into the context like any bot line."""
        if self.worker is not None and not self.ending:
            await self.worker.queue_frame(TTSSpeakFrame(text))

    async def _finish(self, line: str, end_reason: str, prepared: PreparedLine | None = None) -> bool:
        """Speak the last line (or play prepared audio), then end the pipeline after it."""
        if self.ending or self.worker is None:
            return False
        self.ending = True  # from here the caller is muted: the last line can't be cut off
        self.session.end(end_reason)
        logger.info(f"ending call: {end_reason}, outcome={self.session.outcome}")
        if prepared and self.injector is not None:
            await self.injector.play_prepared(prepared.pcm, prepared.text)
            await self.worker.queue_frame(EndFrame())
        else:
            await self.worker.queue_frames([unstoppable_line(line), EndFrame()] if line else [EndFrame()])
        return True

    async def end_call(self, outcome: str, summary: str | None = None) -> bool:
        """Say goodbye, then hang up once it has played."""
        self.session.set_outcome(outcome, summary)
        return await self._finish(self.campaign.render(self.campaign.goodbye, self.session.lead), "bot_hangup")

    async def transfer_to_human(self, reason: str) -> bool:
        """Say the handoff line, flag escalation, and close the stream: the flow connects a human."""
        self.session.escalated = True
        self.session.set_outcome("transferred", reason)
        self.session.collected.setdefault("transfer_reason", reason)
        return await self._finish(self.campaign.render(self.campaign.handoff, self.session.lead), "transferred")

    async def hang_up_idle(self) -> bool:
        self.session.set_outcome("no_response", "the caller stopped responding")
        return await self._finish(self.campaign.render(self.campaign.idle.goodbye, self.session.lead), "idle")

    async def leave_voicemail(self) -> bool:
        self.session.set_outcome("voicemail", "answering machine; message left")
        message = self.campaign.render(self.campaign.voicemail.message, self.session.lead)
        return await self._finish(message, "voicemail")

    async def apologize_and_end(self, error: str) -> bool:
        """A provider failed for good: apologise and end.

        With a remote voice the apology is prepared audio, there from the call's first moment
        (pipelines/apology.py), so it plays even when the TTS is what failed: it goes straight
        to the output transport, past the broken service. A Piper voice says it live.
        """
        if self.ending:
            return False
        self.session.set_outcome("error", error)
        line = self.campaign.render(self.campaign.apology, self.session.lead)
        return await self._finish(line, "error", prepared=self.prepared_apology)
