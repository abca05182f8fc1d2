"""The STT hears every stretch of caller audio the VAD could call speech (with the half second
before it and the silence after), and nothing of a quiet line (pipelines/speech_gate.py)."""

from __future__ import annotations

import numpy as np
import pytest
from pipecat.audio.vad.vad_analyzer import VADParams, VADState

from bot.simulator.caller_speech import speak
from pipelines.providers.silero import SharedSileroVADAnalyzer
from pipelines.speech_gate import HANGOVER_SECS, PREROLL_SECS, SpeechGate

CHUNK = 1600  # 100 ms at 8 kHz
LINES = ["Yes I can talk now", "My budget is about eighty lakhs"]


def line_audio(noise_dbfs: float | None, seed: int = 3, gain: float = 1.0) -> bytes:
    """4 s of quiet line, a sentence, 5 s of quiet, a sentence, 4 s of quiet."""
    lines = [np.frombuffer(speak(line), np.int16).astype(float) * gain for line in LINES]
    parts = [np.zeros(8000 * 4), lines[0], np.zeros(8000 * 5), lines[1], np.zeros(8000 * 4)]
    audio = np.concatenate(parts)
    if noise_dbfs is not None:
        audio += np.random.default_rng(seed).normal(0, 32768 * 10 ** (noise_dbfs / 20), len(audio))
    return np.clip(audio, -32768, 32767).astype(np.int16).tobytes()


def gate_run(audio: bytes, min_volume: float = 0.6) -> tuple[list[bool], SpeechGate]:
    """Per chunk: did any of it reach the STT by the time it was fed (as itself or in a later
    pre-roll)? Marks each chunk as sent when the gate releases it."""
    gate = SpeechGate(8000, min_volume)
    sent = [False] * (len(audio) // CHUNK)
    pending: list[int] = []
    for k in range(len(sent)):
        out = gate.admit(audio[k * CHUNK : (k + 1) * CHUNK])
        pending.append(k)
        if out:
            released = len(out) // CHUNK
            for j in pending[-released:]:
                sent[j] = True
            pending.clear()
        elif len(pending) > PREROLL_SECS * 10:
            pending.pop(0)
    return sent, gate


@pytest.mark.parametrize("noise_dbfs, gain", [(None, 1.0), (-70, 1.0), (-62, 1.0), (None, 0.02)])
def test_quiet_line_is_held_back_and_speech_goes_through_with_its_edges(noise_dbfs, gain):
    """gain 0.02: a caller so faint the VAD only just hears them (peaks ~-35 dBFS)."""
    audio = line_audio(noise_dbfs, gain=gain)
    sent, gate = gate_run(audio)
    vad = SharedSileroVADAnalyzer(params=VADParams(confidence=0.7, start_secs=0.2, stop_secs=0.2, min_volume=0.6))
    vad.set_sample_rate(8000)
    speaking = [vad._run_analyzer(audio[k * CHUNK : (k + 1) * CHUNK]) != VADState.QUIET for k in range(len(sent))]
    # Everything the VAD took for (possible) speech, and the 0.4 s before it, reached the STT.
    for k, voiced in enumerate(speaking):
        if voiced:
            assert all(sent[max(0, k - 4) : k + 1]), f"chunk {k} (or its lead-in) was held back"
    # After the last word: the hang-over is sent, then the line is held back again (the last
    # 4 s of the clip are quiet; the gate's 0.4 s loudness window adds up to 5 chunks).
    last = max(k for k, voiced in enumerate(speaking) if voiced)
    tail = int(HANGOVER_SECS * 10)
    assert all(sent[last : last + tail - 3])
    speech_end = len(sent) - 40
    assert not any(sent[speech_end + tail + 5 :]), "still streaming a quiet line"
    # Most of this (mostly quiet) line never reached the STT.
    assert gate.held_back_secs > 0.45 * len(audio) / 16000
    assert not any(sent[:30]), "the quiet opening was sent"


def test_min_volume_zero_streams_everything():
    audio = line_audio(-70)
    sent, gate = gate_run(audio, min_volume=0.0)
    assert all(sent) and gate.held_back_bytes == 0


def test_a_loud_noisy_line_is_streamed_whole():
    """Hiss at -45 dBFS could be loud enough for the VAD: the gate stays open."""
    sent, _ = gate_run(line_audio(-45))
    assert all(sent)


def test_the_campaign_can_stream_silence_too():
    from bot.config.campaigns import STTConfig
    from bot.config.settings import load_settings
    from pipelines.providers.deepgram import build_deepgram_stt

    settings = load_settings(_env_file=None, deepgram_api_key="test", deepgram_base_url="http://127.0.0.1:9")
    assert build_deepgram_stt(STTConfig(), settings, 8000, 0.6).gate is not None
    assert build_deepgram_stt(STTConfig(stream_silence=True), settings, 8000, 0.6).gate is None
