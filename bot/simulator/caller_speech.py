"""Local speech for the simulated caller and tests: Piper's bundled voice at a phone rate."""

from __future__ import annotations

import functools

from pipelines.audio import resample_pcm
from pipelines.providers.piper import DEFAULT_VOICE, synthesize_pcm


@functools.lru_cache(maxsize=256)
def speak(text: str, sample_rate: int = 8000, voice: str = DEFAULT_VOICE) -> bytes:
    """`text` spoken as 16-bit mono PCM at `sample_rate` (blocking; cached). The same bytes
    on every run, so a test or benchmark that passes once passes again."""
    pcm, rate = synthesize_pcm(voice, text, deterministic=True)
    return resample_pcm(pcm, rate, sample_rate)
