"""A stereo WAV per call (caller left, bot right): what was heard on the line, written as the
call goes.

Fed by the transport's edges rather than by a processor in the pipeline: the caller's audio as
it arrives at the input transport (CallTap), the bot's audio as it is sent to Exotel, placed where it will play
(ExotelOutputTransport), and cut where a barge-in `clear` stopped it. So the recording is what
the caller heard, and caller audio need not travel the whole pipeline just to reach a recorder
at its end (the hops it skips were ~1/3 of a call's frame traffic).

The caller's stream is continuous, so its length is the timeline; bot audio lands at that
position plus however far ahead of the caller's ears it was sent. Every few seconds the part
both tracks have is appended to the file in a worker thread (no file I/O on the event loop,
no whole call held in memory); the header is finalised at hang-up.
"""

from __future__ import annotations

import asyncio
import wave
from pathlib import Path
from typing import BinaryIO

import numpy as np
from loguru import logger
from pipecat.audio.utils import create_stream_resampler

from bot.config.private_files import open_private, private_folder
from serializers.exotel_events import is_call_sid

FLUSH_EVERY_SECS = 5


def recording_path(folder: Path, call_sid: str) -> Path:
    """`folder/<call_sid>.wav`, for a call id that is Exotel-shaped only: the id comes off the
    wire, and nothing from the wire may choose where a file is written."""
    if not is_call_sid(call_sid):  # letters, digits, _ and - only: no separator, no ".."
        raise ValueError(f"not a call id: {call_sid[:40]!r}")
    return folder / f"{call_sid}.wav"


class CallRecorder:
    """One call's two-track recording at `sample_rate` (the pipeline's input rate)."""

    def __init__(self, path: Path, sample_rate: int, bot_sample_rate: int | None = None):
        self.path = path
        self._rate = sample_rate
        self._bot_rate = bot_sample_rate or sample_rate
        self._resampler = create_stream_resampler() if self._bot_rate != sample_rate else None
        self._caller = bytearray()  # not yet written
        self._bot = bytearray()  # not yet written; starts where _caller starts
        self._wav: wave.Wave_write | None = None
        self._file: BinaryIO | None = None
        self._writes = asyncio.Lock()
        self._flushing: asyncio.Task | None = None
        self._recording = False
        self._opening: asyncio.Task | None = None
        self.bytes_written = 0

    def start(self) -> None:
        """Record from now. The file is opened in a worker thread meanwhile: the greeting must
        not wait for a thread of the (busy, shared) pool; audio buffers until it is open."""
        self._recording = True
        self._opening = asyncio.get_running_loop().create_task(asyncio.to_thread(self._open))

    def _open(self) -> None:
        try:
            private_folder(self.path.parent)
            self._file = open_private(self.path)  # a person's voice: 0600
            wav = wave.open(self._file, "wb")
            wav.setnchannels(2)
            wav.setsampwidth(2)
            wav.setframerate(self._rate)
        except OSError as error:  # a recording failure never breaks the call
            logger.warning(f"recording disabled: cannot write {self.path}: {error}")
            return
        self._wav = wav

    def _close(self) -> None:
        """Finalise the header and close the file (wave leaves a file it was given open)."""
        if self._wav is not None:
            self._wav.close()
            self._wav = None
        if self._file is not None:
            self._file.close()
            self._file = None

    # -- the two tracks ---------------------------------------------------------------------

    def add_caller_audio(self, pcm: bytes) -> None:
        if not self._recording:
            return
        self._caller += pcm
        if len(self._caller) >= self._rate * 2 * FLUSH_EVERY_SECS and (self._flushing is None or self._flushing.done()):
            self._flushing = asyncio.get_running_loop().create_task(self._flush())

    async def add_bot_audio(self, pcm: bytes, plays_in_secs: float = 0.0) -> None:
        """Bot audio sent now, to be heard `plays_in_secs` from now."""
        if not self._recording or not pcm:
            return
        if self._resampler is not None:
            pcm = await self._resampler.resample(pcm, self._bot_rate, self._rate)
        at = len(self._caller) + int(max(0.0, plays_in_secs) * self._rate) * 2
        if len(self._bot) < at:
            self._bot += bytes(at - len(self._bot))
        self._bot += pcm

    def cut_bot_audio(self) -> None:
        """A `clear`: bot audio beyond this moment was never heard."""
        del self._bot[len(self._caller):]

    # -- writing ----------------------------------------------------------------------------

    def _take(self, everything: bool = False) -> bytes:
        """Interleave what both tracks have (all of it at the end) and drop it from the buffers."""
        n = max(len(self._caller), len(self._bot)) if everything else len(self._caller)
        for track in (self._caller, self._bot):
            if len(track) < n:
                track += bytes(n - len(track))
        left = np.frombuffer(bytes(self._caller[:n]), dtype=np.int16)
        right = np.frombuffer(bytes(self._bot[:n]), dtype=np.int16)
        del self._caller[:n]
        del self._bot[:n]
        return np.column_stack((left, right)).tobytes()

    async def _flush(self, everything: bool = False) -> None:
        async with self._writes:
            if self._opening is not None:
                await self._opening
            audio = self._take(everything)
            if audio and self._wav is not None:
                await asyncio.to_thread(self._wav.writeframes, audio)
                self.bytes_written += len(audio)

    async def finish(self) -> Path | None:
        """Write what's buffered and close the file; the path, or None if nothing was recorded."""
        self._recording = False
        await self._flush(everything=True)
        async with self._writes:
            await asyncio.to_thread(self._close)
        return self.path if self.bytes_written else None
