"""A local voice's PCM as Pipecat TTS audio frames, on Pipecat's public API only.

What TTSService's private `_stream_audio_frames_from_iterator` does for raw PCM (Pipecat
1.14): the audio is passed on as it comes, cut at even byte counts (whole 16-bit samples),
resampled to the service's rate by a stream resampler that belongs to the service, and a
trailing odd byte is padded out at the end.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator

from pipecat.audio.resamplers.base_audio_resampler import BaseAudioResampler
from pipecat.audio.utils import create_stream_resampler
from pipecat.frames.frames import ErrorFrame, Frame, TTSAudioRawFrame
from pipecat.services.tts_service import TTSService


class PcmFrames:
    """One TTS service's PCM-to-frames stage (its stream resampler lives as long as it)."""

    def __init__(self) -> None:
        self._resampler: BaseAudioResampler = create_stream_resampler()

    async def frames(
        self, chunks: AsyncIterator[bytes], *, in_sample_rate: int, sample_rate: int, context_id: str | None
    ) -> AsyncGenerator[TTSAudioRawFrame, None]:
        """Frames of 16-bit mono `chunks` at `in_sample_rate`, resampled to `sample_rate`."""

        async def resampled(audio: bytes) -> bytes:
            if in_sample_rate and in_sample_rate != sample_rate:
                return await self._resampler.resample(audio, in_sample_rate, sample_rate)
            return audio

        buffer = bytearray()
        async for chunk in chunks:
            buffer.extend(chunk)
            aligned = len(buffer) & ~1
            if aligned > 0:
                audio = await resampled(bytes(buffer[:aligned]))
                del buffer[:aligned]
                if audio:
                    yield TTSAudioRawFrame(bytes(audio), sample_rate, 1, context_id=context_id)
        if buffer:
            buffer.extend(b"\x00")  # at most one byte is left: pad it to a whole sample
            yield TTSAudioRawFrame(await resampled(bytes(buffer)), sample_rate, 1, context_id=context_id)


async def local_voice_frames(
    service: TTSService, pcm: PcmFrames, text: str, audio: AsyncIterator[bytes], *,
    in_sample_rate: int, context_id: str, engine: str,
) -> AsyncGenerator[Frame, None]:
    """A local voice's `run_tts`: its `audio` for `text` as frames, with Pipecat's usage and
    time-to-first-byte metrics, and one ErrorFrame naming `engine` if it fails."""
    try:
        await service.start_tts_usage_metrics(text)
        async for frame in pcm.frames(
            audio, in_sample_rate=in_sample_rate, sample_rate=service.sample_rate, context_id=context_id
        ):
            await service.stop_ttfb_metrics()
            yield frame
    except Exception as error:
        yield ErrorFrame(error=f"{engine} TTS failed: {error}")
    finally:
        await service.stop_ttfb_metrics()
