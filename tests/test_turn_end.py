"""The caller's turn ends fast after a finished sentence and waits after a fragment such as "I am
looking for" (pipelines/turn_end.py), as the shipped campaigns configure it. Timings are
compared with each other, never with wall-clock bounds."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from pipecat.frames.frames import TranscriptionFrame, VADUserStartedSpeakingFrame, VADUserStoppedSpeakingFrame
from pipecat.processors.frame_processor import FrameProcessorSetup
from pipecat.utils.asyncio.task_manager import TaskManager

from bench.turn_policy import load_turn_set
from bot.config.campaigns import load_campaign
from pipelines.builder import turn_strategies
from pipelines.turn_end import TranscriptAwareUserTurnStopStrategy, ends_unfinished

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
CAMPAIGNS = ["real_estate.yaml", "hinglish_followup.yaml"]


class Caller:
    """Drives one stop strategy with the frames the user aggregator gives it; records when
    (loop time) each turn ended."""

    def __init__(self, strategy):
        self.strategy = strategy
        self.stops: list[float] = []
        self.in_turn = False
        self.events: list[str] = []  # speculate:<text>, withdraw, stop (confirmed) / stop (fresh inference)
        strategy.add_event_handler("on_user_turn_stopped", self._stopped)
        strategy.add_event_handler("on_user_turn_inference_triggered", self._inference)
        strategy.add_event_handler("on_user_turn_speculation_cancelled", self._withdrawn)

    async def _stopped(self, _strategy, params):
        self.in_turn = False
        self.stops.append(asyncio.get_running_loop().time())
        self.events.append("stop (confirmed)" if params.confirms_speculation else "stop")
        await self.strategy.handle_user_turn_stopped()

    async def _inference(self, _strategy, speculation):
        self.events.append(f"speculate:{speculation.text}" if speculation else "infer")

    async def _withdrawn(self, _strategy):
        self.events.append("withdraw")

    async def setup(self):
        loop = asyncio.get_running_loop()
        await self.strategy.setup(FrameProcessorSetup(clock=None, task_manager=TaskManager(loop=loop),
                                                      pipeline_worker=None, audio_in_sample_rate=8000))

    async def says(self, text: str) -> float:
        """Speech (VAD start), silence (VAD stop), the final transcript; the VAD stop's time."""
        await self.strategy.process_frame(VADUserStartedSpeakingFrame(start_secs=0.2))
        if not self.in_turn:
            self.in_turn = True
            await self.strategy.handle_user_turn_started()
        await self.strategy.process_frame(VADUserStoppedSpeakingFrame(stop_secs=0.2))
        stopped_at = asyncio.get_running_loop().time()
        await self.strategy.process_frame(TranscriptionFrame(text, "caller", "", finalized=True))
        return stopped_at

    async def turn_end_after(self, text: str, patience: float) -> float | None:
        """Seconds from the VAD stop after `text` to the end of the turn (None: not within
        `patience`)."""
        start = await self.says(text)
        deadline = start + patience
        while not self.stops and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.005)
        return self.stops[0] - start if self.stops else None


def shipped_strategy(campaign: str):
    return turn_strategies(load_campaign(CONFIGS / campaign).turn_taking, has_stt=True).stop[0]


@pytest.mark.parametrize("campaign", CAMPAIGNS)
async def test_a_fragment_ending_in_for_waits_a_complete_sentence_does_not(campaign):
    """The shipped campaigns answer "I want a two bedroom flat." at once and hold the turn open
    after "I am looking for" (a single fixed wait after every pause cannot do both)."""
    complete = Caller(shipped_strategy(campaign))
    await complete.setup()
    fast = await complete.turn_end_after("I want a two bedroom flat.", patience=3.0)
    fragment = Caller(shipped_strategy(campaign))
    await fragment.setup()
    slow = await fragment.turn_end_after("I am looking for", patience=3.0)
    assert fast is not None and slow is not None
    assert slow > 2.5 * fast, (fast, slow)


async def test_the_caller_going_on_cancels_the_wait():
    """The caller resuming after "I am looking for" keeps one turn, which ends after the rest of
    the sentence, not at the end of the fragment's wait."""
    caller = Caller(TranscriptAwareUserTurnStopStrategy(user_speech_timeout=0.01, unfinished_timeout=0.3))
    await caller.setup()
    first_stop = await caller.says("I am looking for")
    await asyncio.sleep(0.1)  # a pause shorter than the wait
    resumed = await caller.says("a two bedroom flat near the metro station.")
    await asyncio.sleep(0.6)  # past where the fragment's wait would have ended
    assert len(caller.stops) == 1
    assert caller.stops[0] - resumed < (caller.stops[0] - first_stop) / 3


