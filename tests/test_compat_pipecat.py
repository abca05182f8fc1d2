"""pipelines/compat/pipecat.py: the private names of Pipecat the agent relies on are there in
the installed version, and the check names any that is not (shown on stand-ins lacking them);
the public replacements (PCM to frames, the hang-up) do what the private ways did."""

from __future__ import annotations

import asyncio
import dataclasses
import random

import numpy as np
import pytest
from starlette.websockets import WebSocketState

from pipelines.compat import Need, check
from pipelines.compat import pipecat as compat


def test_the_pipecat_names_the_agent_relies_on_are_there():
    assert compat.check() == []


class Empty:
    """A stand-in for a Pipecat class or module that has none of the names."""


@pytest.mark.parametrize("need", compat.NEEDS, ids=lambda need: need.label)
def test_every_need_is_reported_on_a_stand_in_without_it(need):
    missing = check((dataclasses.replace(need, owner=Empty),))
    assert [m.need for m in missing] == [dataclasses.replace(need, owner=Empty)]
    assert need.name in str(missing[0])


class InputWithRenamedLoop:
    """FastAPIWebsocketInputTransport as a release that renamed its receive loop would be."""

    def __init__(self):
        self._suspended = False  # was _paused

    async def start(self, frame):
        self._receive_task = self.create_task(self._read_messages())

    async def _read_messages(self): ...

    def create_task(self, coroutine): ...


class InputThatNoLongerCallsTheLoop(InputWithRenamedLoop):
    async def start(self, frame):
        self._receive_task = self.create_task(self._read_messages())

    async def _receive_messages(self): ...  # still there, but nothing runs it: our override would be dead


class EventsWithOtherArguments:
    def _register_event_handler(self, name: str, sync: bool = False): ...


def _need(label: str) -> Need:
    return next(need for need in compat.NEEDS if need.label == label)


def test_a_renamed_receive_loop_is_reported():
    need = _need("FastAPIWebsocketInputTransport._receive_messages")
    [missing] = check((dataclasses.replace(need, owner=InputWithRenamedLoop),))
    assert str(missing) == "InputWithRenamedLoop._receive_messages (missing)"
    [missing] = check((dataclasses.replace(need, owner=InputThatNoLongerCallsTheLoop),))
    assert missing.problem == "no longer used by start"


def test_a_renamed_instance_attribute_is_reported():
    need = _need("BaseInputTransport._paused")
    [missing] = check((dataclasses.replace(need, owner=InputWithRenamedLoop),))
    assert str(missing) == "InputWithRenamedLoop._paused (no longer set)"


def test_a_changed_signature_is_reported():
    need = _need("BaseObject._register_event_handler")
    [missing] = check((dataclasses.replace(need, owner=EventsWithOtherArguments),))
    assert missing.problem == "takes (self, name, sync), not (self, event_name, sync)"


def test_the_names_a_hang_up_or_the_end_of_a_line_hang_on_refuse_start_up_without_them():
    """Nothing that keeps a call's hang-up or its last words has a fallback: without it the
    server does not start (tests/test_compat_startup.py)."""
    fatal = {need.label for need in compat.NEEDS if need.fallback is None}
    assert {"FastAPIWebsocketInputTransport._receive_messages", "BaseInputTransport._paused",
            "BaseOutputTransport._media_senders", "BaseOutputTransport.MediaSender._audio_runs",
            "BaseOutputTransport.MediaSender._enqueue_flushed_audio_buffer",
            "BaseObject._register_event_handler", "BaseObject._call_event_handler"} <= fatal


def test_the_smart_turn_init_skipped_sets_only_what_the_shared_analyzer_sets():
    """SmartTurnOnSharedModel skips LocalSmartTurnAnalyzerV3.__init__ (it loads the model): that
    __init__ must set nothing else the analyzer then reads."""
    import inspect
    import re

    from pipecat.audio.turn.smart_turn.local_smart_turn_v3 import LocalSmartTurnAnalyzerV3

    source = inspect.getsource(LocalSmartTurnAnalyzerV3.__init__)
    assert set(re.findall(r"\bself\.(\w+)\s*(?::[^=\n]+)?=(?!=)", source)) == {"_log_data", "_session"}


# ---------------------------------------------------------------- public replacements


