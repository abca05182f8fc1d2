"""Full calls over a real socket: the emulated Exotel against the real app served by uvicorn."""

from __future__ import annotations

import asyncio
import base64
import json

import httpx
import numpy as np
import pytest

from bot.simulator.caller_speech import speak
from bot.simulator.exotel_emulator import Dtmf, EmulatorConfig, ExotelEmulator, HangUp, Say, SendRaw
from testing.waiting import wait_finished

SPEED = 2.0  # the emulated line runs twice as fast as real time; pacing scales with it


def emulator(live, **overrides) -> ExotelEmulator:
    """An emulated call whose script runs from the greeting's first audio: the protocol is what
    is tested here, not how fast this machine synthesizes a greeting (the benchmarks time that)."""
    overrides.setdefault("custom_parameters", {"name": "Rahul", "campaign": "real_estate"})
    overrides.setdefault("script_from_first_audio", True)
    return ExotelEmulator(EmulatorConfig(url=overrides.pop("url", live.ws_url), **overrides))


async def test_greeting_plays_with_zero_violations(live_server):
    emu = emulator(live_server)
    result = await emu.run([HangUp(at=10)])

    assert result.connect_error is None
    assert result.violations == []
    assert result.gaps == []
    assert result.first_media_after_start is not None
    assert all(size % 320 == 0 and 3200 <= size <= 100_000 for size in result.payload_sizes)
    assert 4.0 < result.played_secs < 9.0, "the whole greeting plays"
    assert result.marks_received and result.marks_echoed == result.marks_received
    session = await wait_finished(live_server, emu.config.call_sid)
    assert session.end_reason == "caller_hangup"
    assert session.campaign == "real_estate"
    assert session.from_number == emu.config.from_number
    assert session.inbound_audio_bytes > 8000 * 2 * 5


async def test_greeting_is_intelligible_speech_naming_the_product(live_server):
    """Recognise what the caller heard: the right words, not noise or silence."""
    from pocketsphinx import Decoder

    from bot.simulator.caller_speech import resample_pcm

    result = await emulator(live_server).run([HangUp(at=9)])
    heard = resample_pcm(result.played_speech_pcm(), 8000, 16000)
    decoder = Decoder(samprate=16000, logfn="/dev/null")
    decoder.start_utt()
    decoder.process_raw(heard, full_utt=True)
    decoder.end_utt()
    hypothesis = decoder.hyp().hypstr if decoder.hyp() else ""
    assert "apartment" in hypothesis, hypothesis


@pytest.mark.parametrize("rate", [8000, 16000, 24000])
async def test_sample_rate_from_start_message(live_server, rate):
    emu = emulator(live_server, sample_rate=rate, speed=SPEED)
    result = await emu.run([HangUp(at=4)])
    assert result.violations == []
    assert result.payload_sizes and all(s % 320 == 0 and s >= 3200 for s in result.payload_sizes)
    session = await wait_finished(live_server, emu.config.call_sid)
    assert session.sample_rate == rate
    # Caller audio reaches the pipeline at the stream's rate (8/16 kHz: byte for byte; 24 kHz
    # streams are heard at 16 kHz, the highest rate Silero VAD takes).
    chunks = len(result.caller_chunks_sent_at) + result.chunks_before_script
    assert session.inbound_audio_bytes == pytest.approx(session.pipeline_in_rate * 2 * chunks / 10, rel=0.1)


async def test_camel_case_integer_numbers_and_no_start(live_server):
    emu = emulator(live_server, spelling="camel", numbers_as_strings=False, speed=SPEED)
    result = await emu.run([HangUp(at=3)])
    assert result.violations == [] and result.payload_sizes

    emu = emulator(live_server, send_start=False, speed=SPEED, url=live_server.ws_url + "?call_sid=CA-nostart")
    result = await emu.run([HangUp(at=3)])
    assert result.violations == [], "stream_sid learnt from the first media"
    assert result.payload_sizes
    session = await wait_finished(live_server, "CA-nostart")
    assert session.stream_sid == emu.config.stream_sid


