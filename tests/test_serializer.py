"""Unit tests for serializers/exotel.py (ExotelFrameSerializer) and PlaybackMarks.

Each test is small and checks one behaviour. Tests marked `# Regression` pin bugs that
these tests found (and that were then fixed): they fail if the bug comes back.
"""

from __future__ import annotations

import asyncio
import base64
import json

import numpy as np
import pytest
from pipecat.audio.dtmf.types import KeypadEntry
from pipecat.clocks.system_clock import SystemClock
from pipecat.frames.frames import (
    EndFrame,
    InputAudioRawFrame,
    InputDTMFFrame,
    InterruptionFrame,
    OutputAudioRawFrame,
    OutputTransportMessageFrame,
)
from pipecat.processors.frame_processor import FrameProcessorSetup
from pipecat.utils.asyncio.task_manager import TaskManager
from pydantic import ValidationError

from serializers.exotel import (
    MAX_PAYLOAD,
    MIN_PAYLOAD,
    PAYLOAD_UNIT,
    ExotelFrameSerializer,
    ExotelStopFrame,
)
from serializers.playback_marks import PlaybackMarks

SID = "stream-1"
Params = ExotelFrameSerializer.InputParams


# ---------------------------------------------------------------------------- helpers
def make(stream_sid: str | None = None, **params) -> ExotelFrameSerializer:
    return ExotelFrameSerializer(stream_sid=stream_sid, params=Params(**params))


async def setup_rate(serializer: ExotelFrameSerializer, rate: int) -> None:
    """Run the real setup() with a pipeline input rate.

    The serializer only reads `audio_in_sample_rate`; pipeline_worker is not needed for that,
    so None is passed for it.
    """
    await serializer.setup(
        FrameProcessorSetup(
            clock=SystemClock(),
            task_manager=TaskManager(),
            pipeline_worker=None,
            audio_in_sample_rate=rate,
        )
    )


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def media_msg(audio: bytes, sid: str | None = SID, sid_key: str = "stream_sid") -> str:
    message: dict = {"event": "media", "sequence_number": "3", "media": {"chunk": "1", "timestamp": "100", "payload": b64(audio)}}
    if sid is not None:
        message[sid_key] = sid
    return json.dumps(message)


def start_msg(
    sid: str = SID,
    call: str = "call-1",
    rate=8000,
    custom=None,
    camel: bool = False,
) -> str:
    if camel:
        start = {
            "streamSid": sid,
            "callSid": call,
            "accountSid": "acct",
            "from": "+911",
            "to": "+912",
            "customParameters": custom if custom is not None else {},
            "mediaFormat": {"encoding": "base64", "sampleRate": rate, "bitRate": "128kbps"},
        }
        return json.dumps({"event": "start", "sequenceNumber": 1, "streamSid": sid, "start": start})
    start = {
        "stream_sid": sid,
        "call_sid": call,
        "account_sid": "acct",
        "from": "+911",
        "to": "+912",
        "custom_parameters": custom if custom is not None else {},
        "media_format": {"encoding": "base64", "sample_rate": rate, "bit_rate": "128kbps"},
    }
    return json.dumps({"event": "start", "sequence_number": "1", "stream_sid": sid, "start": start})


def pcm(n_bytes: int, seed: int = 1) -> bytes:
    """Deterministic non-zero PCM bytes (so trailing zero padding is distinguishable)."""
    rng = np.random.default_rng(seed)
    return rng.integers(1, 256, size=n_bytes, dtype=np.uint8).tobytes()


def out_frame(audio: bytes, rate: int = 8000) -> OutputAudioRawFrame:
    return OutputAudioRawFrame(audio=audio, sample_rate=rate, num_channels=1)


def parse_media(message: str, sid: str | None = SID) -> bytes:
    """Check a message is exactly Exotel's outbound media shape and return its decoded payload."""
    data = json.loads(message)
    assert set(data) == {"event", "stream_sid", "media"}
    assert data["event"] == "media"
    assert data["stream_sid"] == sid
    assert set(data["media"]) == {"payload"}
    assert isinstance(data["media"]["payload"], str)
    return base64.b64decode(data["media"]["payload"], validate=True)


def event_of(message: str) -> str:
    return json.loads(message)["event"]


async def feed(serializer: ExotelFrameSerializer, frames) -> list[str]:
    messages = []
    for frame in frames:
        message = await serializer.serialize(frame)
        if message is not None:
            messages.append(message)
    return messages


def tone(n_samples: int, rate: int, freq: float = 440.0, amp: int = 10000) -> bytes:
    t = np.arange(n_samples)
    return (np.sin(2 * np.pi * freq * t / rate) * amp).astype(np.int16).tobytes()


