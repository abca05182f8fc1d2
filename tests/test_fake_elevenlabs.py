"""FakeElevenLabs driven by Pipecat's real ElevenLabs services (no mocks), plus raw-protocol checks."""

from __future__ import annotations

import asyncio
import base64
import json
import time

import aiohttp
import numpy as np
import pytest
from pipecat.frames.frames import (
    ErrorFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    TTSAudioRawFrame,
    TTSSpeakFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
    TTSTextFrame,
)
from pipecat.services.elevenlabs.tts import ElevenLabsHttpTTSService, ElevenLabsTTSService
from pipecat.tests.utils import SleepFrame, run_test
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from testing.fakes.elevenlabs import FakeElevenLabs

TEXT = "Hello there, how are you?"
MS = 60  # the fake's default ms_per_char


def ws_tts(el: FakeElevenLabs, *, api_key: str = "test", sample_rate: int = 8000, **kw):
    return ElevenLabsTTSService(
        api_key=api_key,
        url=el.ws_url,
        sample_rate=sample_rate,
        settings=ElevenLabsTTSService.Settings(voice="voice-1", model="eleven_flash_v2_5"),
        **kw,
    )


def http_tts(el: FakeElevenLabs, session: aiohttp.ClientSession, *, api_key: str = "test", **kw):
    return ElevenLabsHttpTTSService(
        api_key=api_key,
        base_url=el.http_url,
        aiohttp_session=session,
        sample_rate=8000,
        settings=ElevenLabsHttpTTSService.Settings(voice="voice-1", model="eleven_flash_v2_5"),
        **kw,
    )


async def run(tts, frames, timeout: float = 10.0):
    return await asyncio.wait_for(run_test(tts, frames_to_send=frames), timeout)


def audio_of(frames) -> tuple[np.ndarray, list[TTSAudioRawFrame]]:
    chunks = [f for f in frames if isinstance(f, TTSAudioRawFrame)]
    pcm = np.frombuffer(b"".join(f.audio for f in chunks), dtype="<i2")
    return pcm, chunks


def words_of(frames) -> list[TTSTextFrame]:
    return [f for f in frames if isinstance(f, TTSTextFrame)]


def assert_spoken(frames, text: str, rate: int, words: list[str] | None = None):
    """Started, audio at `rate` lasting len(text)*MS, the words, then Stopped."""
    tts_frames = [
        f for f in frames if isinstance(f, (TTSStartedFrame, TTSAudioRawFrame, TTSStoppedFrame))
    ]
    assert isinstance(tts_frames[0], TTSStartedFrame)
    assert isinstance(tts_frames[-1], TTSStoppedFrame)
    pcm, chunks = audio_of(frames)
    assert chunks and all(c.sample_rate == rate and c.num_channels == 1 for c in chunks)
    assert len(pcm) == round(len(text) * MS * rate / 1000)  # sample-exact duration
    assert 300 < np.sqrt(np.mean(pcm.astype(np.float64) ** 2)) and np.abs(pcm).max() <= 3100
    assert [w.text for w in words_of(frames)] == (words or text.split())


# --------------------------------------------------------------------------- WebSocket service


async def test_ws_speak_frame_audio_words_and_stop():
    async with FakeElevenLabs(api_key="test") as el:
        down, up = await run(ws_tts(el), [TTSSpeakFrame(TEXT)])

        assert not [f for f in up if isinstance(f, ErrorFrame)]
        assert_spoken(down, TEXT, 8000)
        # Word times come from the fake's alignment: word starts at char index * 60 ms
        # (the last word is force-completed by Pipecat at isFinal, stamped with the
        # previous word's time, since no space follows it).
        words = words_of(down)
        t0 = words[0].pts
        starts = [round((w.pts - t0) / 1e6) for w in words[:4]]
        assert starts == [0, 6 * MS, 13 * MS, 17 * MS]

        (conn,) = el.connections
        assert conn.voice_id == "voice-1"
        assert conn.api_key == "test"
        assert conn.query["model_id"] == "eleven_flash_v2_5"
        assert conn.query["output_format"] == "pcm_8000"
        assert conn.query["auto_mode"] == "true"
        assert conn.close_code == 1000  # answered the client's close_socket
        ((context_id, text, received_at),) = el.texts
        assert text == TEXT
        assert el.closed_contexts == [context_id] and el.finals_sent == [context_id]
        assert el.first_audio_sent_at[context_id] >= received_at
        assert el.audio_ms_sent[context_id] == pytest.approx(len(TEXT) * MS)
        keys = ("text", "flush", "close_context", "close_socket")
        kinds = [next(k for k in keys if k in m) for m in conn.messages]
        assert kinds == ["text", "text", "flush", "close_context", "close_socket"]


