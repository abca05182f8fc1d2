"""Full conversations over real sockets: the Exotel emulator as the caller, the real server,
and wire-level fakes of Deepgram, OpenAI and ElevenLabs behind Pipecat's real services."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bench.measures import speech_start_offset
from bot.simulator.caller_speech import speak
from bot.simulator.exotel_emulator import HangUp, Say
from testing.agent_scripts import EL_FAST, LONG_REPLY, SHORT_GREETING, qualifying_agent, user_count
from testing.agent_stack import agent_stack
from testing.fakes.elevenlabs import synthesize
from testing.fakes.openai_chat import Fail, Hang, Reply, ToolCall
from testing.waiting import wait_finished


def applet_sig(stack) -> str:
    from bot.exotel.applet import applet_url

    return applet_url(stack.server.settings, stack.server.app.state.services.signing_key).split("sig=")[1]


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
    # Deepgram heard the caller's three lines (each transcribed) but not the quiet line
    # between them: the first 3 s of listening and the pauses while the bot spoke were held back.
    heard = stack.deepgram.accepted[0].audio_bytes / 16000
    inbound = session.inbound_audio_bytes / 16000
    # (the last 100 ms chunk may still be in flight to Deepgram when the call closes)
    assert heard == pytest.approx(session.metrics["stt_audio_sent_secs"], abs=0.15)
    assert session.metrics["stt_audio_held_back_secs"] > 3.0 and heard < inbound - 3.0, (heard, inbound)
    # The LLM saw the campaign's system prompt and the tools.
    first = stack.openai.requests[0]
    assert "Priya" in first["messages"][0]["content"]
    assert {t["function"]["name"] for t in first["tools"]} == {"save_lead_details", "end_call", "transfer_to_human"}
    # Deepgram got the campaign's model, language and keyterms; ElevenLabs its voice.
    query = stack.deepgram.accepted[0].query
    assert query["model"] == "nova-3" and query["language"] == "en-IN" and query["sample_rate"] == "8000"
    # Raw PCM is not worth deflating: the STT socket offers no per-message compression.
    assert "sec-websocket-extensions" not in stack.deepgram.accepted[0].headers
    # The SDK's headers, though built once per process rather than per connect.
    from importlib.metadata import version

    handshake = stack.deepgram.accepted[0]
    assert handshake.api_key == "test" and handshake.headers["authorization"] == "Token test"
    assert handshake.headers["user-agent"] == f"deepgram-sdk/{version('deepgram-sdk')}"
    assert handshake.headers["x-fern-sdk-name"] == "deepgram-sdk"
    # Per-turn metrics: voice-to-voice measured for every answered turn.
    answered = [t for t in session.turns if "voice_to_voice" in t]
    assert len(answered) >= 2
    assert all(0 < t["voice_to_voice"] < 3.0 for t in answered)
    # ... with each stage, as the processors pushed their frames (pipelines.call_watch).
    for turn in answered:
        assert {"user_started", "stt_ttfb", "user_stopped_to_turn_end", "llm_ttfb", "tts_first_audio_after"} <= set(turn)
        assert turn["user_stopped_to_turn_end"] <= turn["tts_first_audio_after"] <= turn["voice_to_voice"]


def chatty_agent(body: dict[str, Any]) -> Reply:
    """Answers the first turn with a long reply (to be interrupted), then short ones."""
    if user_count(body) == 1:
        return Reply(text=LONG_REPLY)
    return Reply(text="Sure, tell me.")


async def test_barge_in_clears_and_context_keeps_only_what_was_heard(tmp_path):
    lines = ["Tell me about the project", "Wait wait I have a question"]
    async with agent_stack(tmp_path, stt_script=lines, llm=chatty_agent,
                           campaign_tweaks=SHORT_GREETING, elevenlabs_kwargs=EL_FAST) as stack:
        emu = stack.emulator()
        result = await emu.run([Say(at=3.0, pcm=speak(lines[0])), Say(at=7.5, pcm=speak(lines[1])),
                                HangUp(at=11)])
        session = await wait_finished(stack, emu.config.call_sid)
        requests = list(stack.openai.requests)

    assert result.violations == []
    assert len(result.clears_at) == 1
    clear_at = result.clears_at[0]
    assert 7.5 < clear_at < 8.8, clear_at  # min_words=2: after the STT's first interim words
    stale = [t for t in result.media_at if clear_at < t < clear_at + 0.3]
    assert stale == [], "no audio of the interrupted reply after the clear"
    assert result.dropped_by_clear_bytes > 0
    # The next LLM request holds only the part of the long reply the caller heard.
    assert len(requests) >= 2
    heard = [m["content"] for m in requests[1]["messages"] if m["role"] == "assistant" and m.get("content")][-1]
    assert LONG_REPLY.startswith(heard.rstrip(".")[: len(heard) - 2]) or heard in LONG_REPLY
    assert 10 < len(heard) < len(LONG_REPLY) - 20, heard
    interrupted = [e for e in session.transcript if e.get("interrupted")]
    assert interrupted and interrupted[0]["role"] == "assistant"


async def backchannel_call(tmp_path, said: str, **tweaks):
    """A caller who asks about the project, then says `said` over the long reply."""
    lines = ["Tell me about the project", said]
    campaign = {"real_estate": {**SHORT_GREETING["real_estate"], **tweaks}}
    async with agent_stack(tmp_path, stt_script=lines, llm=chatty_agent,
                           campaign_tweaks=campaign, elevenlabs_kwargs=EL_FAST) as stack:
        emu = stack.emulator()
        pcm = speak(said or "cough")  # the STT hears no words in a cough
        result = await emu.run([Say(at=3.0, pcm=speak(lines[0])), Say(at=6.0, pcm=pcm), HangUp(at=12)])
        session = await wait_finished(stack, emu.config.call_sid)
        requests = list(stack.openai.requests)
        finals = list(stack.deepgram.finals_sent_at)
    return result, session, requests, 6.0 + speech_start_offset(pcm), finals


def reply_windows_heard(result) -> list[int]:
    """How often each 50 ms window of the long reply's audio (from 2% to 98% of it) is in what
    the caller heard: 0 is a lost piece."""
    heard = result.played_speech_pcm()
    reply = synthesize(LONG_REPLY, rate=8000, ms_per_char=EL_FAST["ms_per_char"]).astype("<i2").tobytes()
    starts = [int(len(reply) * k / 100) // 2 * 2 for k in range(2, 99, 4)]
    return [heard.count(reply[start:start + 800]) for start in starts]


@pytest.mark.parametrize("said", ["hmm", "haan ji", "okay right", ""])
async def test_a_backchannel_pauses_the_bot_then_it_resumes_where_the_caller_stopped_hearing(tmp_path, said):
    result, session, requests, onset, finals = await backchannel_call(tmp_path, said)
    assert result.violations == []
    # The bot stopped at the caller's onset (before any word was transcribed) ...
    assert len(result.clears_at) == 1 and result.clears_at[0] > onset
    paused_at = result.clears_at[0]
    resumed = [s for s in result.segments if s.start - result.started_at > paused_at]
    assert resumed, "the reply went on after the pause"
    if said:  # resumed on the STT's verdict, not before it
        assert len(finals) == 2 and resumed[0].start > finals[1]
    assert (session.metrics["pauses"], session.metrics["pauses_resumed"]) == (1, 1)
    # ... and resumed from the point the caller last heard: no piece of the reply lost (the
    # window across the pause point may differ by the few ms of socket latency), none twice
    # beyond that, and the whole reply heard.
    windows = reply_windows_heard(result)
    assert sum(1 for count in windows if count == 0) <= 1, windows
    reply_secs = len(LONG_REPLY) * EL_FAST["ms_per_char"] / 1000
    greeting_secs = len("Hello Rahul, this is Priya from Sunrise Homes. Got a minute?") * EL_FAST["ms_per_char"] / 1000
    assert result.played_secs >= greeting_secs + 0.9 * reply_secs
    assert result.played_secs <= greeting_secs + reply_secs + 0.5  # tails' padding, nothing replayed twice
    # No LLM request for the acknowledgement; one uninterrupted line in the transcript and context.
    assert len(requests) == 1
    bot_lines = [e for e in session.transcript if e["role"] == "assistant"]
    assert [e["text"] for e in bot_lines][-1] == LONG_REPLY and not any(e["interrupted"] for e in bot_lines)
    assert [e for e in session.transcript if e["role"] == "user"] == [session.transcript[1]]


async def test_two_words_over_the_bot_are_an_interruption_not_a_backchannel(tmp_path):
    result, session, requests, onset, finals = await backchannel_call(tmp_path, "Wait stop")
    assert result.violations == [] and len(result.clears_at) == 1
    stale = [t for t in result.media_at if result.clears_at[0] < t < result.clears_at[0] + 0.5]
    assert stale == [], "nothing of the interrupted reply after the clear"
    assert len(requests) == 2 and "Wait stop" in requests[1]["messages"][-1]["content"]
    assert any(e["interrupted"] for e in session.transcript if e["role"] == "assistant")
    assert (session.metrics["pauses"], session.metrics["pauses_interrupted"]) == (1, 1)


async def test_transfer_to_human_tool(tmp_path):
    def agent(body):
        return Reply(tool_calls=[ToolCall("transfer_to_human", {"reason": "wants to talk to sales head"})])

    async with agent_stack(tmp_path, stt_script=["Connect me to a person"], llm=agent,
                           campaign_tweaks=SHORT_GREETING, elevenlabs_kwargs=EL_FAST) as stack:
        emu = stack.emulator()
        result = await emu.run([Say(at=3.0, pcm=speak("Connect me to a person"))])
        session = await wait_finished(stack, emu.config.call_sid)
        spoken = [t.text for t in stack.elevenlabs.texts]
    assert result.closed_by == "server" and result.unplayed_at_close_secs == 0.0
    assert session.escalated and session.outcome == "transferred"
    assert session.summary == "wants to talk to sales head"
    assert any("senior advisor" in text for text in spoken), "the handoff line was spoken"


async def test_end_call_with_unknown_outcome_is_refused_then_retried(tmp_path):
    def agent(body):
        if body["messages"][-1]["role"] == "tool":
            return Reply(tool_calls=[ToolCall("end_call", {"outcome": "not_interested"})])
        return Reply(tool_calls=[ToolCall("end_call", {"outcome": "maybe_later"})])

    async with agent_stack(tmp_path, stt_script=["Not interested"], llm=agent,
                           campaign_tweaks=SHORT_GREETING, elevenlabs_kwargs=EL_FAST) as stack:
        emu = stack.emulator()
        await emu.run([Say(at=3.0, pcm=speak("Not interested"))])
        session = await wait_finished(stack, emu.config.call_sid)
        tool_results = [m["content"] for r in stack.openai.requests for m in r["messages"] if m["role"] == "tool"]
    assert session.outcome == "not_interested"
    assert any("outcome must be one of" in content for content in tool_results)


async def test_idle_reprompt_then_polite_hang_up(tmp_path):
    tweaks = {"real_estate": {**SHORT_GREETING["real_estate"],
                              "idle": {"reprompt_after_secs": 1.5, "max_reprompts": 1, "hangup_after_secs": 20}}}
    async with agent_stack(tmp_path, stt_script=[], llm=chatty_agent, campaign_tweaks=tweaks,
                           elevenlabs_kwargs=EL_FAST) as stack:
        emu = stack.emulator()
        result = await emu.run([])  # a caller who never says a word
        session = await wait_finished(stack, emu.config.call_sid)
        spoken = [t.text for t in stack.elevenlabs.texts]
    assert result.closed_by == "server" and result.violations == []
    assert result.unplayed_at_close_secs == 0.0
    assert session.outcome == "no_response" and session.end_reason == "idle"
    assert sum("still there" in text for text in spoken) == 1
    assert any("disconnected" in text for text in spoken), "the idle goodbye was spoken"
    assert result.closed_at < 15


async def test_max_duration_ends_with_goodbye(tmp_path):
    async with agent_stack(tmp_path, stt_script=[], llm=chatty_agent, campaign_tweaks=SHORT_GREETING,
                           elevenlabs_kwargs=EL_FAST, max_call_secs=4.0) as stack:
        emu = stack.emulator()
        result = await emu.run([])
        session = await wait_finished(stack, emu.config.call_sid)
    assert session.end_reason == "max_duration"
    assert result.closed_by == "server" and result.unplayed_at_close_secs == 0.0
    assert 4.0 < result.closed_at < 9.0


async def test_llm_failure_apologises_and_ends_with_error(tmp_path):
    failing = [Fail(500, times=3, retry_after=0.01)]
    async with agent_stack(tmp_path, stt_script=["Tell me more"], llm=failing,
                           campaign_tweaks=SHORT_GREETING, elevenlabs_kwargs=EL_FAST) as stack:
        emu = stack.emulator()
        result = await emu.run([Say(at=3.0, pcm=speak("Tell me more"))])
        session = await wait_finished(stack, emu.config.call_sid)
    assert session.outcome == "error" and session.end_reason == "error"
    assert result.closed_by == "server" and result.unplayed_at_close_secs == 0.0
    assert result.played_secs > 3.0, "the greeting and then the apology were heard"
    assert result.closed_at < 12


async def test_llm_that_hangs_times_out_into_an_apology(tmp_path):
    tweaks = {"real_estate": {**SHORT_GREETING["real_estate"], "llm": {"timeout_secs": 1.5, "retries": 0}}}
    async with agent_stack(tmp_path, stt_script=["Tell me more"], llm=[Hang(30)],
                           campaign_tweaks=tweaks, elevenlabs_kwargs=EL_FAST) as stack:
        emu = stack.emulator()
        result = await emu.run([Say(at=3.0, pcm=speak("Tell me more"))])
        session = await wait_finished(stack, emu.config.call_sid)
    assert session.outcome == "error"
    assert result.closed_by == "server" and result.closed_at < 14


async def test_tts_failure_mid_call_plays_the_prepared_apology(tmp_path):
    async with agent_stack(tmp_path, stt_script=["Tell me more"], llm=chatty_agent,
                           campaign_tweaks=SHORT_GREETING,
                           elevenlabs_kwargs={**EL_FAST, "fail_after_messages": 1}) as stack:
        emu = stack.emulator()
        result = await emu.run([Say(at=3.0, pcm=speak("Tell me more")), HangUp(at=14)])
        session = await wait_finished(stack, emu.config.call_sid)
    assert session.outcome == "error", session.log_summary()
    assert result.closed_by == "server" and result.violations == []
    assert result.unplayed_at_close_secs == 0.0
    assert session.metrics["marks_echoed"] >= 2, "greeting and apology both played to the end"


async def test_stt_socket_drop_is_survived(tmp_path):
    lines = ["Yes I have a few minutes", "Around eighty lakhs"]
    async with agent_stack(tmp_path, stt_script=lines, llm=qualifying_agent, campaign_tweaks=SHORT_GREETING,
                           elevenlabs_kwargs=EL_FAST, deepgram_kwargs={"fail_after_utterances": 1}) as stack:
        emu = stack.emulator()
        result = await emu.run([Say(at=3.0, pcm=speak(lines[0])), Say(at=11.0, pcm=speak(lines[1])),
                                HangUp(at=16)])
        session = await wait_finished(stack, emu.config.call_sid)
        connections = len(stack.deepgram.accepted)
    assert connections >= 2, "the STT reconnected"
    assert session.end_reason == "caller_hangup" and session.outcome != "error"
    assert result.violations == []


async def test_two_campaigns_at_once(tmp_path):
    tweaks = {**SHORT_GREETING,
              "hinglish_followup": {"greeting": "Namaste {lead.name} ji, main Neha bol rahi hoon."}}

    def agent(body):
        system = body["messages"][0]["content"]
        return Reply(text="Achha, bataiye." if "Neha" in system else "Sure, go ahead.")

    async with agent_stack(tmp_path, stt_script=["Hello there"], llm=agent, campaign_tweaks=tweaks,
                           elevenlabs_kwargs=EL_FAST) as stack:
        english = stack.emulator(custom_parameters={"campaign": "real_estate", "name": "Rahul"})
        hinglish = stack.emulator(custom_parameters={"campaign": "hinglish_followup", "name": "Asha"})
        script = [Say(at=3.0, pcm=speak("Hello there")), HangUp(at=7)]
        results = await asyncio.gather(english.run(script), hinglish.run(script))
        sessions = [await wait_finished(stack, e.config.call_sid) for e in (english, hinglish)]
        queries = sorted(c.query["language"] for c in stack.deepgram.accepted)
        spoken = [t.text for t in stack.elevenlabs.texts]
    assert all(r.violations == [] for r in results)
    assert [s.campaign for s in sessions] == ["real_estate", "hinglish_followup"]
    assert queries == ["en-IN", "multi"]
    assert any("Namaste Asha ji" in t for t in spoken) and any("Hello Rahul" in t for t in spoken)
    assert any("Achha" in e["text"] for e in sessions[1].transcript)
    assert any("Sure, go ahead" in e["text"] for e in sessions[0].transcript)


async def test_presynthesized_greeting_leaves_within_tens_of_ms(tmp_path):
    import httpx

    async with agent_stack(tmp_path, stt_script=[], llm=chatty_agent, campaign_tweaks=SHORT_GREETING,
                           elevenlabs_kwargs=EL_FAST) as stack:
        async with httpx.AsyncClient(base_url=stack.server.http_url) as client:
            answer = await client.get("/exotel/connect", params={"campaign": "real_estate", "name": "Meera",
                                                                  "sig": applet_sig(stack)})
        assert "/media?campaign=real_estate" in answer.json()["url"]
        for _ in range(100):  # the greeting synthesizes in the background
            if any("Meera" in (r.body or {}).get("text", "") for r in stack.elevenlabs.http_requests):
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
        emu = stack.emulator(custom_parameters={"campaign": "real_estate", "name": "Meera"})
        result = await emu.run([HangUp(at=4)])
        session = await wait_finished(stack, emu.config.call_sid)
    assert session.metrics.get("greeting_prepared") == 1
    assert result.first_media_after_start < 0.15, result.first_media_after_start
    # Its opening went out before the call's pipeline had even started; the pipeline played
    # the rest, seamlessly: the whole greeting, no gap, one utterance (one mark).
    assert session.metrics["first_audio_after_start_secs"] < session.metrics["pipeline_started_after_start_secs"]
    spoken = len("Hello Meera, this is Priya from Sunrise Homes. Got a minute?") * EL_FAST["ms_per_char"] / 1000
    assert spoken - 0.05 < result.played_secs < spoken + 0.25, (result.played_secs, spoken)
    assert result.gaps == []
    assert result.violations == [] and len(result.marks_echoed) == 1
    assert session.transcript[0]["text"].startswith("Hello Meera")


def test_greeting_head_is_whole_payloads_and_leaves_the_pipeline_the_rest():
    from bot.server.call_runner import GREETING_HEAD_SECS, greeting_head

    for seconds in (0.1, 0.25, 0.4, 0.41, 1.0, 1.3, 3.7):
        pcm = bytes(int(seconds * 8000) * 2)
        head, rest = greeting_head(pcm, 8000, 3200)
        assert head + rest == pcm
        assert len(head) % 3200 == 0 and len(head) <= GREETING_HEAD_SECS * 16000
        assert len(rest) >= 3200 or not head, "the pipeline plays (and marks) at least one payload"
        assert head or len(pcm) < 2 * 3200
    assert greeting_head(bytes(64000), 8000, 3200)[0] == bytes(16000)  # 1 s of a 4 s greeting
    assert greeting_head(None, 8000, 3200) == (b"", b"")


async def test_a_sentence_is_not_held_back_waiting_for_the_next_one(tmp_path):
    """The reply's first sentence (360 ms of audio) must play whole even when the TTS takes
    longer than that to start the second: audio short of a full payload is sent (padded)
    before the caller's playback runs dry, not held until more audio comes."""
    lines = ["Yes I have a few minutes"]
    async with agent_stack(
        tmp_path, stt_script=lines, llm=lambda body: Reply(text="Okay, noted. Could you tell me more?"),
        campaign_tweaks=SHORT_GREETING, elevenlabs_kwargs={"ms_per_char": 30, "ttfb_ms": 500},
    ) as stack:
        emu = stack.emulator()
        result = await emu.run([Say(at=4.0, pcm=speak(lines[0])), HangUp(at=9.0)])
    first_sentence = len("Okay, noted.") * 0.030
    early = [(into, gap) for into, gap in zip(result.gaps_into_utterance, [g for _, g in result.gaps], strict=False)
             if into < first_sentence - 0.02]
    assert early == [], f"gaps inside a sentence (secs into the utterance, length): {early}"
    assert result.violations == []


