"""The apology a call can play the moment a provider fails, ready before any call needs it.

A call whose voice is a remote TTS (ElevenLabs) can lose the very service it would apologise
with; synthesizing the apology only then keeps the caller in silence while a dead or slow
provider is tried. So each process prepares every such campaign's apology while it starts,
before it takes a call, at every rate Exotel streams at, and keeps it in memory: a call has it
from its first moment and plays it past the broken service (pipelines/call_control.py). It is
said in the campaign's offline voice (Piper, or espeak-ng's Hindi voice for a Hindi campaign),
which cannot fail with the provider, where that voice is installed (the `offline` extra); a
lean install without it asks the campaign's own voice once, at start-up, and keeps the audio in
the shared speech cache (DATA_DIR/cache/speech), so later starts and the other workers reuse it;
if that voice cannot say it then, a warning says so and calls go on without a prepared apology.
Shared by every call of the campaign, it is the campaign's apology without the lead's fields
("Sorry, we are having ..."); a call switches to the lead's own apology in the campaign's voice
once that is ready (bot/server/call_runner.py). A campaign whose voice is local needs none: its
TTS can always speak.
"""

from __future__ import annotations

import asyncio

from loguru import logger

from bot.config.campaigns import Campaign, TTSConfig
from bot.config.settings import Settings
from pipelines.prepared_speech import PreparedLine
from pipelines.speech_cache import SpeechCache, speech_cache_for, speech_key
from pipelines.voices import LOCAL_TTS, effective_tts, offline_tts

EXOTEL_RATES = (8000, 16000, 24000)
REMOTE_RATE = 24000  # asked once of a remote voice, resampled to the others
REMOTE_WAIT_SECS = 10.0  # how long start-up waits for a remote voice to say the apology

# speech_key(voice, text, rate) -> 16-bit mono PCM; a few entries per campaign, made once per process.
_ready: dict[str, bytes] = {}


def fallback_apology_text(campaign: Campaign) -> str:
    """The campaign's apology with no lead fields (one recording serves every call)."""
    return campaign.render(campaign.apology, {})


def needs_fallback_apology(campaign: Campaign, settings: Settings) -> bool:
    """Only a remote voice can fail the way a provider does."""
    return effective_tts(campaign, settings).provider not in LOCAL_TTS


def apology_voice(campaign: Campaign, settings: Settings) -> TTSConfig:
    """The campaign's offline voice where it is installed, else the campaign's own voice."""
    from pipelines.offline import engine_installed

    offline = offline_tts(campaign)  # Piper, or espeak-ng's Hindi voice: each an engine of the offline extra
    return offline if engine_installed(offline.provider) else effective_tts(campaign, settings)


def fallback_apology(campaign: Campaign, settings: Settings, sample_rate: int) -> PreparedLine | None:
    """The prepared apology at `sample_rate`, or None if this process has none for it."""
    if not needs_fallback_apology(campaign, settings):
        return None
    text = fallback_apology_text(campaign)
    pcm = _ready.get(speech_key(apology_voice(campaign, settings), text, sample_rate))
    return PreparedLine(pcm, text) if pcm else None


async def prepare_fallback_apologies(campaigns: list[Campaign], settings: Settings,
                                     cache: SpeechCache | None = None) -> None:
    """Prepare (off the event loop) the apology of every campaign that needs one."""
    cache = cache or speech_cache_for(settings)
    await asyncio.gather(*(_prepare(campaign, settings, cache) for campaign in campaigns
                           if needs_fallback_apology(campaign, settings)))


async def _prepare(campaign: Campaign, settings: Settings, cache: SpeechCache) -> None:
    text = fallback_apology_text(campaign)
    voice = apology_voice(campaign, settings)
    if all(speech_key(voice, text, rate) in _ready for rate in EXOTEL_RATES):
        return
    try:
        if voice.provider in LOCAL_TTS:
            by_rate = await _synthesize(voice, text)
        else:
            by_rate = await asyncio.wait_for(_from_remote_voice(voice, text, settings, cache), REMOTE_WAIT_SECS)
            logger.info(f"the apology of campaign {campaign.name} is prepared in its own voice "
                        f"({voice.provider}; no offline voice installed)")
    except Exception as error:  # a missing voice must not stop the server; calls fall back to the TTS
        reason = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
        logger.warning(f"could not prepare the apology of campaign {campaign.name}: {reason}")
        return
    for rate, pcm in by_rate.items():
        _ready[speech_key(voice, text, rate)] = pcm


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


async def _from_remote_voice(voice: TTSConfig, text: str, settings: Settings, cache: SpeechCache) -> dict[int, bytes]:
    """`text` in the campaign's remote voice, from the shared speech cache or asked once now."""
    from pipelines.audio import resample_pcm
    from pipelines.providers.synthesis import synthesize_line

    pcm = await cache.get_or_make(speech_key(voice, text, REMOTE_RATE),
                                  lambda: synthesize_line(voice, text, REMOTE_RATE, settings))
    if not pcm:
        raise RuntimeError(f"{voice.provider} gave no audio")
    return {rate: pcm if rate == REMOTE_RATE else await asyncio.to_thread(resample_pcm, pcm, REMOTE_RATE, rate)
            for rate in EXOTEL_RATES}
