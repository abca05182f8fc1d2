"""Pipecat transport for Exotel's media socket (FastAPI WebSocket underneath).

Pipecat's FastAPI websocket transport is close, but three things of a phone call need the
transport itself:

- Pacing by the caller's ears: a playback clock models what Exotel has queued, audio is
  sent at most `playback_lead_secs` ahead of it (enough to ride out jitter, small enough
  that a `clear` has little to drop), and BotStoppedSpeaking is held until Exotel echoes the
  utterance's mark (or the clock says it must have played), not when our buffer empties.
- Barge-in: `clear` goes out first, before any other interruption work.
- Hang-up: on EndFrame the socket stays open (still reading, to hear the marks) until the
  last words have played; then it closes, and Exotel's flow moves to the next applet.
  Exotel's `stop` ends the pipeline promptly via the `on_exotel_stop` event.
- The transcript's bot lines: the same clock says when each line started playing and how
  much of it a `clear` or a hang-up cut off (pipelines/bot_lines.py).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable

from fastapi import WebSocket
from loguru import logger
from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    CancelFrame,
    EndFrame,
    Frame,
    InputAudioRawFrame,
    InputDTMFFrame,
    InputTransportMessageFrame,
    InterruptionFrame,
    OutputAudioRawFrame,
    TTSStartedFrame,
)
from pipecat.processors.frame_processor import FrameDirection
from pipecat.transports.base_input import BaseInputTransport
from pipecat.transports.base_output import BaseOutputTransport
from pipecat.transports.base_transport import BaseTransport
from pipecat.transports.websocket.fastapi import (
    FastAPIWebsocketCallbacks,
    FastAPIWebsocketClient,
    FastAPIWebsocketInputTransport,
    FastAPIWebsocketOutputTransport,
    FastAPIWebsocketParams,
)

from pipelines.bot_lines import BotLines
from pipelines.call_tap import CallTap
from pipelines.compat.pipecat import (
    AudioTaskHook,
    ReceiveLoopHook,
    call_event,
    held_audio_flush,
    input_paused,
    register_events,
)
from pipelines.recorder import CallRecorder
from serializers.exotel import ExotelFrameSerializer, ExotelStopFrame


class ExotelTransportParams(FastAPIWebsocketParams):
    """FastAPI websocket params plus the playback model.

    Parameters:
        playback_lead_secs: How far ahead of the caller's playback audio may be sent.
        mark_grace_secs: How long past the modelled end of playback to wait for a mark echo.
    """

    playback_lead_secs: float = 0.4
    mark_grace_secs: float = 1.5
    audio_out_end_silence_secs: int = 0


# Pipecat's transports that hold the socket open (each disconnect() lets go of one); see hang_up.
SOCKET_HOLDERS_MAX = 8


class ExotelWebsocketClient(FastAPIWebsocketClient):
    """FastAPI client that first replays messages read during the handshake."""

    def __init__(
        self,
        websocket: WebSocket,
        callbacks: FastAPIWebsocketCallbacks,
        prefetched: Iterable[str | bytes] = (),
        ws_close_timeout: float = 0.5,
    ):
        super().__init__(websocket, callbacks, ws_close_timeout=ws_close_timeout)
        self._prefetched = list(prefetched)
        self._socket = websocket
        self._close_timeout = ws_close_timeout

    async def _replay_then_receive(self) -> AsyncIterator[str | bytes]:
        while self._prefetched:
            yield self._prefetched.pop(0)
        async for message in super().receive():
            yield message

    def receive(self) -> AsyncIterator[str | bytes]:
        return self._replay_then_receive()

    async def hang_up(self) -> None:
        """Close the socket now, whoever else still holds it (Exotel then runs the next applet).

        Pipecat closes it when the last of its holders (the input and the output transport)
        lets go, and each disconnect() lets go once: let go for every holder. Should the socket
        still be open after that, it is closed here directly."""
        for _ in range(SOCKET_HOLDERS_MAX):
            await self.disconnect()
            if self.is_closing or not self.is_connected:
                return
        logger.error("the media socket stayed open after every holder let go; closing it directly")
        try:
            await asyncio.wait_for(self._socket.close(), timeout=self._close_timeout)
        except Exception as error:
            logger.warning(f"closing the media socket failed: {type(error).__name__} ({error})")


class ExotelInputTransport(ReceiveLoopHook, AudioTaskHook, FastAPIWebsocketInputTransport):
    """Reads Exotel's socket; keeps reading after EndFrame so mark echoes still arrive."""

    _client: ExotelWebsocketClient
    _params: ExotelTransportParams
    _transport: "ExotelTransport"

    def __init__(self, transport: "ExotelTransport", client: ExotelWebsocketClient,
                 params: ExotelTransportParams, **kwargs):
        super().__init__(transport, client, params, **kwargs)
        # Ours to read, whatever Pipecat names its own copies.
        self._transport, self._client, self._params = transport, client, params
        self._stopping = False

    def wants_audio_task(self) -> bool:
        # Caller audio goes straight downstream from the read loop (push_audio_frame), so the
        # task that drains Pipecat's audio queue is only needed for an audio filter.
        return self._params.audio_in_filter is not None

    async def push_audio_frame(self, frame: InputAudioRawFrame):
        """Push caller audio downstream from the socket's read loop.

        Pipecat's input transport queues it for a task of its own (an asyncio queue and a
        wait_for per 100 ms frame, per call), which serves audio filters and transport-side
        VAD; this transport has neither unless an audio filter is configured."""
        tap = self._transport.tap
        if tap is not None:
            tap.caller_audio(frame.audio)
        if self._params.audio_in_filter is not None:
            await super().push_audio_frame(frame)
        elif self._params.audio_in_enabled and self._params.audio_in_passthrough and not input_paused(self):
            await self.push_frame(frame)

    async def stop(self, frame: EndFrame):
        # Not FastAPIWebsocketInputTransport.stop: that would stop reading and the output
        # could never hear the final mark. The output closes the socket; cleanup() tears down.
        self._stopping = True
        await BaseInputTransport.stop(self, frame)

    async def receive_loop(self) -> None:
        """The socket's read loop (Pipecat's receive task runs it): Exotel's `stop` ends the
        call; after EndFrame only `stop` and the marks (the serializer's) are still heard."""
        serializer = self._params.serializer
        try:
            async for message in self._client.receive():
                if serializer is None:
                    continue
                frame = await serializer.deserialize(message)
                if frame is None:
                    continue
                if isinstance(frame, ExotelStopFrame):
                    await self._transport.exotel_stopped(frame)
                elif self._stopping:
                    continue
                elif isinstance(frame, InputAudioRawFrame):
                    await self.push_audio_frame(frame)
                elif isinstance(frame, InputTransportMessageFrame):
                    await self.broadcast_frame(InputTransportMessageFrame, message=frame.message)
                elif isinstance(frame, InputDTMFFrame) and self._transport.tap is not None:
                    await self._transport.tap.dtmf(frame.button.value, self.push_frame)
                    await self.push_frame(frame)
                else:
                    await self.push_frame(frame)
        except Exception as error:
            logger.bind(call_sid=self._transport.call_sid).warning(
                f"{self} receive loop ended: {type(error).__name__} ({error})"
            )
        if not self._client.is_closing:
            await self._client.trigger_client_disconnected()


