"""Run one call: serializer + transport + pipeline for a session, until hang-up.

Everything created here belongs to this call and is released when it returns.
"""

from __future__ import annotations

import asyncio
import math
import os
import time

from fastapi import WebSocket
from loguru import logger
from pipecat.frames.frames import EndFrame, ErrorFrame
from pipecat.services.stt_service import STTService
from pipecat.workers.runner import WorkerRunner

from bot.config.campaigns import Campaign
from bot.config.settings import Settings
from bot.server.recordings import keep_recording
from pipelines.apology import fallback_apology
from pipelines.builder import (
    CallPipeline,
    build_call_pipeline,
    build_call_recorder,
    greeting_frames,
)
from pipelines.call_session import CallSession
from pipelines.exotel_transport import ExotelTransport, ExotelTransportParams
from pipelines.prepared_speech import PreparedLine, new_context_id
from pipelines.speech_cache import SpeechCache, speech_key
from pipelines.voices import LOCAL_TTS, effective_tts, prepare_line
from serializers.exotel import ExotelFrameSerializer

STOP_REASONS = {"callended": "caller_hangup", "stopped": "stream_stopped"}
STT_ERRORS_TOLERATED = 2  # the STT reconnects by itself; more failures than this end the call


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
        audio_in_sample_rate=session.pipeline_in_rate,
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
    cache: SpeechCache,
) -> CallSession:
    """Run the call's pipeline until it ends; fill the session's end reason and metrics."""
    greeting = campaign.render_greeting(session.lead)
    # The prepared greeting is read (in a worker thread) while the pipeline is being built.
    reading_greeting = asyncio.create_task(
        cache.get(speech_key(effective_tts(campaign, settings), greeting, session.sample_rate))
    )
    try:
        transport = build_transport(websocket, session, settings, prefetched)
        recorder = transport.output().recorder = build_call_recorder(session, campaign, settings)
        try:
            prepared_greeting = await asyncio.wait_for(reading_greeting, GREETING_READ_SECS)
        except TimeoutError:  # a slow object store: the greeting is synthesized live instead
            logger.bind(call_sid=session.call_sid).warning(
                f"prepared greeting not read within {GREETING_READ_SECS:g} s; synthesizing it live")
            prepared_greeting = None
        head, rest = greeting_head(prepared_greeting, session.sample_rate, settings.exotel_payload_bytes)
        greeting_context = new_context_id()  # the head and the rest are one line
        if head:
            # The caller hears the greeting now, not once the pipeline is built and started
            # (~15 ms idle, far more under load); the pipeline plays the rest.
            if recorder is not None:
                recorder.start()
            await transport.output().play_ahead(head, greeting_context, greeting)
        call = build_call_pipeline(session, campaign, transport, settings, recorder)
    except BaseException:
        reading_greeting.cancel()
        raise
    worker, control = call.worker, call.control
    session.control = control
    # Ready before anything can fail: the TTS may be the part that does (see pipelines/apology.py).
    control.prepared_apology = fallback_apology(campaign, settings, session.sample_rate)
    stt_errors = 0

    @transport.event_handler("on_client_disconnected")
    async def _socket_closed(_transport, _websocket):
        session.end("socket_closed")
        await worker.cancel(reason="socket closed")

    @transport.event_handler("on_exotel_stop")
    async def _exotel_stop(_transport, reason):
        session.end(STOP_REASONS.get(str(reason), f"exotel_{reason}"))
        await worker.cancel(reason=f"exotel stop: {reason}")

    @worker.event_handler("on_pipeline_started")
    async def _greet(_worker, _frame):
        session.metrics["pipeline_started_after_start_secs"] = time.monotonic() - session.start_received_monotonic
        if call.recorder is not None and not head:
            call.recorder.start()
        if prepared_greeting:
            session.metrics["greeting_prepared"] = 1
            # The transcript has the greeting once heard (or as far as it was, if cut).
            await call.injector.play_prepared(rest, "" if head else greeting, greeting_context)
        else:
            await worker.queue_frames(greeting_frames(greeting))

    @worker.event_handler("on_pipeline_error")
    async def _provider_failed(_worker, frame: ErrorFrame):
        nonlocal stt_errors
        source = type(frame.processor).__name__ if frame.processor else "pipeline"
        logger.warning(f"provider error from {source}: {frame.error}")
        if isinstance(frame.processor, STTService) and not frame.fatal:
            stt_errors += 1
            if stt_errors <= STT_ERRORS_TOLERATED:
                return
        await control.apologize_and_end(f"{source}: {frame.error}"[:300])

    if prepared_greeting:
        call.context.add_message({"role": "assistant", "content": greeting})
    background = [
        asyncio.create_task(_prepare_during_call(call, cache, campaign, settings, session.sample_rate)),
        asyncio.create_task(_hang_up_at_max_duration(call, session, settings, campaign)),
    ]
    runner = WorkerRunner(handle_sigint=False, handle_sigterm=False)
    await runner.add_workers(worker)
    try:
        await runner.run()
    finally:
        for task in background:
            task.cancel()
        transport.output().lines.cut(time.monotonic())  # a line still playing ends with the call
        call.watch.stop()
        if call.recorder is not None:
            recording = await call.recorder.finish()
            session.recording_path = (await keep_recording(settings, recording, session.call_sid)
                                      if recording else None)
        session.finish("bot_hangup")
        if session.outcome is None:
            session.set_outcome("error" if session.end_reason == "error" else "no_outcome")
        _record_metrics(session, transport, call)
        logger.info(f"call ended: {session.log_summary()}")
    return session


