"""Notes on the call session what crosses the transport's edges: caller audio, DTMF, bot speech.

Not a pipeline stage: the Exotel transport hands it what it receives and sends. As a processor
right after the input transport it cost every caller audio frame (ten a second per call) one
more push and process in Pipecat's frame machinery, ~5% of a worker's CPU per call, to count
bytes and pass the frame on. Nor an observer: caller audio reaches the recorder as it arrives
(the recording's timeline is the caller's stream; bot audio lands at its length when sent), not
later through an observer's queue; a DTMF key acts (its answer is pushed from the input
transport); a heard line is no frame. Only the bot speech times read frames, and as part of an
observer they cost more (pipelines/call_watch.py). Nothing here stops a frame.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from pipecat.frames.frames import Frame

from pipelines.call_session import EdgeNotes
from pipelines.dtmf_actions import DTMFActions
from pipelines.recorder import CallRecorder


class CallTap:
    """Counts caller audio (and hands it to the call's recorder), records DTMF digits (and runs
    the campaign's key actions), when the bot started/stopped speaking (stopped: once the
    caller has heard the utterance, as the transport holds it for the mark) and the bot's
    lines as the caller heard them (pipelines/bot_lines.py)."""

    def __init__(self, session: EdgeNotes, recorder: CallRecorder | None = None, dtmf: DTMFActions | None = None):
        self._session = session
        self._recorder = recorder
        self._dtmf = dtmf

    def caller_audio(self, pcm: bytes) -> None:
        self._session.inbound_audio_bytes += len(pcm)
        if self._recorder is not None:
            self._recorder.add_caller_audio(pcm)

    async def dtmf(self, key: str, push: Callable[[Frame], Awaitable[None]]) -> None:
        """`push` sends a frame downstream from the input transport (a key's spoken answer)."""
        self._session.dtmf.append(key)
        if self._dtmf is not None:
            await self._dtmf.on_key(key, push)

    def bot_speech(self, event: str) -> None:
        """`started` or `stopped`."""
        self._session.bot_speech.append((event, time.monotonic()))

    def bot_line(self, text: str, started_at: float, interrupted: bool) -> None:
        """A bot line the caller heard (all of it, or up to where it was cut), stamped with
        when it started playing (monotonic)."""
        self._session.add_transcript(
            "assistant", text, t=self._session.elapsed(started_at), interrupted=interrupted
        )