# ---------------------------------------------------------------------------- start
async def test_start_snake_case_fields():
    s = make()
    assert await s.deserialize(start_msg(sid="S-snake", call="C-snake", rate="8000")) is None
    assert s.stream_sid == "S-snake"
    assert s.call_sid == "C-snake"
    assert s.start is not None
    assert s.start.account_sid == "acct"
    assert s.start.from_number == "+911"
    assert s.start.to_number == "+912"
    assert s.start.sample_rate == 8000
    assert s.start.encoding == "base64"
    assert s.problems.counts == {}


async def test_start_camel_case_fields():
    s = make()
    assert await s.deserialize(start_msg(sid="S-camel", call="C-camel", rate=16000, camel=True)) is None
    assert s.stream_sid == "S-camel"
    assert s.call_sid == "C-camel"
    assert s.start.account_sid == "acct"
    assert s.exotel_sample_rate == 16000
    assert s.problems.counts == {}


async def test_start_numbers_as_ints_are_read_as_strings():
    s = make()
    message = json.dumps(
        {"event": "start", "start": {"stream_sid": 12345, "call_sid": 678, "media_format": {"sample_rate": 16000}}}
    )
    await s.deserialize(message)
    assert s.stream_sid == "12345"
    assert s.call_sid == "678"
    assert s.exotel_sample_rate == 16000


@pytest.mark.parametrize("rate", [8000, 16000, 24000])
@pytest.mark.parametrize("as_string", [False, True])
@pytest.mark.parametrize("camel", [False, True])
async def test_start_sample_rate_taken_from_start(rate, as_string, camel):
    s = make()
    await s.deserialize(start_msg(rate=str(rate) if as_string else rate, camel=camel))
    assert s.exotel_sample_rate == rate


async def test_start_unsupported_rate_is_ignored():
    s = make()
    await s.deserialize(start_msg(rate=11025))
    assert s.exotel_sample_rate == 8000
    assert s.start.sample_rate is None
    assert s.stream_sid == SID  # the rest of the start is still read


async def test_start_rate_default_before_any_start_is_8000():
    assert make().exotel_sample_rate == 8000


@pytest.mark.parametrize("configured, announced", [(16000, 8000), (8000, 24000), (24000, 16000)])
async def test_configured_exotel_rate_wins_over_start(configured, announced):
    s = make(exotel_sample_rate=configured)
    await s.deserialize(start_msg(rate=announced))
    assert s.exotel_sample_rate == configured
    assert s.stream_sid == SID


async def test_custom_parameters_as_dict():
    s = make()
    await s.deserialize(start_msg(custom={"lead_id": "42", "lang": "hi", "n": 7}))
    assert s.start.custom_parameters == {"lead_id": "42", "lang": "hi", "n": "7"}


async def test_custom_parameters_as_json_string():
    s = make()
    await s.deserialize(start_msg(custom=json.dumps({"lead_id": "42", "lang": "hi"}), camel=True))
    assert s.start.custom_parameters == {"lead_id": "42", "lang": "hi"}


@pytest.mark.parametrize("query", ["lead_id=42&lang=hi", "?lead_id=42&lang=hi"])
async def test_custom_parameters_as_query_string(query):
    s = make()
    await s.deserialize(start_msg(custom=query))
    assert s.start.custom_parameters == {"lead_id": "42", "lang": "hi"}


async def test_custom_parameters_bad_json_string_reads_as_empty():
    s = make()
    await s.deserialize(start_msg(custom="{not json"))
    assert s.start.custom_parameters == {}
    assert s.stream_sid == SID


async def test_start_without_stream_sid_is_counted():
    s = make()
    await s.deserialize(json.dumps({"event": "start", "start": {"call_sid": "C"}}))
    assert s.call_sid == "C"
    assert s.stream_sid is None
    assert s.problems.counts == {"missing_field": 1}


# ---------------------------------------------------------------------------- media
@pytest.mark.parametrize("sid_key", ["stream_sid", "streamSid"])
async def test_first_media_without_start_adopts_stream_sid(sid_key):
    s = make()
    frame = await s.deserialize(media_msg(pcm(640), sid="S-nostart", sid_key=sid_key))
    assert isinstance(frame, InputAudioRawFrame)
    assert s.stream_sid == "S-nostart"
    assert s.start is None


async def test_media_does_not_override_stream_sid_from_start():
    s = make()
    await s.deserialize(start_msg(sid="S-start"))
    await s.deserialize(media_msg(pcm(640), sid="S-other"))
    assert s.stream_sid == "S-start"


async def test_media_passthrough_byte_for_byte_when_rates_match():
    s = make()
    await setup_rate(s, 8000)
    await s.deserialize(start_msg(rate=8000))
    audio = pcm(3200)
    frame = await s.deserialize(media_msg(audio))
    assert isinstance(frame, InputAudioRawFrame)
    assert frame.audio == audio
    assert frame.sample_rate == 8000
    assert frame.num_channels == 1
    assert s.stats["media_in"] == 1
    assert s.stats["bytes_in"] == 3200


