"""The benchmarks' measurements (bench/measures.py) on a made-up call whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest

from bench.measures import (
    barge_in,
    caller_time,
    reply_starts,
    speech_end_offset,
    speech_start_offset,
    turn_latency,
)
from bot.simulator.exotel_emulator import EmulatorConfig, EmulatorResult, PlayedSegment


def line(quiet_before: float, voiced: float, quiet_after: float, rate: int = 8000) -> bytes:
    """A caller line: silence, a loud tone, silence (16-bit mono)."""
    n = int(voiced * rate)
    tone = (8000 * np.sin(2 * np.pi * 200 * np.arange(n) / rate)).astype(np.int16)
    tone[0] = tone[-1] = 8000  # loud exactly at both ends
    return (bytes(int(quiet_before * rate) * 2) + tone.tobytes() + bytes(int(quiet_after * rate) * 2))


def test_speech_offsets_are_the_first_and_last_voiced_samples():
    pcm = line(0.25, 1.0, 0.4)
    assert speech_start_offset(pcm) == pytest.approx(0.25, abs=1e-3)
    assert speech_end_offset(pcm) == pytest.approx(1.25, abs=1e-3)


def call(late_by: float = 0.0) -> EmulatorResult:
    """A call whose script chunk k left at 0.5 + k * 0.1 s (+ `late_by` from chunk 30 on: a
    caller that fell behind), with a `Reply` line starting at chunk 30 (3.0 s into the script)."""
    result = EmulatorResult(config=EmulatorConfig(url="ws://x", chunk_ms=100))
    result.started_at = 100.0
    result.caller_chunks_sent_at = [0.5 + k * 0.1 + (late_by if k >= 30 else 0.0) for k in range(100)]
    result.events = [(0.5 + 30 * 0.1 + late_by - 0.0005, "caller_said", "line")]
    return result


def test_turn_latency_counts_from_the_last_voiced_audio_as_sent():
    result = call(late_by=0.2)
    [start] = reply_starts(result)
    assert start == pytest.approx(3.0)
    pcm = line(0.25, 1.0, 0.4)
    end = start + speech_end_offset(pcm)  # 4.25 s on the script: chunk 42 (+ 0.05 s), sent at 4.9 s
    assert caller_time(result, end) == pytest.approx(0.5 + 4.2 + 0.2 + 0.05)
    result.media_at = [1.0, 4.9, 5.6, 5.8]  # 4.9: the bot still talking before the caller finished
    assert turn_latency(result, end, within=4.0) == pytest.approx(5.6 - 4.95)
    assert turn_latency(result, end, within=0.5) is None  # the reply came too late to count


def test_barge_in_counts_from_the_onset_and_finds_stale_audio():
    result = call()
    pcm = line(0.25, 1.0, 0.4)
    onset, end = 3.0 + speech_start_offset(pcm), 3.0 + speech_end_offset(pcm)  # sent at 3.75 and 4.75 s
    # The bot is talking from 3.0 s (call time) to 6.0 s when the caller starts.
    result.segments = [PlayedSegment(100.0 + 3.0, 100.0 + 6.0, bytes(48000))]
    result.clears_at = [4.41]
    result.media_at = [3.0, 3.5, 4.5, 6.1]  # 4.5: after the clear, caller still talking: stale
    figures = barge_in(result, onset, end, quiet_secs=0.2)
    assert figures["mid_reply"] is True
    assert figures["clear"] == pytest.approx(4.41 - 3.75)
    assert figures["stale"] == 1

    result.media_at = [3.0, 3.5, 6.1]  # the next reply only
    assert barge_in(result, onset, end, quiet_secs=0.2)["stale"] == 0
    result.segments = [PlayedSegment(100.0 + 1.0, 100.0 + 3.5, bytes(40000))]  # bot done at 3.5 s
    assert barge_in(result, onset, end, quiet_secs=0.2)["mid_reply"] is False
    result.clears_at = []
    assert barge_in(result, onset, end, quiet_secs=0.2)["clear"] is None
