"""A wire-level fake of ElevenLabs' text-to-speech APIs, for tests and benchmarks.

One aiohttp server on a free loopback port serves both transports, so Pipecat's
real ``ElevenLabsTTSService`` (WebSocket) and ``ElevenLabsHttpTTSService``
(HTTP) talk to it exactly as they would to api.elevenlabs.io::

    async with FakeElevenLabs(ms_per_char=60, ttfb_ms=50) as el:
        tts = ElevenLabsTTSService(api_key="test", url=el.ws_url, sample_rate=8000,
                                   settings=ElevenLabsTTSService.Settings(voice="v", model="m"))
        http_tts = ElevenLabsHttpTTSService(api_key="test", base_url=el.http_url,
                                            aiohttp_session=session, sample_rate=8000,
                                            settings=ElevenLabsHttpTTSService.Settings(voice="v"))

Speech
    Every character of the text the fake is asked to speak lasts exactly
    ``ms_per_char`` milliseconds (sample-exact: character ``k`` of a context
    covers samples ``round(k*spc) .. round((k+1)*spc)`` with
    ``spc = ms_per_char*rate/1000``), so a text of N characters is N*ms_per_char
    of audio. Letters and digits are a quiet voiced-like tone (150-299 Hz
    fundamental chosen from the character, two harmonics, a raised-sine
    envelope per character; peak under 3000, RMS about 1000); spaces and
    punctuation are silence.
    The audio is deterministic. Encodings: ``pcm_8000`` ... ``pcm_48000``
    (16-bit little-endian mono) and ``ulaw_8000``; any other ``output_format``
    (mp3, opus, or none, whose API default is mp3) is refused.

WebSocket: ``GET /v1/text-to-speech/{voice_id}/multi-stream-input``
    (query: ``model_id``, ``output_format``, ``auto_mode``, ...)
    Client messages (what Pipecat 1.14 sends)::

        {"text": " ", "context_id": C, "voice_settings": {...}}   opens context C
        {"text": "Hello there. ", "context_id": C}                 text to speak
        {"context_id": C, "flush": true}                           speak what is buffered
        {"context_id": C, "close_context": true}                   finish C, then isFinal
        {"text": "", "context_id": C} / {"text": ""}               keepalive (no-op)
        {"close_socket": true}                                     server closes with 1000

    Server messages::

        {"audio": "<b64>", "alignment": A, "normalizedAlignment": A, "contextId": C}
        {"isFinal": true, "contextId": C}

    with ``A = {"chars": [...], "charStartTimesMs": [...], "charDurationsMs": [...]}``
    covering exactly the characters whose audio is in that message, times
    relative to the start of that message's audio (Pipecat 1.14 restarts its
    clock at zero in every message and advances it by
    ``charStartTimesMs[-1] + charDurationsMs[-1]``). Messages are cut on
    character boundaries, about ``chunk_ms`` of audio each. As Flash does, the
    first message of each generation (each text spoken on its own) opens with
    a space, here of zero duration, unless the text starts with whitespace;
    it completes the previous sentence's last word (``leading_space=False``
    turns that off).

    Text is spoken at once when ``auto_mode=true``, otherwise buffered until
    ``flush``/``close_context``, or until 120 characters are buffered.
    ``isFinal`` is sent once ``close_context`` arrives and all the context's
    audio has been sent (``final_on_flush=True`` also sends it after a flush,
    which ends the context for Pipecat).

    The server enforces rules the real one is reported to enforce (Pipecat's
    code comments and issue reports; not checked against the live API): the
    API key (header ``xi-api-key``, or ``xi_api_key`` in the first message when
    there is no header), at most ``max_contexts`` (5) open contexts per
    connection, and ``voice_settings`` only in a context's first message or
    unchanged later (all three close with 1008, the last with ElevenLabs' own
    reason text). Malformed JSON also closes with 1008.

HTTP: ``POST /v1/text-to-speech/{voice_id}/stream/with-timestamps?output_format=..``
    Newline-delimited JSON objects ``{"audio_base64", "alignment",
    "normalized_alignment"}``, alignment being ``{"characters",
    "character_start_times_seconds", "character_end_times_seconds"}`` with
    times from the start of the response's audio. Also
    ``POST .../{voice_id}/with-timestamps`` (one JSON object), ``.../stream``
    (raw audio, chunked) and ``.../{voice_id}`` (raw audio). A wrong or
    missing ``xi-api-key`` gets 401 with ElevenLabs' error JSON.

Knobs: ``ttfb_ms`` (delay before the first audio of each spoken text, flush or
HTTP request), ``chunk_ms``, ``chunk_delay_ms`` (between audio messages; 0 =
as fast as possible), ``api_key`` (None = any non-empty key), ``ws_auth_failure``
(``"close"``: accept the upgrade then close 1008 "Invalid API key";
``"handshake"``: answer the upgrade with HTTP 401), ``fail_after_messages``
(on each connection, the text message after the first N is answered by an
abrupt close with 1011; ``fail_connections`` limits how many connections are
failed, None = all), ``reject_status`` (HTTP endpoints answer this status,
e.g. 500 or 429), ``inactivity_timeout_s`` (close 1008 after that long without
a text message; None = never).

Recording (all times ``time.monotonic()``): ``connections`` (one
:class:`WsConnection` per WebSocket: voice, query params, key, messages,
close code), ``texts`` (:class:`TextRecord` ``(context_id, text,
received_at)`` for every non-blank text), ``first_audio_sent_at`` and
``audio_ms_sent`` per context, ``closed_contexts`` (``close_context`` order),
``finals_sent``, ``http_requests`` (:class:`HttpRequestRecord`, with
``first_audio_at``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import json
import time
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
from aiohttp import WSMsgType, web

from bot.simulator.serving import cancel_all, serve_app

__all__ = [
    "FakeElevenLabs",
    "HttpRequestRecord",
    "TextRecord",
    "WsConnection",
    "speech_duration_ms",
    "synthesize",
]

_SAMPLE_RATES = {
    "pcm_8000": 8000,
    "pcm_16000": 16000,
    "pcm_22050": 22050,
    "pcm_24000": 24000,
    "pcm_32000": 32000,
    "pcm_44100": 44100,
    "pcm_48000": 48000,
    "ulaw_8000": 8000,
}

# Real API: without auto_mode, text waits in the buffer until this many
# characters (the first step of the default chunk_length_schedule) or a flush.
_BUFFER_CHARS = 120

_VOICE_SETTINGS_REASON = (
    "voice_settings field must be provided in the first message and then either be "
    "not provided or not change."
)
_INVALID_KEY_JSON = {"detail": {"status": "invalid_api_key", "message": "Invalid API key"}}
_MAX_WS_MESSAGE = 16 * 1024 * 1024


# --------------------------------------------------------------------------- records


class TextRecord(NamedTuple):
    """A non-blank text message the WebSocket endpoint received."""

    context_id: str
    text: str
    received_at: float


@dataclass
class WsConnection:
    """One WebSocket connection to the multi-stream-input endpoint."""

    index: int
    voice_id: str
    query: dict[str, str]
    api_key: str | None
    opened_at: float
    messages: list[dict[str, Any]] = field(default_factory=list)
    """Every JSON message received, as parsed (keepalives, flushes and closes included)."""
    closed_at: float | None = None
    close_code: int | None = None
    """The code the server closed with (None: the client closed first)."""
    close_reason: str | None = None


@dataclass
class HttpRequestRecord:
    """One request to an HTTP text-to-speech endpoint."""

    path: str
    voice_id: str
    query: dict[str, str]
    api_key: str | None
    body: Any
    received_at: float
    status: int = 200
    first_audio_at: float | None = None


# --------------------------------------------------------------------------- audio


def speech_duration_ms(text: str, ms_per_char: float = 60.0) -> float:
    """How long the fake speaks ``text`` for."""
    return len(text) * ms_per_char


def _char_bounds(k: int, ms_per_char: float, rate: int) -> int:
    """First sample of character ``k`` of a context (sample-exact, no drift)."""
    return round(k * ms_per_char * rate / 1000.0)


@functools.lru_cache(maxsize=4096)
def _char_wave(ch: str, n: int, rate: int) -> np.ndarray:
    """``n`` samples of int16 'speech' for one character."""
    if n <= 0:
        return np.zeros(0, dtype=np.int16)
    if not ch.isalnum():
        return np.zeros(n, dtype=np.int16)
    f0 = 150.0 + (ord(ch.lower()) * 37) % 150
    t = np.arange(n, dtype=np.float64) / rate
    tone = (
        np.sin(2 * np.pi * f0 * t)
        + 0.5 * np.sin(2 * np.pi * 2 * f0 * t)
        + 0.25 * np.sin(2 * np.pi * 3 * f0 * t)
    ) / 1.75
    envelope = np.sin(np.pi * (np.arange(n) + 0.5) / n) ** 0.5
    return np.round(3000.0 * tone * envelope).astype(np.int16)


def _ulaw(samples: np.ndarray) -> bytes:
    """G.711 mu-law encoding of int16 samples (the Sun reference / audioop algorithm)."""
    pcm = samples.astype(np.int32) >> 2
    mask = np.where(pcm < 0, 0x7F, 0xFF)
    pcm = np.minimum(np.abs(pcm), 8159) + 0x21
    seg = np.searchsorted(_ULAW_SEG_END, pcm, side="left")
    uval = np.where(seg >= 8, 0x7F, (seg << 4) | ((pcm >> (seg + 1)) & 0x0F))
    return ((uval ^ mask) & 0xFF).astype(np.uint8).tobytes()


_ULAW_SEG_END = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF])


def _encode(samples: np.ndarray, output_format: str) -> bytes:
    if output_format.startswith("ulaw"):
        return _ulaw(samples)
    return samples.astype("<i2").tobytes()


def synthesize(text: str, *, rate: int, ms_per_char: float = 60.0, first_char: int = 0) -> np.ndarray:
    """The fake's int16 audio for ``text``, as if it starts at character ``first_char``
    of its context (sample boundaries are computed from the context's start)."""
    parts = []
    for i, ch in enumerate(text):
        k = first_char + i
        n = _char_bounds(k + 1, ms_per_char, rate) - _char_bounds(k, ms_per_char, rate)
        parts.append(_char_wave(ch, n, rate))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int16)