async def test_media_passthrough_without_setup_uses_stream_rate():
    # No setup() at all: _pipeline_in_rate is 0 and the stream rate is used, no resampling.
    s = make()
    await s.deserialize(start_msg(rate=16000))
    audio = pcm(1280)
    frame = await s.deserialize(media_msg(audio))
    assert frame.audio == audio
    assert frame.sample_rate == 16000


async def test_media_sample_rate_param_overrides_pipeline_rate():
    s = make(sample_rate=8000)
    await setup_rate(s, 16000)  # params.sample_rate wins over setup's rate
    audio = pcm(640)
    frame = await s.deserialize(media_msg(audio))
    assert frame.audio == audio
    assert frame.sample_rate == 8000


async def test_media_resampled_to_pipeline_rate():
    s = make()
    await setup_rate(s, 16000)
    await s.deserialize(start_msg(rate=8000))
    total_in = 0
    total_out = 0
    chunk = tone(800, 8000)  # 100 ms at 8 kHz, like Exotel
    for _ in range(10):
        frame = await s.deserialize(media_msg(chunk))
        total_in += len(chunk)
        if frame is not None:
            assert isinstance(frame, InputAudioRawFrame)
            assert frame.sample_rate == 16000
            assert len(frame.audio) % 2 == 0
            total_out += len(frame.audio)
    # About double: the stream resampler holds a few ms back, so allow 10%.
    assert abs(total_out - 2 * total_in) <= 0.1 * 2 * total_in


# ---------------------------------------------------------------------------- dtmf
@pytest.mark.parametrize(
    "digit, expected",
    [
        ("5", KeypadEntry.FIVE),
        (5, KeypadEntry.FIVE),
        (0, KeypadEntry.ZERO),
        ("*", KeypadEntry.STAR),
        ("#", KeypadEntry.POUND),
        (" 9 ", KeypadEntry.NINE),
    ],
)
async def test_dtmf_digit(digit, expected):
    s = make(SID)
    frame = await s.deserialize(json.dumps({"event": "dtmf", "stream_sid": SID, "dtmf": {"digit": digit, "duration": "200"}}))
    assert isinstance(frame, InputDTMFFrame)
    assert frame.button == expected
    assert s.stats["dtmf_in"] == 1
    assert s.problems.counts == {}


@pytest.mark.parametrize(
    "dtmf",
    [{"digit": "x"}, {}, {"digit": None}, {"digit": ""}, {"digit": "55"}, {"digit": True}, "5"],
    ids=["x", "missing", "null", "empty", "two-digits", "bool", "dtmf-not-object"],
)
async def test_dtmf_invalid_digit(dtmf):
    s = make(SID)
    assert await s.deserialize(json.dumps({"event": "dtmf", "stream_sid": SID, "dtmf": dtmf})) is None
    assert s.problems.counts == {"bad_dtmf": 1}
    assert s.stats["dtmf_in"] == 0


async def test_dtmf_without_dtmf_key():
    s = make(SID)
    assert await s.deserialize('{"event":"dtmf"}') is None
    assert s.problems.counts == {"bad_dtmf": 1}


# ---------------------------------------------------------------------------- mark echo
async def test_mark_echo_settles_mark():
    s = make(SID)
    await s.serialize(out_frame(pcm(3200)))
    messages = (await s.flush_utterance())
    mark = json.loads(messages[-1])
    assert mark == {"event": "mark", "stream_sid": SID, "mark": {"name": mark["mark"]["name"]}}
    name = mark["mark"]["name"]
    assert s.marks.outstanding == 1
    result = await s.deserialize(json.dumps({"event": "mark", "stream_sid": SID, "mark": {"name": name}}))
    assert result is None
    assert s.marks.outstanding == 0
    assert s.marks.echoed == 1
    assert s.marks.last_echoed == name
    assert await s.marks.wait_all(0.1) is True


async def test_mark_echo_camel_case_and_top_level_name():
    s = make(SID)
    await s.serialize(out_frame(pcm(3200)))
    name = json.loads((await s.flush_utterance())[-1])["mark"]["name"]
    await s.deserialize(json.dumps({"event": "mark", "streamSid": SID, "name": name}))
    assert s.marks.outstanding == 0
    assert s.marks.echoed == 1


async def test_mark_echo_unknown_name_is_ignored():
    s = make(SID)
    await s.serialize(out_frame(pcm(3200)))
    (await s.flush_utterance())
    result = await s.deserialize(json.dumps({"event": "mark", "stream_sid": SID, "mark": {"name": "nobody-99"}}))
    assert result is None
    assert s.marks.unknown_echoes == 1
    assert s.marks.outstanding == 1
    assert s.marks.echoed == 0