async def test_voicemail_leaves_a_message_and_hangs_up(tmp_path):
    machine = "The number you are calling is not available please leave a message after the tone"
    async with agent_stack(tmp_path, stt_script=[machine], llm=chatty_agent, campaign_tweaks=SHORT_GREETING,
                           elevenlabs_kwargs=EL_FAST) as stack:
        emu = stack.emulator()
        result = await emu.run([Say(at=0.3, pcm=speak(machine))])
        session = await wait_finished(stack, emu.config.call_sid)
        llm_calls = len(stack.openai.requests)
    assert session.outcome == "voicemail" and session.end_reason == "voicemail"
    assert llm_calls == 0, "the machine's greeting never reached the LLM"
    assert result.closed_by == "server" and result.unplayed_at_close_secs == 0.0


async def test_slow_llm_gets_a_filler(tmp_path):
    slow = Reply(text="Our prices start at sixty lakhs.", ttft_ms=2000)
    async with agent_stack(tmp_path, stt_script=["What is the price"], llm=[slow], campaign_tweaks=SHORT_GREETING,
                           elevenlabs_kwargs=EL_FAST) as stack:
        emu = stack.emulator()
        await emu.run([Say(at=3.0, pcm=speak("What is the price")), HangUp(at=10)])
        session = await wait_finished(stack, emu.config.call_sid)
    assert session.metrics["fillers_played"] == 1
    assert any("sixty lakhs" in e["text"] for e in session.transcript)


