"""Deepgram live STT for a campaign (base URL from settings so tests can use a local fake)."""

from __future__ import annotations

import functools
from collections import deque
from collections.abc import AsyncGenerator

import httpx
from deepgram import AsyncDeepgramClient
from pipecat.frames.frames import Frame
from pipecat.services.deepgram.stt import DeepgramSTTService

from bot.config.campaigns import STTConfig
from bot.config.settings import Settings
from pipelines.compat import deepgram_sdk
from pipelines.compat import pipecat as pipecat_compat
from pipelines.providers.background_connect import ConnectInBackground
from pipelines.speech_gate import SpeechGate


@functools.cache
def shared_httpx_client() -> httpx.AsyncClient:
    """One HTTP client per process for every call's Deepgram client. Building one loads the CA
    bundle (~20 ms on the event loop, per call); the live STT never uses it anyway (it
    streams over its own websocket)."""
    return httpx.AsyncClient(timeout=60)


class PooledAsyncDeepgramClient(AsyncDeepgramClient):
    """AsyncDeepgramClient on the process's shared HTTP client, sending the SDK's own headers as
    built once per process (pipelines/compat/deepgram_sdk.py); each call still gets its own
    client object (and Deepgram session id)."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("httpx_client", shared_httpx_client())
        super().__init__(*args, **kwargs)
        deepgram_sdk.reuse_fixed_headers(self)


# The live STT's websocket offers no per-message deflate: the stream is raw PCM, which barely
# compresses, and deflating every 100 ms chunk costs CPU and a zlib window per call.
deepgram_sdk.connect_without_compression()


# Caller audio kept while the first connect is under way (100 ms chunks: 30 s).
HELD_CHUNKS = 300


class BackgroundConnectDeepgramSTTService(ConnectInBackground, DeepgramSTTService):
    """Deepgram STT that doesn't hold the call's start for its handshake; caller audio that
    arrives meanwhile is kept and sent once connected, not dropped.

    Runs in Pipecat's direct mode: caller audio is sent to Deepgram from the task that pushed
    it (the input transport's socket reader) instead of being queued for a task of the STT's
    own (a queue handoff and a task switch per 100 ms frame, ~3.5% of a worker's CPU per
    call). So nothing here waits: audio that comes before the connection is held, not awaited.
    """

    def __init__(self, *, gate: SpeechGate | None = None, **kwargs):
        kwargs.setdefault("enable_direct_mode", True)
        # Pipecat builds its Deepgram client itself and takes none: this service's is pooled.
        with pipecat_compat.deepgram_client_class(PooledAsyncDeepgramClient):
            super().__init__(**kwargs)
        self.gate = gate
        self._held: deque[bytes] = deque(maxlen=HELD_CHUNKS)

    async def run_stt(self, audio: bytes) -> AsyncGenerator[Frame | None, None]:
        if self.gate is not None:
            audio = self.gate.admit(audio)
            if not audio:  # the line is quiet: nothing Deepgram needs to hear
                yield None
                return
        if self.connecting:
            self._held.append(audio)
            yield None
            return
        if self._held:
            audio = b"".join(self._held) + audio
            self._held.clear()
        async for frame in super().run_stt(audio):
            yield frame


def build_deepgram_stt(
    config: STTConfig, settings: Settings, sample_rate: int, vad_min_volume: float
) -> BackgroundConnectDeepgramSTTService:
    """Deepgram at the pipeline's input rate (linear16), with the campaign's model and
    endpointing; it hears the caller's audio through a SpeechGate matched to the VAD's
    min_volume unless the campaign streams silence too."""
    assert settings.deepgram_api_key is not None
    return BackgroundConnectDeepgramSTTService(
        gate=None if config.stream_silence else SpeechGate(sample_rate, vad_min_volume),
        api_key=settings.deepgram_api_key.get_secret_value(),
        base_url=settings.deepgram_base_url or "",
        sample_rate=sample_rate,
        settings=DeepgramSTTService.Settings(
            model=config.model,
            language=config.language,
            endpointing=config.endpointing_ms,
            interim_results=True,
            smart_format=config.smart_format,
            punctuate=True,
            keyterm=list(config.keyterms) or None,
        ),
    )
