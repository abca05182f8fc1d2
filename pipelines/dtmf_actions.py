"""Keypad shortcuts from the campaign (e.g. 0 = talk to a human, 9 = end the call)."""

from __future__ import annotations

from loguru import logger

from pipecat.frames.frames import Frame, InputDTMFFrame, TTSSpeakFrame
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from pipelines.call_control import CallControl


class DTMFActions(FrameProcessor):
    """Runs the campaign's action for a pressed key; other keys pass on to the LLM side."""

    def __init__(self, mapping: dict[str, str], control: CallControl, **kwargs):
        super().__init__(**kwargs)
        self._mapping = mapping
        self._control = control

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, InputDTMFFrame) and frame.button.value in self._mapping:
            action = self._mapping[frame.button.value]
            logger.info(f"DTMF {frame.button.value}: {action}")
            if action == "transfer_to_human":
                await self._control.transfer_to_human(f"caller pressed {frame.button.value}")
            elif action == "end_call":
                await self._control.end_call("not_interested", f"caller pressed {frame.button.value} to end")
            elif action == "repeat":
                last = next((t["text"] for t in reversed(self._control.session.transcript)
                             if t["role"] == "assistant"), None)
                if last:
                    await self.push_frame(TTSSpeakFrame(last, append_to_context=False))
        await self.push_frame(frame, direction)