@dataclass
class _Chunk:
    chars: list[str]
    audio: bytes
    starts: list[float]  # ms from the start of the chunk
    durations: list[float]  # ms
    offset_ms: float  # chunk start, ms from the start of the segment's first character
    duration_ms: float


def _num(x: float) -> float | int:
    """Whole numbers as ints, as ElevenLabs sends them."""
    r = round(x, 6)
    return int(r) if r == int(r) else r


def _chunks(
    text: str, *, first_char: int, rate: int, output_format: str, ms_per_char: float, chunk_ms: float
):
    """Cut ``text`` into messages of whole characters, about ``chunk_ms`` each."""
    per_chunk = max(1, round(chunk_ms / ms_per_char)) if ms_per_char > 0 else len(text) or 1
    seg_start = _char_bounds(first_char, ms_per_char, rate)
    for i in range(0, len(text), per_chunk):
        piece = text[i : i + per_chunk]
        k0 = first_char + i
        s0 = _char_bounds(k0, ms_per_char, rate)
        starts, durations = [], []
        for j in range(len(piece)):
            a = _char_bounds(k0 + j, ms_per_char, rate)
            b = _char_bounds(k0 + j + 1, ms_per_char, rate)
            starts.append((a - s0) * 1000.0 / rate)
            durations.append((b - a) * 1000.0 / rate)
        samples = synthesize(piece, rate=rate, ms_per_char=ms_per_char, first_char=k0)
        yield _Chunk(
            chars=list(piece),
            audio=_encode(samples, output_format),
            starts=starts,
            durations=durations,
            offset_ms=(s0 - seg_start) * 1000.0 / rate,
            duration_ms=len(samples) * 1000.0 / rate,
        )


