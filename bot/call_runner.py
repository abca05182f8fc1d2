"""Run one call: serializer + transport + pipeline for a session, until hang-up.

Everything created here belongs to this call and is released when it returns.
"""

from __future__ import annotations

import asyncio
import math
import time

from fastapi import WebSocket
from loguru import logger

from pipecat.frames.frames import EndFrame
from pipecat.workers.runner import WorkerRunner

from bot.call_session import CallSession
from bot.campaigns import Campaign
from bot.settings import Settings
from pipelines.builder import build_call_worker, greeting_frame
from pipelines.exotel_transport import ExotelTransport, ExotelTransportParams
from serializers.exotel import ExotelFrameSerializer

STOP_REASONS = {"callended": "caller_hangup", "stopped": "stream_stopped"}


def build_transport(
    websocket: WebSocket, session: CallSession, settings: Settings, prefetched: list[str | bytes]
) -> ExotelTransport:
    """The Exotel transport for one call, sized so each write is one legal Exotel payload."""
    serializer = ExotelFrameSerializer(
        stream_sid=session.stream_sid,
        call_sid=session.call_sid,
        params=ExotelFrameSerializer.InputParams(
            exotel_sample_rate=settings.exotel_sample_rate or session.sample_rate,
            payload_bytes=settings.exotel_payload_bytes,
        ),
    )
    bytes_per_10ms = session.sample_rate // 100 * 2
    params = ExotelTransportParams(
        serializer=serializer,
        audio_in_enabled=True,
        audio_out_enabled=True,
        audio_in_sample_rate=session.sample_rate,
        audio_out_sample_rate=session.sample_rate,
        audio_out_10ms_chunks=math.ceil(settings.exotel_payload_bytes / bytes_per_10ms),
        playback_lead_secs=settings.playback_lead_secs,
        mark_grace_secs=settings.mark_grace_secs,
        allowed_origins=[],
    )
    return ExotelTransport(websocket, params, prefetched, call_sid=session.call_sid)


async def run_call(
    websocket: WebSocket,
    session: CallSession,
    campaign: Campaign,
    settings: Settings,
    prefetched: list[str | bytes],
) -> CallSession:
    """Run the call's pipeline until it ends; fill the session's end reason and metrics."""
    log = logger.bind(call_sid=session.call_sid)
    transport = build_transport(websocket, session, settings, prefetched)
    worker = build_call_worker(session, campaign, transport)

    @transport.event_handler("on_client_disconnected")
    async def _socket_closed(_transport, _websocket):
        session.end("socket_closed")
        await worker.cancel(reason="socket closed")

    @transport.event_handler("on_exotel_stop")
    async def _exotel_stop(_transport, reason):
        session.end(STOP_REASONS.get(str(reason), f"exotel_{reason}"))
        await worker.cancel(reason=f"exotel stop: {reason}")

    async def _hang_up_at_max_duration():
        await asyncio.sleep(settings.max_call_secs)
        log.info(f"call reached max duration ({settings.max_call_secs:g}s); hanging up")
        session.end("max_duration")
        await worker.queue_frame(EndFrame())

    await worker.queue_frame(greeting_frame(session, campaign))
    runner = WorkerRunner(handle_sigint=False, handle_sigterm=False)
    await runner.add_workers(worker)
    limit = asyncio.create_task(_hang_up_at_max_duration(), name=f"max-duration-{session.call_sid}")
    try:
        await runner.run()
    finally:
        limit.cancel()
        session.finish("bot_hangup")
        _record_metrics(session, transport)
        log.info(f"call ended: {session.summary()}")
    return session


def _record_metrics(session: CallSession, transport: ExotelTransport) -> None:
    output = transport.output()
    serializer = transport.serializer
    if output.first_audio_sent_at is not None:
        session.metrics["first_audio_after_start_secs"] = (
            output.first_audio_sent_at - session.start_received_monotonic
        )
    session.metrics["media_out"] = serializer.stats["media_out"]
    session.metrics["marks_sent"] = serializer.marks.sent
    session.metrics["marks_echoed"] = serializer.marks.echoed
    session.metrics["clears_sent"] = serializer.stats["clears_out"]
    session.metrics["bad_messages_in"] = serializer.problems.total
    session.metrics["duration_secs"] = time.monotonic() - session.socket_opened_monotonic
