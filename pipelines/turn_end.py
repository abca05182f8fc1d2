"""End of the caller's turn from the words as well as the silence.

A short silence after a finished sentence should be answered at once; the same silence after
"I am looking for" or "mera budget ... metro ke" is the caller thinking, and answering it cuts
them off. Pipecat's speech-timeout strategy cannot tell the two apart: it waits the same
`user_speech_timeout` after every VAD stop. This strategy waits that short time, reads the
streaming STT's final transcript, and when it stops on a word that cannot end a sentence
(an article, a preposition, a conjunction, a possessive, "ka"/"ki"/"ke"/"aur"/"ya", an
auxiliary after a noun) holds the turn open for `unfinished_timeout` after the VAD stop
instead. The caller speaking again cancels the hold like any other pending end of turn.
bench/turn_policy.py measures it against speech-timeout, smart-turn and endpointing.
"""

from __future__ import annotations

import asyncio

from loguru import logger
from pipecat.audio.turn.base_turn_analyzer import BaseTurnAnalyzer, EndOfTurnState
from pipecat.frames.frames import (
    EagerEndOfTurnCancelFrame,
    Frame,
    InputAudioRawFrame,
    TranscriptionFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.processors.frame_processor import FrameProcessorSetup
from pipecat.turns.types import ProcessFrameResult, UserTurnSpeculation
from pipecat.turns.user_stop.eager_match_policy import NormalizedMatch
from pipecat.turns.user_stop.speech_timeout_user_turn_stop_strategy import SpeechTimeoutUserTurnStopStrategy

# Words after which an English or Hinglish statement is not finished (Hindi in Latin script and
# in Devanagari, as Deepgram's multilingual model writes it). Left out on
# purpose, because short answers end on them: particles of phrasal verbs ("move in", "come
# on"), objects ("me", "it", "that", "this"), "so"/"more"/"really"; Hindi postpositions that
# end a bare time or place ("Sunday ko", "do mahine mein", "Noida se", "weekend pe"); and
# "hai"/"tha"/"bhi", which end most Hindi sentences.
CONTINUATION_WORDS = frozenset(
    """
    a an the
    and or but because if than whether
    to of for with at by from near into onto about after before between without
    my your our their his her its
    very um uh er erm
    ka ki ke aur ya lekin magar kyunki jo jab agar
    mera meri mere hamara hamari hamare humara humari humare apna apni apne
    aapka aapki aapke tumhara tumhari tumhare uska uski uske
    का की के और या लेकिन मगर क्योंकि जो जब अगर मेरा मेरी मेरे हमारा हमारी हमारे अपना अपनी अपने
    आपका आपकी आपके तुम्हारा तुम्हारी तुम्हारे उसका उसकी उसके
    """.split()
)
# Postpositions and particles that leave a sentence unfinished as often as they end a short
# answer ("kal shaam ko ... call kijiye" / "Sunday ko."): waiting on them too trades a slower
# answer to those replies for fewer cut-offs (bench/turn_policy.py measures both).
AMBIGUOUS_WORDS = frozenset("ko se mein pe par tak in on को से में पे पर तक".split())
# Auxiliaries end elliptical answers after a pronoun ("yes, it is", "I can", "we are") but not
# after a noun ("my budget is", "weekends are").
AUXILIARIES = frozenset("is are was were am will would can could should shall must have has had do does did".split())
PRONOUNS = frozenset("i you we they he she it that there this who yes no".split())

# A subject with no verb yet does not end a statement: an English subject pronoun after other
# words ("me and my wife, we"), a Hindi pronoun with the plural "log" ("hum log", "aap log"; a
# head count such as "paanch log" is an answer).
SUBJECT_PRONOUNS = frozenset("i we they he she".split())
HINDI_PLURAL_PRONOUNS = frozenset("hum ham aap ye yeh wo woh vo tum sab हम आप ये वो तुम सब".split())

PUNCTUATION = ".,!?;:\"'()[]\u0964\u0965\u2019\u201c\u201d"  # with the danda, Hindi's full stop


def ends_unfinished(text: str, continuation_words: frozenset[str] = CONTINUATION_WORDS) -> bool:
    """Whether `text` (a final transcript) stops where a sentence cannot end."""
    text = text.strip().lower()
    if not text or text.endswith("?"):
        return False  # nothing said, or a question: "What is it for?" is finished
    if text.endswith((",", "-", "...", "\u2026")):
        return True
    words = [w for w in (w.strip(PUNCTUATION) for w in text.split()) if w]
    if not words:
        return False
    last = words[-1]
    if last in continuation_words:
        return True
    if last in AUXILIARIES:
        return len(words) < 2 or words[-2] not in PRONOUNS
    if last in SUBJECT_PRONOUNS:
        return len(words) >= 2
    if last in ("log", "लोग"):
        return len(words) >= 2 and words[-2] in HINDI_PLURAL_PRONOUNS
    return False


class TranscriptAwareUserTurnStopStrategy(SpeechTimeoutUserTurnStopStrategy):
    """Speech timeout whose wait depends on how the caller stopped: `user_speech_timeout` after
    VAD stop when the final transcript reads as finished, `unfinished_timeout` after VAD stop
    when it stops on a continuation word (or, given a `turn_analyzer` such as smart-turn, when
    the analyzer hears the audio as unfinished).

    With `speculate`, the LLM starts on the final transcript while the wait runs: Pipecat runs
    it against a provisional context and its LLM service holds the reply (nothing reaches the
    TTS) until the turn ends; the caller going on, or more words, withdraw it. So the wait
    costs the caller only what it exceeds the LLM's time to first token: a longer, safer wait
    for the same answer time. A speculative reply that wants a tool is withdrawn by the LLM
    service, and the turn's end runs the inference as usual."""

    def __init__(
        self,
        *,
        user_speech_timeout: float = 0.05,
        unfinished_timeout: float = 1.0,
        wait_on_ambiguous: bool = False,
        turn_analyzer: BaseTurnAnalyzer | None = None,
        speculate: bool = False,
        **kwargs,
    ):
        super().__init__(user_speech_timeout=user_speech_timeout, **kwargs)
        self._unfinished_timeout = unfinished_timeout
        self._words = CONTINUATION_WORDS | AMBIGUOUS_WORDS if wait_on_ambiguous else CONTINUATION_WORDS
        self._turn_analyzer = turn_analyzer
        self._audio_unfinished = False
        self._pause_started: float | None = None
        self._hold_task: asyncio.Task | None = None
        self._hold_done = False
        self._speculate = speculate
        self._speculation: UserTurnSpeculation | None = None
        # The turn's final transcripts joined with spaces (Pipecat's `_text` glues them:
        # "my wife," + "we" reads "my wife,we"): what the endings rule and the LLM read.
        self._heard = ""
        self._in_turn = False  # speculation only inside a caller's turn (not on backchannels)
        self._speculation_refused = False  # the LLM withdrew one this turn (it wants a tool)
        self._match = NormalizedMatch()

    async def setup(self, setup: FrameProcessorSetup):  # type: ignore[override]  # as Pipecat's own strategies
        await super().setup(setup)
        if self._turn_analyzer:
            self._turn_analyzer.set_sample_rate(setup.audio_in_sample_rate)

    async def cleanup(self):
        await super().cleanup()
        if self._turn_analyzer:
            await self._turn_analyzer.cleanup()

    async def handle_user_turn_started(self):
        await super().handle_user_turn_started()
        self._in_turn = True

    async def handle_user_turn_stopped(self):
        self._in_turn = False
        await super().handle_user_turn_stopped()
        if self._turn_analyzer:
            self._turn_analyzer.clear()

    async def process_frame(self, frame: Frame) -> ProcessFrameResult:
        if self._turn_analyzer and isinstance(frame, InputAudioRawFrame):
            self._turn_analyzer.append_audio(frame.audio, self._vad_user_speaking)
        elif isinstance(frame, EagerEndOfTurnCancelFrame) and self._speculation is not None:
            # Withdrawn by the LLM service (the reply wants a tool): the turn's end asks afresh,
            # and nothing more is speculated this turn (each try would want the tool again).
            self._speculation = None
            self._speculation_refused = True
        return await super().process_frame(frame)

    async def _handle_vad_user_stopped_speaking(self, frame: VADUserStoppedSpeakingFrame):
        self._pause_started = asyncio.get_running_loop().time()
        if self._turn_analyzer:
            state, _ = await self._turn_analyzer.analyze_end_of_turn()
            self._audio_unfinished = state != EndOfTurnState.COMPLETE
        await super()._handle_vad_user_stopped_speaking(frame)

    async def _handle_transcription(self, frame: TranscriptionFrame):
        if self._pause_started is None and not self._vad_user_speaking:
            # A transcript without a VAD stop: the pause is measured from here.
            self._pause_started = asyncio.get_running_loop().time()
        self._heard = f"{self._heard} {frame.text.strip()}".strip()
        await super()._handle_transcription(frame)
        if self._speculation is not None and not self._match.matches(self._speculation.text, self._heard):
            await self._withdraw_speculation()  # more words came: answer those, not the first ones
        await self._maybe_speculate()

    async def _discard_pending_end_of_turn(self):
        await super()._discard_pending_end_of_turn()
        self._pause_started = None
        self._audio_unfinished = False
        self._hold_done = False
        await self._cancel_hold()
        await self._withdraw_speculation()  # the caller went on

    async def _cancel_all_tasks(self):
        await super()._cancel_all_tasks()
        await self._cancel_hold()

    async def _cancel_hold(self):
        if self._hold_task:
            await self.task_manager.cancel_task(self._hold_task)
            self._hold_task = None

    async def _maybe_trigger_user_turn_stopped(self):
        if self._vad_user_speaking or (self._wait_for_transcript and not self._text):
            return
        if not (self._user_speech_wait_done and self._stt_wait_done):
            await self._maybe_speculate()
            return
        if self._hold_done or not (self._audio_unfinished or ends_unfinished(self._heard, self._words)):
            await self._cancel_hold()
            await self._end_turn()
            return
        await self._maybe_speculate()
        if self._hold_task is None:
            started = self._pause_started or asyncio.get_running_loop().time()
            remaining = max(0.0, started + self._unfinished_timeout - asyncio.get_running_loop().time())
            logger.debug(f"{self}: the caller stopped mid-sentence, holding the turn {remaining:.2f}s")
            self._hold_task = self.task_manager.create_task(self._hold(remaining), f"{self}::_hold")

    async def _hold(self, secs: float):
        try:
            await asyncio.sleep(secs)
        except asyncio.CancelledError:
            return
        finally:
            self._hold_task = None
        self._hold_done = True
        await self._maybe_trigger_user_turn_stopped()

    # ------------------------------------------------------------------ speculation
    async def _maybe_speculate(self) -> None:
        """Start the LLM on the final transcript while the turn's end is still being decided."""
        if (not self._speculate or not self._in_turn or self._speculation_refused
                or self._speculation is not None or self._vad_user_speaking
                or not self._stt_wait_done or not self._heard):
            return
        self._speculation = UserTurnSpeculation(text=self._heard)
        await self.trigger_user_turn_inference_triggered(speculation=self._speculation)

    async def _end_turn(self) -> None:
        speculation, self._speculation = self._speculation, None
        if speculation is not None and self._match.matches(speculation.text, self._heard):
            await self.trigger_user_turn_finalized(confirms_speculation=True)  # its reply is the answer
            return
        if speculation is not None:
            await self.trigger_user_turn_speculation_cancelled()
        await self.trigger_user_turn_stopped()

    async def _reset(self, *, clear_vad_user_speaking: bool):
        self._heard = ""
        self._speculation_refused = False
        await super()._reset(clear_vad_user_speaking=clear_vad_user_speaking)

    async def _withdraw_speculation(self) -> None:
        speculation, self._speculation = self._speculation, None
        if speculation is not None:
            await self.trigger_user_turn_speculation_cancelled()