# --------------------------------------------------------------------------- websocket


class _Closing(Exception):
    """Raised inside a connection's loop to close it with a code and reason."""

    def __init__(self, code: int, reason: str):
        super().__init__(reason)
        self.code = code
        self.reason = reason


_FINAL = object()


class _Context:
    def __init__(self, conn: _WsSession, context_id: str, voice_settings: Any):
        self.conn = conn
        self.id = context_id
        self.voice_settings = voice_settings
        self.buffer = ""
        self.chars_spoken = 0
        self.queue: asyncio.Queue = asyncio.Queue()
        self.task = asyncio.create_task(self._run(), name=f"fake-elevenlabs-ctx-{context_id}")

    def enqueue_buffer(self):
        if self.buffer.strip():
            self.queue.put_nowait(self.buffer)
        self.buffer = ""

    async def _run(self):
        fake = self.conn.fake
        try:
            while True:
                item = await self.queue.get()
                if item is _FINAL:
                    await self.conn.send({"isFinal": True, "contextId": self.id})
                    fake.finals_sent.append(self.id)
                    return
                await self._speak(item)
        except (ConnectionError, RuntimeError):
            # The socket went away under us; nothing left to do.
            pass

    async def _speak(self, text: str):
        fake = self.conn.fake
        if fake.ttfb_ms:
            await asyncio.sleep(fake.ttfb_ms / 1000.0)
        # Like Flash, a generation's alignment opens with a space (here of zero
        # duration), which ends the last word of the previous generation.
        lead = fake.leading_space and not text[:1].isspace()
        for chunk in _chunks(
            text,
            first_char=self.chars_spoken,
            rate=self.conn.rate,
            output_format=self.conn.output_format,
            ms_per_char=fake.ms_per_char,
            chunk_ms=fake.chunk_ms,
        ):
            chars, starts, durations = chunk.chars, chunk.starts, chunk.durations
            if lead:
                chars, starts, durations = [" ", *chars], [0.0, *starts], [0.0, *durations]
                lead = False
            alignment = {
                "chars": chars,
                "charStartTimesMs": [_num(x) for x in starts],
                "charDurationsMs": [_num(x) for x in durations],
            }
            await self.conn.send(
                {
                    "audio": base64.b64encode(chunk.audio).decode("ascii"),
                    "alignment": alignment,
                    "normalizedAlignment": alignment,
                    "contextId": self.id,
                }
            )
            fake.first_audio_sent_at.setdefault(self.id, time.monotonic())
            fake.audio_ms_sent[self.id] = fake.audio_ms_sent.get(self.id, 0.0) + chunk.duration_ms
            if fake.chunk_delay_ms:
                await asyncio.sleep(fake.chunk_delay_ms / 1000.0)
        self.chars_spoken += len(text)