async def test_mark_echo_without_name_is_counted():
    s = make(SID)
    assert await s.deserialize(json.dumps({"event": "mark", "stream_sid": SID, "mark": {}})) is None
    assert s.problems.counts == {"missing_field": 1}


# ---------------------------------------------------------------------------- stop / connected / unknown
@pytest.mark.parametrize("reason", ["callended", "stopped"])
async def test_stop_with_reason(reason):
    s = make(SID)
    frame = await s.deserialize(
        json.dumps({"event": "stop", "stream_sid": SID, "stop": {"call_sid": "C9", "account_sid": "A", "reason": reason}})
    )
    assert isinstance(frame, ExotelStopFrame)
    assert frame.reason == reason
    assert s.stop_reason == reason
    assert s.call_sid == "C9"  # learned from stop when no start came


async def test_stop_without_reason_still_gives_frame():
    s = make(SID)
    frame = await s.deserialize('{"event":"stop"}')
    assert isinstance(frame, ExotelStopFrame)
    assert s.stop_reason is not None
    assert frame.reason == s.stop_reason


async def test_stop_keeps_call_sid_from_start():
    s = make()
    await s.deserialize(start_msg(call="C-start"))
    await s.deserialize(json.dumps({"event": "stop", "stop": {"call_sid": "C-other", "reason": "callended"}}))
    assert s.call_sid == "C-start"


async def test_connected_returns_none():
    s = make()
    assert await s.deserialize('{"event":"connected"}') is None
    assert s.problems.counts == {}


async def test_connected_as_bytes():
    s = make()
    assert await s.deserialize(b'{"event":"connected"}') is None
    assert s.problems.counts == {}


async def test_media_as_bytes():
    s = make()
    audio = pcm(640)
    frame = await s.deserialize(media_msg(audio).encode())
    assert isinstance(frame, InputAudioRawFrame)
    assert frame.audio == audio


@pytest.mark.parametrize("message", ['{"event":"ringing"}', '{"no_event":1}', '{"event":null}', '{"event":["media"]}'])
async def test_unknown_event_counted(message):
    s = make()
    assert await s.deserialize(message) is None
    assert s.problems.counts == {"unknown_event": 1}


# ---------------------------------------------------------------------------- bad inputs
BAD_INPUTS = [
    ("{not json", "invalid_json"),
    ("", "invalid_json"),
    (b"\xff\xfe\x00garbage", "invalid_json"),
    ('[{"event":"media"}]', "not_object"),
    ('"media"', "not_object"),
    ("42", "not_object"),
    ("null", "not_object"),
    ('{"event":"media","stream_sid":"S"}', "missing_field"),
    ('{"event":"media","stream_sid":"S","media":{}}', "missing_field"),
    ('{"event":"media","stream_sid":"S","media":"AAAA"}', "missing_field"),
    ('{"event":"media","stream_sid":"S","media":{"payload":12345}}', "missing_field"),
    ('{"event":"media","stream_sid":"S","media":{"payload":["AAAA"]}}', "missing_field"),
    ('{"event":"media","stream_sid":"S","media":{"payload":""}}', "missing_field"),
    ('{"event":"media","stream_sid":"S","media":{"payload":"not base64!!"}}', "bad_base64"),
    ('{"event":"media","stream_sid":"S","media":{"payload":"AAA"}}', "bad_base64"),
    ('{"event":"media","stream_sid":"S","media":{"payload":"AAAA\u00e9"}}', "bad_base64"),
    ("[" * 100_000, "invalid_json"),
    ('{"a":' * 100_000, "invalid_json"),
    ("[" * 100_000 + "]" * 100_000, "invalid_json"),
]


@pytest.mark.parametrize("data, kind", BAD_INPUTS, ids=[f"{i}-{kind}" for i, (_, kind) in enumerate(BAD_INPUTS)])
async def test_bad_input_returns_none_and_is_counted(data, kind):
    s = make()
    assert await s.deserialize(data) is None
    assert s.problems.counts == {kind: 1}


async def test_oversized_message_dropped():
    s = make(max_message_bytes=100)
    message = media_msg(pcm(640))
    assert len(message) > 100
    assert await s.deserialize(message) is None
    assert s.problems.counts == {"oversized": 1}
    assert s.stats["media_in"] == 0
    # A small message still goes through.
    assert await s.deserialize('{"event":"connected"}') is None
    assert s.problems.counts == {"oversized": 1}


async def test_oversized_bytes_message_dropped():
    s = make(max_message_bytes=100)
    assert await s.deserialize(media_msg(pcm(640)).encode()) is None
    assert s.problems.counts == {"oversized": 1}


