"""Every bot line is in the transcript as the caller heard it: a line cut by barge-in keeps
the words played before the `clear`, `interrupted: true`, and `t` when it started playing.

Offline (scripted agent + Piper: no word timestamps, so the heard part comes from the
transport's playback clock) and online (OpenAI, ElevenLabs with word timestamps, Deepgram,
all wire-level fakes), each a real call driven by the Exotel emulator; and the line ledger on
its own, fed the frames a TTS sends."""

from __future__ import annotations

from pathlib import Path

from pipecat.frames.frames import (
    AggregatedTextFrame,
    TTSAudioRawFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
    TTSTextFrame,
)
from pipecat.utils.text.base_text_aggregator import TextType

from bot.config.settings import load_settings
from bot.server.local_server import free_port, serve_locally
from bot.simulator.caller_speech import speak
from bot.simulator.exotel_emulator import EmulatorResult, HangUp, Reply, Say
from pipelines.bot_lines import BotLines
from testing.agent_scripts import LONG_REPLY
from testing.agent_stack import agent_stack, write_campaigns
from testing.fakes.openai_chat import Reply as LLMReply
from testing.waiting import wait_finished

QUESTION = "Great. What is your budget for the apartment?"  # the scripted agent's first question


def line_start_heard(result: EmulatorResult, clear_at: float) -> tuple[float, float]:
    """(when the utterance cut by the clear at `clear_at` started playing, how much of it had
    played), on the emulator's clock: the audio played since the previous utterance's mark
    came back (the bot starts a line only once the last one has been heard)."""
    echoes = [at for at, kind, _ in result.events if kind == "mark_echoed" and at < clear_at]
    since = max(echoes, default=0.0)
    line = [s for s in result.segments if since <= s.start - result.started_at < clear_at]
    return line[0].start - result.started_at, sum(s.end - s.start for s in line)


def assert_cut_line(transcript: list[dict], line: str, start: float, played: float, spoken_secs: float,
                    caller_words: str) -> dict:
    entries = [e for e in transcript if e["role"] == "assistant" and e.get("interrupted")]
    assert len(entries) == 1, transcript
    entry = entries[0]
    heard = entry["text"]
    assert line.startswith(heard) and len(heard) < len(line), (heard, line)
    # As much of the line as played, to about a word: the text is spread over its audio.
    assert abs(len(heard) / len(line) - played / spoken_secs) < 0.2, (heard, played, spoken_secs)
    assert abs(entry["t"] - start) < 0.25, (entry["t"], start)  # the same moment, seen from both ends
    caller = next(i for i, e in enumerate(transcript) if e["role"] == "user" and caller_words in e["text"].lower())
    assert transcript.index(entry) < caller and entry["t"] < transcript[caller]["t"], transcript
    times = [e["t"] for e in transcript]
    assert times == sorted(times), transcript
    assert all("interrupted" in e for e in transcript if e["role"] == "assistant")
    return entry


async def test_offline_barge_in_keeps_the_heard_part_of_the_line(tmp_path: Path):
    settings = load_settings(_env_file=None, host="127.0.0.1", port=free_port(),
                             campaigns_dir=write_campaigns(tmp_path / "configs"), data_dir=tmp_path / "data")
    async with serve_locally(settings) as server:
        from bot.simulator.exotel_emulator import EmulatorConfig, ExotelEmulator

        emu = ExotelEmulator(EmulatorConfig(url=server.ws_url,
                                            custom_parameters={"name": "Rahul", "campaign": "real_estate"}))
        result = await emu.run([
            Reply(pcm=speak("Yes I can talk now"), text="yes"),
            Reply(pcm=speak("My budget is about eighty lakhs"), barge_in_after=0.7, text="budget"),
            Reply(pcm=speak("Sorry I am not interested"), text="no"),  # the agent says goodbye and hangs up
            HangUp(at=60),  # only if it never does
        ])
        session = await wait_finished(server, emu.config.call_sid)

    assert result.violations == [] and len(result.clears_at) == 1, (result.violations, result.clears_at)
    assert result.closed_by == "server" and session.outcome == "not_interested"
    start, played = line_start_heard(result, result.clears_at[0])
    spoken = len(speak(QUESTION)) / 16000  # Piper's line, near enough (the server's prosody varies a little)
    assert_cut_line(session.transcript, QUESTION, start, played, spoken, "budget")
    assert session.transcript[0]["role"] == "assistant" and session.transcript[0]["interrupted"] is False




async def test_online_barge_in_keeps_the_heard_part_of_the_line(tmp_path: Path):
    lines = ["Tell me about the project", "Wait wait I have a question"]
    def agent(body):
        return LLMReply(text=LONG_REPLY if sum(m["role"] == "user" for m in body["messages"]) == 1
                                      else "Sure, tell me.")
    async with agent_stack(tmp_path, stt_script=lines, llm=agent, elevenlabs_kwargs={"ms_per_char": 30},
                           campaign_tweaks={"real_estate": {"greeting": "Hello {lead.name}, got a minute?"}}) as stack:
        emu = stack.emulator()
        result = await emu.run([Say(at=3.0, pcm=speak(lines[0])), Say(at=7.5, pcm=speak(lines[1])),
                                HangUp(at=11)])
        session = await wait_finished(stack, emu.config.call_sid)

    assert result.violations == [] and len(result.clears_at) == 1
    start, played = line_start_heard(result, result.clears_at[0])
    assert_cut_line(session.transcript, LONG_REPLY, start, played, len(LONG_REPLY) * 0.030, "question")