class _WsSession:
    """One client connection: its contexts and the rules the real server applies."""

    def __init__(self, fake: FakeElevenLabs, ws: web.WebSocketResponse, record: WsConnection):
        self.fake = fake
        self.ws = ws
        self.record = record
        self.output_format = record.query.get("output_format", "")
        self.rate = _SAMPLE_RATES.get(self.output_format, 0)
        self.auto_mode = record.query.get("auto_mode", "false").lower() == "true"
        self.contexts: dict[str, _Context] = {}
        self.closing_contexts: set[_Context] = set()
        self.text_messages = 0
        self.authenticated = fake.api_key is None and bool(record.api_key)
        if fake.api_key is not None and record.api_key == fake.api_key:
            self.authenticated = True
        self.last_text_at = time.monotonic()
        self._send_lock = asyncio.Lock()

    async def send(self, msg: dict[str, Any]):
        async with self._send_lock:
            if self.ws.closed:
                raise ConnectionError("websocket closed")
            await self.ws.send_str(json.dumps(msg))

    def _all_tasks(self) -> list[asyncio.Task]:
        return [c.task for c in (*self.contexts.values(), *self.closing_contexts)]

    async def stop(self):
        await cancel_all(self._all_tasks())

    async def close(self, code: int, reason: str):
        await self.stop()
        self.record.close_code = code
        self.record.close_reason = reason
        with contextlib.suppress(Exception):
            await self.ws.close(code=code, message=reason.encode()[:123])

    async def handle(self, raw: str):
        fake = self.fake
        try:
            msg = json.loads(raw)
            if not isinstance(msg, dict):
                raise ValueError("not an object")
        except ValueError:
            raise _Closing(
                1008,
                "Could not parse input message, make sure it is a json and follows the schema.",
            ) from None
        self.record.messages.append(msg)

        if not self.authenticated:
            key = msg.get("xi_api_key")
            if key and (fake.api_key is None or key == fake.api_key):
                self.authenticated = True
            else:
                raise _Closing(1008, "Invalid API key")

        if msg.get("close_socket"):
            raise _Closing(1000, "")

        context_id = msg.get("context_id") or msg.get("contextId") or "default"
        text = msg.get("text")
        text = text if isinstance(text, str) else None
        has_context = bool(msg.get("context_id") or msg.get("contextId"))

        if text is not None:
            self.last_text_at = time.monotonic()  # keepalives ("") count too
        if text is not None and text.strip():
            self.text_messages += 1
            fake.texts.append(TextRecord(context_id, text, time.monotonic()))
            if (
                fake.fail_after_messages is not None
                and self.text_messages > fake.fail_after_messages
                and (fake.fail_connections is None or fake._failed_connections < fake.fail_connections)
            ):
                fake._failed_connections += 1
                raise _Closing(1011, "Internal server error")

        ctx = self.contexts.get(context_id)
        opens_context = text is not None and (has_context or text.strip())
        if ctx is None and opens_context:
            if fake.max_contexts is not None and len(self.contexts) >= fake.max_contexts:
                raise _Closing(
                    1008, f"Maximum number of concurrent contexts ({fake.max_contexts}) exceeded"
                )
            ctx = _Context(self, context_id, msg.get("voice_settings"))
            self.contexts[context_id] = ctx
        elif ctx is not None and "voice_settings" in msg:
            if msg["voice_settings"] != ctx.voice_settings:
                raise _Closing(1008, _VOICE_SETTINGS_REASON)

        if ctx is None:
            # flush / close_context for a context this connection doesn't have.
            if msg.get("close_context"):
                fake.closed_contexts.append(context_id)
            return

        if text and (ctx.buffer or text.strip()):  # a context's opening " " isn't speech
            ctx.buffer += text
            if self.auto_mode or len(ctx.buffer) >= _BUFFER_CHARS:
                ctx.enqueue_buffer()
        if msg.get("flush"):
            ctx.enqueue_buffer()
            if fake.final_on_flush:
                ctx.queue.put_nowait(_FINAL)
                self._retire(ctx)
        if msg.get("close_context"):
            fake.closed_contexts.append(context_id)
            if self.contexts.get(context_id) is ctx:
                ctx.enqueue_buffer()
                ctx.queue.put_nowait(_FINAL)
                self._retire(ctx)

    def _retire(self, ctx: _Context):
        """The context no longer counts as open; its queued audio still goes out."""
        self.contexts.pop(ctx.id, None)
        self.closing_contexts.add(ctx)
        ctx.task.add_done_callback(lambda _t: self.closing_contexts.discard(ctx))

    async def watch_inactivity(self, timeout_s: float):
        while not self.ws.closed:
            await asyncio.sleep(min(timeout_s, 0.5))
            if time.monotonic() - self.last_text_at > timeout_s:
                await self.close(
                    1008,
                    f"Have not received a new text input within the timeout of {timeout_s:g} "
                    "seconds. Streaming input terminated.",
                )
                return


