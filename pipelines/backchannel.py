"""Barge-in that stops the bot at once and takes a backchannel back.

A caller who says "haan" or "hmm" while the bot talks is listening, not interrupting; one who
says "wait, how much is it?" is. The words that tell them apart come from the STT a few
hundred ms after the caller's voice starts, and a bot that keeps talking until then talks
over the caller. So the two decisions are split:

- at the caller's speech onset (Silero VAD) the playback pauses: the transport sends `clear`
  and keeps what the caller has not heard yet;
- the STT's words decide: at least `min_words` words that are not all backchannels (the
  campaign's list) start the caller's turn, a real interruption as before; a final
  transcript short of that (or all backchannel words) resumes the bot's line from the point
  the caller last heard, with no LLM request, and the line stays one line in the context and
  the transcript. Speech that never becomes words (a cough, a door) resumes
  `NO_WORDS_RESUME_SECS` after the caller's voice stopped.

LiveKit Agents calls this resuming after a "false interruption"; here it is a Pipecat user
turn start strategy (the words rule) driving the Exotel output transport (the playback).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable
from typing import Protocol

from loguru import logger
from pipecat.frames.frames import (
    Frame,
    InterimTranscriptionFrame,
    TranscriptionFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.turns.types import ProcessFrameResult
from pipecat.turns.user_start.min_words_user_turn_start_strategy import MinWordsUserTurnStartStrategy

from bot.config.campaigns import DEFAULT_BACKCHANNELS
from pipelines.turn_end import PUNCTUATION

# Speech the STT turned into no words at all resumes the line this long after it stopped
# (the STT's final for a short word lands well inside it: endpointing + its own latency).
NO_WORDS_RESUME_SECS = 0.8
# Words said when no more than this much of the line was left to play answer the bot (its
# question had all but ended), even if they are "yes" or "haan".
LINE_ENDING_SECS = 0.6
_PUNCTUATION = PUNCTUATION + "\u2026"  # a trailing ellipsis too
_REPEATS = re.compile(r"(.)\1{2,}")  # "hmmm", "mmmm", "haaan": as "hmm", "mm", "haan"


def words_of(text: str) -> list[str]:
    """The words of a transcript, lower-cased, without punctuation (split on spaces: Hindi in
    Devanagari has vowel signs that regex word classes break words at)."""
    words = (_REPEATS.sub(r"\1\1", word.strip(_PUNCTUATION + "-")) for word in text.lower().split())
    return [word for word in words if word]


class PausablePlayback(Protocol):
    """What the strategy needs of the output transport."""

    @property
    def paused(self) -> bool: ...

    def line_nearly_over(self, within_secs: float) -> bool: ...

    async def pause(self) -> bool: ...

    async def resume(self) -> None: ...


class BackchannelStartStrategy(MinWordsUserTurnStartStrategy):
    """Pause the bot at speech onset; `min_words` non-backchannel words start the caller's
    turn (an interruption), fewer resume the bot where the caller stopped hearing it."""

    def __init__(
        self,
        *,
        min_words: int,
        backchannels: Iterable[str] = DEFAULT_BACKCHANNELS,
        playback: PausablePlayback | None = None,
        **kwargs,
    ):
        super().__init__(min_words=min_words, **kwargs)
        self._backchannels = frozenset(word for phrase in backchannels for word in words_of(phrase))
        self._playback = playback
        self._vad_speaking = False
        self._words_judged = False  # since the pause: the STT's final said it was a backchannel
        self._words_pending = False  # interim words with no final yet: the verdict is on its way
        self._resume_timer: asyncio.TimerHandle | None = None
        self._resume_task: asyncio.Task | None = None

    def is_backchannel(self, text: str) -> bool:
        """Whether `text`, said while the bot talks, leaves the bot talking."""
        words = words_of(text)
        return len(words) < self._min_words or all(word in self._backchannels for word in words)

    async def process_frame(self, frame: Frame) -> ProcessFrameResult:
        if isinstance(frame, VADUserStartedSpeakingFrame):
            self._vad_speaking = True
            self._words_judged = False  # whatever comes now is judged afresh
            self._cancel_resume_timer()
            if self._bot_speaking and self._enable_interruptions and self._playback is not None:
                if await self._playback.pause():
                    self._words_judged = False
        elif isinstance(frame, VADUserStoppedSpeakingFrame):
            self._vad_speaking = False
            if self._is_paused():
                if self._words_judged:
                    await self._resume("backchannel")
                else:
                    self._arm_resume_timer()
        return await super().process_frame(frame)

    async def _handle_transcription(
        self, frame: TranscriptionFrame | InterimTranscriptionFrame
    ) -> ProcessFrameResult:
        words = words_of(frame.text)
        final = isinstance(frame, TranscriptionFrame)
        answers = final and self._playback is not None and self._playback.line_nearly_over(LINE_ENDING_SECS)
        if words and (answers or not (self._bot_speaking and self.is_backchannel(frame.text))):
            self._cancel_resume_timer()
            await self.trigger_user_turn_started()  # the transport's clear_now ends any pause
            return ProcessFrameResult.STOP
        await self.trigger_reset_aggregation()  # a backchannel stays out of the LLM context
        self._words_pending = bool(words) and not final
        if final and words and self._is_paused():
            self._words_judged = True
            if not self._vad_speaking:
                await self._resume("backchannel")
        return ProcessFrameResult.CONTINUE

    async def handle_user_turn_started(self):
        self._cancel_resume_timer()
        await super().handle_user_turn_started()

    async def cleanup(self):
        self._cancel_resume_timer()
        await super().cleanup()

    # ------------------------------------------------------------------ resuming
    def _is_paused(self) -> bool:
        return self._playback is not None and self._playback.paused

    async def _resume(self, why: str) -> None:
        self._cancel_resume_timer()
        if self._playback is not None and self._playback.paused:
            logger.debug(f"{self}: resuming the bot's line ({why})")
            await self._playback.resume()

    def _arm_resume_timer(self) -> None:
        self._cancel_resume_timer()
        loop = asyncio.get_running_loop()
        self._resume_timer = loop.call_later(NO_WORDS_RESUME_SECS, self._resume_when_no_words)

    def _resume_when_no_words(self) -> None:
        self._resume_timer = None
        if self._words_pending:
            return  # words are on their way: their final decides (the transport's own bound holds)
        if not self._vad_speaking and self._is_paused():
            self._resume_task = asyncio.get_running_loop().create_task(self._resume("no words"))

    def _cancel_resume_timer(self) -> None:
        if self._resume_timer is not None:
            self._resume_timer.cancel()
            self._resume_timer = None
