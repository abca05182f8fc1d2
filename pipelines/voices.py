"""Which voice a campaign speaks with: its provider, or its language's offline voice."""

from __future__ import annotations

import asyncio
from typing import Any

from bot.config.campaigns import Campaign, TTSConfig
from bot.config.settings import Settings
from pipelines.providers.espeak import HINDI_VOICE, espeak_path, is_espeak_voice
from pipelines.providers.piper import BUNDLED_VOICES, DEFAULT_VOICE
from pipelines.providers.synthesis import synthesize_line
from pipelines.speech_cache import SpeechCache, speech_key

OFFLINE_VOICE = DEFAULT_VOICE
LOCAL_TTS = ("piper", "espeak")  # voices made on this machine: they cannot fail like a provider


def offline_tts(campaign: Campaign) -> TTSConfig:
    """The offline voice for the campaign's language: espeak-ng's Hindi voice for Hindi and
    Hinglish (where espeak-ng is installed), Piper's bundled English voice for the rest."""
    if campaign.language.lower().split("-")[0] == "hi" and espeak_path():
        return TTSConfig(provider="espeak", voice=HINDI_VOICE)
    return TTSConfig(provider="piper", voice=OFFLINE_VOICE)


def effective_tts(campaign: Campaign, settings: Settings) -> TTSConfig:
    """The campaign's TTS, or its language's offline voice when its provider has no key (or
    its offline voice is not on this machine)."""
    tts = campaign.tts
    if tts.provider == "elevenlabs" and not settings.elevenlabs_api_key:
        return offline_tts(campaign)
    if tts.provider == "piper" and tts.voice not in BUNDLED_VOICES and not tts.voice.endswith(".onnx"):
        return offline_tts(campaign)
    if tts.provider == "espeak" and (not espeak_path() or not is_espeak_voice(tts.voice)):
        return offline_tts(campaign)
    return tts


async def prepare_line(
    cache: SpeechCache, campaign: Campaign, settings: Settings, text: str, sample_rate: int
) -> bytes | None:
    """`text` in the campaign's (effective) voice, from the shared cache or synthesized now."""
    tts = effective_tts(campaign, settings)
    key = speech_key(tts, text, sample_rate)
    return await cache.get_or_make(key, lambda: synthesize_line(tts, text, sample_rate, settings))


def prepare_greeting_soon(
    cache: SpeechCache, campaign: Campaign, settings: Settings, lead: dict[str, Any], background: set[asyncio.Task]
) -> None:
    """Start synthesizing the lead's personalised greeting now (while the phone rings), so the
    call opens with it from the shared cache. `background` holds the task until it is done."""
    rate = settings.exotel_sample_rate or 8000
    task = asyncio.create_task(prepare_line(cache, campaign, settings, campaign.render_greeting(lead), rate))
    background.add(task)
    task.add_done_callback(background.discard)