# How long audio is dropped after an early `clear` while the InterruptionFrame catches up
# (normally milliseconds; the bound only matters if it never comes).
EARLY_CLEAR_HOLD_SECS = 1.0
# A pause the words never settle (no verdict came) ends by resuming after this long.
MAX_PAUSE_SECS = 4.0
# Audio held back short of a full payload goes out this long before the caller's playback
# would run dry (room for the send and for a busy event loop).
TAIL_FLUSH_GUARD_SECS = 0.08


class ExotelOutputTransport(FastAPIWebsocketOutputTransport):
    """Sends Exotel-sized media paced by a model of the caller's playback."""

    _client: ExotelWebsocketClient
    _params: ExotelTransportParams
    _transport: "ExotelTransport"

    def __init__(self, transport: "ExotelTransport", client: ExotelWebsocketClient,
                 params: ExotelTransportParams, **kwargs):
        super().__init__(transport, client, params, **kwargs)
        # Ours to read, whatever Pipecat names its own copies.
        self._transport, self._client, self._params = transport, client, params
        self._played_until = 0.0  # monotonic time when audio sent so far ends at the caller
        self._marks_trusted = True
        self.first_audio_sent_at: float | None = None
        self._cleared_early_at: float | None = None
        self._interrupting = False  # an InterruptionFrame is being handled: audio still arriving is stale
        self._tail_timer: asyncio.TimerHandle | None = None
        self._paused_at: float | None = None  # backchannel pause: playback stopped, to resume
        self._resume_audio = b""  # what the caller had not heard when the pause began
        self._unpaused = asyncio.Event()
        self._unpaused.set()
        self._pause_timer: asyncio.TimerHandle | None = None
        self._in_flight_bytes = 0  # audio of the send under way, not yet on the playback clock
        self.recorder: CallRecorder | None = None  # set by the pipeline builder when the call is recorded
        self.lines = BotLines(self._line_heard)  # the bot's lines as the caller heard them

    @property
    def serializer(self) -> ExotelFrameSerializer:
        return self._params.serializer  # type: ignore[return-value]

    # -------------------------------------------------------------- sending
    async def _send(self, message: str, audio_bytes: int = 0) -> None:
        """Send one message; advance the playback clock by the audio it carries (unless a
        `clear` went out meanwhile: that audio was dropped, or is a pause's to send again)."""
        clears = self.serializer.stats["clears_out"]
        self._in_flight_bytes = audio_bytes
        try:
            await self._client.send(message)
        finally:
            self._in_flight_bytes = 0
        if audio_bytes and self.serializer.stats["clears_out"] == clears:
            now = time.monotonic()
            if self.first_audio_sent_at is None:
                self.first_audio_sent_at = now
            secs = audio_bytes / (self.serializer.exotel_sample_rate * 2)
            plays_from = max(now, self._played_until)
            self._played_until = plays_from + secs
            self.lines.sent(secs, plays_from, self._played_until)

    async def write_audio_frame(self, frame: OutputAudioRawFrame) -> bool:
        if self._client.is_closing or not self._client.is_connected:
            return False
        if self._paused_at is not None:
            await self._unpaused.wait()  # the caller spoke over the bot: resume, or interruption
        # Audio dropped here was not sent: False, so Pipecat does not pass it on as sent.
        if self._interrupting:
            return False  # from before the interruption whose handling is under way
        if self._cleared_early_at is not None:
            if time.monotonic() - self._cleared_early_at < EARLY_CLEAR_HOLD_SECS:
                self._transport.audio_dropped_in_hold_bytes += len(frame.audio)
                return False  # interrupted: the InterruptionFrame that flushes this is on its way
            self._cleared_early_at = None
            self._transport.early_clear_holds_expired += 1
            logger.bind(call_sid=self._transport.call_sid).warning(
                "early clear: no interruption followed within the hold; audio plays again"
            )
        if await self._record_and_send(frame):
            self._arm_tail_flush()
            delay = self._played_until - self._params.playback_lead_secs - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        return True

    async def play_ahead(self, pcm: bytes, context_id: str | None = None, text: str = "") -> None:
        """Send the opening of speech prepared ahead (the greeting) before the pipeline has
        started, straight through the serializer: the caller hears it while the call's
        pipeline is still being built and started (a few ms idle, far more under load). The
        rest of the utterance follows through the pipeline (as prepared speech of the same
        `context_id`), paced from where this ends, and its mark covers both parts; `text` is
        the whole line's, for the transcript."""
        if not pcm or self._client.is_closing or not self._client.is_connected:
            return
        if context_id is not None:
            self.lines.prepared(context_id, text, len(pcm) / (2 * self.serializer.exotel_sample_rate))
            self.lines.playing(context_id)
        await self._record_and_send(
            OutputAudioRawFrame(audio=pcm, sample_rate=self.serializer.exotel_sample_rate, num_channels=1)
        )

    async def _record_and_send(self, frame: OutputAudioRawFrame) -> bool:
        """Record the bot's audio where it will play, then send it as Exotel payloads; False if
        none went out yet (the serializer holds audio short of a full payload)."""
        clears = self.serializer.stats["clears_out"]
        if self.recorder is not None:
            await self.recorder.add_bot_audio(frame.audio, self._played_until - time.monotonic())
        before = self.serializer.stats["bytes_out"]
        messages = await self.serializer.serialize_many(frame)
        await self._send_all(messages, self.serializer.stats["bytes_out"] - before, clears)
        return bool(messages)

    async def _send_all(self, messages: list[str], audio_bytes: int, clears: int) -> None:
        """Send `messages`, made when `clears` clears had gone out; the playback clock advances
        once, by all the audio they carry. Each send yields to the event loop, and a barge-in
        `clear` (clear_now, from the user aggregator's task) can go out in between: what is
        left of the messages is then stale and is dropped, not sent after the clear."""
        for message in messages:
            if self.serializer.stats["clears_out"] != clears:
                return
            await self._send(message, audio_bytes)
            audio_bytes = 0

    # ---------------------------------------------------------- held-back tail
    def _arm_tail_flush(self) -> None:
        """Make sure audio held back below a full chunk is not stranded mid-sentence.

        Pipecat's media sender cuts TTS audio into chunks of one Exotel payload and keeps the
        remainder until more audio arrives, or the TTS stops. When the TTS is slow to start
        the next sentence, that remainder (the end of the last word) would wait while the
        caller's playback runs dry: "Okay, no... ted." Just before it would run dry, the
        remainder is flushed, padded with silence to a full payload, as Pipecat does at the
        end of an utterance."""
        self._cancel_tail_flush()
        due = self._played_until - TAIL_FLUSH_GUARD_SECS - time.monotonic()
        self._tail_timer = asyncio.get_running_loop().call_later(max(0.0, due), self._tail_flush_due)

    def _cancel_tail_flush(self) -> None:
        if self._tail_timer is not None:
            self._tail_timer.cancel()
            self._tail_timer = None

    def _tail_flush_due(self) -> None:
        self._tail_timer = None
        if self._cleared_early_at is not None or self._paused_at is not None:
            return
        flush = held_audio_flush(self)
        if flush is not None:
            self.create_task(flush, name=f"{self}::tail_flush")

    def _audio_possibly_queued(self) -> bool:
        serializer = self.serializer
        return bool(
            serializer.bytes_since_mark
            or serializer.pending_out_bytes
            or serializer.marks.outstanding
            or self._played_until > time.monotonic()
        )

    async def clear_now(self) -> None:
        """Barge-in, ahead of the InterruptionFrame: `clear` the caller's playback at once.

        The user aggregator calls this (through its on_user_turn_started event) as it
        broadcasts the interruption, which then still has to hop through the LLM, TTS and
        filler processors before it reaches this transport; under load each hop waits its
        turn on the event loop. Until it arrives, audio already on its way here is dropped,
        so nothing stale follows the `clear`. A paused line (see pause) is over: its `clear`
        went out at the pause."""
        if self._paused_at is not None:
            self._pause_was_an_interruption()
            return
        if self._audio_possibly_queued() and self._client.is_connected:
            self._cancel_tail_flush()
            self._cleared_early_at = time.monotonic()
            self._played_until = 0.0
            await self._send_clear()

    # ------------------------------------------------------- backchannel pause
    @property
    def paused(self) -> bool:
        return self._paused_at is not None

    async def pause(self) -> bool:
        """The caller started speaking over the bot: stop playback now with a `clear`, keeping
        what the caller has not heard, until resume() (a backchannel: the line plays on from
        there) or clear_now() (a real interruption). False if there was nothing to pause."""
        if (self._paused_at is not None or self._cleared_early_at is not None or self._interrupting
                or not self._client.is_connected or self._client.is_closing):
            return False
        now = time.monotonic()
        rate = self.serializer.exotel_sample_rate
        unplayed = int(max(0.0, self._played_until - now) * rate) * 2 + self._in_flight_bytes
        self._cancel_tail_flush()
        self._paused_at = now
        self._unpaused.clear()
        self._resume_audio = self.serializer.unplayed_audio(unplayed)
        self._played_until = 0.0
        await self._send_clear(paused_at=now)
        self._transport.pauses_at.append(now)
        self._pause_timer = asyncio.get_running_loop().call_later(MAX_PAUSE_SECS, self._pause_expired)
        return True

    def line_nearly_over(self, within_secs: float) -> bool:
        """Paused with at most `within_secs` of the line left to play and nothing more coming
        from the TTS: words said now answer the bot rather than acknowledge it."""
        return self._paused_at is not None and self.lines.playing_line_left_secs() <= within_secs

    async def resume(self) -> None:
        """A backchannel: send again what the caller had not heard, then let the rest follow."""
        if self._paused_at is None:
            return
        audio = self._resume_audio
        self._end_pause()
        self._transport.resumes_at.append(time.monotonic())
        if audio and self._client.is_connected and not self._client.is_closing:
            rate = self.serializer.exotel_sample_rate
            await self._record_and_send(OutputAudioRawFrame(audio=audio, sample_rate=rate, num_channels=1))
            self._arm_tail_flush()

    def _end_pause(self) -> None:
        self._paused_at = None
        self._resume_audio = b""
        if self._pause_timer is not None:
            self._pause_timer.cancel()
            self._pause_timer = None
        self._unpaused.set()

    def _pause_expired(self) -> None:
        self._pause_timer = None
        if self._paused_at is not None:
            logger.bind(call_sid=self._transport.call_sid).warning(
                f"playback paused {MAX_PAUSE_SECS:.0f}s with no verdict on the caller's words; resuming"
            )
            self.create_task(self.resume(), name=f"{self}::pause_expired")

    def _pause_was_an_interruption(self) -> None:
        """The caller's words interrupted a paused line: its `clear` went out at the pause, so
        audio still on its way is dropped until the InterruptionFrame arrives."""
        self._end_pause()
        self._cleared_early_at = time.monotonic()
        self.lines.cut(self._cleared_early_at)
        self._transport.pauses_interrupted += 1

    async def _send_clear(self, paused_at: float | None = None) -> None:
        """`clear` the caller's playback: the playing line is cut there, or, for a pause
        (`paused_at`), kept to be resumed."""
        if paused_at is None:
            self.lines.cut(time.monotonic())
        else:
            self.lines.paused(paused_at)
        if self.recorder is not None:
            self.recorder.cut_bot_audio()
        await self._client.send(await self.serializer.clear())
        self._transport.clears_sent_at.append(time.monotonic())

    # -------------------------------------------------------------- frames
    async def process_frame(self, frame: Frame, direction: FrameDirection):
        if direction == FrameDirection.DOWNSTREAM:
            self.lines.take(frame)
        if isinstance(frame, InterruptionFrame):
            if self._paused_at is not None:  # the interruption overtook clear_now: the pause is over
                self._pause_was_an_interruption()
            cleared_at = self._cleared_early_at
            already_cleared = cleared_at is not None  # and nothing sent since
            if cleared_at is not None:
                self._transport.early_clear_leads.append(time.monotonic() - cleared_at)
            if not already_cleared and self._audio_possibly_queued() and self._client.is_connected:
                await self._send_clear()
            self._cancel_tail_flush()
            # Pipecat's handler (FastAPIWebsocketOutputTransport's is skipped: it would send a
            # second clear) stops the media sender, awaiting as it goes; audio the sender writes
            # meanwhile was queued before the caller spoke, so it is dropped until it is done.
            self._interrupting = True
            try:
                await BaseOutputTransport.process_frame(self, frame, direction)
            finally:
                self._interrupting = False
                self._cleared_early_at = None
                self._played_until = 0.0
            return
        await super().process_frame(frame, direction)

    async def push_frame(self, frame: Frame, direction: FrameDirection = FrameDirection.DOWNSTREAM):
        if direction == FrameDirection.DOWNSTREAM:
            if isinstance(frame, BotStoppedSpeakingFrame):
                # The media sender announces it (downstream first, then upstream) when its
                # queue is empty; hold it until the caller has heard the utterance.
                await self._finish_utterance()
            elif isinstance(frame, TTSStartedFrame):
                self.lines.playing(frame.context_id)  # the audio the media sender writes next is this line's
            tap = self._transport.tap
            if tap is not None and isinstance(frame, (BotStartedSpeakingFrame, BotStoppedSpeakingFrame)):
                tap.bot_speech("started" if isinstance(frame, BotStartedSpeakingFrame) else "stopped")
        await super().push_frame(frame, direction)

    async def _finish_utterance(self) -> None:
        """Send the padded tail and a mark, then wait until the caller has heard it (a pause
        while waiting: until the resumed rest has been heard)."""
        while True:
            await self._unpaused.wait()
            if not self._client.is_connected or self._client.is_closing:
                return
            clears, before = self.serializer.stats["clears_out"], self.serializer.stats["bytes_out"]
            messages = await self.serializer.flush_utterance()  # the padded tail first, then the mark
            await self._send_all(messages, self.serializer.stats["bytes_out"] - before, clears)
            await self._wait_until_heard()
            if self._paused_at is None:
                break
        self.lines.heard()

    async def _wait_until_heard(self) -> None:
        marks = self.serializer.marks
        remaining = max(0.0, self._played_until - time.monotonic())
        if not marks.outstanding:
            return
        if not self._marks_trusted:
            await asyncio.sleep(remaining)
            return
        if await marks.wait_all(remaining + self._params.mark_grace_secs):
            return
        if marks.outstanding and not marks.ever_echoed:
            # This stream never echoes marks: from now on trust the playback clock alone.
            self._marks_trusted = False
            logger.bind(call_sid=self._transport.call_sid).warning(
                "exotel marks are not echoed on this stream; following the playback clock"
            )

    # -------------------------------------------------------------- lifecycle
    async def stop(self, frame: EndFrame):
        # Let queued audio go out, then the tail and its mark; close once it has played. A line
        # paused by the caller's voice plays on: no verdict on their words will come now.
        await self.resume()
        await BaseOutputTransport.stop(self, frame)
        self._cancel_tail_flush()
        await self._finish_utterance()
        self.lines.cut(time.monotonic())
        await self._client.hang_up()

    async def cancel(self, frame: CancelFrame):
        self._end_pause()
        self._cancel_tail_flush()
        self.lines.cut(time.monotonic())  # the caller hung up (or the socket dropped) mid-line
        await BaseOutputTransport.cancel(self, frame)
        await self._client.hang_up()

    def _line_heard(self, text: str, started_at: float, interrupted: bool) -> None:
        tap = self._transport.tap
        if tap is not None:
            tap.bot_line(text, started_at, interrupted)


