"""Play audio we synthesized earlier (a cached greeting or apology) as if the TTS had made it.

The frames look like a TTS context (its text announced, started, audio, stopped), so the
output transport treats them as bot speech: bot-speaking events, the padded tail, the mark,
and a line in the transcript (pipelines/bot_lines.py).
"""

from __future__ import annotations

import uuid
from typing import NamedTuple

from pipecat.frames.frames import (
    AggregatedTextFrame,
    Frame,
    TTSAudioRawFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
)
from pipecat.utils.text.base_text_aggregator import TextType


class PreparedLine(NamedTuple):
    """Speech synthesized ahead and the words it says."""

    pcm: bytes
    text: str


def new_context_id() -> str:
    """A TTS context id for prepared speech (one line, however many parts it is sent in)."""
    return f"prepared-{uuid.uuid4().hex[:12]}"


def prepared_speech_frames(
    pcm: bytes, sample_rate: int, text: str = "", context_id: str | None = None, chunk_ms: int = 200
) -> list[Frame]:
    """[the text, announced as a TTS does: spoken, not added to the LLM context], TTSStarted,
    the audio in `chunk_ms` pieces, TTSStopped (one context)."""
    context_id = context_id or new_context_id()
    step = sample_rate * 2 * chunk_ms // 1000
    frames: list[Frame] = []
    if text:
        announced = AggregatedTextFrame(text, TextType.SENTENCE, context_id=context_id)
        announced.will_be_spoken = True
        announced.append_to_context = False
        frames.append(announced)
    frames.append(TTSStartedFrame(context_id=context_id))
    for offset in range(0, len(pcm), step):
        frames.append(
            TTSAudioRawFrame(
                audio=pcm[offset : offset + step], sample_rate=sample_rate, num_channels=1,
                context_id=context_id,
            )
        )
    frames.append(TTSStoppedFrame(context_id=context_id))
    return frames
