"""Local speech for the simulated caller and tests: Piper's bundled voice at a phone rate."""

from __future__ import annotations

import functools

import numpy as np
import soxr

from pipelines.providers.piper import DEFAULT_VOICE, synthesize_pcm


def resample_pcm(pcm: bytes, from_rate: int, to_rate: int) -> bytes:
    """16-bit mono PCM from one rate to another (high quality, whole buffer)."""
    if from_rate == to_rate or not pcm:
        return pcm
    samples = np.frombuffer(pcm, dtype=np.int16)
    out = soxr.resample(samples, from_rate, to_rate, quality="HQ")
    return np.clip(out, -32768, 32767).astype(np.int16).tobytes()


@functools.lru_cache(maxsize=256)
def speak(text: str, sample_rate: int = 8000, voice: str = DEFAULT_VOICE) -> bytes:
    """`text` spoken as 16-bit mono PCM at `sample_rate` (blocking; cached). The same bytes
    on every run, so a test or benchmark that passes once passes again."""
    pcm, rate = synthesize_pcm(voice, text, deterministic=True)
    return resample_pcm(pcm, rate, sample_rate)
