"""Deepgram live STT for a campaign (base URL from settings so tests can use a local fake)."""

from __future__ import annotations

from collections.abc import AsyncGenerator

from pipecat.frames.frames import Frame
from pipecat.services.deepgram.stt import DeepgramSTTService

from bot.campaigns import STTConfig
from bot.settings import Settings
from pipelines.providers.background_connect import ConnectInBackground


class BackgroundConnectDeepgramSTTService(ConnectInBackground, DeepgramSTTService):
    """Deepgram STT that doesn't hold the call's start for its handshake; caller audio that
    arrives meanwhile waits for the connection instead of being dropped."""

    async def run_stt(self, audio: bytes) -> AsyncGenerator[Frame | None, None]:
        await self.wait_connected()
        async for frame in super().run_stt(audio):
            yield frame


def build_deepgram_stt(config: STTConfig, settings: Settings, sample_rate: int) -> DeepgramSTTService:
    """Deepgram at the pipeline's input rate (linear16), with the campaign's model and endpointing."""
    assert settings.deepgram_api_key is not None
    return BackgroundConnectDeepgramSTTService(
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
