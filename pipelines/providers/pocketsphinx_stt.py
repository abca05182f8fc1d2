"""Offline speech recognition with pocketsphinx and the English model inside its PyPI package.

A candidate offline STT, kept as the comparison point for bench/offline_stt_wer.py (the
package is a test extra). On 8 kHz phone-quality speech it gets about one word in five
wrong, against Whisper tiny.en's ~0%, at the same speed, so the offline stand-in is
pipelines/providers/whisper_stt.py. Audio is upsampled to the 16 kHz the model needs.
"""

from __future__ import annotations

from typing import Any

MODEL_RATE = 16000


def decode_pcm(decoder: Any, pcm: bytes, sample_rate: int) -> str:
    """Blocking: the text pocketsphinx hears in 16-bit mono `pcm`."""
    from pipelines.audio import resample_pcm

    audio = resample_pcm(pcm, sample_rate, MODEL_RATE)
    decoder.start_utt()
    decoder.process_raw(audio, full_utt=True)
    decoder.end_utt()
    hypothesis = decoder.hyp()
    return hypothesis.hypstr.strip() if hypothesis else ""


def new_decoder() -> Any:
    from pocketsphinx import Decoder

    return Decoder(samprate=MODEL_RATE, logfn="/dev/null")