async def test_query_parameters_carry_campaign_and_lead(live_server):
    emu = emulator(
        live_server, custom_parameters={}, speed=SPEED,
        url=live_server.ws_url + "?campaign=real_estate&lead=123&name=Asha",
    )
    await emu.run([HangUp(at=2)])
    session = await wait_finished(live_server, emu.config.call_sid)
    assert session.lead == {"id": "123", "name": "Asha"}
    assert session.campaign == "real_estate"


async def test_voicebot_ws_alias_path(live_server):
    emu = emulator(live_server, url=live_server.ws_url.replace("/media", "/voicebot/ws"), speed=SPEED)
    result = await emu.run([HangUp(at=2)])
    assert result.connect_error is None and result.payload_sizes


async def test_barge_in_sends_clear_at_once_and_nothing_stale(live_server):
    caller = speak("Sorry, who is this? I am busy right now, call me later.")
    emu = emulator(live_server)
    result = await emu.run([Say(at=2.0, pcm=caller), HangUp(at=6)])

    assert result.violations == []
    assert len(result.clears_at) == 1
    clear_at = result.clears_at[0]
    # VAD start (0.2 s) + one 100 ms media chunk + processing: well under half a second (on the
    # script's clock: the caller starts speaking 2 s into the greeting).
    assert 2.0 < clear_at - result.script_started_at < 2.6, (clear_at, result.script_started_at)
    # Nothing of the interrupted greeting after the clear (the agent's reply to the caller,
    # seconds later once the offline STT has heard them, is a new utterance).
    assert not [t for t in result.media_at if clear_at < t < clear_at + 0.5], "no stale media after clear"
    assert result.dropped_by_clear_bytes > 0, "the clear dropped audio queued at Exotel"
    assert result.played_secs < 3.0
    session = await wait_finished(live_server, emu.config.call_sid)
    assert session.metrics["clears_sent"] == 1
    # The clear left as the caller's turn started, ahead of the InterruptionFrame's trip
    # through the pipeline to the transport.
    assert len(session.metrics["early_clear_leads_ms"]) == 1 and session.metrics["early_clear_leads_ms"][0] >= 0
    assert session.end_reason == "caller_hangup" and "early_clear_leads_ms" in session.log_summary()  # Regression
    # The recording is what the caller heard: the greeting's unplayed rest, already sent up to
    # 0.4 s ahead, is cut at the clear (the bot's track falls silent while the caller talks).
    import wave

    with wave.open(session.recording_path) as wav:
        frames = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16).reshape(-1, 2)
    bot = np.abs(frames[:, 1].astype(np.int32))
    assert bot[: int(clear_at * 8000)].max() > 1000, "the greeting, up to the clear, is on the right"
    assert bot[int((clear_at + 0.1) * 8000): int((clear_at + 1.0) * 8000)].max() < 50, "nothing after the clear"


async def test_bot_stopped_speaking_follows_the_callers_ears(live_server):
    """BotStoppedSpeaking reaches the pipeline only after Exotel echoed the utterance's mark."""
    emu = emulator(live_server)
    result = await emu.run([HangUp(at=9.5)])
    session = await wait_finished(live_server, emu.config.call_sid)
    echoes = [t for t, kind, _ in result.events if kind == "mark_echoed"]
    stops = [(t - result.started_at) for kind, t in session.bot_speech if kind == "stopped"]
    assert echoes and stops
    playback_end = result.segments[-1].end - result.started_at
    assert stops[0] >= echoes[0] - 0.01, (stops, echoes)
    assert stops[0] >= playback_end - 0.05, "not before the caller heard the last audio"


