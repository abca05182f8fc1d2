"""PCM helpers the call's audio path shares (STT input, prepared lines, offline voices)."""

from __future__ import annotations

import numpy as np
import soxr


def resample_pcm(pcm: bytes, from_rate: int, to_rate: int) -> bytes:
    """16-bit mono PCM from one rate to another (high quality, whole buffer)."""
    if from_rate == to_rate or not pcm:
        return pcm
    samples = np.frombuffer(pcm, dtype=np.int16)
    out = soxr.resample(samples, from_rate, to_rate, quality="HQ")
    return np.clip(out, -32768, 32767).astype(np.int16).tobytes()
