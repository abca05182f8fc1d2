"""The bot's lines as the caller heard them: what goes into the call's transcript.

A line is one utterance (a TTS context, or prepared speech such as the greeting): its text,
which the TTS announces ahead of its audio, and its audio, which the Exotel output transport
paces out by a model of the caller's playback. From that clock the transport knows when a
line's first audio reached the caller and how much of it had played when a `clear` (barge-in)
or a hang-up cut it. So a line is recorded once it has played to the end, or when it is cut,
with the part heard and `interrupted`, and always with the moment it started playing.

Pipecat's assistant aggregator, which feeds the LLM context, can't give this: a TTS without
word timestamps (Piper) releases a sentence's text only after all its audio has been sent,
so a line cut in its middle left no text at all, and its turn ends when the audio has been
sent, not when it started playing.

What was heard is read off the audio: each line keeps the points the TTS reported as spoken
(the end of each sentence for Piper, each word as its audio arrives for ElevenLabs) against
the line's audio so far; between two points the text is spread evenly over the audio, and
the heard text runs to the end of the word being spoken when the line was cut.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from pipecat.frames.frames import (
    AggregatedTextFrame,
    Frame,
    TTSAudioRawFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
    TTSTextFrame,
)

# A line counts as played to the end when at most this much of its audio was left.
END_TOLERANCE_SECS = 0.05
# Speech rate assumed for audio the TTS has not yet said the words of (a long sentence still
# being synthesized) until the call's own lines show theirs: a slow talker's, so the heard
# part is not overstated.
DEFAULT_CHARS_PER_SEC = 14.0
# Lines announced but not yet playing (the next reply, a queued goodbye): a handful at most.
MAX_PENDING_LINES = 16

LineHeard = Callable[[str, float, bool], None]  # (text heard, monotonic start of playback, interrupted)


@dataclass
class _Line:
    text: str = ""
    spoken: list[tuple[float, int]] = field(default_factory=lambda: [(0.0, 0)])  # (audio secs, chars)
    audio_secs: float = 0.0  # the line's audio that reached the transport
    complete: bool = False  # the TTS has stopped: no more text or audio will come
    started_at: float | None = None  # monotonic time its first audio plays at the caller
    sent_secs: float = 0.0  # audio sent to Exotel (with the padding of the last payload)
    plays_until: float = 0.0  # monotonic time the audio sent so far ends at the caller

    def announce(self, text: str) -> None:
        text = text.strip()
        if text:
            self.text = f"{self.text} {text}" if self.text else text

    def mark_spoken(self, text: str) -> None:
        """The TTS reports `text` spoken by the end of the audio received so far."""
        cursor = self.spoken[-1][1]
        text = text.strip()
        if not text:
            return
        found = self.text.find(text, cursor)
        end = found + len(text) if found >= 0 else min(len(self.text), cursor + len(text))
        self.spoken.append((self.audio_secs, max(end, cursor)))

    def chars_at(self, secs: float, chars_per_sec: float) -> int:
        """How much of the text had been spoken `secs` into the line's audio. Past the last
        point the TTS reported (its words not said yet: the rest of the line was still being
        synthesized), at the line's own pace so far, else `chars_per_sec`."""
        points = list(self.spoken)
        if self.complete and points[-1][1] < len(self.text):
            points.append((max(self.audio_secs, points[-1][0]), len(self.text)))
        for (a0, c0), (a1, c1) in zip(points, points[1:], strict=False):
            if secs < a1:
                return c0 + round((c1 - c0) * max(0.0, secs - a0) / (a1 - a0)) if a1 > a0 else c0
        a_last, c_last = points[-1]
        pace = c_last / a_last if a_last > 0 and c_last > 0 else chars_per_sec
        return min(len(self.text), c_last + round(max(0.0, secs - a_last) * pace))

    def heard(self, at: float, chars_per_sec: float) -> tuple[str, bool]:
        """(the text heard by monotonic time `at`, whether the line was cut short)."""
        played = max(0.0, self.sent_secs - max(0.0, self.plays_until - at))
        if self.complete and played >= self.audio_secs - END_TOLERANCE_SECS:
            return self.text, False
        chars = max(1, self.chars_at(played, chars_per_sec))  # its first audio played: its first word began
        if chars >= len(self.text):
            return self.text, not self.complete
        end = chars if self.text[chars - 1].isspace() else self.text.find(" ", chars)  # the word under way
        return (self.text if end < 0 else self.text[:end]).strip(), True


