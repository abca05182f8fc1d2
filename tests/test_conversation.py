"""Full conversations over real sockets: the Exotel emulator as the caller, the real server,
and wire-level fakes of Deepgram, OpenAI and ElevenLabs behind Pipecat's real services."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bot.exotel_emulator import Dtmf, HangUp, Say
from bot.fakes.openai_chat import Fail, Hang, Reply, ToolCall
from bot.speech_synth import speak
from tests.agent_stack import agent_stack

SHORT_GREETING = {"real_estate": {"greeting": "Hello {lead.name}, this is Priya from Sunrise Homes. Got a minute?"}}
EL_FAST = {"ms_per_char": 30}


async def wait_finished(stack, call_sid: str, timeout: float = 8.0):
    for _ in range(int(timeout / 0.02)):
        session = stack.finished(call_sid)
        if session is not None:
            return session
        await asyncio.sleep(0.02)
    raise AssertionError(f"call {call_sid} never finished")


def user_count(body: dict[str, Any]) -> int:
    return sum(1 for m in body["messages"] if m["role"] == "user")


def last_tool_name(body: dict[str, Any]) -> str | None:
    messages = body["messages"]
    if messages[-1]["role"] != "tool":
        return None
    call_id = messages[-1].get("tool_call_id")
    for message in reversed(messages):
        for call in message.get("tool_calls") or []:
            if call["id"] == call_id:
                return call["function"]["name"]
    return None


def qualifying_agent(body: dict[str, Any]) -> Reply:
    """A scripted LLM: greet -> budget -> bedrooms -> end_call(interested)."""
    users, tool = user_count(body), last_tool_name(body)
    if tool == "save_lead_details":
        if users == 2:
            return Reply(text="Got it. And how many bedrooms are you looking for?")
        return Reply(tool_calls=[ToolCall("end_call", {"outcome": "interested", "summary": "80L, 2BHK"})])
    if users == 1:
        return Reply(text="Great. What is your budget for the apartment?")
    if users == 2:
        return Reply(tool_calls=[ToolCall("save_lead_details", {"budget": "80 lakhs"})])
    return Reply(tool_calls=[ToolCall("save_lead_details", {"bhk": "2", "purpose": "holiday"})])


async def test_full_qualification_call(tmp_path):
    lines = ["Yes I have a few minutes", "Around eighty lakhs", "Two bedrooms please"]
    async with agent_stack(
        tmp_path, stt_script=lines, llm=qualifying_agent,
        campaign_tweaks=SHORT_GREETING, elevenlabs_kwargs=EL_FAST,
    ) as stack:
        emu = stack.emulator()
        script = [Say(at=3.5, pcm=speak(lines[0])), Say(at=8.0, pcm=speak(lines[1])),
                  Say(at=12.5, pcm=speak(lines[2]))]
        result = await emu.run(script)
        session = await wait_finished(stack, emu.config.call_sid)

    assert result.violations == [] and result.gaps == []
    assert result.closed_by == "server", "the bot hung up after end_call"
    assert result.unplayed_at_close_secs == 0.0, "...only after the goodbye played"
    assert session.outcome == "interested" and session.summary == "80L, 2BHK"
    assert session.end_reason == "bot_hangup"
    assert session.collected == {"budget": "80 lakhs", "bhk": 2}, "purpose=holiday rejected (enum)"
    roles = [entry["role"] for entry in session.transcript]
    assert roles.count("user") == 3 and roles[0] == "assistant"
    assert any("budget" in e["text"] for e in session.transcript if e["role"] == "assistant")
    assert any("Goodbye" in e["text"] for e in session.transcript if e["role"] == "assistant")
    # The LLM saw the campaign's system prompt and the tools.
    first = stack.openai.requests[0]
    assert "Priya" in first["messages"][0]["content"]
    assert {t["function"]["name"] for t in first["tools"]} == {"save_lead_details", "end_call", "transfer_to_human"}
    # Deepgram got the campaign's model, language and keyterms; ElevenLabs its voice.
    query = stack.deepgram.accepted[0].query
    assert query["model"] == "nova-3" and query["language"] == "en-IN" and query["sample_rate"] == "8000"
    # Per-turn metrics: voice-to-voice measured for every answered turn.
    answered = [t for t in session.turns if "voice_to_voice" in t]
    assert len(answered) >= 2
    assert all(0 < t["voice_to_voice"] < 3.0 for t in answered)
