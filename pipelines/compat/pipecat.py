"""Every use of a private name of Pipecat (pipecat-ai), and the list of them (NEEDS).

Where Pipecat has a public way, the agent uses it instead (nothing of these is listed here):
the Silero analyzer is a VADAnalyzer of its own (pipelines/providers/silero.py), the offline
voices turn PCM into frames themselves (pipelines/providers/tts_frames.py), and a hang-up
closes the socket through FastAPIWebsocketClient.disconnect().

What is left has no public equivalent in Pipecat 1.14:
- the Exotel input transport reads the socket itself (it must keep reading after EndFrame to
  hear the marks the hang-up waits for, and Exotel's `stop` ends the call): ReceiveLoopHook;
- it skips Pipecat's caller-audio task when nothing needs it: AudioTaskHook, input_paused;
- the output flushes the end of a word Pipecat's media sender holds back short of a payload
  before the caller's playback runs dry: held_audio_flush;
- transport events (on_exotel_stop): register_events, call_event;
- smart-turn on one model and thread per process: SmartTurnOnSharedModel;
- Deepgram's client on a shared HTTP client, for our service only: deepgram_client_class.
NEEDS also lists the private hooks the turn-taking strategies and the background-connect
mixin override (pipelines/turn_end.py, pipelines/backchannel.py,
pipelines/providers/background_connect.py), so a rename there stops start-up too.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pipecat.audio.turn.smart_turn.base_smart_turn import BaseSmartTurn
from pipecat.audio.turn.smart_turn.local_smart_turn_v3 import LocalSmartTurnAnalyzerV3

from pipelines.compat import Missing, Need
from pipelines.compat import check as check_needs

DISTRIBUTION = "pipecat-ai"

_INPUT = "pipecat.transports.base_input:BaseInputTransport"
_WS_INPUT = "pipecat.transports.websocket.fastapi:FastAPIWebsocketInputTransport"
_OUTPUT = "pipecat.transports.base_output:BaseOutputTransport"
_SENDER = "pipecat.transports.base_output:BaseOutputTransport.MediaSender"
_OBJECT = "pipecat.utils.base_object:BaseObject"
_SMART_TURN = "pipecat.audio.turn.smart_turn.local_smart_turn_v3:LocalSmartTurnAnalyzerV3"
_BASE_SMART_TURN = "pipecat.audio.turn.smart_turn.base_smart_turn:BaseSmartTurn"
_DEEPGRAM_STT = "pipecat.services.deepgram.stt:DeepgramSTTService"
_ELEVENLABS_TTS = "pipecat.services.elevenlabs.tts:ElevenLabsTTSService"
_STOP_STRATEGY = "pipecat.turns.user_stop.speech_timeout_user_turn_stop_strategy:SpeechTimeoutUserTurnStopStrategy"
_START_STRATEGY = "pipecat.turns.user_start.min_words_user_turn_start_strategy:MinWordsUserTurnStartStrategy"

_TAIL = "the end of a word held back short of a payload would wait for the next sentence"
_HEAVY_CONNECT = "the call's start waits for the provider's handshake"

NEEDS: tuple[Need, ...] = (
    # pipelines/exotel_transport.py
    Need(_WS_INPUT, "_receive_messages", params=("self",), used_by="start"),  # ReceiveLoopHook
    Need(_INPUT, "_paused", assigned=True),  # input_paused
    Need(_INPUT, "_create_audio_task", params=("self",), used_by="set_transport_ready",
         fallback="Pipecat's caller-audio task runs idle on every call"),  # AudioTaskHook
    Need(_OUTPUT, "_media_senders", assigned=True),  # held_audio_flush
    Need(_SENDER, "_audio_runs", assigned=True),
    Need(_SENDER, "_enqueue_flushed_audio_buffer", params=("self",)),
    Need(_OBJECT, "_register_event_handler", params=("self", "event_name", "sync")),  # on_exotel_stop
    Need(_OBJECT, "_call_event_handler", params=("self", "event_name", "args", "kwargs")),
    # pipelines/providers/smart_turn.py (SmartTurnOnSharedModel)
    # (the __init__ skipped sets only _log_data and _session: a new parameter may mean more)
    Need(_SMART_TURN, "__init__", params=("self", "smart_turn_model_path", "cpu_count", "kwargs")),
    Need(_BASE_SMART_TURN, "__init__", params=("self", "sample_rate", "params")),
    Need(_SMART_TURN, "_session", assigned=True, used_by="_predict_endpoint"),
    Need(_SMART_TURN, "_log_data", assigned=True, used_by="_predict_endpoint"),
    Need(_BASE_SMART_TURN, "_model_executor", used_by="analyze_end_of_turn",
         fallback="each call's smart-turn inference gets a thread of its own"),
    # pipelines/providers/deepgram.py (deepgram_client_class)
    Need("pipecat.services.deepgram.stt", "AsyncDeepgramClient", used_by=f"{_DEEPGRAM_STT}.__init__",
         fallback="each call's Deepgram client builds an HTTP client of its own (~20 ms on the event loop)"),
    # pipelines/providers/background_connect.py (not through this module: declared only)
    Need(_DEEPGRAM_STT, "_connect", params=("self",), used_by="setup", fallback=_HEAVY_CONNECT),
    Need(_DEEPGRAM_STT, "_disconnect", params=("self",), used_by="stop", fallback=_HEAVY_CONNECT),
    Need(_ELEVENLABS_TTS, "_connect", params=("self",), used_by="setup", fallback=_HEAVY_CONNECT),
    Need(_ELEVENLABS_TTS, "_disconnect", params=("self",), used_by="stop", fallback=_HEAVY_CONNECT),
    # pipelines/turn_end.py (declared only)
    *(Need(_STOP_STRATEGY, name, params=params) for name, params in (
        ("_handle_vad_user_stopped_speaking", ("self", "frame")),
        ("_handle_transcription", ("self", "frame")),
        ("_discard_pending_end_of_turn", ("self",)),
        ("_cancel_all_tasks", ("self",)),
        ("_maybe_trigger_user_turn_stopped", ("self",)),
        ("_reset", ("self", "clear_vad_user_speaking")),
    )),
    *(Need(_STOP_STRATEGY, name, assigned=True) for name in (
        "_vad_user_speaking", "_wait_for_transcript", "_text", "_user_speech_wait_done", "_stt_wait_done")),
    # pipelines/backchannel.py (declared only)
    Need(_START_STRATEGY, "_handle_transcription", params=("self", "frame")),
    *(Need(_START_STRATEGY, name, assigned=True) for name in ("_min_words", "_bot_speaking", "_enable_interruptions")),
)


def check(needs: tuple[Need, ...] = NEEDS) -> list[Missing]:
    """What the installed Pipecat no longer has of `needs`."""
    return check_needs(needs)


# ------------------------------------------------------------------ transports


class ReceiveLoopHook:
    """Mixin for a FastAPIWebsocketInputTransport: Pipecat's receive task runs `receive_loop()`
    (the subclass's) instead of its own loop over the socket."""

    async def receive_loop(self) -> None:
        raise NotImplementedError

    async def _receive_messages(self) -> None:
        await self.receive_loop()


class AudioTaskHook:
    """Mixin for a BaseInputTransport: Pipecat's caller-audio task (a queue and a task per
    call) is created only when `wants_audio_task()` says so."""

    def wants_audio_task(self) -> bool:
        return True

    def _create_audio_task(self) -> None:
        if self.wants_audio_task():
            super()._create_audio_task()  # type: ignore[misc]


def input_paused(transport: Any) -> bool:
    """The input transport is paused (a StopFrame): caller audio is not passed on."""
    return transport._paused


def held_audio_flush(output: Any) -> Coroutine[Any, Any, None] | None:
    """A coroutine that queues the audio the output's media sender holds back short of a
    chunk, padded to a full chunk with silence (what Pipecat does when the TTS stops), or None
    when it holds none."""
    sender = output._media_senders.get(None)
    if sender is None or not sender._audio_runs:
        return None
    return sender._enqueue_flushed_audio_buffer()


def register_events(obj: Any, *names: str) -> None:
    """Declare events that handlers can be added to (`@transport.event_handler(name)`)."""
    for name in names:
        obj._register_event_handler(name)


async def call_event(obj: Any, name: str, *args: Any) -> None:
    """Run the handlers of one of `obj`'s events."""
    await obj._call_event_handler(name, *args)


# ------------------------------------------------------------------ smart turn


class SmartTurnOnSharedModel(LocalSmartTurnAnalyzerV3):
    """LocalSmartTurnAnalyzerV3 on an ONNX session and an inference thread it is given, instead
    of loading the model and starting a thread per analyzer (per call)."""

    def __init__(self, *, session: Any, executor: Callable[[], ThreadPoolExecutor], **kwargs: Any):
        BaseSmartTurn.__init__(self, **kwargs)  # not LocalSmartTurnAnalyzerV3's: it loads the model
        self._log_data = False
        self._session = session
        self._shared_executor = executor

    @property
    def _model_executor(self) -> ThreadPoolExecutor:
        return self._shared_executor()


# ------------------------------------------------------------------ deepgram


@contextlib.contextmanager
def deepgram_client_class(client_class: type) -> Iterator[None]:
    """While a DeepgramSTTService is built in this block, its client is a `client_class`
    (Pipecat builds it from a name of its module and takes no client)."""
    import pipecat.services.deepgram.stt as module

    if not hasattr(module, "AsyncDeepgramClient"):
        yield
        return
    saved = module.AsyncDeepgramClient
    module.AsyncDeepgramClient = client_class  # type: ignore[assignment,misc]
    try:
        yield
    finally:
        module.AsyncDeepgramClient = saved  # type: ignore[misc]