@pytest.mark.settings(max_call_secs=2.0)
async def test_bot_hangs_up_only_after_last_words_played(live_server):
    emu = emulator(live_server)
    result = await emu.run([])  # the caller never hangs up

    assert result.closed_by == "server"
    assert result.violations == []
    assert result.unplayed_at_close_secs == 0.0
    assert result.marks_echoed and result.marks_echoed[-1] == result.marks_received[-1]
    last_echo = max(t for t, kind, _ in result.events if kind == "mark_echoed")
    assert result.closed_at >= last_echo
    assert result.closed_at - last_echo < 0.5, "closes promptly once the mark came back"
    session = await wait_finished(live_server, emu.config.call_sid)
    assert session.end_reason == "max_duration"


@pytest.mark.settings(max_call_secs=1.0, mark_grace_secs=0.3)
async def test_hang_up_without_mark_echoes_follows_the_playback_clock(live_server):
    emu = emulator(live_server, echo_marks=False)
    result = await emu.run([])
    assert result.closed_by == "server"
    assert result.unplayed_at_close_secs < 0.1
    played_until = result.segments[-1].end - result.started_at
    # Greeting + goodbye play out, then the close follows the playback clock (+ grace), not a
    # mark that never comes.
    assert result.closed_at < played_until + 2.0, (result.closed_at, played_until)


async def test_exotel_stop_ends_the_pipeline_promptly(live_server):
    for reason, expected in (("callended", "caller_hangup"), ("stopped", "stream_stopped")):
        emu = emulator(live_server)
        await emu.run([HangUp(at=1.0, reason=reason)])
        session = await wait_finished(live_server, emu.config.call_sid)
        assert session.end_reason == expected
        assert (session.ended_at - session.started_at).total_seconds() < 2.5
    assert live_server.app.state.services.live_calls == {}


async def test_dtmf_digits_reach_the_session(live_server):
    emu = emulator(live_server, speed=SPEED)
    await emu.run([Dtmf(at=0.5, digit="1"), Dtmf(at=0.8, digit="2"), Dtmf(at=1.0, digit="#"),
                   HangUp(at=2)])
    session = await wait_finished(live_server, emu.config.call_sid)
    assert session.dtmf == ["1", "2", "#"]


async def test_dtmf_zero_transfers_to_a_human(live_server):
    """The campaign maps 0 to transfer_to_human: handoff line, then the socket closes."""
    emu = emulator(live_server)
    result = await emu.run([Dtmf(at=1.0, digit="0")])
    assert result.closed_by == "server" and result.violations == []
    assert result.unplayed_at_close_secs == 0.0
    session = await wait_finished(live_server, emu.config.call_sid)
    assert session.escalated and session.outcome == "transferred"
    assert session.end_reason == "transferred"


async def test_malformed_messages_never_kill_the_call(live_server):
    junk = [
        "not json", "[1, 2, 3]", '"a string"', "42", "null", "{}", '{"event": 7}',
        '{"event": "media"}', '{"event": "media", "media": {"payload": 5}}',
        '{"event": "media", "media": {"payload": "%%%not-base64%%%"}}',
        json.dumps({"event": "media", "media": {"payload": base64.b64encode(b"\x01\x02\x03").decode()}}),
        '{"event": "dtmf", "dtmf": {"digit": "x"}}', '{"event": "mark", "mark": {}}',
        '{"event": "mark", "mark": {"name": "never-sent"}}', '{"event": "whatever"}',
        "[" * 50_000, "x" * 900_000,  # larger than 1 MiB: closed by the websocket layer (test_hostile_input)
    ]
    emu = emulator(live_server)
    result = await emu.run([SendRaw(at=0.3 + i * 0.05, data=j) for i, j in enumerate(junk)] + [HangUp(at=9)])
    assert result.violations == []
    assert 4.0 < result.played_secs, "the greeting played through the junk"
    session = await wait_finished(live_server, emu.config.call_sid)
    assert session.end_reason == "caller_hangup"
    assert session.metrics["bad_messages_in"] >= 12