async def test_oversized_non_ascii_text_message_dropped():
    # Regression (was a bug, now fixed): max_message_bytes is compared with len(str), i.e. characters, not bytes. A text
    # message of 631 characters / 1,831 UTF-8 bytes passes a 1,000-byte limit.
    s = make(max_message_bytes=1000)
    message = json.dumps({"event": "connected", "x": "\u20ac" * 600}, ensure_ascii=False)
    assert len(message) <= 1000 < len(message.encode("utf-8"))
    assert await s.deserialize(message) is None
    assert s.problems.counts == {"oversized": 1}


async def test_many_bad_messages_are_all_counted():
    s = make()
    for _ in range(50):
        assert await s.deserialize("nope") is None
    assert s.problems.counts == {"invalid_json": 50}
    assert s.problems.total == 50


async def test_odd_length_payload_drops_stray_byte():
    s = make()
    audio = pcm(641)
    frame = await s.deserialize(media_msg(audio))
    assert isinstance(frame, InputAudioRawFrame)
    assert len(frame.audio) == 640
    assert frame.audio == audio[:640]
    assert s.problems.counts == {"odd_length": 1}


async def test_one_byte_payload_gives_no_frame():
    s = make()
    assert await s.deserialize(media_msg(b"\x01")) is None
    assert s.problems.counts == {"odd_length": 1}
    assert s.stats["media_in"] == 0


async def test_start_with_non_finite_sample_rate_is_not_lost():
    # Regression (was a bug, now fixed): as_int("inf") / as_int("1e400") raise OverflowError (only ValueError is caught),
    # so the whole `start` is dropped as an "internal" error: the stream_sid and call_sid are
    # never learned. A malformed field should read as None (exotel_events.py docstring).
    s = make()
    message = '{"event":"start","start":{"stream_sid":"S1","call_sid":"C1","media_format":{"sample_rate":"inf"}}}'
    assert await s.deserialize(message) is None
    assert "internal" not in s.problems.counts
    assert s.stream_sid == "S1"
    assert s.call_sid == "C1"
    assert s.exotel_sample_rate == 8000


async def test_start_with_huge_integer_field_is_not_lost():
    # Regression (was a bug, now fixed): as_str(10**400) calls float(value), which raises OverflowError for ints beyond
    # float range; the whole `start` is dropped as "internal" and stream_sid is never learned.
    s = make()
    message = '{"event":"start","start":{"stream_sid":"S1","call_sid":' + "9" * 400 + "}}"
    assert await s.deserialize(message) is None
    assert "internal" not in s.problems.counts
    assert s.stream_sid == "S1"


async def test_dtmf_with_huge_integer_digit_counted_as_bad_dtmf():
    # Regression (was a bug, now fixed): same OverflowError in as_str: counted as "internal" instead of "bad_dtmf".
    s = make()
    message = '{"event":"dtmf","dtmf":{"digit":' + "9" * 400 + "}}"
    assert await s.deserialize(message) is None
    assert s.problems.counts == {"bad_dtmf": 1}


# ---------------------------------------------------------------------------- outbound sizing
SIZES = [640, 1000, 3200, 5000, 12344, 640, 320, 2, 0, 7000]


async def test_outbound_payload_sizes_and_no_loss():
    s = make(SID)
    chunks = [pcm(n, seed=i) for i, n in enumerate(SIZES)]
    messages = await feed(s, [out_frame(c) for c in chunks])
    flushed = (await s.flush_utterance())
    assert event_of(flushed[-1]) == "mark"
    medias = messages + flushed[:-1]
    assert all(event_of(m) == "media" for m in medias)
    payloads = [parse_media(m) for m in medias]
    for p in payloads:
        assert len(p) % PAYLOAD_UNIT == 0
        assert MIN_PAYLOAD <= len(p) <= 100_000
    sent = b"".join(payloads)
    data = b"".join(chunks)
    padding = s.stats["padding_bytes_out"]
    assert len(sent) == len(data) + padding
    assert sent[: len(data)] == data  # no loss, no reordering
    assert sent[len(data):] == bytes(padding)  # padding is silence at the very end
    assert s.stats["bytes_out"] == len(sent)
    assert s.stats["media_out"] == len(payloads)
    assert s.pending_out_bytes == 0


async def test_outbound_small_frames_buffer_until_a_payload():
    s = make(SID)
    for i in range(4):
        assert await s.serialize(out_frame(pcm(640, seed=i))) is None
    assert s.pending_out_bytes == 2560
    message = await s.serialize(out_frame(pcm(640, seed=9)))
    assert len(parse_media(message)) == 3200
    assert s.pending_out_bytes == 0


async def test_outbound_payload_is_whole_units_and_keeps_remainder():
    s = make(SID)
    message = await s.serialize(out_frame(pcm(5000)))
    assert len(parse_media(message)) == 4800
    assert s.pending_out_bytes == 200