class BotLines:
    """The lines of one call, fed by its Exotel output transport; `on_line` gets each one
    once, when it has been heard to the end or cut."""

    def __init__(self, on_line: LineHeard | None = None):
        self.on_line = on_line
        self._lines: dict[str | None, _Line] = {}  # by TTS context id, announced and not yet recorded
        self._playing: _Line | None = None
        self._pace = (0, 0.0)  # (chars, audio secs) of the lines heard to the end: the voice's pace

    # ------------------------------------------------------ frames reaching the transport
    def take(self, frame: Frame) -> None:
        """A frame on its way into the output transport (text and audio, in pipeline order)."""
        if isinstance(frame, TTSAudioRawFrame):
            line = self._line(frame.context_id)
            line.audio_secs += len(frame.audio) / (2 * frame.sample_rate * frame.num_channels)
        elif isinstance(frame, TTSTextFrame):
            self._line(frame.context_id).mark_spoken(frame.text)
        elif isinstance(frame, AggregatedTextFrame):
            if frame.will_be_spoken:
                self._line(frame.context_id).announce(frame.text)
        elif isinstance(frame, TTSStartedFrame):
            self._line(frame.context_id)
        elif isinstance(frame, TTSStoppedFrame):
            self._line(frame.context_id).complete = True

    def prepared(self, context_id: str, text: str, audio_secs: float) -> None:
        """Speech sent outside the pipeline (the greeting's opening) as part of a line."""
        line = self._line(context_id)
        line.announce(text)
        line.audio_secs += audio_secs

    def _line(self, context_id: str | None) -> _Line:
        line = self._lines.get(context_id)
        if line is None:
            if len(self._lines) >= MAX_PENDING_LINES:
                self._lines.pop(next(iter(self._lines)))
            line = self._lines[context_id] = _Line()
        return line

    # ------------------------------------------------------- the transport's playback
    def playing(self, context_id: str | None) -> None:
        """The line's start has left the media sender: the audio sent next is this line's."""
        line = self._lines.get(context_id)
        if line is None or line is self._playing:
            return
        if self._playing is not None:  # the previous line is over (nothing more of it will be sent)
            self._record(self._playing, self._playing.plays_until)
        self._playing = line

    def sent(self, secs: float, plays_from: float, plays_until: float) -> None:
        """Audio went to Exotel; it plays from `plays_from` to `plays_until` (monotonic)."""
        line = self._playing
        if line is None:
            return  # a filler, not a line
        if line.started_at is None:
            line.started_at = plays_from
        line.sent_secs += secs
        line.plays_until = plays_until

    def heard(self) -> None:
        """Everything sent has played (its mark came back): a finished line is recorded."""
        line = self._playing
        if line is not None and line.complete:
            self._record(line, line.plays_until)

    def playing_line_left_secs(self) -> float:
        """How much of the playing line the caller has not heard yet (after a pause: all that
        was not played), counting audio the TTS has still to make as unbounded; 0 if none plays."""
        line = self._playing
        if line is None:
            return 0.0
        if not line.complete:
            return float("inf")
        return max(0.0, line.audio_secs - line.sent_secs)

    def paused(self, at: float) -> None:
        """Playback stopped at `at` to be taken up again (a backchannel): the playing line
        counts what was heard; what it had sent and not played is sent again on resume."""
        line = self._playing
        if line is not None and line.plays_until > at:
            line.sent_secs = max(0.0, line.sent_secs - (line.plays_until - at))
            line.plays_until = at

    def cut(self, at: float) -> None:
        """Playback stopped at `at` (a `clear`, or the call ended): the playing line is
        recorded as heard so far; lines waiting to play never will."""
        if self._playing is not None:
            self._record(self._playing, at)
        self._lines.clear()

    def _record(self, line: _Line, at: float) -> None:
        if self._playing is line:
            self._playing = None
        for key, value in list(self._lines.items()):
            if value is line:
                del self._lines[key]
        if line.started_at is None or not line.text:
            return  # never played, or not a line (no text)
        chars, secs = self._pace
        text, interrupted = line.heard(at, chars / secs if secs >= 1.0 else DEFAULT_CHARS_PER_SEC)
        if not interrupted:
            self._pace = (chars + len(line.text), secs + line.audio_secs)
        if self.on_line is not None and text:
            self.on_line(text, line.started_at, interrupted)