async def test_concurrent_calls_do_not_interfere(live_server):
    calls = [emulator(live_server, custom_parameters={"name": f"Lead{i}"}) for i in range(4)]
    scripts = [[HangUp(at=9)] for _ in calls]
    scripts[0] = [SendRaw(at=0.2, data="garbage"), HangUp(at=1.0)]  # one bad, early call
    scripts[1] = [Say(at=2.5, pcm=speak("Hello? Who is calling?")), HangUp(at=5)]  # one barge-in
    results = await asyncio.gather(*(c.run(s) for c, s in zip(calls, scripts, strict=False)))

    for result in results:
        assert result.connect_error is None
        assert result.violations == []
    assert all(r.payload_sizes for r in results[1:])
    assert results[1].clears_at and not results[2].clears_at and not results[3].clears_at
    assert results[2].played_secs > 4.0 and results[3].played_secs > 4.0
    sessions = [await wait_finished(live_server, c.config.call_sid) for c in calls]
    assert len({s.call_sid for s in sessions}) == 4
    assert [s.end_reason for s in sessions] == ["caller_hangup"] * 4
    assert live_server.app.state.services.live_calls == {}


@pytest.mark.settings(media_auth_user="exotel", media_auth_password="s3cret")
async def test_basic_auth_on_the_media_socket(live_server):
    def auth(user, password):
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        return {"Authorization": f"Basic {token}"}

    refused = await emulator(live_server).run([HangUp(at=1)])
    assert refused.connect_error and "403" in refused.connect_error
    wrong = await emulator(live_server, headers=auth("exotel", "nope")).run([HangUp(at=1)])
    assert wrong.connect_error and "403" in wrong.connect_error
    ok = await emulator(live_server, headers=auth("exotel", "s3cret"), speed=SPEED).run([HangUp(at=2)])
    assert ok.connect_error is None and ok.payload_sizes and ok.violations == []


@pytest.mark.settings(handshake_timeout_secs=0.5)
async def test_socket_that_never_starts_is_closed(live_server):
    from websockets.asyncio.client import connect

    async with connect(live_server.ws_url) as ws:
        await ws.send('{"event": "connected"}')
        await asyncio.wait_for(ws.wait_closed(), timeout=3)
        assert ws.close_code == 1008


async def test_unknown_campaign_falls_back_to_default(live_server):
    emu = emulator(live_server, custom_parameters={"campaign": "nope"}, speed=SPEED)
    result = await emu.run([HangUp(at=2)])
    assert result.payload_sizes
    session = await wait_finished(live_server, emu.config.call_sid)
    assert session.campaign == "real_estate"


async def test_health(live_server):
    async with httpx.AsyncClient(base_url=live_server.http_url) as client:
        response = await client.get("/health")
    assert response.status_code == 200
    assert response.json()["status"] == "ok" and response.json()["live_calls"] == 0


@pytest.mark.settings(public_base_url="https://bot.example.in", media_auth_user="ex", media_auth_password="p@ss")
async def test_dynamic_url_endpoint_for_the_applet(live_server):
    from bot.exotel.applet import applet_url

    url = applet_url(live_server.settings, live_server.app.state.services.signing_key)
    assert url.startswith("https://bot.example.in/exotel/connect?sig=")
    sig = url.split("sig=")[1]
    async with httpx.AsyncClient(base_url=live_server.http_url) as client:
        got = await client.get("/exotel/connect", params={"campaign": "real_estate", "name": "Asha",
                                                          "x": "y", "sig": sig})
        posted = await client.post(f"/exotel/connect?sig={sig}")
        seed_path = await client.get(f"/api/v1/exotel/voice/connect?sig={sig}")
        unsigned = await client.get("/exotel/connect", params={"campaign": "real_estate"})
        forged = await client.get("/exotel/connect", params={"sig": "0" * 32})
    assert got.json() == {"url": "wss://ex:p%40ss@bot.example.in/media?campaign=real_estate&name=Asha"}
    assert posted.json() == {"url": "wss://ex:p%40ss@bot.example.in/media"}
    assert seed_path.status_code == 200
    assert unsigned.status_code == 403 and forged.status_code == 403