async def test_slow_provider_handshakes_do_not_delay_the_greeting(tmp_path):
    """Deepgram and ElevenLabs 400 ms away: the prepared greeting still leaves at once, and the
    caller's first words (sent while the STT was still connecting) are not lost."""
    import httpx

    lines = ["Yes I can talk"]
    async with agent_stack(tmp_path, stt_script=lines, llm=chatty_agent, campaign_tweaks=SHORT_GREETING,
                           elevenlabs_kwargs={**EL_FAST, "connect_delay_ms": 400},
                           deepgram_kwargs={"connect_delay_ms": 400}) as stack:
        async with httpx.AsyncClient(base_url=stack.server.http_url) as client:
            await client.get("/exotel/connect", params={"campaign": "real_estate", "name": "Meera",
                                                         "sig": applet_sig(stack)})
        for _ in range(100):
            if stack.elevenlabs.http_requests:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
        emu = stack.emulator(custom_parameters={"campaign": "real_estate", "name": "Meera"})
        result = await emu.run([Say(at=0.1, pcm=speak(lines[0])), HangUp(at=7)])
        session = await wait_finished(stack, emu.config.call_sid)
    assert session.metrics.get("greeting_prepared") == 1
    assert result.first_media_after_start < 0.2, result.first_media_after_start
    assert any(e["role"] == "user" and "talk" in e["text"] for e in session.transcript), session.transcript


