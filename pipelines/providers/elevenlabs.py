"""ElevenLabs streaming TTS (WebSocket) for a campaign, at the stream's sample rate."""

from __future__ import annotations

from pipecat.services.elevenlabs.tts import ElevenLabsTTSService

from bot.campaigns import TTSConfig
from bot.settings import Settings


def build_elevenlabs_tts(config: TTSConfig, settings: Settings, sample_rate: int) -> ElevenLabsTTSService:
    """ElevenLabs sends PCM at the call's rate (pcm_8000/16000/24000): no resampling later."""
    assert settings.elevenlabs_api_key is not None
    return ElevenLabsTTSService(
        api_key=settings.elevenlabs_api_key.get_secret_value(),
        url=settings.elevenlabs_ws_url,
        sample_rate=sample_rate,
        settings=ElevenLabsTTSService.Settings(voice=config.voice, model=config.model, speed=config.speed),
    )