async def test_ws_llm_turn_two_sentences_one_context():
    async with FakeElevenLabs(api_key="test") as el:
        tts = ElevenLabsTTSService(
            api_key="test",
            url=el.ws_url,
            sample_rate=16000,
            settings=ElevenLabsTTSService.Settings(
                voice="voice-2", model="eleven_turbo_v2_5", stability=0.5
            ),
        )
        tokens = ["Hi ", "there. ", "How ", "are ", "you ", "today? "]
        frames = [LLMFullResponseStartFrame(), *map(LLMTextFrame, tokens), LLMFullResponseEndFrame()]
        down, up = await run(tts, frames)

        assert not [f for f in up if isinstance(f, ErrorFrame)]
        # Two sentences, sent without a space between them: 27 characters of audio.
        spoken = "Hi there.How are you today?"
        assert_spoken(down, spoken, 16000, words=["Hi", "there.", "How", "are", "you", "today?"])
        words = words_of(down)
        t0 = words[0].pts
        # "How" starts after the 9 characters of "Hi there." (the fake's leading space
        # in the second generation completes "there.").
        assert round((words[2].pts - t0) / 1e6) == 9 * MS
        assert el.connections[0].query["model_id"] == "eleven_turbo_v2_5"
        assert el.connections[0].voice_id == "voice-2"
        assert el.connections[0].messages[0]["voice_settings"] == {"stability": 0.5}
        assert [t.text for t in el.texts] == ["Hi there.", "How are you today?"]
        assert len({t.context_id for t in el.texts}) == 1


async def test_ws_ttfb_delays_first_audio():
    async with FakeElevenLabs(ttfb_ms=150) as el:
        down, _ = await run(ws_tts(el), [TTSSpeakFrame("Slow start.")])
        assert_spoken(down, "Slow start.", 8000)
        ((context_id, _, received_at),) = el.texts
        assert el.first_audio_sent_at[context_id] - received_at >= 0.15


async def test_ws_wrong_api_key_closes_1008_and_errors():
    async with FakeElevenLabs(api_key="right") as el:
        tts = ws_tts(el, api_key="wrong", stop_frame_timeout_s=0.5)
        start = time.monotonic()
        down, up = await run(tts, [TTSSpeakFrame(TEXT)])
        assert time.monotonic() - start < 8
        # Which error Pipecat reports first depends on where the close lands (its
        # send, its receive loop, its reconnect's ping); there is always one.
        assert [f for f in up if isinstance(f, ErrorFrame)]
        assert not audio_of(down)[1]
        assert el.connections
        assert all((c.close_code, c.close_reason) == (1008, "Invalid API key") for c in el.connections)
        assert el.texts == []


async def test_ws_wrong_api_key_rejected_at_handshake():
    async with FakeElevenLabs(api_key="right", ws_auth_failure="handshake") as el:
        down, up = await run(ws_tts(el, api_key="wrong"), [TTSSpeakFrame(TEXT)])
        errors = [f.error for f in up if isinstance(f, ErrorFrame)]
        assert any("HTTP 401" in e for e in errors), errors
        assert not audio_of(down)[1]
        assert [c.close_code for c in el.connections] == [401]


