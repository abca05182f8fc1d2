"""The words rule of barge-in: which words over the bot interrupt it and which resume it.

(The whole behaviour, pause at onset, resume from where the caller stopped hearing, runs end
to end in tests/test_conversation.py.)"""

from __future__ import annotations

import pytest
from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    InterimTranscriptionFrame,
    TranscriptionFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)

from bot.config.campaigns import DEFAULT_BACKCHANNELS, TurnTakingConfig
from pipelines.backchannel import BackchannelStartStrategy, words_of


class Playback:
    """The transport's pause/resume, as the strategy sees it, with a log of calls."""

    def __init__(self):
        self.paused = False
        self.calls: list[str] = []
        self.nearly_over = False  # what line_nearly_over answers

    def line_nearly_over(self, within_secs: float) -> bool:
        return self.paused and self.nearly_over

    async def pause(self) -> bool:
        if self.paused:
            return False  # as the transport: one pause at a time
        self.calls.append("pause")
        self.paused = True
        return True

    async def resume(self) -> None:
        self.calls.append("resume")
        self.paused = False


def strategy(min_words: int = 2, backchannels=DEFAULT_BACKCHANNELS):
    playback = Playback()
    started: list[str] = []
    s = BackchannelStartStrategy(min_words=min_words, backchannels=backchannels, playback=playback)

    async def on_started(_strategy, *args):
        started.append("turn")
        playback.paused = False  # the transport's clear_now ends the pause

    s.add_event_handler("on_user_turn_started", on_started)
    return s, playback, started


def final(text: str) -> TranscriptionFrame:
    return TranscriptionFrame(text, "caller", "2026-12-03T00:00:00Z")


def interim(text: str) -> InterimTranscriptionFrame:
    return InterimTranscriptionFrame(text, "caller", "2026-12-03T00:00:00Z")


@pytest.mark.parametrize("text, backchannel", [
    ("hmm", True), ("Haan ji.", True), ("okay, right", True), ("Yes yes", True), ("no", True),
    ("wait", True), ("Wait stop", False), ("okay but how much", False), ("haan kitna hai", False),
    ("हाँ जी", True), ("ठीक है।", True), ("अच्छा", True), ("Hmmm okay", True), ("theek hai", True),
    ("किराया कितना है", False),
])
def test_which_words_over_the_bot_leave_it_talking(text, backchannel):
    s, _, _ = strategy()
    assert s.is_backchannel(text) is backchannel


def test_with_min_words_one_only_listed_backchannels_leave_the_bot_talking():
    s, _, _ = strategy(min_words=1)
    assert s.is_backchannel("hmm") and not s.is_backchannel("stop")
    s, _, _ = strategy(min_words=2, backchannels=[])
    assert s.is_backchannel("hmm") and not s.is_backchannel("haan ji")


def test_words_of_a_transcript_ignore_case_and_punctuation():
    assert words_of("Haan-ji, OKAY... uh-huh!") == ["haan-ji", "okay", "uh-huh"]
    assert words_of("हाँ जी, किराया?") == ["हाँ", "जी", "किराया"]  # Devanagari words stay whole
    assert words_of("Hmmmm haaaan") == ["hmm", "haan"]


async def test_onset_pauses_a_backchannel_resumes_on_the_final_and_no_turn_starts():
    s, playback, started = strategy()
    await s.process_frame(BotStartedSpeakingFrame())
    await s.process_frame(VADUserStartedSpeakingFrame())
    assert playback.calls == ["pause"]
    await s.process_frame(interim("haan"))
    await s.process_frame(VADUserStoppedSpeakingFrame())
    assert playback.calls == ["pause"], "an interim is not the verdict"
    await s.process_frame(final("haan"))
    assert playback.calls == ["pause", "resume"] and started == []