async def test_outbound_empty_frame_returns_none():
    s = make(SID)
    assert await s.serialize(out_frame(b"")) is None
    assert (await s.flush_utterance()) == []


async def test_flush_with_nothing_returns_empty():
    s = make(SID)
    assert (await s.flush_utterance()) == []


async def test_flush_after_short_audio_pads_and_marks():
    s = make(SID)
    audio = pcm(1000)
    assert await s.serialize(out_frame(audio)) is None
    messages = (await s.flush_utterance())
    assert [event_of(m) for m in messages] == ["media", "mark"]
    payload = parse_media(messages[0])
    assert len(payload) == MIN_PAYLOAD
    assert payload == audio + bytes(MIN_PAYLOAD - 1000)
    assert s.stats["padding_bytes_out"] == MIN_PAYLOAD - 1000
    assert (await s.flush_utterance()) == []


async def test_flush_after_exact_payload_gives_only_mark():
    s = make(SID)
    assert await s.serialize(out_frame(pcm(3200))) is not None
    messages = (await s.flush_utterance())
    assert [event_of(m) for m in messages] == ["mark"]
    assert s.stats["padding_bytes_out"] == 0
    assert (await s.flush_utterance()) == []


async def test_flush_tail_padded_to_payload_bytes():
    s = make(SID)
    await s.serialize(out_frame(pcm(3200)))  # sent
    await s.serialize(out_frame(pcm(2000)))  # buffered
    assert s.pending_out_bytes == 2000
    messages = (await s.flush_utterance())
    assert len(parse_media(messages[0])) == MIN_PAYLOAD  # 2000 -> padded up to the 3200 minimum
    s2 = make(SID, payload_bytes=6400)
    assert len(parse_media(await s2.serialize(out_frame(pcm(6400))))) == 6400
    assert await s2.serialize(out_frame(pcm(3300))) is None
    assert s2.pending_out_bytes == 3300
    # Tail above the (3200) unit minimum but below payload_bytes -> padded to payload_bytes.
    assert len(parse_media((await s2.flush_utterance())[0])) == 6400


async def test_each_utterance_gets_its_own_mark():
    s = make(SID)
    names = []
    for _ in range(3):
        await s.serialize(out_frame(pcm(1000)))
        names.append(json.loads((await s.flush_utterance())[-1])["mark"]["name"])
    assert len(set(names)) == 3
    assert s.marks.outstanding == 3
    assert s.marks.sent == 3


async def test_stream_sid_learned_later_used_in_outbound():
    s = make()
    await s.deserialize(start_msg(sid="S-late"))
    message = await s.serialize(out_frame(pcm(3200)))
    assert parse_media(message, sid="S-late")


@pytest.mark.parametrize("payload_bytes", [6400, 9600, MAX_PAYLOAD])
async def test_payload_bytes_configurable(payload_bytes):
    s = make(SID, payload_bytes=payload_bytes)
    chunks = [pcm(n, seed=i) for i, n in enumerate([4000, 5000, 1000, 7000, 640, 30000])]
    messages = await feed(s, [out_frame(c) for c in chunks]) + (await s.flush_utterance())[:-1]
    payloads = [parse_media(m) for m in messages]
    assert payloads
    for p in payloads:
        assert len(p) % PAYLOAD_UNIT == 0
        assert payload_bytes <= len(p) <= 100_000
    data = b"".join(chunks)
    assert b"".join(payloads)[: len(data)] == data


@pytest.mark.parametrize("payload_bytes", [3000, 3210, 200_000, 0, -3200, 100_160])
def test_invalid_payload_bytes_rejected(payload_bytes):
    with pytest.raises(ValidationError):
        Params(payload_bytes=payload_bytes)


@pytest.mark.parametrize("rate", [11025, 44100, 0, 48000])
def test_invalid_exotel_sample_rate_rejected(rate):
    with pytest.raises(ValidationError):
        Params(exotel_sample_rate=rate)


@pytest.mark.parametrize("rate", [8000, 16000, 24000, None])
def test_valid_exotel_sample_rate_accepted(rate):
    assert Params(exotel_sample_rate=rate).exotel_sample_rate == rate


async def test_single_huge_frame_never_makes_payload_over_100000():
    # Regression (was a bug, now fixed): _media_for_audio returns at most one message (<= 99,840 bytes) per frame and keeps
    # the rest buffered; flush_utterance() then sends the whole remainder as one payload.
    # A 200,000-byte frame gives payloads [99840, 100160]: 100,160 > Exotel's 100,000 limit
    # (and pending_out_bytes is left at 100,160, far above one payload).
    s = make(SID)
    audio = pcm(200_000)
    messages = await feed(s, [out_frame(audio)]) + (await s.flush_utterance())[:-1]
    payloads = [parse_media(m) for m in messages]
    assert b"".join(payloads)[:200_000] == audio
    for p in payloads:
        assert MIN_PAYLOAD <= len(p) <= 100_000, [len(x) for x in payloads]