async def test_a_transcript_that_reads_finished_during_the_wait_ends_the_turn():
    """A later final transcript that completes the sentence (no new VAD start) ends the wait."""
    caller = Caller(TranscriptAwareUserTurnStopStrategy(user_speech_timeout=0.01, unfinished_timeout=2.0))
    await caller.setup()
    start = await caller.says("mera budget aur")
    await asyncio.sleep(0.05)
    assert not caller.stops
    await caller.strategy.process_frame(TranscriptionFrame("location dono dekhne hain.", "caller", "", finalized=True))
    await asyncio.sleep(0.05)
    assert len(caller.stops) == 1 and caller.stops[0] - start < 1.0  # half the 2 s wait


@pytest.mark.parametrize("text, unfinished", [
    ("I am looking for", True), ("It should be near the", True), ("We need it for my", True),
    ("My budget is", True), ("Weekends are", True), ("Price aur", True), ("Booking ke", True),
    ("मेरा बजट और", True), ("Two BHK ya", True), ("so,", True),
    ("I want a two bedroom flat.", False), ("Yes.", False), ("What is it for?", False),
    ("Yes, it is.", False), ("I can", False), ("Mera budget eighty lakh hai.", False),
    ("Sunday ko.", False), ("मुझे फ्लैट चाहिए।", False), ("", False),
    ("Me and my wife, we", True), ("Hum log", True), ("Aap log", True), ("Ghar mein paanch log.", False),
    ("Yes, that is what we want.", False), ("We", False),
])
def test_sentence_endings(text, unfinished):
    assert ends_unfinished(text) is unfinished


def test_ambiguous_endings_wait_only_when_asked():
    from pipelines.turn_end import AMBIGUOUS_WORDS, CONTINUATION_WORDS

    assert not ends_unfinished("Kal shaam ko")
    assert ends_unfinished("Kal shaam ko", CONTINUATION_WORDS | AMBIGUOUS_WORDS)


def test_the_bench_turn_set_is_labelled_and_mixed():
    items = load_turn_set()
    assert len(items) >= 60
    assert {u.label for u in items} == {"complete", "incomplete"}
    assert {u.lang for u in items} == {"en", "hinglish"}
    for label in ("complete", "incomplete"):
        assert {u.lang for u in items if u.label == label} == {"en", "hinglish"}
    assert all(400 <= u.pause_ms <= 900 for u in items if u.label == "incomplete")


def speculating(**kwargs) -> Caller:
    return Caller(TranscriptAwareUserTurnStopStrategy(speculate=True, **kwargs))


async def test_the_llm_starts_on_the_final_transcript_and_its_reply_answers_the_turn():
    caller = speculating(user_speech_timeout=0.2, unfinished_timeout=1.0)
    await caller.setup()
    await caller.says("I want a two bedroom flat.")
    assert caller.events == ["speculate:I want a two bedroom flat."], "started before the wait ended"
    await asyncio.sleep(0.4)
    assert caller.events == ["speculate:I want a two bedroom flat.", "stop (confirmed)"]


async def test_a_caller_who_goes_on_withdraws_the_speculative_reply():
    caller = speculating(user_speech_timeout=0.05, unfinished_timeout=0.4)
    await caller.setup()
    await caller.says("I am looking for")
    await asyncio.sleep(0.1)
    await caller.says("a two bedroom flat.")
    await asyncio.sleep(0.3)
    assert caller.events == ["speculate:I am looking for", "withdraw", "speculate:I am looking for a two bedroom flat.",
                             "stop (confirmed)"]


async def test_more_words_in_the_wait_replace_the_speculation():
    caller = speculating(user_speech_timeout=0.2, unfinished_timeout=1.0)
    await caller.setup()
    await caller.says("My budget is")
    await caller.strategy.process_frame(TranscriptionFrame(" eighty lakhs.", "caller", "", finalized=True))
    await asyncio.sleep(0.4)
    assert caller.events == ["speculate:My budget is", "withdraw", "speculate:My budget is eighty lakhs.",
                             "stop (confirmed)"]


async def test_a_speculation_the_llm_withdrew_is_answered_afresh_at_the_turn_end():
    """The LLM service withdraws a speculative reply that wants a tool (EagerEndOfTurnCancelFrame);
    the turn's end then runs the inference as usual."""
    from pipecat.frames.frames import EagerEndOfTurnCancelFrame

    caller = speculating(user_speech_timeout=0.1)
    await caller.setup()
    await caller.says("Save my budget, eighty lakhs.")
    await caller.strategy.process_frame(EagerEndOfTurnCancelFrame())
    await asyncio.sleep(0.3)
    assert caller.events == ["speculate:Save my budget, eighty lakhs.", "infer", "stop"]


async def test_no_speculation_unless_asked():
    caller = Caller(TranscriptAwareUserTurnStopStrategy(user_speech_timeout=0.05))
    await caller.setup()
    await caller.says("Yes.")
    await asyncio.sleep(0.2)
    assert caller.events == ["infer", "stop"]
