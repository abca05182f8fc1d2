"""The apology a call can play the moment a provider fails, ready before any call needs it.

A call whose voice is a remote TTS (ElevenLabs) can lose the very service it would apologise
with; synthesizing the apology only then keeps the caller in silence while a dead or slow
provider is tried. So each process synthesizes every such campaign's apology in the
campaign's offline voice (Piper, or espeak-ng's Hindi voice for a Hindi campaign) while it starts, before it takes a call, at every rate Exotel
streams at, and keeps it in memory: a call has it from its first moment and plays it past
the broken service (pipelines/call_control.py). Shared by every call of the campaign, it is
the campaign's apology without the lead's fields ("Sorry, we are having ..."); a call
switches to the lead's own apology in the campaign's voice once that is ready
(bot/server/call_runner.py). A campaign whose voice is local needs none: its TTS can always speak.
"""

from __future__ import annotations

import asyncio

from loguru import logger

from bot.config.campaigns import Campaign, TTSConfig
from bot.config.settings import Settings
from pipelines.prepared_speech import PreparedLine
from pipelines.voices import LOCAL_TTS, effective_tts, offline_tts

EXOTEL_RATES = (8000, 16000, 24000)

# (voice, text, rate) -> 16-bit mono PCM; a few entries per campaign, made once per process.
_ready: dict[tuple[str, str, int], bytes] = {}


def fallback_apology_text(campaign: Campaign) -> str:
    """The campaign's apology with no lead fields (one recording serves every call)."""
    return campaign.render(campaign.apology, {})


def needs_fallback_apology(campaign: Campaign, settings: Settings) -> bool:
    """Only a remote voice can fail the way a provider does."""
    return effective_tts(campaign, settings).provider not in LOCAL_TTS


def fallback_apology(campaign: Campaign, settings: Settings, sample_rate: int) -> PreparedLine | None:
    """The prepared apology at `sample_rate`, or None if this process has none for it."""
    if not needs_fallback_apology(campaign, settings):
        return None
    text = fallback_apology_text(campaign)
    pcm = _ready.get((offline_tts(campaign).voice, text, sample_rate))
    return PreparedLine(pcm, text) if pcm else None


async def prepare_fallback_apologies(campaigns: list[Campaign], settings: Settings) -> None:
    """Synthesize (off the event loop) the apology of every campaign that needs one."""
    for campaign in campaigns:
        if not needs_fallback_apology(campaign, settings):
            continue
        text = fallback_apology_text(campaign)
        voice = offline_tts(campaign)
        if all((voice.voice, text, rate) in _ready for rate in EXOTEL_RATES):
            continue
        try:
            by_rate = await _synthesize(voice, text)
        except Exception as error:  # a missing voice must not stop the server; calls fall back to the TTS
            logger.warning(f"could not prepare the apology of campaign {campaign.name}: {error}")
            continue
        for rate, pcm in by_rate.items():
            _ready[(voice.voice, text, rate)] = pcm


async def _synthesize(voice: TTSConfig, text: str) -> dict[int, bytes]:
    """`text` once in the offline voice (Piper's fixed-prosody rendering: the same bytes every
    time), resampled to each Exotel rate, off the event loop."""
    from pipelines.audio import resample_pcm
    from pipelines.providers.espeak import ESPEAK_RATE, synthesize_espeak
    from pipelines.providers.piper import synthesize_pcm

    if voice.provider == "espeak":
        pcm, rate = await synthesize_espeak(voice.voice, text), ESPEAK_RATE
    else:
        pcm, rate = await asyncio.to_thread(synthesize_pcm, voice.voice, text, deterministic=True)
    return {target: await asyncio.to_thread(resample_pcm, pcm, rate, target) for target in EXOTEL_RATES}
