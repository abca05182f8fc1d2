"""An Exotel emulator: a WebSocket client that behaves like Exotel's Voicebot applet.

It sends `connected`/`start`, streams the caller's audio as 100 ms `media` messages (real
time, or `speed` times faster: script times are on the caller's clock, results on the wall
clock), plays the bot's audio in real time as Exotel does (2 bytes per sample), echoes
marks when playback reaches them, drops queued audio on `clear`,
sends `dtmf` and `stop`, and records every protocol violation and playback gap.

One emulator serves the tests, the benchmarks and the offline simulator (`bot run`).
Playback is modelled with timestamps (no per-sample work), so hundreds can run at once.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

import websockets
from websockets.asyncio.client import connect

MIN_PAYLOAD = 3_200
MAX_PAYLOAD = 100_000
PAYLOAD_UNIT = 320


@dataclass
class Say:
    """The caller speaks `pcm` (16-bit mono at the stream's rate) from `at` seconds."""

    at: float
    pcm: bytes


@dataclass
class Dtmf:
    """The caller presses `digit` at `at` seconds."""

    at: float
    digit: str


@dataclass
class SendRaw:
    """Send `data` verbatim at `at` seconds (for robustness tests)."""

    at: float
    data: str | bytes


@dataclass
class HangUp:
    """Exotel sends `stop` with `reason` at `at` seconds, then closes the socket."""

    at: float
    reason: str = "callended"


@dataclass
class Reply:
    """The caller answers: says `pcm` once the bot has spoken since the caller's last line and
    then stayed quiet for `after` seconds (its audio played out). With `barge_in_after`, the
    caller instead cuts in that many seconds after the bot starts speaking."""

    pcm: bytes
    after: float = 0.7
    barge_in_after: float | None = None
    text: str = ""


CallerEvent = Say | Dtmf | SendRaw | HangUp | Reply


@dataclass
class EmulatorConfig:
    """How this emulated Exotel stream behaves."""

    url: str
    headers: dict[str, str] = field(default_factory=dict)
    sample_rate: int = 8000
    spelling: Literal["snake", "camel"] = "snake"
    numbers_as_strings: bool = True
    send_start: bool = True
    stream_sid: str = field(default_factory=lambda: f"stream-{uuid.uuid4().hex[:16]}")
    call_sid: str = field(default_factory=lambda: f"call-{uuid.uuid4().hex[:16]}")
    account_sid: str = "emulated-account"
    from_number: str = "+919876543210"
    to_number: str = "+918012345678"
    custom_parameters: dict[str, str] = field(default_factory=dict)
    chunk_ms: int = 100
    speed: float = 1.0
    echo_marks: bool = True
    marks_on_clear: Literal["drop", "echo"] = "drop"
    max_secs: float = 60.0
    open_timeout: float = 10.0
    # Script times count from the first bot audio (the greeting) instead of the socket's opening:
    # a script written against the greeting then holds however long the greeting takes to come
    # (a busy machine). Silence streams meanwhile, for at most first_audio_wait_secs.
    script_from_first_audio: bool = False
    first_audio_wait_secs: float = 30.0


@dataclass
class PlayedSegment:
    start: float  # wall-clock monotonic
    end: float
    pcm: bytes


@dataclass
class EmulatorResult:
    """Everything the emulated Exotel saw, heard and objected to."""

    config: EmulatorConfig
    connect_error: str | None = None
    started_at: float = 0.0
    violations: list[str] = field(default_factory=list)
    gaps: list[tuple[float, float]] = field(default_factory=list)  # (at, seconds)
    gaps_into_utterance: list[float] = field(default_factory=list)  # per gap: secs after its utterance's first media
    payload_sizes: list[int] = field(default_factory=list)
    media_at: list[float] = field(default_factory=list)  # when each bot media arrived
    caller_chunks_sent_at: list[float] = field(default_factory=list)  # when each scripted chunk left
    script_started_at: float = 0.0  # when the script's clock started (see script_from_first_audio)
    chunks_before_script: int = 0  # quiet chunks sent before it started
    marks_received: list[str] = field(default_factory=list)
    marks_echoed: list[str] = field(default_factory=list)
    clears_at: list[float] = field(default_factory=list)
    closed_by: str | None = None
    close_code: int | None = None
    closed_at: float | None = None
    unplayed_at_close_secs: float = 0.0
    dropped_by_clear_bytes: int = 0
    segments: list[PlayedSegment] = field(default_factory=list)
    events: list[tuple[float, str, Any]] = field(default_factory=list)

    @property
    def first_media_after_start(self) -> float | None:
        return self.media_at[0] if self.media_at else None

    @property
    def media_bytes(self) -> int:
        return sum(self.payload_sizes)

    @property
    def played_secs(self) -> float:
        return sum(len(s.pcm) for s in self.segments) / (2 * self.config.sample_rate)

    def played_pcm(self) -> bytes:
        """The bot's audio as the caller heard it, on the call's timeline (silence between)."""
        rate = self.config.sample_rate
        out = bytearray()
        for segment in self.segments:
            offset = int((segment.start - self.started_at) * rate) * 2
            if offset > len(out):
                out.extend(bytes(offset - len(out)))
            out[offset : offset + len(segment.pcm)] = segment.pcm
        return bytes(out)

    def played_speech_pcm(self) -> bytes:
        """Only the played audio, back to back (for speech recognition)."""
        return b"".join(s.pcm for s in self.segments)


class ExotelEmulator:
    """One emulated Exotel media stream against a bot's `/media` URL."""

    def __init__(self, config: EmulatorConfig):
        self.config = config
        self.result = EmulatorResult(config=config)
        self._ws: Any = None
        self._queue_end = 0.0
        self._utterance_open = False
        self._utterance_started_at = 0.0
        self._pending_echoes: dict[str, asyncio.TimerHandle] = {}
        self._send_lock = asyncio.Lock()
        self._closed = asyncio.Event()
        self._seq = 0
        self._last_line_at = 0.0
        self.transcript_hook = None  # optional callable(event, detail) for live display

    # ------------------------------------------------------------------ helpers
    def _now(self) -> float:
        return time.monotonic()

    def _rel(self, t: float | None = None) -> float:
        """Wall-clock seconds since the socket opened (results are all on this clock)."""
        return (t if t is not None else self._now()) - self.result.started_at

    def _event(self, kind: str, detail: Any = None) -> None:
        self.result.events.append((self._rel(), kind, detail))
        if self.transcript_hook:
            self.transcript_hook(kind, detail)

    def _num(self, value: int) -> int | str:
        return str(value) if self.config.numbers_as_strings else value

    def _key(self, snake: str) -> str:
        if self.config.spelling == "snake":
            return snake
        head, *rest = snake.split("_")
        return head + "".join(part.title() for part in rest)

    def _violation(self, text: str) -> None:
        self.result.violations.append(f"{self._rel():.3f}s {text}")

    async def _send(self, message: dict[str, Any] | str | bytes) -> None:
        if self._closed.is_set():
            return
        data = message if isinstance(message, (str, bytes)) else json.dumps(message)
        async with self._send_lock:
            try:
                await self._ws.send(data)
            except websockets.ConnectionClosed:
                self._closed.set()

    def _next_seq(self) -> int | str:
        self._seq += 1
        return self._num(self._seq)

    # ------------------------------------------------------------------ outbound (caller side)
    def _start_message(self) -> dict[str, Any]:
        c, k = self.config, self._key
        return {
            "event": "start",
            k("sequence_number"): self._next_seq(),
            k("stream_sid"): c.stream_sid,
            "start": {
                k("stream_sid"): c.stream_sid,
                k("call_sid"): c.call_sid,
                k("account_sid"): c.account_sid,
                "from": c.from_number,
                "to": c.to_number,
                k("custom_parameters"): c.custom_parameters,
                k("media_format"): {
                    "encoding": "raw/slin",
                    k("sample_rate"): self._num(c.sample_rate),
                    k("bit_rate"): f"{c.sample_rate * 16 // 1000}kbps",
                },
            },
        }

    def _media_message(self, chunk: int, pcm: bytes) -> dict[str, Any]:
        k = self._key
        return {
            "event": "media",
            k("sequence_number"): self._next_seq(),
            k("stream_sid"): self.config.stream_sid,
            "media": {
                "chunk": self._num(chunk),
                "timestamp": self._num(chunk * self.config.chunk_ms),
                "payload": base64.b64encode(pcm).decode("ascii"),
            },
        }

    async def _stream_caller(self, script: list[CallerEvent]) -> None:
        """Send the caller's line: continuous media (speech or silence), dtmf, raw, stop."""
        c = self.config
        chunk_bytes = c.sample_rate * 2 * c.chunk_ms // 1000
        timeline = bytearray()
        for event in script:
            if isinstance(event, Say):
                offset = int(event.at * c.sample_rate) * 2
                end = offset + len(event.pcm)
                if end > len(timeline):
                    timeline.extend(bytes(end - len(timeline)))
                timeline[offset:end] = event.pcm
        replies = [e for e in script if isinstance(e, Reply)]
        others = sorted((e for e in script if not isinstance(e, (Say, Reply))), key=lambda e: e.at)
        silence = bytes(chunk_bytes)
        chunk = 0
        script_chunk = 0  # chunks since the script's clock started (see script_from_first_audio)
        t0 = self.result.started_at
        while not self._closed.is_set():
            call_time = chunk * c.chunk_ms / 1000
            if call_time >= c.max_secs:
                self._event("max_secs")
                break
            if c.script_from_first_audio and not self.result.media_at and call_time < c.first_audio_wait_secs:
                await self._send(self._media_message(chunk, silence))  # before the greeting: a quiet line
                chunk += 1
                self.result.chunks_before_script = chunk
                self.result.script_started_at = chunk * c.chunk_ms / 1000 / c.speed
                await self._pace(t0, chunk)
                continue
            script_time = script_chunk * c.chunk_ms / 1000
            while others and others[0].at <= script_time:
                event = others.pop(0)
                if isinstance(event, Dtmf):
                    await self._send({"event": "dtmf", self._key("stream_sid"): c.stream_sid,
                                      "dtmf": {"digit": event.digit, "duration": self._num(250)}})
                    self._event("dtmf_sent", event.digit)
                elif isinstance(event, SendRaw):
                    await self._send(event.data)
                elif isinstance(event, HangUp):
                    await self._send({"event": "stop", self._key("stream_sid"): c.stream_sid,
                                      "stop": {self._key("call_sid"): c.call_sid,
                                               self._key("account_sid"): c.account_sid,
                                               "reason": event.reason}})
                    self._event("stop_sent", event.reason)
                    self.result.closed_by = self.result.closed_by or "emulator"
                    await self._ws.close()
                    return
            start = script_chunk * chunk_bytes
            if replies and start >= len(timeline) and self._reply_due(replies[0]):
                reply = replies.pop(0)
                timeline.extend(bytes(start - len(timeline)))
                timeline.extend(reply.pcm)
                # The bot's answer is whatever it plays after the caller has finished this line.
                self._last_line_at = self._now() + len(reply.pcm) / (2 * c.sample_rate * c.speed)
                self._event("caller_said", reply.text or f"{len(reply.pcm)} bytes")
            pcm = bytes(timeline[start : start + chunk_bytes]) if start < len(timeline) else silence
            if len(pcm) < chunk_bytes:
                pcm += bytes(chunk_bytes - len(pcm))
            self.result.caller_chunks_sent_at.append(self._rel())
            await self._send(self._media_message(chunk, pcm))
            chunk += 1
            script_chunk += 1
            await self._pace(t0, chunk)
        if not self._closed.is_set():
            self.result.closed_by = self.result.closed_by or "emulator"
            await self._ws.close()

    async def _pace(self, t0: float, chunks_sent: int) -> None:
        """Sleep until the next chunk is due (real time, or `speed` times faster)."""
        delay = t0 + chunks_sent * self.config.chunk_ms / 1000 / self.config.speed - self._now()
        if delay > 0:
            # A plain sleep: a wait_for on the close event made a task and a timer per chunk
            # (a hundred callers' worth of them in the benchmarks); a close is noticed at
            # the next chunk instead, as Exotel would.
            await asyncio.sleep(delay)

    def _reply_due(self, reply: Reply) -> bool:
        """Has the bot spoken since the caller's last line, and is it the moment to answer?"""
        spoken = [seg for seg in self.result.segments if seg.start >= self._last_line_at]
        if not spoken:
            return False
        now = self._now()
        if reply.barge_in_after is not None:
            return now < self._queue_end and now - spoken[0].start >= reply.barge_in_after
        return now - self._queue_end >= reply.after

    # ------------------------------------------------------------------ inbound (bot side)
    async def _receive_bot(self) -> None:
        try:
            async for data in self._ws:
                self._on_bot_message(data)
        except websockets.ConnectionClosed:
            pass
        finally:
            now = self._now()
            self.result.closed_at = self._rel(now)
            self.result.close_code = self._ws.close_code
            if self.result.closed_by is None:
                self.result.closed_by = "server"
                unplayed = max(0.0, self._queue_end - now)
                self.result.unplayed_at_close_secs = unplayed
                if unplayed > 0.05:
                    self._violation(f"socket closed with {unplayed:.2f}s of bot audio not yet played")
            for handle in self._pending_echoes.values():
                handle.cancel()
            self._closed.set()

    def _on_bot_message(self, data: str | bytes) -> None:
        try:
            message = json.loads(data)
        except (ValueError, RecursionError):
            self._violation(f"non-JSON message {str(data)[:60]!r}")
            return
        if not isinstance(message, dict):
            self._violation(f"non-object message {str(data)[:60]!r}")
            return
        event = message.get("event")
        if message.get("stream_sid") != self.config.stream_sid:
            self._violation(f"{event} with stream_sid {message.get('stream_sid')!r}")
        if event == "media":
            self._on_media(message)
        elif event == "mark":
            self._on_mark(message)
        elif event == "clear":
            self._on_clear()
        else:
            self._violation(f"unknown event {event!r}")

    def _on_media(self, message: dict[str, Any]) -> None:
        media = message.get("media")
        payload = media.get("payload") if isinstance(media, dict) else None
        if not isinstance(payload, str):
            self._violation("media without payload")
            return
        try:
            pcm = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            self._violation("media payload is not base64")
            return
        size = len(pcm)
        if size % PAYLOAD_UNIT:
            self._violation(f"media payload of {size} bytes is not a multiple of 320")
        if not MIN_PAYLOAD <= size <= MAX_PAYLOAD:
            self._violation(f"media payload of {size} bytes outside 3200..100000")
        now = self._now()
        self.result.payload_sizes.append(size)
        self.result.media_at.append(self._rel(now))
        if self._utterance_open and now > self._queue_end + 0.001:
            gap = now - self._queue_end
            self.result.gaps.append((self._rel(self._queue_end), gap))
            self.result.gaps_into_utterance.append(self._queue_end - self._utterance_started_at)
        if not self._utterance_open:
            self._utterance_started_at = now
        start = max(now, self._queue_end)
        end = start + size / (2 * self.config.sample_rate)
        self.result.segments.append(PlayedSegment(start, end, pcm))
        self._queue_end = end
        self._utterance_open = True

    def _on_mark(self, message: dict[str, Any]) -> None:
        mark = message.get("mark")
        name = mark.get("name") if isinstance(mark, dict) else None
        if not isinstance(name, str) or not name:
            self._violation("mark without a name")
            return
        self.result.marks_received.append(name)
        self._utterance_open = False
        if not self.config.echo_marks:
            return
        loop = asyncio.get_running_loop()
        due = max(self._now(), self._queue_end)
        self._pending_echoes[name] = loop.call_at(
            loop.time() + (due - self._now()), lambda: self._echo_soon(name)
        )

    def _echo_soon(self, name: str) -> None:
        self._pending_echoes.pop(name, None)
        asyncio.get_running_loop().create_task(self._echo(name))

    async def _echo(self, name: str) -> None:
        if self._closed.is_set():
            return
        self.result.marks_echoed.append(name)
        self._event("mark_echoed", name)
        await self._send({"event": "mark", self._key("stream_sid"): self.config.stream_sid,
                          "mark": {"name": name}})

    def _on_clear(self) -> None:
        now = self._now()
        self.result.clears_at.append(self._rel(now))
        self._event("clear")
        kept: list[PlayedSegment] = []
        for segment in self.result.segments:
            if segment.end <= now:
                kept.append(segment)
            elif segment.start < now:
                played = int((now - segment.start) * 2 * self.config.sample_rate) // 2 * 2
                self.result.dropped_by_clear_bytes += len(segment.pcm) - played
                kept.append(PlayedSegment(segment.start, now, segment.pcm[:played]))
            else:
                self.result.dropped_by_clear_bytes += len(segment.pcm)
        self.result.segments = kept
        self._queue_end = min(self._queue_end, now)
        self._utterance_open = False
        pending = list(self._pending_echoes)
        for name in pending:
            self._pending_echoes.pop(name).cancel()
            if self.config.marks_on_clear == "echo":
                asyncio.get_running_loop().create_task(self._echo(name))

    # ------------------------------------------------------------------ run
    async def run(self, script: list[CallerEvent] | None = None) -> EmulatorResult:
        """Connect, play the caller's script, and return what happened."""
        c = self.config
        try:
            self._ws = await connect(
                c.url, additional_headers=c.headers, open_timeout=c.open_timeout,
                max_size=2**22, ping_interval=None,
            )
        except Exception as error:  # refused (e.g. 403), unreachable, timeout
            self.result.connect_error = f"{type(error).__name__}: {error}"
            return self.result
        self.result.started_at = self._now()
        receiver = asyncio.create_task(self._receive_bot())
        await self._send({"event": "connected"})
        if c.send_start:
            await self._send(self._start_message())
        try:
            await self._stream_caller(list(script or []))
            await asyncio.wait_for(receiver, timeout=5.0)
        except TimeoutError:
            self._violation("server did not close the socket after stop")
        finally:
            receiver.cancel()
            await self._ws.close()
        return self.result
