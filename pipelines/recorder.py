"""A stereo WAV per call (caller left, bot right), written as the call goes.

Pipecat's AudioBufferProcessor lines up caller and bot audio; every few seconds its
buffer is appended to the file in a worker thread (no file I/O on the event loop, no whole
call held in memory). The WAV header is finalised at hang-up.
"""

from __future__ import annotations

import asyncio
import wave
from pathlib import Path

from loguru import logger

from pipecat.processors.audio.audio_buffer_processor import AudioBufferProcessor

FLUSH_EVERY_SECS = 5


class CallRecorder:
    """Owns one call's recording: the buffer processor for the pipeline and the WAV file."""

    def __init__(self, path: Path, sample_rate: int):
        self.path = path
        self._rate = sample_rate
        self._wav: wave.Wave_write | None = None
        self._writes: asyncio.Lock = asyncio.Lock()
        self.bytes_written = 0
        self.processor = AudioBufferProcessor(
            sample_rate=sample_rate, num_channels=2, buffer_size=sample_rate * 2 * 2 * FLUSH_EVERY_SECS
        )
        self.processor.event_handler("on_audio_data")(self._on_audio)

    async def start(self) -> None:
        await asyncio.to_thread(self._open)
        await self.processor.start_recording()

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        wav = wave.open(str(self.path), "wb")
        wav.setnchannels(2)
        wav.setsampwidth(2)
        wav.setframerate(self._rate)
        self._wav = wav

    async def _on_audio(self, _processor, audio: bytes, _sample_rate: int, _channels: int) -> None:
        if not audio or self._wav is None:
            return
        async with self._writes:
            await asyncio.to_thread(self._wav.writeframes, audio)
            self.bytes_written += len(audio)

    async def finish(self) -> Path | None:
        """Flush what's buffered and close the file; the path, or None if nothing was recorded."""
        try:
            await self.processor.stop_recording()
        except Exception as error:  # the pipeline may already be torn down
            logger.debug(f"recorder stop: {error}")
        async with self._writes:
            if self._wav is not None:
                await asyncio.to_thread(self._wav.close)
                self._wav = None
        return self.path if self.bytes_written else None