# --------------------------------------------------------------------------- server


class FakeElevenLabs:
    """ElevenLabs TTS (multi-stream-input WebSocket and HTTP) on 127.0.0.1:<free port>."""

    def __init__(
        self,
        *,
        ms_per_char: float = 60.0,
        ttfb_ms: float = 0.0,
        chunk_ms: float = 100.0,
        chunk_delay_ms: float = 0.0,
        api_key: str | None = None,
        ws_auth_failure: str = "close",
        fail_after_messages: int | None = None,
        fail_connections: int | None = None,
        reject_status: int | None = None,
        max_contexts: int | None = 5,
        final_on_flush: bool = False,
        inactivity_timeout_s: float | None = None,
        leading_space: bool = True,
        connect_delay_ms: float = 0.0,
    ):
        """Configure the fake; it starts serving on ``async with`` (or :meth:`start`).

        Args:
            ms_per_char: Audio length of each character, in milliseconds.
            ttfb_ms: Delay before the first audio of each spoken text (or flush)
                and of each HTTP response.
            chunk_ms: Target audio length of one message (whole characters).
            chunk_delay_ms: Pause between audio messages (0: as fast as possible).
            api_key: The only key accepted; None accepts any non-empty key.
            ws_auth_failure: ``"close"`` (accept, then close 1008) or
                ``"handshake"`` (HTTP 401 to the upgrade) for a wrong header key.
            fail_after_messages: Close a connection with 1011 when a text
                message arrives after this many (per connection).
            fail_connections: How many connections ``fail_after_messages``
                fails (None: every one).
            reject_status: Status every HTTP TTS request gets (e.g. 500, 429).
            max_contexts: Open contexts allowed per connection (real API: 5).
            final_on_flush: Also end a context (``isFinal``) on ``flush``.
            inactivity_timeout_s: Close 1008 after this long without text.
            leading_space: Open each WebSocket generation's alignment with a
                zero-duration space when its text doesn't start with one (as
                Flash does), so the previous sentence's last word completes.
        """
        if ws_auth_failure not in ("close", "handshake"):
            raise ValueError("ws_auth_failure must be 'close' or 'handshake'")
        self.ms_per_char = ms_per_char
        self.ttfb_ms = ttfb_ms
        self.chunk_ms = chunk_ms
        self.chunk_delay_ms = chunk_delay_ms
        self.api_key = api_key
        self.ws_auth_failure = ws_auth_failure
        self.fail_after_messages = fail_after_messages
        self.fail_connections = fail_connections
        self.reject_status = reject_status
        self.max_contexts = max_contexts
        self.final_on_flush = final_on_flush
        self.inactivity_timeout_s = inactivity_timeout_s
        self.leading_space = leading_space
        self.connect_delay_ms = connect_delay_ms

        self.connections: list[WsConnection] = []
        self.texts: list[TextRecord] = []
        self.first_audio_sent_at: dict[str, float] = {}
        self.audio_ms_sent: dict[str, float] = {}
        self.closed_contexts: list[str] = []
        self.finals_sent: list[str] = []
        self.http_requests: list[HttpRequestRecord] = []

        self._failed_connections = 0
        self._sessions: set[_WsSession] = set()
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    # ------------------------------------------------------------------ lifecycle

    @property
    def ws_url(self) -> str:
        """Base URL for ``ElevenLabsTTSService(url=...)``: ``ws://127.0.0.1:PORT``."""
        return f"ws://127.0.0.1:{self.port}"

    @property
    def http_url(self) -> str:
        """Base URL for ``ElevenLabsHttpTTSService(base_url=...)``."""
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> FakeElevenLabs:
        app = web.Application(client_max_size=_MAX_WS_MESSAGE)
        app.router.add_get("/v1/text-to-speech/{voice_id}/multi-stream-input", self._ws_handler)
        tts = "/v1/text-to-speech/{voice_id}"
        app.router.add_post(tts + "/stream/with-timestamps", self._http_handler)
        app.router.add_post(tts + "/with-timestamps", self._http_handler)
        app.router.add_post(tts + "/stream", self._http_handler)
        app.router.add_post(tts, self._http_handler)
        self._runner, self.port = await serve_app(app)
        return self

    async def stop(self):
        for session in list(self._sessions):
            await session.close(1001, "server shutting down")
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeElevenLabs:
        return await self.start()

    async def __aexit__(self, *exc):
        await self.stop()

    # ------------------------------------------------------------------ helpers for tests

    def texts_for(self, context_id: str) -> list[str]:
        """Texts received for one context, in order."""
        return [t.text for t in self.texts if t.context_id == context_id]

    # ------------------------------------------------------------------ websocket

    async def _ws_handler(self, request: web.Request) -> web.StreamResponse:
        record = WsConnection(
            index=len(self.connections),
            voice_id=request.match_info["voice_id"],
            query=dict(request.query),
            api_key=request.headers.get("xi-api-key"),
            opened_at=time.monotonic(),
        )
        self.connections.append(record)

        header_key = record.api_key
        wrong_header_key = header_key is not None and (
            header_key == "" or (self.api_key is not None and header_key != self.api_key)
        )
        if wrong_header_key and self.ws_auth_failure == "handshake":
            record.closed_at = time.monotonic()
            record.close_code = 401
            return web.json_response(_INVALID_KEY_JSON, status=401)

        if self.connect_delay_ms:
            await asyncio.sleep(self.connect_delay_ms / 1000)  # a far-away provider's handshake
        ws = web.WebSocketResponse(max_msg_size=_MAX_WS_MESSAGE, autoping=True)
        await ws.prepare(request)
        session = _WsSession(self, ws, record)
        self._sessions.add(session)
        watchdog = None
        try:
            if wrong_header_key:
                raise _Closing(1008, "Invalid API key")
            if session.rate == 0:
                raise _Closing(
                    1008,
                    f"Unsupported output_format {session.output_format or '(none: mp3_44100_128)'!r}"
                    " for this fake; use pcm_* or ulaw_8000",
                )
            if self.inactivity_timeout_s:
                watchdog = asyncio.create_task(session.watch_inactivity(self.inactivity_timeout_s))
            async for message in ws:
                if message.type == WSMsgType.TEXT:
                    await session.handle(message.data)
                elif message.type == WSMsgType.BINARY:
                    raise _Closing(1003, "Binary messages are not supported")
                elif message.type == WSMsgType.ERROR:
                    break
        except _Closing as closing:
            await session.close(closing.code, closing.reason)
        finally:
            if watchdog is not None:
                watchdog.cancel()
            await session.stop()
            if not ws.closed:
                with contextlib.suppress(Exception):
                    await ws.close()
            record.closed_at = time.monotonic()
            self._sessions.discard(session)
        return ws

    # ------------------------------------------------------------------ http

    async def _http_handler(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        try:
            body = await request.json()
        except Exception:
            body = None
        record = HttpRequestRecord(
            path=path,
            voice_id=request.match_info["voice_id"],
            query=dict(request.query),
            api_key=request.headers.get("xi-api-key"),
            body=body,
            received_at=time.monotonic(),
        )
        self.http_requests.append(record)

        def fail(status: int, detail: Any) -> web.Response:
            record.status = status
            return web.json_response({"detail": detail}, status=status)

        key = record.api_key
        if not key or (self.api_key is not None and key != self.api_key):
            return fail(401, _INVALID_KEY_JSON["detail"])
        if self.reject_status is not None:
            status = self.reject_status
            if status == 429:
                return fail(
                    429,
                    {
                        "status": "too_many_concurrent_requests",
                        "message": "Too many concurrent requests (fake).",
                    },
                )
            return fail(status, {"status": "internal_error", "message": f"Fake error {status}."})
        if not isinstance(body, dict) or not isinstance(body.get("text"), str):
            return fail(
                422,
                [{"loc": ["body", "text"], "msg": "field required", "type": "value_error.missing"}],
            )
        output_format = record.query.get("output_format", "")
        rate = _SAMPLE_RATES.get(output_format)
        if rate is None:
            return fail(
                400,
                {
                    "status": "invalid_output_format",
                    "message": f"Unsupported output_format {output_format!r} for this fake.",
                },
            )

        text = body["text"]
        timestamps = path.endswith("/with-timestamps")
        streaming = "/stream" in path[len("/v1/text-to-speech/") :]
        if self.ttfb_ms:
            await asyncio.sleep(self.ttfb_ms / 1000.0)
        chunks = list(
            _chunks(
                text,
                first_char=0,
                rate=rate,
                output_format=output_format,
                ms_per_char=self.ms_per_char,
                chunk_ms=self.chunk_ms,
            )
        )

        if not timestamps:
            content_type = "audio/basic" if output_format.startswith("ulaw") else "audio/pcm"
            if not streaming:
                record.first_audio_at = time.monotonic()
                return web.Response(body=b"".join(c.audio for c in chunks), content_type=content_type)
            response = web.StreamResponse(headers={"Content-Type": content_type})
            await response.prepare(request)
            for c in chunks:
                await response.write(c.audio)
                record.first_audio_at = record.first_audio_at or time.monotonic()
                if self.chunk_delay_ms:
                    await asyncio.sleep(self.chunk_delay_ms / 1000.0)
            await response.write_eof()
            return response

        def alignment(cs: list[_Chunk]) -> dict[str, list]:
            chars, starts, ends = [], [], []
            for c in cs:
                for ch, s, d in zip(c.chars, c.starts, c.durations, strict=False):
                    chars.append(ch)
                    starts.append(_num((c.offset_ms + s) / 1000.0))
                    ends.append(_num((c.offset_ms + s + d) / 1000.0))
            return {
                "characters": chars,
                "character_start_times_seconds": starts,
                "character_end_times_seconds": ends,
            }

        def item(cs: list[_Chunk]) -> dict[str, Any]:
            a = alignment(cs)
            return {
                "audio_base64": base64.b64encode(b"".join(c.audio for c in cs)).decode("ascii"),
                "alignment": a,
                "normalized_alignment": a,
            }

        if not streaming:
            record.first_audio_at = time.monotonic()
            return web.json_response(item(chunks))
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        for c in chunks:
            await response.write((json.dumps(item([c])) + "\n").encode())
            record.first_audio_at = record.first_audio_at or time.monotonic()
            if self.chunk_delay_ms:
                await asyncio.sleep(self.chunk_delay_ms / 1000.0)
        await response.write_eof()
        return response