async def test_words_while_paused_start_the_turn_and_the_line_is_not_resumed():
    s, playback, started = strategy()
    await s.process_frame(BotStartedSpeakingFrame())
    await s.process_frame(VADUserStartedSpeakingFrame())
    await s.process_frame(interim("wait how"))
    await s.process_frame(VADUserStoppedSpeakingFrame())
    await s.process_frame(final("wait how much"))
    assert started and playback.calls == ["pause"]  # (the controller counts one turn)


async def test_a_final_while_the_caller_still_speaks_waits_for_the_end_of_speech():
    s, playback, _ = strategy()
    await s.process_frame(BotStartedSpeakingFrame())
    await s.process_frame(VADUserStartedSpeakingFrame())
    await s.process_frame(final("hmm"))
    assert playback.calls == ["pause"]
    await s.process_frame(VADUserStoppedSpeakingFrame())
    assert playback.calls == ["pause", "resume"]


async def test_speech_with_no_words_resumes_after_a_while(monkeypatch):
    import asyncio

    import pipelines.backchannel as backchannel

    monkeypatch.setattr(backchannel, "NO_WORDS_RESUME_SECS", 0.05)
    s, playback, _ = strategy()
    await s.process_frame(BotStartedSpeakingFrame())
    await s.process_frame(VADUserStartedSpeakingFrame())
    await s.process_frame(VADUserStoppedSpeakingFrame())
    assert playback.calls == ["pause"]
    for _ in range(100):
        await asyncio.sleep(0.01)
        if playback.calls == ["pause", "resume"]:
            break
    assert playback.calls == ["pause", "resume"]


async def test_no_pause_while_the_bot_is_silent_and_one_word_then_starts_the_turn():
    s, playback, started = strategy()
    await s.process_frame(BotStartedSpeakingFrame())
    await s.process_frame(BotStoppedSpeakingFrame())
    await s.process_frame(VADUserStartedSpeakingFrame())
    await s.process_frame(interim("yes"))
    assert playback.calls == [] and started == ["turn"]


def test_a_campaign_backchannel_must_be_a_short_phrase():
    assert TurnTakingConfig(backchannels=["theek hai"]).backchannels == ["theek hai"]
    with pytest.raises(ValueError, match="backchannel"):
        TurnTakingConfig(backchannels=[" "])


async def test_an_answer_as_the_question_ends_is_a_turn_not_a_backchannel():
    """"Yes" said over the last syllable of "Shall I book a visit?" answers it."""
    s, playback, started = strategy()
    await s.process_frame(BotStartedSpeakingFrame())
    await s.process_frame(VADUserStartedSpeakingFrame())
    playback.nearly_over = True  # what was left of the line is a few hundred ms and the TTS is done
    await s.process_frame(VADUserStoppedSpeakingFrame())
    await s.process_frame(final("yes"))
    assert started and playback.calls == ["pause"]


async def test_speech_going_on_after_a_backchannel_is_judged_afresh():
    s, playback, started = strategy()
    await s.process_frame(BotStartedSpeakingFrame())
    await s.process_frame(VADUserStartedSpeakingFrame())
    await s.process_frame(final("haan"))  # said while the caller still speaks
    await s.process_frame(VADUserStartedSpeakingFrame())  # ... and goes on
    await s.process_frame(VADUserStoppedSpeakingFrame())
    assert playback.calls == ["pause"], "the earlier 'haan' is no verdict on what followed"
    await s.process_frame(final("but the price"))
    assert started


async def test_no_words_timer_waits_for_words_already_on_their_way(monkeypatch):
    import asyncio

    import pipelines.backchannel as backchannel

    monkeypatch.setattr(backchannel, "NO_WORDS_RESUME_SECS", 0.05)
    s, playback, _ = strategy()
    await s.process_frame(BotStartedSpeakingFrame())
    await s.process_frame(VADUserStartedSpeakingFrame())
    await s.process_frame(interim("haan"))
    await s.process_frame(VADUserStoppedSpeakingFrame())
    await asyncio.sleep(0.2)
    assert playback.calls == ["pause"], "an interim's final is the verdict, not the timer"
    await s.process_frame(final("haan"))
    assert playback.calls == ["pause", "resume"]