# The longest the caller's first audio waits on reading the prepared greeting (a file: ~1 ms;
# object storage in the same region: tens of ms); past it, the greeting is synthesized live.
GREETING_READ_SECS = 0.5

# How much of a prepared greeting goes out before the pipeline has started: the pipeline must
# be running (and playing the rest) before this has played, or the caller hears a gap.
GREETING_HEAD_SECS = 1.0


def greeting_head(pcm: bytes | None, sample_rate: int, payload_bytes: int) -> tuple[bytes, bytes]:
    """Split a prepared greeting into what is sent at once and what the pipeline plays: the
    head is whole Exotel payloads, at most GREETING_HEAD_SECS, and at least one payload is
    left for the pipeline (whose output transport then marks, and announces, the utterance).
    No head when the greeting is shorter than two payloads."""
    if not pcm:
        return b"", pcm or b""
    payloads = min(int(GREETING_HEAD_SECS * sample_rate * 2) // payload_bytes, len(pcm) // payload_bytes - 1)
    if payloads < 1:
        return b"", pcm
    cut = payloads * payload_bytes
    return pcm[:cut], pcm[cut:]


async def _prepare_during_call(
    call: CallPipeline, cache: SpeechCache, campaign: Campaign, settings: Settings, rate: int
) -> None:
    """Synthesize the lead's own apology and the fillers while the call runs (cached for later
    calls too). The apology is needed only for a remote voice, which can fail: until it is
    ready (or if that voice fails to make it) the process's prepared offline apology stands in.
    A local voice (Piper, espeak-ng) speaks the apology live when it is needed."""
    lead = call.control.session.lead
    if effective_tts(campaign, settings).provider not in LOCAL_TTS:
        text = campaign.render(campaign.apology, lead)
        apology = await prepare_line(cache, campaign, settings, text, rate)
        if apology:
            call.control.prepared_apology = PreparedLine(apology, text)
    if campaign.fillers.enabled:
        fillers = [await prepare_line(cache, campaign, settings, phrase, rate) for phrase in campaign.fillers.phrases]
        call.injector.set_fillers([f for f in fillers if f])


async def _hang_up_at_max_duration(
    call: CallPipeline, session: CallSession, settings: Settings, campaign: Campaign
) -> None:
    limit = min(settings.max_call_secs, campaign.max_call_secs)
    await asyncio.sleep(limit)
    logger.info(f"call reached max duration ({limit:g}s); hanging up")
    session.end("max_duration")
    session.set_outcome("no_outcome", "maximum call length reached")
    if not await call.control.end_call(session.outcome or "no_outcome"):
        await call.worker.queue_frame(EndFrame())


def _record_metrics(session: CallSession, transport: ExotelTransport, call: CallPipeline) -> None:
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
    session.metrics["early_clear_leads_ms"] = [round(lead * 1000, 1) for lead in transport.early_clear_leads]
    session.metrics["early_clear_holds_expired"] = transport.early_clear_holds_expired
    session.metrics["audio_dropped_in_hold_bytes"] = transport.audio_dropped_in_hold_bytes
    session.metrics["pauses"] = len(transport.pauses_at)  # the caller spoke over the bot
    session.metrics["pauses_resumed"] = len(transport.resumes_at)  # ... a backchannel: the line went on
    session.metrics["pauses_interrupted"] = transport.pauses_interrupted  # ... a real interruption
    session.metrics["bad_messages_in"] = serializer.problems.total
    session.metrics["fillers_played"] = call.injector.played
    if call.stt_gate is not None:
        session.metrics["stt_audio_sent_secs"] = round(call.stt_gate.sent_secs, 2)
        session.metrics["stt_audio_held_back_secs"] = round(call.stt_gate.held_back_secs, 2)
    session.metrics["duration_secs"] = time.monotonic() - session.socket_opened_monotonic
    session.metrics["worker_pid"] = os.getpid()
