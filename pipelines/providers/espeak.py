"""Offline TTS with espeak-ng (Debian's `espeak-ng` package): Hindi and many other languages.

No Hindi Piper voice ships on PyPI, so a campaign whose `language` is Hindi speaks offline
with espeak-ng's Hindi voice (`hi`), Roman-script Hinglish first put in Devanagari
(pipelines/hindi_script.py). Each piece of a line is one short `espeak-ng --stdout` process
run by asyncio (no thread, nothing on the event loop; ~7 ms a sentence): the text goes in on
stdin, never through a shell or an argument, and the voice name is checked.
"""

from __future__ import annotations

import asyncio
import io
import re
import shutil
import wave
from collections.abc import AsyncGenerator, AsyncIterator, Callable

from pipecat.frames.frames import Frame
from pipecat.services.settings import TTSSettings
from pipecat.services.tts_service import TTSService

from pipelines.providers.tts_frames import PcmFrames, local_voice_frames
from pipelines.speech_text import speech_pieces

HINDI_VOICE = "hi"
ESPEAK_RATE = 22050
MAX_PIECE_AUDIO_BYTES = 8 * 1024 * 1024  # ~3 minutes at 22.05 kHz: far above a 200-char piece
_VOICE_NAME = re.compile(r"^[a-z]{2,3}(-[a-z0-9]{1,8}){0,2}$")
# What a line needs to be spoken: letters and their marks (any script), digits, spaces and
# sentence punctuation. Symbols go: espeak-ng 1.51's Hindi voice crashes (SIGSEGV) on "$(".
_UNSPOKEN = re.compile(r"[^\w\s.,!?;:'\"%₹\-\u0900-\u097F]")
CRASH_RETRIES = 1


class EspeakError(RuntimeError):
    """espeak-ng is missing, refused the voice, or failed."""


def espeak_path() -> str | None:
    return shutil.which("espeak-ng")


def is_espeak_voice(name: str) -> bool:
    """A name shaped like an espeak-ng voice (`hi`, `en-us`, `mb-en1`): safe to pass on."""
    return bool(_VOICE_NAME.match(name))


def spoken_text(text: str) -> str:
    """`text` without the symbols no one says aloud (and that can crash espeak-ng)."""
    return _UNSPOKEN.sub(" ", text)


def text_for_voice(voice: str) -> Callable[[str], str]:
    """How a line is written for `voice`: Devanagari for Hindi, as it is for the rest."""
    if voice.split("-")[0] != "hi":
        return spoken_text
    from pipelines.offline import require_engine

    require_engine("espeak", "espeak-ng's Hindi voice")  # an extra: one line if it is not installed
    from pipelines.hindi_script import to_devanagari  # indic-transliteration and wordfreq: only when used

    return lambda text: to_devanagari(spoken_text(text))


async def espeak_pcm(voice: str, text: str) -> bytes:
    """One piece of text as 16-bit mono PCM at ESPEAK_RATE."""
    program = espeak_path()
    if program is None:
        raise EspeakError("espeak-ng is not installed (apt-get install espeak-ng)")
    if not is_espeak_voice(voice):
        raise EspeakError(f"not an espeak-ng voice name: {voice[:40]!r}")
    for _ in range(1 + CRASH_RETRIES):  # a crash (a signal) on one input can pass on the next try
        process = await asyncio.create_subprocess_exec(
            program, "-v", voice, "-b", "1", "--stdout",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        out, err = await process.communicate(text.encode("utf-8"))
        if process.returncode is None or process.returncode >= 0:
            break
    if process.returncode != 0 or not out.startswith(b"RIFF"):
        raise EspeakError(f"espeak-ng failed ({process.returncode}): {err[:200].decode('utf-8', 'replace').strip()}")
    if len(out) > MAX_PIECE_AUDIO_BYTES:
        raise EspeakError("espeak-ng made more audio than a line can hold")
    with wave.open(io.BytesIO(out)) as wav:  # streamed WAV: its header's length is a placeholder
        if wav.getframerate() != ESPEAK_RATE or wav.getsampwidth() != 2:
            raise EspeakError(f"espeak-ng gave {wav.getframerate()} Hz, {wav.getsampwidth() * 8}-bit audio")
        pcm = wav.readframes(len(out))
    return pcm[: len(pcm) // 2 * 2]


async def synthesize_espeak(voice: str, text: str) -> bytes:
    """A whole line (bounded pieces, written for the voice) at ESPEAK_RATE."""
    write = text_for_voice(voice)
    return b"".join([await espeak_pcm(voice, write(piece)) for piece in speech_pieces(text)])


class EspeakTTSService(TTSService):
    """espeak-ng as a Pipecat TTS service: a piece's audio streams as soon as it is made."""

    def __init__(self, *, voice: str = HINDI_VOICE, **kwargs):
        super().__init__(
            push_start_frame=True,
            push_stop_frames=True,
            settings=TTSSettings(model=None, voice=voice, language=None),
            **kwargs,
        )
        self._voice = voice
        self._write = text_for_voice(voice)
        self._pcm = PcmFrames()  # its audio as frames at the pipeline's rate

    def can_generate_metrics(self) -> bool:
        return True

    async def run_tts(self, text: str, context_id: str) -> AsyncGenerator[Frame, None]:
        async def audio() -> AsyncIterator[bytes]:
            for piece in speech_pieces(text):
                yield await espeak_pcm(self._voice, self._write(piece))

        async for frame in local_voice_frames(self, self._pcm, text, audio(), in_sample_rate=ESPEAK_RATE,
                                              context_id=context_id, engine="espeak-ng"):
            yield frame
