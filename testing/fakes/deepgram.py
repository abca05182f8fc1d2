"""A wire-level fake of Deepgram's live-transcription WebSocket API (``/v1/listen``).

It is a real WebSocket server on a loopback port, so the real ``deepgram-sdk``, and
Pipecat's ``DeepgramSTTService`` on top of it, talk to it exactly as they would to
api.deepgram.com::

    async with FakeDeepgram(script=["hello there", "book a table"]) as dg:
        stt = DeepgramSTTService(
            api_key="test",
            base_url=dg.base_url,  # "http://127.0.0.1:PORT": Pipecat maps it to ws://
            sample_rate=8000,
            settings=DeepgramSTTService.Settings(model="nova-3", language="en-IN"),
        )

The wire protocol, as the SDK (7.x) speaks it:

* Handshake: ``GET /v1/listen?model=..&language=..&encoding=linear16&sample_rate=8000
  &channels=1&multichannel=false&interim_results=true&punctuate=true&...`` with
  ``Authorization: Token <api key>`` (``Bearer <token>`` for temporary tokens, or the
  ``Sec-WebSocket-Protocol: token, <key>`` form). A rejected handshake is a plain HTTP
  answer (401 for a bad key), which the SDK raises as ``ApiError(status_code=...)``.
* Client -> server: binary frames of raw audio; text frames ``{"type": "KeepAlive"}``,
  ``{"type": "Finalize"}`` and ``{"type": "CloseStream"}``.
* Server -> client (text/JSON): ``Results`` (interim with ``is_final=false``; final with
  ``is_final=true``, ``speech_final=true`` at an endpoint, ``from_finalize=true`` when
  answering a Finalize), ``SpeechStarted`` (only with ``vad_events=true``),
  ``UtteranceEnd`` (only with ``utterance_end_ms``), ``Metadata`` (after CloseStream,
  then a normal 1000 close).

What the fake "hears" is decided by a cheap energy detector: 16-bit (or mu-law/a-law)
audio is cut into 20 ms frames; a frame whose RMS reaches ``speech_threshold_rms`` is
voiced; ``min_speech_ms`` of consecutive voiced frames start an utterance; ``endpointing``
ms of unvoiced audio end it. All timing is in *audio* time (bytes received), as with the
real service: a client that stops sending audio never reaches an endpoint (send silence,
or a Finalize). Unlike Deepgram, whose default endpointing is 10 ms, the fake defaults to
300 ms when the query has no ``endpointing``.

What it "says" is decided by ``script``: a list of transcripts used in order (each
connection starts again at the first), or a function ``script(utterance_index,
audio_bytes) -> str`` called when an utterance is finalised.

Worth knowing about the client side (deepgram-sdk 7.17 + Pipecat 1.14):

* The SDK connects with the deprecated ``websockets.legacy`` client; ``base_url`` goes
  through Pipecat's ``_derive_deepgram_urls``: ``http://`` / ``ws://`` give plain ws://,
  anything else (or no scheme) gives wss://. The SDK appends ``/v1/listen`` itself.
* Pipecat sends ``endpointing`` only when set in Settings (default None), always sends
  ``interim_results=true``, never ``vad_events`` (pass ``extra={"vad_events": True}``).
* A 4xx handshake answer makes Pipecat push a permanent ErrorFrame and give up at once;
  a 5xx or a dropped socket (e.g. 1011) is retried after at least 4 s of backoff, and
  audio arriving while disconnected is dropped, not buffered.
* On stop Pipecat sends CloseStream and cancels its socket at once, so the Metadata
  answer is usually never read.
* Pipecat sends Finalize on every VADUserStoppedSpeakingFrame and marks the resulting
  TranscriptionFrame ``finalized`` only if the Results carries ``from_finalize=true``.

Everything is recorded for assertions: ``dg.connections`` (one ``ConnectionRecord`` per
handshake, accepted or not), and ``dg.finals_sent_at`` / ``dg.transcripts_sent`` (the
monotonic time at which each utterance's final went out, and its text).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

__all__ = ["FakeDeepgram", "ConnectionRecord", "Utterance", "Script"]

ScriptFn = Callable[[int, bytes], str]
Script = list[str] | tuple[str, ...] | ScriptFn | None

_FRAME_S = 0.02  # detector frame: 20 ms
_MODEL_UUID = "1dbdfb4d-85b2-4659-9b3c-3b2f6c5c5b2b"


@dataclass
class Utterance:
    """One stretch of speech the detector found, and what was sent for it."""

    index: int  # 0-based, per connection
    start: float  # audio seconds, from the start of the stream
    end: float | None = None  # audio seconds (end of the last voiced frame)
    transcript: str | None = None  # the final's text (None until finalised)
    from_finalize: bool = False  # finalised by a client Finalize rather than endpointing
    speech_final: bool = False
    started_at: float = 0.0  # time.monotonic() when the start was detected
    last_voice_at: float = 0.0  # time.monotonic() when the last voiced audio arrived
    ended_at: float | None = None  # time.monotonic() when the end was decided
    final_sent_at: float | None = None  # time.monotonic() when the final went out
    audio: bytes = field(default=b"", repr=False)  # the voiced stretch, as received


@dataclass
class ConnectionRecord:
    """One handshake (accepted or rejected) and everything that happened on it."""

    index: int
    path: str
    query: dict[str, str]  # last value of each parameter
    query_all: dict[str, list[str]]  # every value (keyterm=a&keyterm=b)
    headers: dict[str, str]  # lower-cased names
    request_id: str
    status: int = 101  # 101 accepted, else the HTTP status it was rejected with
    api_key: str | None = None  # the key/token the client presented
    model: str | None = None
    language: str | None = None
    encoding: str | None = None
    sample_rate: int | None = None
    channels: int = 1
    endpointing_ms: int | None = None  # effective value; None = disabled
    interim_results: bool = False
    vad_events: bool = False
    utterance_end_ms: int | None = None
    keyterms: list[str] = field(default_factory=list)
    keywords: list[str] = field(default_factory=list)
    audio_bytes: int = 0
    audio_chunks: int = 0
    utterances: list[Utterance] = field(default_factory=list)
    control_messages: list[dict[str, Any]] = field(default_factory=list)
    messages_sent: list[dict[str, Any]] = field(default_factory=list)
    opened_at: float | None = None  # monotonic
    closed_at: float | None = None  # monotonic
    close_code: int | None = None  # code the server closed with (None: client closed)
    failed_on_purpose: bool = False  # closed by fail_after_utterances

    @property
    def accepted(self) -> bool:
        return self.status == 101

    @property
    def transcripts(self) -> list[str]:
        """Texts of the finals actually sent for utterances, in order."""
        return [u.transcript or "" for u in self.utterances if u.final_sent_at is not None]

    @property
    def audio_seconds(self) -> float:
        if not self.sample_rate:
            return 0.0
        width = 2 if (self.encoding or "linear16") == "linear16" else 1
        return self.audio_bytes / (self.sample_rate * width * max(1, self.channels))

    def sent(self, type_: str) -> list[dict[str, Any]]:
        """Messages of one ``type`` the server sent (e.g. ``"Results"``)."""
        return [m for m in self.messages_sent if m.get("type") == type_]


def _mulaw_table() -> np.ndarray:
    u = np.arange(256, dtype=np.int32) ^ 0xFF
    sign = u & 0x80
    exponent = (u >> 4) & 0x07
    mantissa = u & 0x0F
    magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84
    return np.where(sign != 0, -magnitude, magnitude).astype(np.float64)


def _alaw_table() -> np.ndarray:
    a = np.arange(256, dtype=np.int32) ^ 0x55
    sign = a & 0x80
    exponent = (a >> 4) & 0x07
    mantissa = a & 0x0F
    magnitude = np.where(
        exponent == 0, (mantissa << 4) + 8, ((mantissa << 4) + 0x108) << np.maximum(exponent - 1, 0)
    )
    return np.where(sign != 0, magnitude, -magnitude).astype(np.float64)


_DECODE = {"mulaw": _mulaw_table(), "alaw": _alaw_table()}
_SUPPORTED_ENCODINGS = ("linear16", "mulaw", "alaw")


def _truthy(value: str | None) -> bool:
    return value is not None and value.strip().lower() in ("true", "1", "yes")


def _as_int(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(float(value))
    except ValueError:
        return None


class _Session:
    """The per-connection state machine: detector, script cursor, outgoing queue."""

    def __init__(self, fake: FakeDeepgram, ws: ServerConnection, rec: ConnectionRecord):
        self.fake = fake
        self.ws = ws
        self.rec = rec
        # Knobs are snapshotted at connect time, so changing them mid-test only
        # affects later connections.
        self.script = fake.script
        self.default_transcript = fake.default_transcript
        self.latency_s = max(0.0, fake.latency_ms / 1000.0)
        self.fail_after = fake.fail_after_utterances
        self.threshold = float(fake.speech_threshold_rms)
        self.min_speech_frames = max(1, round(fake.min_speech_ms / 20))
        self.interim_frames = max(1, round(fake.interim_interval_ms / 20))
        self.send_interims = fake.interims and rec.interim_results

        width = 2 if rec.encoding == "linear16" else 1
        self.width = width
        self.sample_rate = rec.sample_rate or 16000
        self.frame_bytes = max(1, int(self.sample_rate * _FRAME_S)) * width * max(1, rec.channels)
        self.buf = bytearray()
        self.frame_no = 0  # frames processed so far
        self.sha = hashlib.sha256()

        self.state = "idle"  # or "speech"
        self.candidate: list[bytes] = []  # voiced frames not yet long enough to count
        self.candidate_start = 0
        self.utt: Utterance | None = None
        self.utt_audio = bytearray()
        self.silence_frames = 0  # unvoiced run inside an utterance
        self.last_voiced_frame = -1
        self.interim_anchor = 0
        self.interim_count = 0
        self.ue_pending = False  # an UtteranceEnd is owed
        self.cursor_s = 0.0  # end of the last final: Results tile the timeline

        self.script_pos = 0
        self.utterance_count = 0
        self.utterances_finalised = 0
        self.stopping = False  # no more input is processed
        self.outbox: asyncio.Queue[tuple[float, str, Any]] = asyncio.Queue()
        self.sender = asyncio.create_task(self._send_loop())

    # -- outgoing --------------------------------------------------------------------

    def _enqueue(self, payload: dict[str, Any], delay: float = 0.0, utt: Utterance | None = None):
        self.outbox.put_nowait((time.monotonic() + delay, "json", (payload, utt)))

    def _enqueue_close(self, code: int, reason: str):
        self.outbox.put_nowait((time.monotonic(), "close", (code, reason)))

    async def _send_loop(self):
        while True:
            due, kind, item = await self.outbox.get()
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if kind == "close":
                code, reason = item
                self.rec.close_code = code
                with contextlib.suppress(ConnectionClosed):
                    await self.ws.close(code, reason)
                return
            payload, utt = item
            try:
                await self.ws.send(json.dumps(payload))
            except ConnectionClosed:
                return
            now = time.monotonic()
            self.rec.messages_sent.append(payload)
            if utt is not None:
                utt.final_sent_at = now
                self.fake.finals_sent_at.append(now)
                self.fake.transcripts_sent.append(utt.transcript or "")

    # -- message builders ------------------------------------------------------------

    def _metadata_block(self) -> dict[str, Any]:
        model = self.rec.model or "nova-3-general"
        return {
            "request_id": self.rec.request_id,
            "model_info": {"name": model, "version": "2025-01-01.0", "arch": "-".join(model.split("-")[:2])},
            "model_uuid": _MODEL_UUID,
        }

    def _results(
        self,
        transcript: str,
        *,
        is_final: bool,
        speech_final: bool,
        from_finalize: bool,
        now_s: float,
        words_span: tuple[float, float] | None,
    ) -> dict[str, Any]:
        words = []
        toks = transcript.split()
        if toks and words_span is not None:
            a, b = words_span
            step = max(b - a, 0.0) / len(toks)
            for i, tok in enumerate(toks):
                bare = tok.strip(".,!?;:\"'").lower() or tok.lower()
                words.append(
                    {
                        "word": bare,
                        "start": round(a + i * step, 3),
                        "end": round(a + (i + 1) * step, 3),
                        "confidence": 0.99,
                        "punctuated_word": tok,
                    }
                )
        alt: dict[str, Any] = {
            "transcript": transcript,
            "confidence": 0.99 if transcript else 0.0,
            "words": words,
        }
        if (self.rec.language or "").lower() == "multi" and transcript:
            alt["languages"] = ["en"]
        msg: dict[str, Any] = {
            "type": "Results",
            "channel_index": [0, 1],
            "duration": round(max(now_s - self.cursor_s, 0.0), 3),
            "start": round(self.cursor_s, 3),
            "is_final": is_final,
            "speech_final": speech_final,
            "channel": {"alternatives": [alt]},
            "metadata": self._metadata_block(),
            "from_finalize": from_finalize,
        }
        return msg

    # -- detector --------------------------------------------------------------------

    def feed(self, data: bytes):
        self.rec.audio_bytes += len(data)
        self.rec.audio_chunks += 1
        self.sha.update(data)
        self.buf.extend(data)
        n = len(self.buf) // self.frame_bytes
        if n == 0:
            return
        chunk = bytes(self.buf[: n * self.frame_bytes])
        del self.buf[: n * self.frame_bytes]
        if self.width == 2:
            samples = np.frombuffer(chunk, dtype="<i2").astype(np.float64)
        else:
            samples = _DECODE[self.rec.encoding or "mulaw"][np.frombuffer(chunk, dtype=np.uint8)]
        frames = samples.reshape(n, -1)
        rms = np.sqrt(np.mean(frames * frames, axis=1))
        if (self.state == "idle" and not self.candidate and not self.stopping
                and not (self.ue_pending and self.rec.utterance_end_ms is not None)
                and not (rms >= self.threshold).any()):
            self.frame_no += n  # quiet, between utterances: what _frame would do, n times over
            return
        for k in range(n):
            if self.stopping:
                return
            fb = chunk[k * self.frame_bytes : (k + 1) * self.frame_bytes]
            self._frame(fb, bool(rms[k] >= self.threshold))

    def _frame(self, fb: bytes, voiced: bool):
        i = self.frame_no
        self.frame_no += 1
        now = time.monotonic()
        if self.state == "idle":
            if voiced:
                if not self.candidate:
                    self.candidate_start = i
                self.candidate.append(fb)
                if len(self.candidate) >= self.min_speech_frames:
                    self._start_utterance(now)
            else:
                self.candidate.clear()
        else:
            self.utt_audio.extend(fb)
            if voiced:
                self.silence_frames = 0
                self.last_voiced_frame = i
                assert self.utt is not None
                self.utt.last_voice_at = now
            else:
                self.silence_frames += 1
            if self.send_interims and i - self.interim_anchor >= self.interim_frames:
                self.interim_anchor = i
                self._send_interim()
            ep = self.rec.endpointing_ms
            if ep is not None and self.silence_frames * 20 >= max(ep, 20):
                self._finalise(speech_final=True, from_finalize=False)

        # UtteranceEnd: a gap of utterance_end_ms since the last voiced frame.
        ue = self.rec.utterance_end_ms
        if ue is not None and self.ue_pending and (self.frame_no - 1 - self.last_voiced_frame) * 20 >= ue:
            if self.state == "speech":
                self._finalise(speech_final=False, from_finalize=False)
            self._send_utterance_end()

    def _start_utterance(self, now: float):
        self.state = "speech"
        start_s = self.candidate_start * _FRAME_S
        self.utt = Utterance(index=self.utterance_count, start=round(start_s, 3), started_at=now, last_voice_at=now)
        self.utterance_count += 1
        self.rec.utterances.append(self.utt)
        self.utt_audio = bytearray(b"".join(self.candidate))
        self.candidate.clear()
        self.silence_frames = 0
        self.last_voiced_frame = self.frame_no - 1
        self.interim_anchor = self.frame_no - 1
        self.interim_count = 0
        self.ue_pending = True
        if self.rec.vad_events:
            self._enqueue({"type": "SpeechStarted", "channel": [0, 1], "timestamp": round(start_s, 3)})

    def _peek_transcript(self) -> str | None:
        if callable(self.script):
            return None
        items = list(self.script or [])
        return items[self.script_pos] if self.script_pos < len(items) else self.default_transcript

    def _send_interim(self):
        text = self._peek_transcript()
        if not text:
            return
        self.interim_count += 1
        toks = text.split()
        partial = " ".join(toks[: min(len(toks), self.interim_count)])
        now_s = self.frame_no * _FRAME_S
        assert self.utt is not None
        self._enqueue(
            self._results(
                partial,
                is_final=False,
                speech_final=False,
                from_finalize=False,
                now_s=now_s,
                words_span=(self.utt.start, now_s),
            )
        )

    def _finalise(self, *, speech_final: bool, from_finalize: bool):
        utt = self.utt
        assert utt is not None
        self.state = "idle"
        self.utt = None
        utt.end = round((self.last_voiced_frame + 1) * _FRAME_S, 3)
        utt.ended_at = time.monotonic()
        utt.from_finalize = from_finalize
        utt.speech_final = speech_final
        # Trim trailing silence from the utterance audio handed to the script.
        voiced_len = (self.last_voiced_frame + 1 - round(utt.start / _FRAME_S)) * self.frame_bytes
        utt.audio = bytes(self.utt_audio[: max(voiced_len, 0)])
        self.utt_audio = bytearray()
        self.silence_frames = 0
        utt.transcript = self._resolve_transcript(utt)
        now_s = self.frame_no * _FRAME_S
        msg = self._results(
            utt.transcript,
            is_final=True,
            speech_final=speech_final,
            from_finalize=from_finalize,
            now_s=now_s,
            words_span=(utt.start, utt.end),
        )
        self.cursor_s = now_s
        self._enqueue(msg, delay=self.latency_s, utt=utt)
        self.utterances_finalised += 1
        if self.fail_after is not None and self.utterances_finalised >= self.fail_after:
            self.stopping = True
            self.rec.failed_on_purpose = True
            self._enqueue_close(1011, "fake failure (fail_after_utterances)")

    def _resolve_transcript(self, utt: Utterance) -> str:
        if callable(self.script):
            return str(self.script(utt.index, utt.audio))
        text = self._peek_transcript()
        self.script_pos += 1
        return text or ""

    def _send_utterance_end(self):
        self.ue_pending = False
        last_word_end = round((self.last_voiced_frame + 1) * _FRAME_S, 3)
        self._enqueue({"type": "UtteranceEnd", "channel": [0, 1], "last_word_end": last_word_end})

    # -- control messages --------------------------------------------------------------

    def finalize(self):
        if self.state == "speech":
            self._finalise(speech_final=False, from_finalize=True)
        else:
            now_s = self.frame_no * _FRAME_S
            msg = self._results(
                "", is_final=True, speech_final=False, from_finalize=True, now_s=now_s, words_span=None
            )
            self.cursor_s = now_s
            self._enqueue(msg, delay=self.latency_s)

    def close_stream(self):
        if self.state == "speech":
            self._finalise(speech_final=False, from_finalize=False)
        if self.stopping:  # fail_after_utterances already queued a 1011
            return
        self.stopping = True
        self._enqueue(
            {
                "type": "Metadata",
                "transaction_key": "deprecated",
                "request_id": self.rec.request_id,
                "sha256": self.sha.hexdigest(),
                "created": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
                "duration": round(self.rec.audio_seconds, 3),
                "channels": self.rec.channels,
                "models": [_MODEL_UUID],
                "model_info": {_MODEL_UUID: self._metadata_block()["model_info"]},
            }
        )
        self._enqueue_close(1000, "")

    def error(self, description: str, raw: str):
        self._enqueue({"type": "Error", "variant": "SchemaError", "description": description, "message": raw})


def _select_subprotocol(connection: ServerConnection, subprotocols: Sequence[str]) -> str | None:
    for proto in subprotocols:
        if proto.lower() in ("token", "bearer"):
            return proto
    return None


class FakeDeepgram:
    """A fake Deepgram live-transcription server; use as ``async with FakeDeepgram(...) as dg``.

    Args:
        script: transcripts for successive utterances (list, per connection), or
            ``script(utterance_index, audio_bytes) -> str``.
        api_key: the key clients must present (``Authorization: Token <key>``);
            ``None`` accepts any key (but still requires one).
        latency_ms: extra delay before each final Results is sent (later messages
            queue behind it, as on a real stream).
        fail_after_utterances: close each connection with 1011 right after its Nth
            utterance's final has been sent.
        reject_status: answer every handshake with this HTTP status (401, 500, ...).
        endpointing_ms: overrides the ``endpointing`` query parameter (0/None in the
            query -> default 300 ms; ``endpointing=false`` disables endpointing).
        speech_threshold_rms: RMS (16-bit scale) at or above which a 20 ms frame is voiced.
        min_speech_ms: voiced run that starts an utterance.
        interims: send interim Results (when the query asks for interim_results).
        interim_interval_ms: audio time between interim Results while speaking.
        default_transcript: text for utterances after a list script runs out.
        connect_delay_ms: hold each handshake this long (a provider far away).
        host, port: where to listen (port 0: a free one).
    """

    def __init__(
        self,
        script: Script = None,
        *,
        api_key: str | None = "test",
        latency_ms: float = 0.0,
        fail_after_utterances: int | None = None,
        reject_status: int | None = None,
        endpointing_ms: int | None = None,
        speech_threshold_rms: float = 400.0,
        min_speech_ms: int = 60,
        interims: bool = True,
        interim_interval_ms: int = 400,
        default_transcript: str = "",
        connect_delay_ms: float = 0.0,
        host: str = "127.0.0.1",
        port: int = 0,
    ):
        self.script = script if (script is None or callable(script)) else list(script)
        self.api_key = api_key
        self.latency_ms = latency_ms
        self.fail_after_utterances = fail_after_utterances
        self.reject_status = reject_status
        self.endpointing_ms = endpointing_ms
        self.speech_threshold_rms = speech_threshold_rms
        self.min_speech_ms = min_speech_ms
        self.interims = interims
        self.interim_interval_ms = interim_interval_ms
        self.default_transcript = default_transcript
        self.connect_delay_ms = connect_delay_ms
        self.host = host
        self.port = port

        self.connections: list[ConnectionRecord] = []
        self.finals_sent_at: list[float] = []
        self.transcripts_sent: list[str] = []
        self._server: Server | None = None
        self._records: dict[int, ConnectionRecord] = {}
        self._handlers: set[asyncio.Task] = set()

    # -- public helpers ---------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """For ``DeepgramSTTService(base_url=...)``: http:// makes Pipecat use ws://."""
        return f"http://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        """The listen endpoint itself (without query)."""
        return f"ws://{self.host}:{self.port}/v1/listen"

    @property
    def accepted(self) -> list[ConnectionRecord]:
        """The connections whose handshake succeeded."""
        return [c for c in self.connections if c.accepted]

    async def wait_for_finals(self, n: int, timeout: float = 5.0) -> None:
        """Wait until at least ``n`` utterance finals have been sent (all connections)."""
        deadline = time.monotonic() + timeout
        while len(self.finals_sent_at) < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(self.finals_sent_at)} of {n} finals sent")
            await asyncio.sleep(0.01)

    # -- lifecycle --------------------------------------------------------------------

    async def start(self) -> FakeDeepgram:
        self._server = await serve(
            self._handler,
            self.host,
            self.port,
            process_request=self._process_request,
            process_response=self._process_response,
            # Browsers authenticate with "Sec-WebSocket-Protocol: token, <key>"; Deepgram
            # answers with the "token" subprotocol.
            select_subprotocol=_select_subprotocol,
            ping_interval=None,
            close_timeout=2,
            max_size=2**22,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close(close_connections=True)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), timeout=5)
        self._server = None

    async def __aenter__(self) -> FakeDeepgram:
        return await self.start()

    async def __aexit__(self, *exc) -> None:
        await self.stop()

    # -- handshake --------------------------------------------------------------------

    def _reject(self, rec: ConnectionRecord, status: int, err_code: str, err_msg: str) -> Response:
        rec.status = status
        body = json.dumps({"err_code": err_code, "err_msg": err_msg, "request_id": rec.request_id}).encode()
        headers = Headers(
            [
                ("Content-Type", "application/json"),
                ("Content-Length", str(len(body))),
                ("Connection", "close"),
                ("dg-request-id", rec.request_id),
                ("dg-error", err_msg),
            ]
        )
        try:
            reason = HTTPStatus(status).phrase
        except ValueError:
            reason = "Error"
        return Response(status, reason, headers, body)

    async def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        if self.connect_delay_ms:
            await asyncio.sleep(self.connect_delay_ms / 1000)  # a far-away provider's handshake
        response = self._check_request(connection, request)
        if response is not None:
            self._records.pop(id(connection), None)
        return response

    def _check_request(self, connection: ServerConnection, request: Request) -> Response | None:
        parts = urlsplit(request.path)
        query_all = parse_qs(parts.query, keep_blank_values=True)
        query = {k: v[-1] for k, v in query_all.items()}
        headers = {k.lower(): v for k, v in request.headers.raw_items()}
        rec = ConnectionRecord(
            index=len(self.connections),
            path=parts.path,
            query=query,
            query_all=query_all,
            headers=headers,
            request_id=str(uuid.uuid4()),
        )
        self.connections.append(rec)
        self._records[id(connection)] = rec

        # Who is calling?
        auth = request.headers.get("Authorization", "")
        key = None
        if auth:
            scheme, _, value = auth.partition(" ")
            if scheme.lower() in ("token", "bearer") and value.strip():
                key = value.strip()
        else:
            protos = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",")]
            if len(protos) >= 2 and protos[0].lower() in ("token", "bearer"):
                key = protos[1]
        rec.api_key = key

        # Connection parameters.
        rec.model = query.get("model")
        rec.language = query.get("language")
        rec.encoding = query.get("encoding", "linear16").lower()
        rec.sample_rate = _as_int(query.get("sample_rate")) or (16000 if "encoding" in query else None)
        rec.channels = _as_int(query.get("channels")) or 1
        rec.interim_results = _truthy(query.get("interim_results"))
        rec.vad_events = _truthy(query.get("vad_events"))
        rec.utterance_end_ms = _as_int(query.get("utterance_end_ms"))
        rec.keyterms = list(query_all.get("keyterm", []))
        rec.keywords = list(query_all.get("keywords", []))
        ep_raw = query.get("endpointing")
        if self.endpointing_ms is not None:
            rec.endpointing_ms = self.endpointing_ms
        elif ep_raw is not None and ep_raw.strip().lower() == "false":
            rec.endpointing_ms = None
        else:
            rec.endpointing_ms = _as_int(ep_raw) or 300

        if self.reject_status is not None:
            return self._reject(rec, int(self.reject_status), "REJECTED", "Rejected by FakeDeepgram(reject_status=...).")
        if parts.path.rstrip("/") != "/v1/listen":
            return self._reject(rec, 404, "NOT_FOUND", f"No such endpoint: {parts.path}")
        if key is None or (self.api_key is not None and key != self.api_key):
            return self._reject(rec, 401, "INVALID_AUTH", "Invalid credentials.")
        if rec.encoding not in _SUPPORTED_ENCODINGS:
            return self._reject(rec, 400, "Bad Request", f"Unsupported encoding: {rec.encoding}")
        if rec.channels < 1 or (rec.sample_rate is not None and rec.sample_rate < 1000):
            return self._reject(rec, 400, "Bad Request", "Invalid channels or sample_rate.")
        return None

    def _process_response(self, connection: ServerConnection, request: Request, response: Response) -> None:
        rec = self._records.get(id(connection))
        if rec is not None and response.status_code == 101:
            response.headers["dg-request-id"] = rec.request_id

    # -- connection -------------------------------------------------------------------

    async def _handler(self, ws: ServerConnection) -> None:
        rec = self._records.pop(id(ws))
        rec.opened_at = time.monotonic()
        session = _Session(self, ws, rec)
        try:
            async for message in ws:
                if isinstance(message, (bytes, bytearray, memoryview)):
                    if not session.stopping:
                        session.feed(bytes(message))
                    continue
                try:
                    msg = json.loads(message)
                    kind = msg.get("type") if isinstance(msg, dict) else None
                except ValueError:
                    msg, kind = {"raw": message}, None
                rec.control_messages.append(msg if isinstance(msg, dict) else {"raw": message})
                if session.stopping:
                    continue
                if kind == "KeepAlive":
                    pass
                elif kind == "Finalize":
                    session.finalize()
                elif kind == "CloseStream":
                    session.close_stream()
                else:
                    session.error(f"Unknown or invalid message type: {kind!r}", message)
                if session.stopping:
                    break
            # Let queued messages (finals, Metadata, a 1011/1000 close) go out.
            if session.stopping:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(asyncio.shield(session.sender), timeout=5 + session.latency_s)
        except ConnectionClosed:
            pass
        finally:
            if not session.sender.done():
                session.sender.cancel()
                with contextlib.suppress(BaseException):
                    await session.sender
            rec.closed_at = time.monotonic()