async def test_call_is_recorded_as_stereo_wav(tmp_path):
    import wave

    import numpy as np

    async with agent_stack(tmp_path, stt_script=["Tell me about the project"], llm=chatty_agent,
                           campaign_tweaks=SHORT_GREETING, elevenlabs_kwargs=EL_FAST) as stack:
        emu = stack.emulator()
        await emu.run([Say(at=3.0, pcm=speak("Tell me about the project")), HangUp(at=8)])
        session = await wait_finished(stack, emu.config.call_sid)
    assert session.recording_path and session.recording_path.endswith(f"{emu.config.call_sid}.wav")
    with wave.open(session.recording_path) as wav:
        assert wav.getnchannels() == 2 and wav.getframerate() == 8000
        frames = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16).reshape(-1, 2)
    assert len(frames) / 8000 > 5.0
    caller, bot = np.abs(frames[:, 0]), np.abs(frames[:, 1])
    assert caller[int(3.2 * 8000):int(4.2 * 8000)].max() > 1000, "the caller's words are on the left"
    assert bot[: int(2 * 8000)].max() > 1000, "the greeting is on the right"


async def test_a_recording_that_cannot_be_written_does_not_break_the_call(tmp_path):
    """The WAV opens in a worker thread after the greeting has started; if it cannot be
    opened (here: the recordings folder is a file), the call runs and ends as usual."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "recordings").write_text("not a folder")
    async with agent_stack(tmp_path, stt_script=["Tell me about the project"], llm=chatty_agent,
                           campaign_tweaks=SHORT_GREETING, elevenlabs_kwargs=EL_FAST) as stack:
        emu = stack.emulator()
        result = await emu.run([Say(at=3.0, pcm=speak("Tell me about the project")), HangUp(at=6)])
        session = await wait_finished(stack, emu.config.call_sid)
    assert result.first_media_after_start < 1.5, "the greeting played"
    assert result.violations == []
    assert session.recording_path is None
    assert session.end_reason == "caller_hangup" and any(e["role"] == "user" for e in session.transcript)


@pytest.mark.parametrize("ending_secs", [None, 0.0])
async def test_yes_over_the_last_words_of_the_greeting_answers_it(tmp_path, monkeypatch, ending_secs):
    """"Yes" said as "Got a minute?" ends pauses the bot like any speech over it, but with the
    line all but over it is the caller's answer, not a backchannel to resume from. (With the
    rule off, ending_secs=0, the answer is lost: the check that this test can fail.)"""
    import pipelines.backchannel as backchannel

    if ending_secs is not None:
        monkeypatch.setattr(backchannel, "LINE_ENDING_SECS", ending_secs)
    async with agent_stack(tmp_path, stt_script=["Yes"], llm=lambda body: Reply(text="Great."),
                           campaign_tweaks=SHORT_GREETING, elevenlabs_kwargs=EL_FAST) as stack:
        emu = stack.emulator(script_from_first_audio=True)  # the greeting plays 0-1.8 s
        pcm = speak("Yes")
        await emu.run([Say(at=1.35 - speech_start_offset(pcm), pcm=pcm), HangUp(at=6)])
        await wait_finished(stack, emu.config.call_sid)
        answered = [r for r in stack.openai.requests if "Yes" in str(r["messages"][-1].get("content"))]
    assert bool(answered) is (ending_secs is None)
