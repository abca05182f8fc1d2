"""The offline stand-in for the LLM: follows the campaign's questions and collects its lead
fields by simple extraction. It sits where the LLM sits and answers each user turn with
LLM text frames, so the rest of the pipeline (TTS, context, transcript) is unchanged.
"""

from __future__ import annotations

from loguru import logger
from pipecat.frames.frames import (
    Frame,
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from bot.config.campaigns import Campaign
from pipelines.call_control import CallControl
from pipelines.extraction import extract, intent, yes_or_no
from pipelines.tools import merge_lead_details


class ScriptedAgent(FrameProcessor):
    """Asks the campaign's scripted questions in order; ends the call when they're done."""

    def __init__(self, campaign: Campaign, control: CallControl, **kwargs):
        super().__init__(**kwargs)
        self._campaign = campaign
        self._control = control
        self._plan = campaign.scripted_plan()
        self._asked = 0  # index of the next question to ask
        self._fields = {field.name: field for field in campaign.lead_fields}

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, LLMContextFrame):
            await self._answer(self._last_user_text(frame))
            return
        await self.push_frame(frame, direction)

    @staticmethod
    def _last_user_text(frame: LLMContextFrame) -> str:
        for message in reversed(frame.context.get_messages()):
            if isinstance(message, dict) and message.get("role") == "user":
                content = message.get("content")
                if isinstance(content, list):
                    return " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
                return str(content or "")
        return ""

    async def _say(self, text: str) -> None:
        await self.push_frame(LLMFullResponseStartFrame())
        await self.push_frame(LLMTextFrame(text))
        await self.push_frame(LLMFullResponseEndFrame())

    async def _answer(self, text: str) -> None:
        wish = intent(text)
        if wish == "human":
            await self._control.transfer_to_human("caller asked for a person")
            return
        if wish == "not_interested" or (self._asked == 0 and yes_or_no(text) is False):
            where = "the opening question" if self._asked == 0 else f"question {self._asked} of {len(self._plan)}"
            await self._control.end_call("not_interested", f"not interested: said {text.strip()[:80]!r} to {where}")
            return
        if wish == "busy" and self._asked == 0:
            await self._control.end_call("callback_requested", "busy; call back later")
            return
        if self._asked > 0:
            self._collect(self._plan[self._asked - 1].field, text)
        if self._asked < len(self._plan):
            question = self._plan[self._asked]
            self._asked += 1
            await self._say(self._campaign.render(question.ask, self._control.session.lead))
            return
        collected = self._control.session.collected
        positive = any(value is True for value in collected.values()) or len(collected) >= 2
        summary = ", ".join(f"{k}: {v}" for k, v in collected.items()) or "no details"
        await self._say(self._campaign.render(self._campaign.scripted_closing, self._control.session.lead))
        await self._control.end_call("interested" if positive else "not_interested", summary)

    def _collect(self, field_name: str | None, text: str) -> None:
        field = self._fields.get(field_name or "")
        if field is None:
            return
        value = extract(field.name, field.type, text)
        if value is None:
            logger.info(f"scripted agent: no {field.name} in {text!r}")
            return
        result = merge_lead_details(self._campaign, self._control.session.collected, {field.name: value})
        logger.info(f"scripted agent saved {result['saved']} (rejected {result['rejected']})")
