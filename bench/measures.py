"""Small measurements the benchmarks share."""

from __future__ import annotations

import numpy as np

from bot.exotel_emulator import EmulatorResult


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile (nearest rank); None when there are no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def speech_end_offset(pcm: bytes, rate: int = 8000) -> float:
    """Seconds from the start of `pcm` to its last clearly voiced sample."""
    samples = np.abs(np.frombuffer(pcm, dtype=np.int16))
    voiced = np.nonzero(samples > 500)[0]
    return (voiced[-1] + 1) / rate if len(voiced) else 0.0


def speech_start_offset(pcm: bytes, rate: int = 8000) -> float:
    """Seconds from the start of `pcm` to its first clearly voiced sample."""
    samples = np.abs(np.frombuffer(pcm, dtype=np.int16))
    voiced = np.nonzero(samples > 500)[0]
    return voiced[0] / rate if len(voiced) else 0.0


def reply_latencies(result: EmulatorResult, speech_ends: list[float], within: float) -> list[float]:
    """The caller's view of each turn: from when the emulator sent the audio holding the end
    of the caller's speech (`speech_ends`, seconds into the call) to the first bot media after
    it; turns with no reply within `within` seconds are left out."""
    chunk_secs = result.config.chunk_ms / 1000
    latencies = []
    for end in speech_ends:
        chunk = int(end / chunk_secs)
        if chunk >= len(result.caller_chunks_sent_at):
            continue
        sent = result.caller_chunks_sent_at[chunk] + (end - chunk * chunk_secs)
        first = next((t for t in result.media_at if t > sent), None)
        if first is not None and first - sent < within:
            latencies.append(float(first - sent))
    return latencies
