"""Play audio we synthesized earlier (a cached greeting or apology) as if the TTS had made it.

The frames look like a TTS context (started, audio, stopped), so the output transport
treats them as bot speech: bot-speaking events, the padded tail, the mark.
"""

from __future__ import annotations

import uuid

from pipecat.frames.frames import Frame, TTSAudioRawFrame, TTSStartedFrame, TTSStoppedFrame


def prepared_speech_frames(pcm: bytes, sample_rate: int, chunk_ms: int = 200) -> list[Frame]:
    """TTSStarted, the audio in `chunk_ms` pieces, TTSStopped (one context)."""
    context_id = f"prepared-{uuid.uuid4().hex[:12]}"
    step = sample_rate * 2 * chunk_ms // 1000
    frames: list[Frame] = [TTSStartedFrame(context_id=context_id)]
    for offset in range(0, len(pcm), step):
        frames.append(
            TTSAudioRawFrame(
                audio=pcm[offset : offset + step], sample_rate=sample_rate, num_channels=1,
                context_id=context_id,
            )
        )
    frames.append(TTSStoppedFrame(context_id=context_id))
    return frames