# ------------------------------------------------------------------ the ledger on its own
RATE = 8000


def audio(context: str, secs: float) -> TTSAudioRawFrame:
    return TTSAudioRawFrame(bytes(int(secs * RATE) * 2), RATE, 1, context_id=context)


def announced(context: str, text: str) -> AggregatedTextFrame:
    frame = AggregatedTextFrame(text, TextType.SENTENCE, context_id=context)
    frame.will_be_spoken = True
    return frame


def spoken(context: str, text: str) -> TTSTextFrame:
    frame = TTSTextFrame(text, TextType.SENTENCE)
    frame.context_id = context
    return frame


def piper_like(lines: BotLines, context: str, sentences: list[tuple[str, float]]) -> None:
    """What a TTS without word timestamps sends: each sentence announced, its audio, then its text."""
    lines.take(TTSStartedFrame(context_id=context))
    for text, secs in sentences:
        lines.take(announced(context, text))
        lines.take(audio(context, secs))
        lines.take(spoken(context, text))
    lines.take(TTSStoppedFrame(context_id=context))


def test_a_cut_line_keeps_the_words_played_before_the_cut():
    heard = []
    lines = BotLines(lambda text, at, cut: heard.append((text, at, cut)))
    piper_like(lines, "c1", [("Great.", 1.0), ("And how many bedrooms are you looking for?", 2.1)])
    lines.playing("c1")
    lines.sent(0.4, plays_from=100.0, plays_until=100.4)
    lines.sent(2.8, plays_from=100.4, plays_until=103.2)  # sent 0.4 s ahead of the caller's playback
    lines.cut(102.05)  # 2.05 s in: half of the second sentence (1.05 of its 2.1 s)
    assert heard == [("Great. And how many bedrooms", 100.0, True)]


def test_a_line_heard_to_the_end_is_whole_and_a_line_never_played_is_not_a_line():
    heard = []
    lines = BotLines(lambda text, at, cut: heard.append((text, at, cut)))
    piper_like(lines, "c1", [("Great.", 1.0)])
    lines.playing("c1")
    lines.sent(1.0, plays_from=5.0, plays_until=6.0)
    lines.heard()
    piper_like(lines, "c2", [("Never heard.", 1.0)])  # announced, cut before it played
    lines.cut(6.5)
    assert heard == [("Great.", 5.0, False)]


def test_word_timestamps_mark_each_word_as_its_audio_arrives():
    heard = []
    lines = BotLines(lambda text, at, cut: heard.append((text, at, cut)))
    lines.take(announced("c1", "one two three four"))
    lines.take(TTSStartedFrame(context_id="c1"))
    for word in ("one", "two", "three", "four"):
        lines.take(audio("c1", 0.5))
        lines.take(spoken("c1", word))
    lines.playing("c1")
    lines.sent(2.0, plays_from=0.0, plays_until=2.0)
    lines.cut(1.2)  # into the third word's audio
    assert heard == [("one two three", 0.0, True)]


def test_words_not_yet_reported_are_paced_like_the_lines_before():
    """Piper reports a sentence's words only after all its audio; a line cut while a long
    sentence is still being synthesized is read at the pace of the call's earlier lines."""
    heard = []
    lines = BotLines(lambda text, at, cut: heard.append((text, at, cut)))
    piper_like(lines, "c1", [("0123456789 123456789.", 1.0)])  # 21 characters a second
    lines.playing("c1")
    lines.sent(1.0, plays_from=0.0, plays_until=1.0)
    lines.heard()
    lines.take(TTSStartedFrame(context_id="c2"))
    lines.take(announced("c2", "aaaa bbbb cccc dddd eeee ffff gggg hhhh iiii jjjj kkkk llll"))
    lines.take(audio("c2", 1.0))  # the first part of its audio; its words not reported yet
    lines.playing("c2")
    lines.sent(1.0, plays_from=2.0, plays_until=3.0)
    lines.cut(2.8)  # 0.8 s in: 17 characters at the call's pace (11 at the default)
    assert heard[1] == ("aaaa bbbb cccc dddd", 2.0, True)


def test_a_paused_line_resumed_is_one_whole_line_and_cut_after_a_pause_keeps_what_was_heard():
    heard = []
    lines = BotLines(lambda text, at, cut: heard.append((text, at, cut)))
    piper_like(lines, "c1", [("Great.", 1.0), ("And how many bedrooms are you looking for?", 2.1)])
    lines.playing("c1")
    lines.sent(1.4, plays_from=100.0, plays_until=101.4)
    lines.paused(101.0)  # a backchannel: 0.4 s sent and not played is sent again on resume
    lines.sent(2.1, plays_from=101.5, plays_until=103.6)
    lines.heard()
    assert heard == [("Great. And how many bedrooms are you looking for?", 100.0, False)]

    piper_like(lines, "c2", [("Great.", 1.0), ("And how many bedrooms are you looking for?", 2.1)])
    lines.playing("c2")
    lines.sent(2.0, plays_from=200.0, plays_until=202.0)
    lines.paused(201.6)  # then the caller's words made it an interruption
    assert abs(lines.playing_line_left_secs() - (3.1 - 1.6)) < 1e-9  # all of it was made; 1.6 s heard
    lines.cut(202.3)
    assert heard[1] == ("Great. And how many", 200.0, True)
