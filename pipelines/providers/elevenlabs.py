"""ElevenLabs streaming TTS (WebSocket) for a campaign, at the stream's sample rate."""

from __future__ import annotations

from collections.abc import AsyncGenerator

from pipecat.frames.frames import Frame
from pipecat.services.elevenlabs.tts import ElevenLabsTTSService

from bot.config.campaigns import TTSConfig
from bot.config.settings import Settings
from pipelines.providers.background_connect import ConnectInBackground


class BackgroundConnectElevenLabsTTSService(ConnectInBackground, ElevenLabsTTSService):
    """ElevenLabs TTS that doesn't hold the call's start for its handshake."""

    async def run_tts(self, text: str, context_id: str) -> AsyncGenerator[Frame | None, None]:
        await self.wait_connected()
        async for frame in super().run_tts(text, context_id):
            yield frame


def build_elevenlabs_tts(config: TTSConfig, settings: Settings, sample_rate: int) -> ElevenLabsTTSService:
    """ElevenLabs sends PCM at the call's rate (pcm_8000/16000/24000): no resampling later."""
    assert settings.elevenlabs_api_key is not None
    return BackgroundConnectElevenLabsTTSService(
        api_key=settings.elevenlabs_api_key.get_secret_value(),
        url=settings.elevenlabs_ws_url,
        sample_rate=sample_rate,
        settings=ElevenLabsTTSService.Settings(voice=config.voice, model=config.model, speed=config.speed),
    )
