"""The Deepgram fake against the real Pipecat DeepgramSTTService and deepgram-sdk (no mocks)."""

from __future__ import annotations

import asyncio
import json
import time

import numpy as np
import pytest
from deepgram import AsyncDeepgramClient, DeepgramClientEnvironment
from deepgram.listen.v1.types import (
    ListenV1Finalize,
    ListenV1Metadata,
    ListenV1Results,
    ListenV1SpeechStarted,
    ListenV1UtteranceEnd,
)
from pipecat.frames.frames import (
    EndFrame,
    ErrorFrame,
    Frame,
    InputAudioRawFrame,
    InterimTranscriptionFrame,
    TranscriptionFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineWorker
from pipecat.processors.frame_processor import FrameDirection
from pipecat.services.deepgram.stt import DeepgramSTTService
from pipecat.tests.utils import QueuedFrameProcessor
from pipecat.workers.runner import WorkerRunner
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from bot.simulator.caller_speech import speak
from testing.fakes.deepgram import FakeDeepgram

RATE = 8000
CHUNK = RATE * 2 // 50  # 20 ms of 16-bit mono


def silence(seconds: float) -> bytes:
    return b"\0" * (int(RATE * seconds) * 2)


def tone(seconds: float, freq: float = 440.0, amp: int = 6000) -> bytes:
    t = np.arange(int(RATE * seconds)) / RATE
    return (amp * np.sin(2 * np.pi * freq * t)).astype("<i2").tobytes()


def audio_frames(pcm: bytes) -> list[InputAudioRawFrame]:
    return [
        InputAudioRawFrame(audio=pcm[i : i + CHUNK], sample_rate=RATE, num_channels=1)
        for i in range(0, len(pcm), CHUNK)
    ]


def make_stt(dg: FakeDeepgram, api_key: str = "test", **settings) -> DeepgramSTTService:
    return DeepgramSTTService(
        api_key=api_key,
        base_url=dg.base_url,
        sample_rate=RATE,
        settings=DeepgramSTTService.Settings(model="nova-3", language="en-IN", **settings),
    )


def of_type(frames, cls) -> list:
    return [f for f in frames if isinstance(f, cls)]


async def until(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(0.01)


class Run:
    """The real service in a real pipeline; the test feeds it and waits on what comes out.

    Like pipecat.tests.utils.run_test, but the feeder waits for conditions instead of
    sleeping for fixed times, so slow machines don't turn into flaky tests.
    """

    def __init__(self, stt: DeepgramSTTService):
        self.stt = stt
        self.up_q: asyncio.Queue[Frame] = asyncio.Queue()
        self.down_q: asyncio.Queue[Frame] = asyncio.Queue()
        self.down: list[Frame] = []
        self.up: list[Frame] = []
        source = QueuedFrameProcessor(queue=self.up_q, queue_direction=FrameDirection.UPSTREAM)
        sink = QueuedFrameProcessor(queue=self.down_q, queue_direction=FrameDirection.DOWNSTREAM)
        self.worker = PipelineWorker(Pipeline([source, stt, sink]), cancel_on_idle_timeout=False)

    def _drain(self) -> None:
        while not self.down_q.empty():
            self.down.append(self.down_q.get_nowait())
        while not self.up_q.empty():
            self.up.append(self.up_q.get_nowait())

    def frames(self, cls) -> list:
        self._drain()
        return of_type(self.down + self.up, cls)

    async def send(self, frames: list[Frame]) -> None:
        await self.worker.queue_frames(frames)

    async def wait_for(self, cls, n: int = 1, timeout: float = 5.0) -> list:
        await until(lambda: len(self.frames(cls)) >= n, timeout)
        return self.frames(cls)

    async def __call__(self, feed) -> Run:
        started = asyncio.Event()

        @self.worker.event_handler("on_pipeline_started")
        async def _started(worker, frame):
            started.set()

        async def drive():
            await asyncio.wait_for(started.wait(), timeout=5)
            await feed(self)
            await self.worker.queue_frame(EndFrame())

        runner = WorkerRunner(handle_sigint=False)
        await runner.add_workers(self.worker)
        await asyncio.wait_for(asyncio.gather(runner.run(), drive()), timeout=15)
        self._drain()
        return self


async def test_scripted_transcripts_come_out_of_the_real_service():
    hello, book = speak("hello there", RATE), speak("book a table for two", RATE)
    pcm = silence(0.2) + hello + silence(0.6) + book + silence(0.6)
    async with FakeDeepgram(script=["Hello there.", "Book a table for two."]) as dg:
        stt = make_stt(dg, keyterm=["Exotel", "Pipecat"], endpointing=300)

        async def feed(run: Run):
            await run.send(audio_frames(pcm))
            await run.wait_for(TranscriptionFrame, 2)

        run = await Run(stt)(feed)

    finals = run.frames(TranscriptionFrame)
    assert [f.text for f in finals] == ["Hello there.", "Book a table for two."]
    assert isinstance(finals[0].result, ListenV1Results)
    assert finals[0].result.is_final and finals[0].result.speech_final
    assert run.frames(InterimTranscriptionFrame)  # interim_results=true by default
    assert not run.frames(ErrorFrame)

    [conn] = dg.accepted
    q = conn.query
    assert (q["model"], q["language"], q["sample_rate"], q["encoding"], q["channels"]) == (
        "nova-3",
        "en-IN",
        "8000",
        "linear16",
        "1",
    )
    assert conn.keyterms == ["Exotel", "Pipecat"] and conn.endpointing_ms == 300
    assert conn.headers["authorization"] == "Token test"
    assert conn.path == "/v1/listen"
    assert conn.audio_bytes == len(pcm)
    assert conn.transcripts == ["Hello there.", "Book a table for two."]
    u0, u1 = conn.utterances
    # Each utterance lies inside the stretch where its speech was placed (Piper pads
    # its speech with a little silence, and its length varies from run to run).
    hello_end = 0.2 + len(hello) / 2 / RATE
    assert 0.2 <= u0.start < u0.end <= hello_end + 0.02 and u0.end - u0.start > 0.3
    assert hello_end + 0.6 <= u1.start < u1.end <= hello_end + 0.6 + len(book) / 2 / RATE + 0.02
    assert len(dg.finals_sent_at) == 2 and dg.finals_sent_at[0] <= dg.finals_sent_at[1]
    assert dg.transcripts_sent == ["Hello there.", "Book a table for two."]
    await until(lambda: conn.closed_at is not None)
    assert conn.control_messages[-1] == {"type": "CloseStream"}


async def test_finalize_flushes_pending_utterance_with_from_finalize():
    # 200 ms of trailing silence never reaches the 2 s endpointing: only Finalize ends it.
    pcm = silence(0.1) + speak("hello there", RATE) + silence(0.2)
    async with FakeDeepgram(script=["hello there"], endpointing_ms=2000) as dg:
        stt = make_stt(dg)

        async def feed(run: Run):
            await run.send(audio_frames(pcm))
            await until(lambda: dg.accepted and dg.accepted[0].audio_bytes == len(pcm))
            assert not dg.transcripts_sent  # no endpoint yet
            await run.send([VADUserStoppedSpeakingFrame(stop_secs=0.2)])
            await run.wait_for(TranscriptionFrame)

        run = await Run(stt)(feed)

    [final] = run.frames(TranscriptionFrame)
    assert final.text == "hello there"
    assert final.result.from_finalize is True and final.finalized  # Pipecat confirmed it
    [conn] = dg.accepted
    assert {"type": "Finalize"} in conn.control_messages
    assert conn.utterances[0].from_finalize


async def test_bad_api_key_is_rejected_with_401_and_surfaces_as_error_frame():
    async with FakeDeepgram(script=["never"], api_key="right-key") as dg:
        stt = make_stt(dg, api_key="wrong-key")

        async def feed(run: Run):
            await run.send(audio_frames(tone(0.3) + silence(0.5)))
            await run.wait_for(ErrorFrame)

        run = await Run(stt)(feed)

    errors = run.frames(ErrorFrame)
    assert "401" in errors[0].error
    assert not run.frames(TranscriptionFrame)
    assert [c.status for c in dg.connections] == [401]  # a 4xx is not retried
    assert dg.connections[0].api_key == "wrong-key" and not dg.accepted


async def test_fail_after_utterances_closes_with_1011_and_service_reconnects():
    # Pipecat waits its minimum backoff (4 s) before reconnecting after a dropped socket.
    utterance = silence(0.1) + tone(0.5) + silence(0.5)
    async with FakeDeepgram(script=["first", "second"], fail_after_utterances=1) as dg:
        stt = make_stt(dg)

        async def feed(run: Run):
            await run.send(audio_frames(utterance))
            await run.wait_for(TranscriptionFrame)
            errors = await run.wait_for(ErrorFrame)  # the 1011 reaches the service
            assert "1011" in errors[0].error
            await until(lambda: len(dg.accepted) == 2, timeout=10)  # Pipecat's backoff
            while dg.accepted[1].audio_bytes == 0:  # audio flows on the new socket
                await run.send(audio_frames(silence(0.02)))
                await asyncio.sleep(0.02)
            await run.send(audio_frames(utterance))
            await run.wait_for(TranscriptionFrame, 2)

        run = await Run(stt)(feed)

    # Each connection starts the script again: the new one says "first" too.
    assert [f.text for f in run.frames(TranscriptionFrame)] == ["first", "first"]
    first, second = dg.accepted
    assert first.failed_on_purpose and first.close_code == 1011
    assert first.transcripts == ["first"] and second.transcripts == ["first"]


async def test_sdk_parses_every_message_type():
    """SpeechStarted / Results / UtteranceEnd / Metadata, through the SDK's own parser."""
    async with FakeDeepgram(script=["one two three"], latency_ms=150) as dg:
        client = AsyncDeepgramClient(
            api_key="test",
            environment=DeepgramClientEnvironment(
                base=dg.base_url, production=dg.base_url.replace("http", "ws"), agent="", agent_rest=""
            ),
        )
        async with client.listen.v1.connect(
            model="nova-3",
            encoding="linear16",
            sample_rate="8000",
            vad_events="true",
            utterance_end_ms="1000",
            interim_results="false",
        ) as conn:
            await conn.send_media(silence(0.2) + tone(0.6) + silence(1.2))
            received = [await conn.recv() for _ in range(3)]
            await conn.send_finalize(ListenV1Finalize(type="Finalize"))  # nothing pending now
            received.append(await conn.recv())
            await conn.send_close_stream()
            received.append(await conn.recv())

    started, final, utt_end, empty, meta = received
    assert isinstance(started, ListenV1SpeechStarted) and abs(started.timestamp - 0.2) < 0.05
    assert isinstance(final, ListenV1Results)
    assert final.channel.alternatives[0].transcript == "one two three"
    assert final.is_final and final.speech_final and not final.from_finalize
    assert [w.word for w in final.channel.alternatives[0].words] == ["one", "two", "three"]
    assert isinstance(utt_end, ListenV1UtteranceEnd) and abs(utt_end.last_word_end - 0.8) < 0.05
    assert isinstance(empty, ListenV1Results) and empty.from_finalize
    assert empty.channel.alternatives[0].transcript == ""
    assert isinstance(meta, ListenV1Metadata) and abs(meta.duration - 2.0) < 0.01

    [rec] = dg.accepted
    # Strict validation, not only the SDK's lenient construct: every field it requires is there.
    models = {
        "Results": ListenV1Results,
        "SpeechStarted": ListenV1SpeechStarted,
        "UtteranceEnd": ListenV1UtteranceEnd,
        "Metadata": ListenV1Metadata,
    }
    for msg in rec.messages_sent:
        models[msg["type"]].model_validate(json.loads(json.dumps(msg)))
    # latency_ms holds back the final past the moment its end was decided.
    u = rec.utterances[0]
    assert u.final_sent_at - u.ended_at >= 0.14
    assert dg.finals_sent_at == [u.final_sent_at]


async def test_many_concurrent_connections_are_independent():
    def script(index: int, audio: bytes) -> str:
        return f"utterance {index} of {len(audio) // (2 * RATE // 10)} tenths"

    async def client(n_utterances: int) -> list[dict]:
        url = f"{dg.ws_url}?model=nova-3&encoding=linear16&sample_rate={RATE}&endpointing=200"
        async with connect(url, additional_headers={"Authorization": "Token test"}) as ws:
            for _ in range(n_utterances):
                await ws.send(tone(0.5) + silence(0.4))
            await ws.send(json.dumps({"type": "KeepAlive"}))
            await ws.send(json.dumps({"type": "CloseStream"}))
            return [json.loads(m) async for m in ws]

    async with FakeDeepgram(script=script) as dg:
        results = await asyncio.gather(*(client(n) for n in range(1, 9)))

    for n, messages in enumerate(results, start=1):
        finals = [m for m in messages if m["type"] == "Results" and m["is_final"]]
        texts = [f["channel"]["alternatives"][0]["transcript"] for f in finals]
        assert texts == [f"utterance {i} of 5 tenths" for i in range(n)]
        assert messages[-1]["type"] == "Metadata"
    assert sorted(len(c.utterances) for c in dg.accepted) == list(range(1, 9))
    assert len(dg.finals_sent_at) == sum(range(1, 9))


async def test_reject_status_answers_the_handshake():
    async with FakeDeepgram(reject_status=500) as dg:
        with pytest.raises(InvalidStatus) as info:
            async with connect(f"{dg.ws_url}?model=nova-3", additional_headers={"Authorization": "Token test"}):
                pass
    assert info.value.response.status_code == 500
    assert [c.status for c in dg.connections] == [500]