# ---------------------------------------------------------------------------- outbound resampling
async def test_outbound_passthrough_at_stream_rate():
    s = make(SID)
    audio = pcm(6400)
    message = await s.serialize(out_frame(audio, 8000))
    assert parse_media(message) == audio


async def test_outbound_resampled_16k_to_8k_about_half():
    s = make(SID)
    audio = tone(16000, 16000)  # 1 s at 16 kHz = 32,000 bytes
    frames = [out_frame(audio[i : i + 640], 16000) for i in range(0, len(audio), 640)]
    messages = await feed(s, frames) + (await s.flush_utterance())[:-1]
    sent = sum(len(parse_media(m)) for m in messages) - s.stats["padding_bytes_out"]
    assert abs(sent - len(audio) / 2) <= 0.1 * len(audio) / 2


async def test_outbound_resampled_to_16k_stream():
    s = make(SID, exotel_sample_rate=16000)
    audio = tone(24000, 24000)  # 1 s at 24 kHz
    frames = [out_frame(audio[i : i + 960], 24000) for i in range(0, len(audio), 960)]
    messages = await feed(s, frames) + (await s.flush_utterance())[:-1]
    for m in messages:
        assert len(parse_media(m)) % PAYLOAD_UNIT == 0
    sent = sum(len(parse_media(m)) for m in messages) - s.stats["padding_bytes_out"]
    assert abs(sent - 32000) <= 0.1 * 32000


async def test_outbound_resampled_utterance_is_not_cut_short():
    # Regression (was a bug, now fixed): flush_utterance() never drains the output stream resampler (soxr VHQ holds ~52 ms).
    # 1 s of 16 kHz audio (32,000 bytes) should give 16,000 bytes at 8 kHz; only 15,160 bytes
    # of audio are sent before the mark, the last ~420 samples stay in the resampler (they come
    # out at the start of the *next* utterance, after this utterance's mark).
    s = make(SID)
    audio = tone(16000, 16000)
    frames = [out_frame(audio[i : i + 640], 16000) for i in range(0, len(audio), 640)]
    messages = await feed(s, frames) + (await s.flush_utterance())[:-1]
    sent = sum(len(parse_media(m)) for m in messages) - s.stats["padding_bytes_out"]
    assert sent >= 16000 - 8, f"only {sent} of 16000 bytes sent before the mark"


async def test_outbound_resampler_does_not_leak_interrupted_audio():
    # Regression (was a bug, now fixed): clear() does not reset the output stream resampler, so ~50 ms of the interrupted
    # utterance (held inside soxr) is sent at the start of the next utterance.
    # Input: 800 samples of a 10,000-amplitude 16 kHz tone, InterruptionFrame, then 0.25 s of
    # silence at 16 kHz, flush. Expected: only (near-)silence sent; observed peak 10,000.
    s = make(SID)
    await s.serialize(out_frame(tone(800, 16000), 16000))
    await s.serialize(InterruptionFrame())
    frames = [out_frame(bytes(1600), 16000) for _ in range(5)]
    messages = await feed(s, frames) + (await s.flush_utterance())[:-1]
    sent = np.frombuffer(b"".join(parse_media(m) for m in messages), dtype=np.int16)
    assert sent.size > 0
    assert int(np.abs(sent.astype(np.int32)).max()) <= 16


async def test_outbound_frames_at_two_rates_do_not_raise():
    # Regression (was a bug, now fixed): the single output stream resampler is bound to the first input rate; a later frame
    # at another rate (24 kHz TTS, then a 16 kHz frame) makes serialize() raise ValueError
    # "SOXRStreamAudioResampler cannot be reused with different sample rates".
    s = make(SID)
    await s.serialize(out_frame(bytes(960), 24000))
    await s.serialize(out_frame(bytes(640), 16000))


# ---------------------------------------------------------------------------- clear
async def test_clear_on_interruption():
    s = make(SID)
    # Utterance 1: sent in full and marked.
    await s.serialize(out_frame(pcm(3200)))
    mark_name = json.loads((await s.flush_utterance())[-1])["mark"]["name"]
    future = s.marks._pending[mark_name]  # inspect: the future the transport would wait on
    waiter = asyncio.ensure_future(s.marks.wait_all(5.0))
    await asyncio.sleep(0)
    # Utterance 2: less than a payload buffered.
    assert await s.serialize(out_frame(pcm(1000))) is None
    assert s.pending_out_bytes == 1000

    message = await s.serialize(InterruptionFrame())
    assert json.loads(message) == {"event": "clear", "stream_sid": SID}
    assert s.pending_out_bytes == 0
    assert s.bytes_since_mark == 0
    assert s.marks.outstanding == 0
    assert s.marks.dropped == 1
    assert future.done() and future.result() is False
    assert await asyncio.wait_for(waiter, 1.0) is False  # a waiter from before the clear hears "not played"
    assert (await s.flush_utterance()) == []  # nothing of the interrupted utterance is sent
    assert s.stats["clears_out"] == 1


