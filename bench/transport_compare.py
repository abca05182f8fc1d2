"""Our Exotel transport vs Pipecat's built-in one, on the same TTS-free audio.

A minimal standalone FastAPI app (no STT/LLM/TTS) serves two media sockets:

- `/ours`:    pipelines.exotel_transport.ExotelTransport + serializers.exotel.ExotelFrameSerializer
- `/builtin`: pipecat's FastAPIWebsocketTransport + pipecat.serializers.exotel.ExotelFrameSerializer
              (as Pipecat's Exotel example builds it: default 40 ms output chunks)

Each call plays the same prepared PCM (Piper speech at 8 kHz, `seconds` long), pushed into the
pipeline as TTSAudioRawFrames of `frame_bytes` (odd-sized on purpose, like a TTS's chunks),
while the emulated Exotel streams caller silence and hangs up at a fixed time. Measured per
variant: protocol violations (payload not a multiple of 320 / outside 3200..100000 bytes, as
the emulator reports them), playback gaps, first-media latency, and process CPU per call.
Used by bench/capacity.py; runnable alone:

    .venv/bin/python bench/transport_compare.py [--calls 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

import psutil
import uvicorn
from fastapi import FastAPI, WebSocket

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipecat.frames.frames import TTSAudioRawFrame, TTSStartedFrame, TTSStoppedFrame  # noqa: E402
from pipecat.pipeline.pipeline import Pipeline  # noqa: E402
from pipecat.pipeline.worker import PipelineParams, PipelineWorker  # noqa: E402
from pipecat.serializers.exotel import ExotelFrameSerializer as BuiltinSerializer  # noqa: E402
from pipecat.transports.websocket.fastapi import (  # noqa: E402
    FastAPIWebsocketParams,
    FastAPIWebsocketTransport,
)
from pipecat.workers.runner import WorkerRunner  # noqa: E402

from bot.server.local_server import free_port  # noqa: E402
from bot.server.media_handshake import read_handshake  # noqa: E402
from bot.simulator.caller_speech import speak  # noqa: E402
from bot.simulator.exotel_emulator import EmulatorConfig, ExotelEmulator, HangUp  # noqa: E402
from pipelines.exotel_transport import ExotelTransport, ExotelTransportParams  # noqa: E402
from serializers.exotel import ExotelFrameSerializer as OurSerializer  # noqa: E402

RATE = 8000
TEXT = ("Thank you for calling. This is a short recording used to compare two ways of "
        "sending audio to Exotel, and it lasts a few seconds.")


def prepared_audio(seconds: float) -> bytes:
    """`seconds` of real speech at 8 kHz (Piper, cached), repeated/trimmed to length."""
    pcm = speak(TEXT)
    want = int(seconds * RATE) * 2
    while len(pcm) < want:
        pcm += pcm
    return pcm[:want]


def audio_frames(pcm: bytes, frame_bytes: int) -> list:
    frames = [TTSStartedFrame(context_id="bench")]
    for i in range(0, len(pcm), frame_bytes):
        frames.append(TTSAudioRawFrame(audio=pcm[i:i + frame_bytes], sample_rate=RATE,
                                       num_channels=1, context_id="bench"))
    frames.append(TTSStoppedFrame(context_id="bench"))
    return frames


def make_app(pcm: bytes, frame_bytes: int) -> FastAPI:
    app = FastAPI()

    async def run(transport, websocket_closed_handlers: list[str]) -> None:
        worker = PipelineWorker(
            Pipeline([transport.input(), transport.output()]),
            params=PipelineParams(audio_in_sample_rate=RATE, audio_out_sample_rate=RATE),
            idle_timeout_secs=None, enable_rtvi=False,
        )

        @transport.event_handler("on_client_connected")
        async def _connected(_t, _ws):
            await worker.queue_frames(audio_frames(pcm, frame_bytes))

        for event in websocket_closed_handlers:
            @transport.event_handler(event)
            async def _gone(_t, *_args):
                await worker.cancel(reason="caller gone")

        runner = WorkerRunner(handle_sigint=False, handle_sigterm=False)
        await runner.add_workers(worker)
        await runner.run()

    @app.websocket("/ours")
    async def ours(websocket: WebSocket) -> None:
        await websocket.accept()
        handshake = await read_handshake(websocket, 5.0)
        serializer = OurSerializer(stream_sid=handshake.start.stream_sid, call_sid=handshake.start.call_sid,
                                   params=OurSerializer.InputParams(exotel_sample_rate=RATE))
        params = ExotelTransportParams(
            serializer=serializer, audio_in_enabled=True, audio_out_enabled=True,
            audio_in_sample_rate=RATE, audio_out_sample_rate=RATE,
            audio_out_10ms_chunks=20,  # as bot/call_runner.build_transport: one 3200-byte payload
            allowed_origins=[],
        )
        transport = ExotelTransport(websocket, params, handshake.messages, call_sid=handshake.start.call_sid)
        await run(transport, ["on_client_disconnected", "on_exotel_stop"])

    @app.websocket("/builtin")
    async def builtin(websocket: WebSocket) -> None:
        await websocket.accept()
        stream_sid = None
        while stream_sid is None:  # what Pipecat's Exotel example does: read until `start`
            message = json.loads(await websocket.receive_text())
            if message.get("event") == "start":
                stream_sid = message["start"]["stream_sid"]
        serializer = BuiltinSerializer(stream_sid=stream_sid)
        params = FastAPIWebsocketParams(
            serializer=serializer, audio_in_enabled=True, audio_out_enabled=True,
            add_wav_header=False, audio_in_sample_rate=RATE, audio_out_sample_rate=RATE,
            allowed_origins=[],
        )
        transport = FastAPIWebsocketTransport(websocket, params)
        await run(transport, ["on_client_disconnected"])

    return app


async def compare(calls: int = 10, audio_secs: float = 5.0, hang_up_at: float = 8.0,
                  frame_bytes: int = 2210) -> dict:
    """Run `calls` simultaneous calls against each variant; return the figures."""
    pcm = prepared_audio(audio_secs)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(make_app(pcm, frame_bytes), host="127.0.0.1", port=port,
                                           log_level="warning", ws_max_size=2**22))
    serve = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.02)
    proc = psutil.Process()
    out = {"calls": calls, "audio_secs": audio_secs, "call_secs": hang_up_at, "tts_frame_bytes": frame_bytes,
           "note": "server and emulators share one process; CPU includes both (the emulator side is identical "
                   "for the two variants)", "variants": {}}
    try:
        for name in ("ours", "builtin"):
            cpu0 = sum(proc.cpu_times()[:2])
            t0 = time.monotonic()
            emus = [ExotelEmulator(EmulatorConfig(url=f"ws://127.0.0.1:{port}/{name}", max_secs=30))
                    for _ in range(calls)]
            results = await asyncio.gather(*(e.run([HangUp(at=hang_up_at)]) for e in emus))
            cpu = sum(proc.cpu_times()[:2]) - cpu0
            wall = time.monotonic() - t0
            sizes = [s for r in results for s in r.payload_sizes]
            firsts = sorted(r.first_media_after_start for r in results if r.first_media_after_start is not None)
            out["variants"][name] = {
                "violations": sum(len(r.violations) for r in results),
                "violation_examples": sorted({v.split("s ", 1)[-1] for r in results for v in r.violations})[:5],
                "gaps": sum(len(r.gaps) for r in results),
                "gap_secs_total": round(sum(g for r in results for _, g in r.gaps), 3),
                "media_messages": len(sizes),
                "payload_sizes": sorted(set(sizes))[:8],
                "bytes_played_per_call": round(sum(sizes) / max(1, calls)),
                "first_media_p50": round(firsts[len(firsts) // 2], 4) if firsts else None,
                "first_media_max": round(firsts[-1], 4) if firsts else None,
                "connect_errors": sum(1 for r in results if r.connect_error),
                "cpu_secs": round(cpu, 3),
                "cpu_secs_per_call": round(cpu / calls, 4),
                "cpu_per_call_sec": round(cpu / calls / hang_up_at, 5),
                "wall_secs": round(wall, 2),
            }
            await asyncio.sleep(0.5)
    finally:
        server.should_exit = True
        await serve
    return out


async def _main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=10)
    args = parser.parse_args()
    from bot.config.logging_setup import setup_logging
    setup_logging("WARNING")
    print(json.dumps(await compare(args.calls), indent=2))


if __name__ == "__main__":
    asyncio.run(_main())