class ExotelTransport(BaseTransport):
    """Exotel media-socket transport: one per call.

    Event handlers: on_client_connected(transport, websocket),
    on_client_disconnected(transport, websocket), on_session_timeout(transport, websocket),
    on_exotel_stop(transport, reason).
    """

    def __init__(
        self,
        websocket: WebSocket,
        params: ExotelTransportParams,
        prefetched: Iterable[str | bytes] = (),
        call_sid: str | None = None,
    ):
        if not isinstance(params.serializer, ExotelFrameSerializer):
            raise ValueError("ExotelTransport needs an ExotelFrameSerializer")
        super().__init__()
        self._params = params
        self.call_sid = call_sid
        self.tap: CallTap | None = None  # set by the pipeline builder: what the edges tell the call session
        self.clears_sent_at: list[float] = []
        self.early_clear_leads: list[float] = []  # per early clear: how long before the InterruptionFrame
        self.early_clear_holds_expired = 0
        self.pauses_at: list[float] = []  # backchannel pauses (each sent a clear)
        self.resumes_at: list[float] = []  # ... that resumed the line
        self.pauses_interrupted = 0  # ... that became a real interruption
        self.audio_dropped_in_hold_bytes = 0
        callbacks = FastAPIWebsocketCallbacks(
            on_client_connected=self._on_client_connected,
            on_client_disconnected=self._on_client_disconnected,
            on_session_timeout=self._on_session_timeout,
        )
        self._client = ExotelWebsocketClient(
            websocket, callbacks, prefetched, ws_close_timeout=params.ws_close_timeout
        )
        self._input = ExotelInputTransport(self, self._client, params)
        self._output = ExotelOutputTransport(self, self._client, params)
        register_events(self, "on_client_connected", "on_client_disconnected", "on_session_timeout", "on_exotel_stop")

    def input(self) -> ExotelInputTransport:
        return self._input

    def output(self) -> ExotelOutputTransport:
        return self._output

    @property
    def serializer(self) -> ExotelFrameSerializer:
        return self._params.serializer  # type: ignore[return-value]

    async def exotel_stopped(self, frame: ExotelStopFrame) -> None:
        await call_event(self, "on_exotel_stop", frame.reason)

    async def _on_client_connected(self, websocket):
        await call_event(self, "on_client_connected", websocket)

    async def _on_client_disconnected(self, websocket):
        await call_event(self, "on_client_disconnected", websocket)

    async def _on_session_timeout(self, websocket):
        await call_event(self, "on_session_timeout", websocket)
