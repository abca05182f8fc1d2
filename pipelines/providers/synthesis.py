"""Synthesize one line to PCM outside a pipeline (for the speech cache), per TTS provider."""

from __future__ import annotations

import asyncio

import httpx

from bot.config.campaigns import TTSConfig
from bot.config.settings import Settings
from pipelines.providers.espeak import ESPEAK_RATE, synthesize_espeak
from pipelines.providers.piper import DEFAULT_VOICE, synthesize_pcm

ELEVENLABS_RATES = (8000, 16000, 22050, 24000, 44100)


class SynthesisError(RuntimeError):
    """The provider could not synthesize the line."""


async def synthesize_line(
    tts: TTSConfig, text: str, sample_rate: int, settings: Settings, piper_fallback_voice: str | None = None
) -> bytes:
    """`text` as 16-bit mono PCM at `sample_rate`, from the campaign's TTS provider."""
    if tts.provider == "elevenlabs" and settings.elevenlabs_api_key:
        return await _elevenlabs(tts, text, sample_rate, settings)
    if tts.provider == "espeak":
        from pipelines.audio import resample_pcm

        pcm = await synthesize_espeak(tts.voice, text)
        return await asyncio.to_thread(resample_pcm, pcm, ESPEAK_RATE, sample_rate)
    voice = tts.voice if tts.provider == "piper" else (piper_fallback_voice or DEFAULT_VOICE)
    return await synthesize_with_piper(voice, text, sample_rate)


async def synthesize_with_piper(voice: str, text: str, sample_rate: int) -> bytes:
    """Piper, offline: the line any call can fall back on when its TTS provider can't speak."""
    from pipelines.audio import resample_pcm

    pcm, rate = await asyncio.to_thread(synthesize_pcm, voice, text)
    return await asyncio.to_thread(resample_pcm, pcm, rate, sample_rate)


async def _elevenlabs(tts: TTSConfig, text: str, sample_rate: int, settings: Settings) -> bytes:
    if sample_rate not in ELEVENLABS_RATES:
        raise SynthesisError(f"ElevenLabs has no pcm_{sample_rate} output")
    url = f"{settings.elevenlabs_base_url}/v1/text-to-speech/{tts.voice}/stream"
    body = {"text": text, "model_id": tts.model, "voice_settings": {"speed": tts.speed}}
    headers = {"xi-api-key": settings.elevenlabs_api_key.get_secret_value()}  # type: ignore[union-attr]
    async with httpx.AsyncClient(timeout=15.0) as client:
        async with client.stream(
            "POST", url, json=body, headers=headers, params={"output_format": f"pcm_{sample_rate}"}
        ) as response:
            if response.status_code != 200:
                detail = (await response.aread())[:200].decode("utf-8", "replace")
                raise SynthesisError(f"ElevenLabs answered {response.status_code}: {detail}")
            audio = b"".join([chunk async for chunk in response.aiter_bytes()])
    return audio[: len(audio) // 2 * 2]