async def test_clear_drops_unmarked_sent_audio_mark():
    # A full payload sent, no flush yet: after clear no mark is sent for it.
    s = make(SID)
    assert await s.serialize(out_frame(pcm(3200))) is not None
    assert s.bytes_since_mark == 3200
    await s.serialize(InterruptionFrame())
    assert (await s.flush_utterance()) == []


async def test_late_echo_after_clear_is_ignored():
    s = make(SID)
    await s.serialize(out_frame(pcm(3200)))
    name = json.loads((await s.flush_utterance())[-1])["mark"]["name"]
    await s.serialize(InterruptionFrame())
    assert await s.deserialize(json.dumps({"event": "mark", "stream_sid": SID, "mark": {"name": name}})) is None
    assert s.marks.unknown_echoes == 1
    assert s.marks.echoed == 0


async def test_audio_after_clear_starts_fresh():
    s = make(SID)
    await s.serialize(out_frame(pcm(1000, seed=1)))
    await s.serialize(InterruptionFrame())
    fresh = pcm(3200, seed=2)
    assert parse_media(await s.serialize(out_frame(fresh))) == fresh


# ---------------------------------------------------------------------------- other outbound
async def test_transport_message_serialized_as_json():
    s = make(SID)
    message = {"event": "mark", "stream_sid": SID, "mark": {"name": "custom"}}
    assert await s.serialize(OutputTransportMessageFrame(message=message)) == json.dumps(message)


async def test_transport_message_rtvi_ignored():
    s = make(SID)
    assert await s.serialize(OutputTransportMessageFrame(message={"label": "rtvi-ai", "type": "x"})) is None


async def test_transport_message_non_dict_does_not_raise():
    # Regression (was a bug, now fixed): OutputTransportMessageFrame.message is typed Any, but serialize() calls the base
    # should_ignore_frame(), which does frame.message.get(...): message=[1, 2] raises
    # AttributeError("'list' object has no attribute 'get'") instead of returning "[1, 2]".
    s = make(SID)
    assert await s.serialize(OutputTransportMessageFrame(message=[1, 2])) == json.dumps([1, 2])


async def test_unhandled_frame_serializes_to_none():
    assert await make(SID).serialize(EndFrame()) is None


# ---------------------------------------------------------------------------- PlaybackMarks
async def test_marks_echo_of_later_settles_earlier():
    marks = PlaybackMarks()
    a, b, c = marks.new(), marks.new(), marks.new()
    fa, fb, fc = (marks._pending[n] for n in (a, b, c))
    assert marks.echo(b) is True
    assert fa.result() is True and fb.result() is True
    assert not fc.done()
    assert marks.outstanding == 1
    assert marks.echoed == 2
    assert marks.last_echoed == b
    assert marks.echo(a) is False  # already settled: a late echo
    assert marks.unknown_echoes == 1
    assert marks.echo(c) is True
    assert marks.outstanding == 0
    assert await marks.wait_all(0.1) is True


async def test_marks_drop_all_counts():
    marks = PlaybackMarks()
    futures = [marks._pending[marks.new()] for _ in range(3)]
    assert marks.drop_all() == 3
    assert marks.dropped == 3
    assert marks.outstanding == 0
    assert all(f.result() is False for f in futures)
    assert marks.drop_all() == 0
    assert marks.dropped == 3


async def test_marks_wait_all_times_out():
    marks = PlaybackMarks()
    marks.new()
    assert await marks.wait_all(0.05) is False
    assert marks.outstanding == 1  # a timeout doesn't settle anything


async def test_marks_wait_all_resolves_on_echo():
    marks = PlaybackMarks()
    marks.new()
    name = marks.new()
    waiter = asyncio.ensure_future(marks.wait_all(2.0))
    await asyncio.sleep(0)
    marks.echo(name)
    assert await asyncio.wait_for(waiter, 1.0) is True


async def test_marks_wait_all_with_nothing_outstanding():
    assert await PlaybackMarks().wait_all(0.0) is True


async def test_marks_names_unique_with_prefix():
    marks = PlaybackMarks(prefix="x")
    names = [marks.new() for _ in range(5)]
    assert len(set(names)) == 5
    assert all(n.startswith("x-") for n in names)
    assert marks.sent == 5
    assert not marks.ever_echoed