def _chunks(total: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    audio = bytes(rng.randrange(256) for _ in range(total))
    out, at = [], 0
    while at < len(audio):
        size = rng.choice([1, 3, 500, 1001, 4096])
        out.append(audio[at : at + size])
        at += size
    return out


@pytest.mark.parametrize(("in_rate", "out_rate"), [(22050, 8000), (8000, 8000), (16000, 8000), (22050, 16000)])
async def test_local_voices_make_the_frames_pipecats_private_helper_made(in_rate, out_rate, monkeypatch):
    """PcmFrames (public Pipecat API) gives, frame for frame, what TTSService's private
    _stream_audio_frames_from_iterator gave Piper and espeak-ng (odd-sized chunks too)."""
    from types import SimpleNamespace

    import pipecat.audio.resamplers.soxr_stream_resampler as soxr_stream

    # The stream resampler forgets its history after 0.2 s without audio, by the wall clock:
    # stopped here, so a busy machine compares like with like.
    monkeypatch.setattr(soxr_stream, "time", SimpleNamespace(time=lambda: 0.0))

    from pipecat.audio.utils import create_stream_resampler
    from pipecat.services.tts_service import TTSService

    from pipelines.providers.tts_frames import PcmFrames

    reference = getattr(TTSService, "_stream_audio_frames_from_iterator", None)
    if reference is None:
        pytest.skip("this Pipecat no longer has the helper to compare with")
    chunks = _chunks(30_001, seed=in_rate + out_rate)

    async def feed():
        for chunk in chunks:
            yield chunk

    service = SimpleNamespace(sample_rate=out_rate, _resampler=create_stream_resampler())
    theirs = [f async for f in reference(service, feed(), in_sample_rate=in_rate, context_id="c1")]
    ours = [f async for f in PcmFrames().frames(feed(), in_sample_rate=in_rate, sample_rate=out_rate, context_id="c1")]
    assert [(type(f), len(f.audio), f.sample_rate, f.num_channels, f.context_id) for f in ours] == \
        [(type(f), len(f.audio), f.sample_rate, f.num_channels, f.context_id) for f in theirs]
    for a, b in zip(ours, theirs, strict=True):
        if in_rate == out_rate:
            assert a.audio == b.audio
        else:  # soxr dithers its 16-bit output: a least significant bit or two, at random
            difference = np.frombuffer(a.audio, np.int16).astype(int) - np.frombuffer(b.audio, np.int16)
            assert np.abs(difference).max(initial=0) <= 4


class FakeSocket:
    """What FastAPIWebsocketClient reads of a FastAPI WebSocket."""

    def __init__(self):
        self.client_state = WebSocketState.CONNECTED
        self.application_state = WebSocketState.CONNECTED
        self.closes = 0

    async def close(self, code: int = 1000, reason: str | None = None):
        self.closes += 1
        self.client_state = self.application_state = WebSocketState.DISCONNECTED


async def _noop(*_):
    pass


async def test_hang_up_closes_the_socket_while_the_input_and_output_still_hold_it():
    """The hang-up lets go for every holder through the public disconnect() (no private
    counter): the socket closes once, at once, and the holders' own disconnects later are no-ops."""
    from pipecat.transports.websocket.fastapi import FastAPIWebsocketCallbacks

    from pipelines.exotel_transport import ExotelWebsocketClient

    socket = FakeSocket()
    callbacks = FastAPIWebsocketCallbacks(on_client_connected=_noop, on_client_disconnected=_noop,
                                          on_session_timeout=_noop)
    client = ExotelWebsocketClient(socket, callbacks)  # type: ignore[arg-type]
    for _ in range(2):  # the input and the output transport set it up
        await client.setup(None)  # type: ignore[arg-type]
    await client.hang_up()
    await asyncio.sleep(0)
    assert socket.closes == 1 and client.is_closing
    await client.disconnect()  # the input's teardown, later
    await client.disconnect()
    assert socket.closes == 1


async def test_hang_up_of_a_socket_already_gone_does_nothing_more():
    from pipecat.transports.websocket.fastapi import FastAPIWebsocketCallbacks

    from pipelines.exotel_transport import ExotelWebsocketClient

    socket = FakeSocket()
    socket.client_state = WebSocketState.DISCONNECTED
    callbacks = FastAPIWebsocketCallbacks(on_client_connected=_noop, on_client_disconnected=_noop,
                                          on_session_timeout=_noop)
    client = ExotelWebsocketClient(socket, callbacks)  # type: ignore[arg-type]
    await client.hang_up()
    assert socket.closes == 0


def test_only_our_deepgram_service_gets_the_pooled_client():
    """The pooled Deepgram client is swapped into Pipecat's module only while our service is
    built: Pipecat's own DeepgramSTTService, built afterwards, is as Pipecat makes it."""
    import deepgram
    import pipecat.services.deepgram.stt as pipecat_deepgram
    from pipecat.services.deepgram.stt import DeepgramSTTService

    from pipelines.providers.deepgram import BackgroundConnectDeepgramSTTService, PooledAsyncDeepgramClient

    ours = BackgroundConnectDeepgramSTTService(api_key="test", sample_rate=8000)
    assert isinstance(ours._client, PooledAsyncDeepgramClient)
    assert pipecat_deepgram.AsyncDeepgramClient is deepgram.AsyncDeepgramClient
    theirs = DeepgramSTTService(api_key="test", sample_rate=8000)
    assert type(theirs._client) is deepgram.AsyncDeepgramClient
