"""Exotel Voicebot media-stream serializer: Exotel's JSON <-> Pipecat frames.

Does what Pipecat's built-in ExotelFrameSerializer does (media in/out, `clear` on
interruption, DTMF in) and what it lacks:

- reads every event (connected/start/media/dtmf/mark/stop) in both spellings
  (`stream_sid`/`streamSid`, numbers as strings or ints), and a first `media` with no `start`;
- takes the sample rate from `start.media_format.sample_rate` unless configured, and passes
  audio through byte for byte when the stream and pipeline rates match;
- sizes outbound payloads to Exotel's rule (multiples of 320 bytes, >= 3,200), pads the
  last piece of an utterance with silence and holds nothing back once an utterance ends;
- sends a mark after each utterance and settles it when Exotel echoes it, so the transport
  can follow the caller's ears rather than its own send buffer;
- survives anything: a bad message is counted, logged once (throttled) and skipped.

It does no I/O: the transport (pipelines/exotel_transport.py) sends what it returns.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

from loguru import logger
from pipecat.audio.dtmf.types import KeypadEntry
from pipecat.audio.utils import create_stream_resampler
from pipecat.frames.frames import (
    AudioRawFrame,
    Frame,
    InputAudioRawFrame,
    InputDTMFFrame,
    InterruptionFrame,
    OutputTransportMessageFrame,
    OutputTransportMessageUrgentFrame,
    SystemFrame,
)
from pipecat.processors.frame_processor import FrameProcessorSetup
from pipecat.serializers.base_serializer import FrameSerializer
from pydantic import field_validator

from serializers.exotel_events import (
    SUPPORTED_RATES,
    StreamStart,
    as_str,
    pick,
    stream_sid_of,
)
from serializers.playback_marks import PlaybackMarks
from serializers.throttled_log import ThrottledLog

PAYLOAD_UNIT = 320  # Exotel plays whole 320-byte units; a short one costs a 20 ms wait.
MIN_PAYLOAD = 3_200
MAX_PAYLOAD = 100_000 // PAYLOAD_UNIT * PAYLOAD_UNIT  # 99,840: the largest legal payload
DEFAULT_RATE = 8000
# Outbound audio kept for a pause to send again: more than the transport's playback lead and
# the longest opening sent ahead of the pipeline (a greeting's first sentences).
RECENT_OUT_SECS = 8


@dataclass
class ExotelStopFrame(SystemFrame):
    """Exotel sent `stop`: the caller hung up (`callended`) or the applet ended the stream.

    Parameters:
        reason: Exotel's stop reason, as sent.
    """

    reason: str | None = None


class ExotelFrameSerializer(FrameSerializer):
    """Serializer for Exotel's bidirectional Voicebot/Stream WebSocket protocol."""

    class InputParams(FrameSerializer.InputParams):
        """Configuration for ExotelFrameSerializer.

        Parameters:
            exotel_sample_rate: Force the stream's rate; None reads it from `start`
                (8000 until a `start` says otherwise).
            sample_rate: Pipeline input rate override (default: the pipeline's).
            payload_bytes: Minimum outbound media payload: a multiple of 320 in 3200..99840.
            max_message_bytes: Inbound messages larger than this are dropped unparsed.
            log_interval_secs: At most one warning per problem kind per interval.
        """

        exotel_sample_rate: int | None = None
        sample_rate: int | None = None
        payload_bytes: int = MIN_PAYLOAD
        max_message_bytes: int = 1_000_000
        log_interval_secs: float = 10.0
        resampler_clear_after_secs: float | None = None

        @field_validator("exotel_sample_rate")
        @classmethod
        def _known_rate(cls, value: int | None) -> int | None:
            if value is not None and value not in SUPPORTED_RATES:
                raise ValueError(f"exotel_sample_rate must be one of {SUPPORTED_RATES}")
            return value

        @field_validator("payload_bytes")
        @classmethod
        def _legal_payload(cls, value: int) -> int:
            if value % PAYLOAD_UNIT or not MIN_PAYLOAD <= value <= MAX_PAYLOAD:
                raise ValueError("payload_bytes must be a multiple of 320 in 3200..99840")
            return value

    def __init__(
        self,
        stream_sid: str | None = None,
        call_sid: str | None = None,
        params: InputParams | None = None,
    ):
        """Create a serializer; the stream and call ids may also be learned from `start`."""
        params = params or ExotelFrameSerializer.InputParams()
        super().__init__(params)
        self._params: ExotelFrameSerializer.InputParams = params
        self._stream_sid = stream_sid
        self._call_sid = call_sid
        self._exotel_rate = params.exotel_sample_rate or DEFAULT_RATE
        self._pipeline_in_rate = 0
        self._start: StreamStart | None = None
        self._stop_reason: str | None = None
        self._input_resampler = create_stream_resampler(
            clear_after_secs=params.resampler_clear_after_secs
        )
        # One output resampler per source rate: a stream resampler is bound to its rates.
        self._output_resamplers: dict[int, Any] = {}
        self._out_buffer = bytearray()
        # The newest audio sent, so a paused utterance can be sent again from where the caller
        # stopped hearing it (bounded: the transport sends at most its playback lead ahead).
        self._recent_out = bytearray()
        self._recent_out_limit = self._exotel_rate * 2 * RECENT_OUT_SECS
        self._bytes_since_mark = 0
        self.marks = PlaybackMarks()
        self.problems = ThrottledLog(params.log_interval_secs)
        self.stats = {
            "messages_in": 0,
            "media_in": 0,
            "bytes_in": 0,
            "media_out": 0,
            "bytes_out": 0,
            "padding_bytes_out": 0,
            "clears_out": 0,
            "dtmf_in": 0,
        }

    # ------------------------------------------------------------------ properties
    @property
    def stream_sid(self) -> str | None:
        return self._stream_sid

    @property
    def call_sid(self) -> str | None:
        return self._call_sid

    @property
    def exotel_sample_rate(self) -> int:
        return self._exotel_rate

    @property
    def start(self) -> StreamStart | None:
        """What the `start` event said, once it came."""
        return self._start

    @property
    def stop_reason(self) -> str | None:
        return self._stop_reason

    @property
    def bytes_since_mark(self) -> int:
        """Audio sent since the last mark or clear (what a mark would cover now)."""
        return self._bytes_since_mark

    @property
    def pending_out_bytes(self) -> int:
        """Audio buffered here, below one payload, waiting for more or for a flush."""
        return len(self._out_buffer)

    async def setup(self, setup: FrameProcessorSetup):  # type: ignore[override]  # as FrameSerializer does
        """Learn the pipeline's input rate."""
        self._pipeline_in_rate = self._params.sample_rate or setup.audio_in_sample_rate

    # ------------------------------------------------------------------ outbound
    async def serialize(self, frame: Frame) -> str | bytes | None:
        """One outbound message for `frame`, or None (not handled, or audio still buffering).

        Pipecat's transports send one message per frame; audio beyond one legal payload stays
        buffered for the next frame or the utterance's flush. `serialize_many` sends it all.
        """
        if isinstance(frame, InterruptionFrame):
            return await self.clear()
        if isinstance(frame, AudioRawFrame):
            await self._buffer_audio(frame)
            return self._take_payload()
        if isinstance(frame, (OutputTransportMessageFrame, OutputTransportMessageUrgentFrame)):
            if isinstance(frame.message, dict) and self.should_ignore_frame(frame):
                return None
            return json.dumps(frame.message)
        return None

    async def serialize_many(self, frame: Frame) -> list[str]:
        """Every message `frame` makes ready now (audio: all whole payloads buffered)."""
        if not isinstance(frame, AudioRawFrame):
            message = await self.serialize(frame)
            return [message] if isinstance(message, str) else []
        await self._buffer_audio(frame)
        messages = []
        while (message := self._take_payload()) is not None:
            messages.append(message)
        return messages

    async def clear(self) -> str:
        """Barge-in: forget buffered audio and outstanding marks; tell Exotel to drop its queue."""
        self._out_buffer.clear()
        self._bytes_since_mark = 0
        for resampler in self._output_resamplers.values():
            await resampler.reset()  # or the interrupted words leak into the next utterance
        self.marks.drop_all()
        self.stats["clears_out"] += 1
        return json.dumps({"event": "clear", "stream_sid": self._stream_sid})

    def unplayed_audio(self, unplayed_bytes: int) -> bytes:
        """What a pause takes back: the last `unplayed_bytes` of audio sent (it had not played
        yet) and the audio held here short of a payload, in playing order. The held audio is
        forgotten; the caller of this sends `clear` and later sends the result again."""
        size = min(len(self._recent_out), unplayed_bytes // 2 * 2)
        audio = bytes(self._recent_out[len(self._recent_out) - size:]) + bytes(self._out_buffer)
        self._out_buffer.clear()
        return audio

    async def flush_utterance(self) -> list[str]:
        """End of a bot utterance: the padded tail (if any) and a mark covering it.

        Drains the resamplers' filter tails first, so the utterance's last milliseconds are
        not held back. Returns no mark when nothing was sent since the last mark or clear.
        """
        for resampler in self._output_resamplers.values():
            tail = await resampler.flush()
            if tail:
                self._out_buffer.extend(tail)
        messages = []
        while len(self._out_buffer) > MAX_PAYLOAD:
            messages.append(self._media_message(bytes(self._out_buffer[:MAX_PAYLOAD])))
            del self._out_buffer[:MAX_PAYLOAD]
        if self._out_buffer:
            tail_len = len(self._out_buffer)
            padded_len = max(self._params.payload_bytes, -(-tail_len // PAYLOAD_UNIT) * PAYLOAD_UNIT)
            self._out_buffer.extend(bytes(padded_len - tail_len))
            self.stats["padding_bytes_out"] += padded_len - tail_len
            messages.append(self._media_message(bytes(self._out_buffer)))
            self._out_buffer.clear()
        if self._bytes_since_mark:
            messages.append(self.mark_message(self.marks.new()))
            self._bytes_since_mark = 0
        return messages

    def mark_message(self, name: str) -> str:
        return json.dumps({"event": "mark", "stream_sid": self._stream_sid, "mark": {"name": name}})

    async def _buffer_audio(self, frame: AudioRawFrame) -> None:
        audio = frame.audio
        if frame.sample_rate != self._exotel_rate:
            resampler = self._output_resamplers.get(frame.sample_rate)
            if resampler is None:
                resampler = self._output_resamplers[frame.sample_rate] = create_stream_resampler(
                    clear_after_secs=None
                )
            audio = await resampler.resample(audio, frame.sample_rate, self._exotel_rate)
        if audio:
            self._out_buffer.extend(audio)

    def _take_payload(self) -> str | None:
        """The next legal payload from the buffer, once at least `payload_bytes` are there."""
        buffer = self._out_buffer
        if len(buffer) < self._params.payload_bytes:
            return None
        size = min(len(buffer) // PAYLOAD_UNIT * PAYLOAD_UNIT, MAX_PAYLOAD)
        payload = bytes(buffer[:size])
        del buffer[:size]
        return self._media_message(payload)

    def _media_message(self, payload: bytes) -> str:
        self.stats["media_out"] += 1
        self.stats["bytes_out"] += len(payload)
        self._bytes_since_mark += len(payload)
        recent = self._recent_out
        recent += payload
        if len(recent) > self._recent_out_limit:
            del recent[: len(recent) - self._recent_out_limit]
        encoded = base64.b64encode(payload).decode("ascii")
        return f'{{"event":"media","stream_sid":{json.dumps(self._stream_sid)},"media":{{"payload":"{encoded}"}}}}'

    # ------------------------------------------------------------------ inbound
    async def deserialize(self, data: str | bytes) -> Frame | None:
        """A frame for one inbound message, or None. Never raises."""
        try:
            return await self._deserialize(data)
        except Exception as error:  # the last line of defence: nothing here may end a call
            self.problems.warn("internal", f"{type(error).__name__}: {error}", call_sid=self._call_sid)
            return None

    async def _deserialize(self, data: str | bytes) -> Frame | None:
        self.stats["messages_in"] += 1
        size = len(data)
        if isinstance(data, str) and size * 4 > self._params.max_message_bytes:
            size = len(data.encode("utf-8", "surrogatepass"))  # the limit is in bytes
        if size > self._params.max_message_bytes:
            self.problems.warn("oversized", f"dropped a {size}-byte message", call_sid=self._call_sid)
            return None
        try:
            message = json.loads(data)
        except (ValueError, RecursionError):
            self.problems.warn("invalid_json", f"not JSON: {_preview(data)}", call_sid=self._call_sid)
            return None
        if not isinstance(message, dict):
            self.problems.warn("not_object", f"not a JSON object: {_preview(data)}", call_sid=self._call_sid)
            return None
        event = message.get("event")
        if event == "media":
            return await self._on_media(message)
        if event == "mark":
            self._on_mark(message)
            return None
        if event == "dtmf":
            return self._on_dtmf(message)
        if event == "start":
            self._on_start(message)
            return None
        if event == "stop":
            return self._on_stop(message)
        if event == "connected":
            return None
        self.problems.warn("unknown_event", f"event {str(event)[:40]!r} ignored", call_sid=self._call_sid)
        return None

    def _on_start(self, message: dict[str, Any]) -> None:
        start = StreamStart.from_message(message)
        self._start = start
        self._stream_sid = start.stream_sid or self._stream_sid
        self._call_sid = start.call_sid or self._call_sid
        if start.sample_rate and not self._params.exotel_sample_rate:
            self._exotel_rate = start.sample_rate
        if not start.stream_sid:
            self.problems.warn("missing_field", "start without stream_sid", call_sid=self._call_sid)

    async def _on_media(self, message: dict[str, Any]) -> Frame | None:
        if self._stream_sid is None:
            self._stream_sid = stream_sid_of(message)  # a stream with no `start`
        payload = pick(pick(message, "media"), "payload")
        if not isinstance(payload, str) or not payload:
            self.problems.warn("missing_field", "media without payload", call_sid=self._call_sid)
            return None
        try:
            audio = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            self.problems.warn("bad_base64", f"payload is not base64: {payload[:40]!r}", call_sid=self._call_sid)
            return None
        if len(audio) % 2:
            # A 16-bit stream can't carry half a sample: keep the whole samples, drop the stray byte.
            self.problems.warn("odd_length", f"{len(audio)}-byte PCM payload", call_sid=self._call_sid)
            audio = audio[:-1]
        if not audio:
            return None
        self.stats["media_in"] += 1
        self.stats["bytes_in"] += len(audio)
        rate = self._pipeline_in_rate or self._exotel_rate
        if rate != self._exotel_rate:
            audio = await self._input_resampler.resample(audio, self._exotel_rate, rate)
            if not audio:
                return None
        return InputAudioRawFrame(audio=audio, num_channels=1, sample_rate=rate)

    def _on_mark(self, message: dict[str, Any]) -> None:
        name = as_str(pick(pick(message, "mark"), "name")) or as_str(pick(message, "name"))
        if name is None:
            self.problems.warn("missing_field", "mark without name", call_sid=self._call_sid)
        elif not self.marks.echo(name):
            logger.bind(call_sid=self._call_sid).debug(f"exotel mark {name!r} echoed late or unknown")
        return None

    def _on_dtmf(self, message: dict[str, Any]) -> Frame | None:
        digit = as_str(pick(pick(message, "dtmf"), "digit", "digits"))
        try:
            button = KeypadEntry(digit or "")
        except ValueError:
            self.problems.warn("bad_dtmf", f"digit {digit!r} ignored", call_sid=self._call_sid)
            return None
        self.stats["dtmf_in"] += 1
        return InputDTMFFrame(button=button)

    def _on_stop(self, message: dict[str, Any]) -> Frame:
        stop = pick(message, "stop")
        self._stop_reason = as_str(pick(stop, "reason")) or as_str(pick(message, "reason")) or "stop"
        self._call_sid = self._call_sid or as_str(pick(stop, "call_sid", "callSid"))
        return ExotelStopFrame(reason=self._stop_reason)


def _preview(data: str | bytes, limit: int = 60) -> str:
    text = data if isinstance(data, str) else data[:limit].decode("utf-8", "replace")
    return repr(text[:limit])


__all__ = [
    "ExotelFrameSerializer",
    "ExotelStopFrame",
    "MAX_PAYLOAD",
    "MIN_PAYLOAD",
    "PAYLOAD_UNIT",
]
