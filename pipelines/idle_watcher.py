"""Silence handling: re-prompt a quiet caller, then hang up politely.

Fed the speaking frames the call's processors push (via pipelines.call_watch). The silence clock runs
while neither side speaks: after the bot's last words were heard (BotStoppedSpeaking
follows the caller's ears) or after the caller's last words.
"""

from __future__ import annotations

import asyncio
import time

from loguru import logger
from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    Frame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
)

from bot.config.campaigns import IdleConfig
from pipelines.call_control import CallControl


class IdleWatcher:
    """Re-prompts after `reprompt_after_secs` of silence; hangs up after the last re-prompt
    or `hangup_after_secs` without hearing the caller."""

    def __init__(self, config: IdleConfig, control: CallControl):
        self._config = config
        self._control = control
        self._timer: asyncio.Task | None = None
        self._reprompts = 0
        self._last_heard = time.monotonic()
        self.reprompts_spoken = 0

    async def on_frame(self, frame: Frame):
        if isinstance(frame, UserStartedSpeakingFrame):
            self._reprompts = 0
            self._last_heard = time.monotonic()
            self._stop_timer()
        elif isinstance(frame, UserStoppedSpeakingFrame):
            self._last_heard = time.monotonic()
            self._start_timer()
        elif isinstance(frame, BotStartedSpeakingFrame):
            self._stop_timer()
        elif isinstance(frame, BotStoppedSpeakingFrame):
            self._start_timer()

    def _start_timer(self) -> None:
        self._stop_timer()
        if not self._control.ending:
            self._timer = asyncio.get_running_loop().create_task(self._wait_then_act())

    def _stop_timer(self) -> None:
        if self._timer is not None and self._timer is not asyncio.current_task():
            self._timer.cancel()
        self._timer = None

    async def _wait_then_act(self) -> None:
        await asyncio.sleep(self._config.reprompt_after_secs)
        self._timer = None
        if self._control.ending or self._control.worker is None:
            return
        silent_for = time.monotonic() - self._last_heard
        if self._reprompts >= self._config.max_reprompts or silent_for >= self._config.hangup_after_secs:
            logger.info(f"caller silent for {silent_for:.0f}s; hanging up")
            await self._control.hang_up_idle()
            return
        self._reprompts += 1
        self.reprompts_spoken += 1
        logger.info(f"caller silent; re-prompt {self._reprompts}/{self._config.max_reprompts}")
        await self._control.say(self._control.campaign.render(self._config.reprompt, self._control.session.lead))

    def stop(self) -> None:
        self._stop_timer()
