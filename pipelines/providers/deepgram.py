"""Deepgram live STT for a campaign (base URL from settings so tests can use a local fake)."""

from __future__ import annotations

from pipecat.services.deepgram.stt import DeepgramSTTService

from bot.campaigns import STTConfig
from bot.settings import Settings


def build_deepgram_stt(config: STTConfig, settings: Settings, sample_rate: int) -> DeepgramSTTService:
    """Deepgram at the stream's rate (linear16), with the campaign's model and endpointing."""
    assert settings.deepgram_api_key is not None
    return DeepgramSTTService(
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