async def test_ws_fail_after_messages_closes_1011_then_recovers():
    async with FakeElevenLabs(fail_after_messages=1, fail_connections=1) as el:
        frames = [
            TTSSpeakFrame("First one."),
            SleepFrame(0.3),
            TTSSpeakFrame("Second one."),  # kills the connection: 1011
            SleepFrame(0.3),
            TTSSpeakFrame("Third one."),  # on the reconnected socket
        ]
        down, up = await run(ws_tts(el, stop_frame_timeout_s=0.5), frames)

        assert el.connections[0].close_code == 1011
        assert len(el.connections) >= 2
        errors = [f.error for f in up if isinstance(f, ErrorFrame)]
        assert any("completed with no audio" in e for e in errors), errors
        spoken = {t.text: t.context_id for t in el.texts}
        assert set(spoken) == {"First one.", "Second one.", "Third one."}
        assert el.audio_ms_sent[spoken["First one."]] == pytest.approx(10 * MS)
        assert spoken["Second one."] not in el.audio_ms_sent
        assert el.audio_ms_sent[spoken["Third one."]] == pytest.approx(10 * MS)
        assert len(audio_of(down)[0]) == 20 * MS * 8


# --------------------------------------------------------------------------- HTTP service


async def test_http_service_streams_audio_with_timestamps():
    async with FakeElevenLabs(api_key="test") as el, aiohttp.ClientSession() as session:
        down, up = await run(http_tts(el, session), [TTSSpeakFrame(TEXT)])

        assert not [f for f in up if isinstance(f, ErrorFrame)]
        assert_spoken(down, TEXT, 8000)
        words = words_of(down)
        starts = [round((w.pts - words[0].pts) / 1e6) for w in words]
        assert starts == [0, 6 * MS, 13 * MS, 17 * MS, 21 * MS]
        (req,) = el.http_requests
        assert req.path == "/v1/text-to-speech/voice-1/stream/with-timestamps"
        assert req.query["output_format"] == "pcm_8000"
        assert req.api_key == "test" and req.status == 200
        assert req.body["text"] == TEXT and req.body["model_id"] == "eleven_flash_v2_5"
        assert req.first_audio_at >= req.received_at


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"reject_status": 500}, "Fake error 500"),
        ({"reject_status": 429}, "too_many_concurrent_requests"),
        ({"api_key": "right"}, "invalid_api_key"),
    ],
)
async def test_http_errors_become_error_frames(kwargs, needle):
    async with FakeElevenLabs(**kwargs) as el, aiohttp.ClientSession() as session:
        down, up = await run(http_tts(el, session, stop_frame_timeout_s=0.3), [TTSSpeakFrame(TEXT)])
        errors = [f.error for f in up if isinstance(f, ErrorFrame)]
        assert any(needle in e for e in errors), errors
        assert not audio_of(down)[1]
        assert el.http_requests[0].status == kwargs.get("reject_status", 401)


# --------------------------------------------------------------------------- raw protocol


async def _collect(ws, context_ids: set[str]) -> dict[str, list[dict]]:
    """Messages per context until every context in `context_ids` sent isFinal."""
    got: dict[str, list[dict]] = {c: [] for c in context_ids}
    pending = set(context_ids)
    while pending:
        msg = json.loads(await asyncio.wait_for(ws.recv(), 5))
        got[msg["contextId"]].append(msg)
        if msg.get("isFinal"):
            pending.discard(msg["contextId"])
    return got


@pytest.mark.parametrize("fmt", ["pcm_8000", "pcm_22050", "pcm_44100", "ulaw_8000"])
async def test_raw_ws_alignment_and_audio_match(fmt):
    rate = int(fmt.split("_")[1])
    width = 1 if fmt.startswith("ulaw") else 2
    async with FakeElevenLabs() as el:
        url = f"{el.ws_url}/v1/text-to-speech/v/multi-stream-input?model_id=m&output_format={fmt}"
        async with connect(url, additional_headers={"xi-api-key": "k"}) as ws:
            await ws.send(json.dumps({"text": " ", "context_id": "c"}))
            await ws.send(json.dumps({"text": "Abc de. ", "context_id": "c"}))  # buffered: no auto_mode
            await ws.send(json.dumps({"context_id": "c", "close_context": True}))
            msgs = (await _collect(ws, {"c"}))["c"]
        assert msgs[-1] == {"isFinal": True, "contextId": "c"}
        chars = []
        for m in msgs[:-1]:
            a = m["alignment"]
            n_bytes = len(base64.b64decode(m["audio"]))
            # Each message's times restart at zero and end where its audio ends.
            assert a["charStartTimesMs"][0] == 0
            end_ms = a["charStartTimesMs"][-1] + a["charDurationsMs"][-1]
            assert end_ms == pytest.approx(n_bytes / width / rate * 1000, abs=1e-3)
            assert m["normalizedAlignment"] == a
            chars += a["chars"]
        assert "".join(chars) == " Abc de. "  # leading zero-duration space + the text
        assert sum(len(base64.b64decode(m["audio"])) for m in msgs[:-1]) == 8 * MS * rate // 1000 * width


