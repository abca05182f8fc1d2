"""Offline speech recognition with pocketsphinx and the English model inside its PyPI package.

A candidate offline STT, kept as the comparison point for bench/offline_stt_wer.py (and for
checking what callers heard in tests). Measured on 8 kHz phone-quality speech it gets about
one word in five wrong, against Whisper tiny.en's ~0%, at the same speed, so the offline
stand-in is pipelines/providers/whisper_stt.py. Each segment is upsampled to the 16 kHz the
model needs and decoded in a worker thread, off the event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Any

from pipecat.frames.frames import Frame, TranscriptionFrame
from pipecat.services.settings import STTSettings
from pipecat.services.stt_service import SegmentedSTTService
from pipecat.utils.time import time_now_iso8601

MODEL_RATE = 16000


def decode_pcm(decoder: Any, pcm: bytes, sample_rate: int) -> str:
    """Blocking: the text pocketsphinx hears in 16-bit mono `pcm`."""
    from bot.speech_synth import resample_pcm

    audio = resample_pcm(pcm, sample_rate, MODEL_RATE)
    decoder.start_utt()
    decoder.process_raw(audio, full_utt=True)
    decoder.end_utt()
    hypothesis = decoder.hyp()
    return hypothesis.hypstr.strip() if hypothesis else ""


def new_decoder() -> Any:
    from pocketsphinx import Decoder

    return Decoder(samprate=MODEL_RATE, logfn="/dev/null")


class PocketsphinxSTTService(SegmentedSTTService):
    """Segment-by-segment offline STT; one decoder per call, created off the event loop."""

    def __init__(self, **kwargs):
        super().__init__(settings=STTSettings(model="pocketsphinx-en-us", language="en"), **kwargs)
        self._decoder: Any = None

    @property
    def wants_wav_segments(self) -> bool:
        return False

    def can_generate_metrics(self) -> bool:
        return True

    async def run_stt(self, audio: bytes) -> AsyncGenerator[Frame | None, None]:
        if self._decoder is None:
            self._decoder = await asyncio.to_thread(new_decoder)
        await self.start_processing_metrics()
        text = await asyncio.to_thread(decode_pcm, self._decoder, audio, self.sample_rate)
        await self.stop_processing_metrics()
        if text:
            yield TranscriptionFrame(text, "", time_now_iso8601(), finalized=True)
        else:
            yield None
