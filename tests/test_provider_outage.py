"""Providers down: the caller still hears the greeting or the apology, then a clean hang-up.

Each provider's base URL points at a loopback port that refuses connections (bound, never
listening), one at a time and all together; the live ones are the wire-level fakes."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from bot.simulator.caller_speech import speak
from bot.simulator.exotel_emulator import EmulatorResult, HangUp, Say
from testing.agent_stack import agent_stack
from testing.fakes.elevenlabs import synthesize as fake_speech
from testing.fakes.openai_chat import Reply
from testing.waiting import wait_finished

GREETING = "Hello {lead.name}, this is Priya from Sunrise Homes. Got a minute?"
APOLOGY = "Sorry {lead.name}, we are having a technical problem. We will call you back shortly. Goodbye!"
CAMPAIGN = {"real_estate": {"greeting": GREETING, "apology": APOLOGY}}
MS_PER_CHAR = 30
PAYLOAD = 3200  # the transport's payload: the last one of an utterance is padded with silence


@contextmanager
def refused_port() -> Iterator[int]:
    """A loopback port bound but never listening: every connection to it is refused."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


def pointed_at(port: int, providers: set[str]) -> dict[str, str]:
    dead = f"http://127.0.0.1:{port}"
    urls = {"stt": ("deepgram_base_url", dead), "llm": ("openai_base_url", f"{dead}/v1"),
            "tts": ("elevenlabs_base_url", dead)}
    return dict(urls[p] for p in providers)


def assert_clean_hang_up_after_the_last_mark(result: EmulatorResult) -> None:
    assert result.violations == [], result.violations
    assert result.closed_by == "server", "the bot hung up"
    assert result.unplayed_at_close_secs == 0.0, "...only after its last words played"
    assert result.marks_received and result.marks_echoed == result.marks_received, "every mark came back"
    last_echo = max(at for at, kind, _ in result.events if kind == "mark_echoed")
    assert last_echo <= result.closed_at


def piper_apology(rate: int = 8000) -> bytes:
    """The campaign's apology without the lead's name, as Piper says it (fixed prosody)."""
    return speak(APOLOGY.replace("{lead.name}", "").replace("Sorry ,", "Sorry,"), rate)


def fake_voice(text: str) -> bytes:
    return fake_speech(text, rate=8000, ms_per_char=MS_PER_CHAR).tobytes()


CASES = {"tts": {"tts"}, "stt": {"stt"}, "llm": {"llm"}, "all": {"tts", "stt", "llm"}}


@pytest.mark.parametrize("case", list(CASES))
async def test_a_provider_down_still_gets_the_caller_a_greeting_or_an_apology(tmp_path, case):
    with refused_port() as port:
        async with agent_stack(
            tmp_path, stt_script=["Tell me more"], llm=lambda body: Reply(text="Sure, it has three bedrooms."),
            campaign_tweaks=CAMPAIGN, elevenlabs_kwargs={"ms_per_char": MS_PER_CHAR},
            **pointed_at(port, CASES[case]),
        ) as stack:
            emu = stack.emulator()
            result = await emu.run([Say(at=3.0, pcm=speak("Tell me more")), HangUp(at=25)])
            session = await wait_finished(stack, emu.config.call_sid)

    assert session.outcome == "error" and session.end_reason == "error", session.log_summary()
    assert_clean_hang_up_after_the_last_mark(result)
    heard = result.played_speech_pcm()
    if "tts" in CASES[case]:
        # No voice to greet with: the caller hears the apology Piper prepared when the
        # server started, byte for byte (the last payload padded with silence).
        assert_heard_exactly(heard, piper_apology())
    else:
        # The greeting, then the lead's own apology in the campaign's voice.
        assert_heard_exactly(heard, fake_voice(render(GREETING)) + fake_voice(render(APOLOGY)))


async def test_the_apology_does_not_wait_for_a_slow_voice(tmp_path):
    """ElevenLabs answers nothing for 10 s (the greeting, the lead's own apology): the TTS
    gives up on the greeting and the call apologises with the prepared Piper apology, all of
    it heard and the socket closed before the slow provider has sent a byte."""
    async with agent_stack(
        tmp_path, stt_script=[], llm=lambda body: Reply(text="Sure."), campaign_tweaks=CAMPAIGN,
        elevenlabs_kwargs={"ms_per_char": MS_PER_CHAR, "ttfb_ms": 10_000},
    ) as stack:
        emu = stack.emulator()
        result = await emu.run([HangUp(at=25)])
        session = await wait_finished(stack, emu.config.call_sid)
        voice = stack.elevenlabs
        slow_audio = [r.first_audio_at for r in voice.http_requests if r.first_audio_at] + list(
            voice.first_audio_sent_at.values())
        asked_for_apology = any("technical problem" in (r.body or {}).get("text", "") for r in voice.http_requests)

    assert session.outcome == "error" and session.end_reason == "error", session.log_summary()
    assert_clean_hang_up_after_the_last_mark(result)
    assert asked_for_apology, "the lead's own apology was being synthesized"
    assert slow_audio == [], "the call was over before the slow provider sent any audio"
    assert_heard_exactly(result.played_speech_pcm(), piper_apology())


def render(template: str) -> str:
    return template.replace("{lead.name}", "Rahul")


def assert_heard_exactly(heard: bytes, expected: bytes) -> None:
    """`expected` and then less than a payload of silence (the padded last payload)."""
    assert len(heard) >= len(expected), (len(heard), len(expected))
    assert heard[: len(expected)] == expected, "the caller heard something else"
    tail = heard[len(expected):]
    assert len(tail) < PAYLOAD and not any(tail), len(tail)