async def test_raw_ws_concurrent_connections_and_contexts():
    async with FakeElevenLabs(ttfb_ms=20) as el:

        async def client(i: int):
            url = f"{el.ws_url}/v1/text-to-speech/v{i}/multi-stream-input?output_format=pcm_16000&auto_mode=true"
            async with connect(url, additional_headers={"xi-api-key": "k"}) as ws:
                ids = {f"{i}-a", f"{i}-b"}
                for cid in sorted(ids):
                    await ws.send(json.dumps({"text": " ", "context_id": cid}))
                    await ws.send(json.dumps({"text": "x" * (i + 1) + " ", "context_id": cid}))
                    await ws.send(json.dumps({"context_id": cid, "close_context": True}))
                got = await _collect(ws, ids)
                await ws.send(json.dumps({"close_socket": True}))
                await ws.wait_closed()
                return i, got

        results = await asyncio.gather(*(client(i) for i in range(8)))
        for i, got in results:
            for msgs in got.values():
                audio = b"".join(base64.b64decode(m["audio"]) for m in msgs if "audio" in m)
                assert len(audio) == (i + 2) * MS * 16 * 2
        assert len(el.connections) == 8 and all(c.close_code == 1000 for c in el.connections)
        assert len(el.finals_sent) == 16


async def test_raw_ws_policy_violations_close_1008():
    async with FakeElevenLabs(max_contexts=2) as el:
        base = f"{el.ws_url}/v1/text-to-speech/v/multi-stream-input?output_format=pcm_8000"
        # voice_settings may only come in a context's first message, or unchanged.
        async with connect(base, additional_headers={"xi-api-key": "k"}) as ws:
            await ws.send(json.dumps({"text": "", "context_id": "c"}))  # keepalive opens c
            await ws.send(json.dumps({"text": " ", "context_id": "c", "voice_settings": {"speed": 1}}))
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 5)
            assert closed.value.rcvd.code == 1008 and "voice_settings" in closed.value.rcvd.reason
        # Too many open contexts.
        async with connect(base, additional_headers={"xi-api-key": "k"}) as ws:
            for cid in "abc":
                await ws.send(json.dumps({"text": " ", "context_id": cid}))
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 5)
            assert closed.value.rcvd.code == 1008
        # Inactivity: no text (keepalives included) for inactivity_timeout_s.
        el.inactivity_timeout_s = 0.3
        async with connect(base, additional_headers={"xi-api-key": "k"}) as ws:
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 5)
            assert closed.value.rcvd.code == 1008 and "timeout" in closed.value.rcvd.reason
        # Key in the first message instead of the header.
        async with FakeElevenLabs(api_key="k2") as el2:
            url = f"{el2.ws_url}/v1/text-to-speech/v/multi-stream-input?output_format=pcm_8000&auto_mode=true"
            async with connect(url) as ws:
                await ws.send(json.dumps({"text": " ", "context_id": "c", "xi_api_key": "k2"}))
                await ws.send(json.dumps({"text": "Ok ", "context_id": "c", "flush": True}))
                assert "audio" in json.loads(await asyncio.wait_for(ws.recv(), 5))


async def test_shutdown_closes_live_connections():
    el = FakeElevenLabs(chunk_delay_ms=50)
    await el.start()
    url = f"{el.ws_url}/v1/text-to-speech/v/multi-stream-input?output_format=pcm_8000&auto_mode=true"
    ws = await connect(url, additional_headers={"xi-api-key": "k"})
    await ws.send(json.dumps({"text": "a long sentence still being spoken ", "context_id": "c"}))
    await asyncio.wait_for(ws.recv(), 5)
    start = time.monotonic()
    await el.stop()
    assert time.monotonic() - start < 3
    await asyncio.wait_for(ws.wait_closed(), 3)
    assert ws.close_code == 1001
