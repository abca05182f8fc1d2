"""Hypothesis property tests for ExotelFrameSerializer.

The tests are plain `def` functions that run their async body with asyncio.run(), so they
work unchanged under pytest-asyncio's auto mode. Every test uses derandomize=True (the same
examples on every run: not flaky) and database=None (nothing written to .hypothesis/).
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pipecat.frames.frames import Frame, OutputAudioRawFrame

from serializers.exotel import MIN_PAYLOAD, PAYLOAD_UNIT, ExotelFrameSerializer

SID = "S-prop"

PROPERTY = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def run(coro):
    return asyncio.run(coro)


async def deserialize_all(messages: list[str | bytes], stream_sid: str | None = None) -> ExotelFrameSerializer:
    """Feed messages into one serializer; check each result is None or a Frame."""
    serializer = ExotelFrameSerializer(stream_sid=stream_sid)
    serializer.marks.new()  # one outstanding mark, so mark echoes have something to match
    for message in messages:
        result = await serializer.deserialize(message)
        assert result is None or isinstance(result, Frame), result
    return serializer


# ---------------------------------------------------------------------------- strategies
json_leaves = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
# Strings a tolerant reader must shrug off (numbers that aren't, whitespace, the wrong types).
tricky_scalars = st.sampled_from(
    ["", " ", "abc", "-5", "0", "16000.5", "nan", "NaN", "1e3", "8000 ", "\u0000", "\ud7ff", "=&?", "{", "[]", -1, 0, 1.5, True]
)
json_values = st.recursive(
    json_leaves | tricky_scalars,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=25,
)

PCM = base64.b64encode(bytes(range(256)) * 4).decode("ascii")  # 1,024 bytes of audio
VALID_MESSAGES: list[dict[str, Any]] = [
    {"event": "connected"},
    {
        "event": "start",
        "sequence_number": "1",
        "stream_sid": SID,
        "start": {
            "stream_sid": SID,
            "call_sid": "C1",
            "account_sid": "A1",
            "from": "+911",
            "to": "+912",
            "custom_parameters": {"lead": "7", "lang": "hi"},
            "media_format": {"encoding": "base64", "sample_rate": "16000", "bit_rate": "128kbps"},
        },
    },
    {
        "event": "start",
        "sequenceNumber": 1,
        "streamSid": SID,
        "start": {
            "streamSid": SID,
            "callSid": "C1",
            "customParameters": "lead=7&lang=hi",
            "mediaFormat": {"encoding": "base64", "sampleRate": 24000},
        },
    },
    {
        "event": "media",
        "sequence_number": "2",
        "stream_sid": SID,
        "media": {"chunk": "1", "timestamp": "100", "payload": PCM},
    },
    {"event": "dtmf", "stream_sid": SID, "dtmf": {"digit": "5", "duration": "200"}},
    {"event": "mark", "stream_sid": SID, "mark": {"name": "bot-1"}},
    {"event": "stop", "stream_sid": SID, "stop": {"call_sid": "C1", "account_sid": "A1", "reason": "callended"}},
]


def paths_of(value: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path (sequence of dict keys / list indexes) to a value inside `value`."""
    paths = []
    if isinstance(value, dict):
        for key, item in value.items():
            paths.append(prefix + (key,))
            paths.extend(paths_of(item, prefix + (key,)))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            paths.append(prefix + (index,))
            paths.extend(paths_of(item, prefix + (index,)))
    return paths


def _mutate(draw, message: dict[str, Any], path: tuple) -> None:
    parent = message
    for step in path[:-1]:
        parent = parent[step]
    action = draw(st.sampled_from(["replace", "replace", "delete", "rename"]))
    if action == "replace":
        parent[path[-1]] = draw(st.one_of(tricky_scalars, st.text(max_size=12), json_leaves, json_values))
    elif action == "delete":
        del parent[path[-1]]
    elif isinstance(parent, dict):
        parent[draw(st.text(max_size=10))] = parent.pop(path[-1])


# Every (seed message, path) pair, so each field of each seed is the first mutation equally often.
# The top-level "event" key is left alone (else most examples would just be unknown events;
# test_known_event_with_arbitrary_fields_never_raises and the JSON tests cover that).
SEED_PATHS = [
    (index, path)
    for index, message in enumerate(VALID_MESSAGES)
    for path in paths_of(message)
    if path != ("event",)
]


@st.composite
def mutated_messages(draw) -> dict[str, Any]:
    """A valid message with one to three keys (at any depth) replaced, deleted or renamed."""
    index, path = draw(st.sampled_from(SEED_PATHS))
    message = copy.deepcopy(VALID_MESSAGES[index])
    _mutate(draw, message, path)
    for _ in range(draw(st.integers(min_value=0, max_value=2))):
        paths = [p for p in paths_of(message) if p != ("event",)]
        if not paths:
            break
        _mutate(draw, message, draw(st.sampled_from(paths)))
    return message


# ---------------------------------------------------------------------------- inbound
@PROPERTY
@given(st.lists(st.text(), min_size=1, max_size=5))
def test_arbitrary_text_never_raises(texts):
    serializer = run(deserialize_all(texts))
    assert "internal" not in serializer.problems.counts


@PROPERTY
@given(st.lists(st.binary(), min_size=1, max_size=5))
def test_arbitrary_bytes_never_raise(blobs):
    serializer = run(deserialize_all(blobs))
    assert "internal" not in serializer.problems.counts


@PROPERTY
@given(json_values)
def test_arbitrary_json_never_raises(value):
    text = json.dumps(value)
    serializer = run(deserialize_all([text, text.encode("utf-8")]))
    assert "internal" not in serializer.problems.counts


@PROPERTY
@given(
    st.sampled_from(["connected", "start", "media", "dtmf", "mark", "stop"]),
    st.dictionaries(
        st.sampled_from(["stream_sid", "streamSid", "start", "media", "dtmf", "mark", "stop", "name", "reason"]),
        json_values,
        max_size=4,
    ),
)
def test_known_event_with_arbitrary_fields_never_raises(event, fields):
    message = dict(fields, event=event)
    serializer = run(deserialize_all([json.dumps(message)]))
    assert "internal" not in serializer.problems.counts


@PROPERTY
@given(st.lists(mutated_messages(), min_size=1, max_size=6))
def test_mutated_valid_messages_never_raise(messages):
    serializer = run(deserialize_all([json.dumps(m) for m in messages]))
    assert "internal" not in serializer.problems.counts


def test_valid_messages_are_accepted_cleanly():
    """The unmutated seeds themselves parse without any problem (so the mutations matter)."""
    serializer = run(deserialize_all([json.dumps(m) for m in VALID_MESSAGES]))
    assert serializer.problems.counts == {}
    assert serializer.stop_reason == "callended"


# ---------------------------------------------------------------------------- outbound
# Non-zero, non-periodic-at-320 pattern, so loss, reordering or padding in the middle shows.
PATTERN = bytes((i * 7 + i // 251) % 255 + 1 for i in range(20 * 20_000 + 4_000))


@PROPERTY
@given(
    sizes=st.lists(st.integers(min_value=0, max_value=10_000).map(lambda n: 2 * n), max_size=20),
    offset=st.integers(min_value=0, max_value=2_000),
    payload_units=st.sampled_from([10, 10, 10, 20, 37]),
)
def test_outbound_payloads_legal_and_lossless(sizes, offset, payload_units):
    payload_bytes = payload_units * PAYLOAD_UNIT

    async def scenario():
        serializer = ExotelFrameSerializer(
            stream_sid=SID, params=ExotelFrameSerializer.InputParams(payload_bytes=payload_bytes)
        )
        data = PATTERN[offset : offset + sum(sizes)]
        messages = []
        position = 0
        for size in sizes:
            chunk = data[position : position + size]
            position += size
            message = await serializer.serialize(OutputAudioRawFrame(audio=chunk, sample_rate=8000, num_channels=1))
            if message is not None:
                messages.append(message)
            assert serializer.pending_out_bytes < payload_bytes
        flushed = await serializer.flush_utterance()
        return serializer, data, messages, flushed

    serializer, data, messages, flushed = run(scenario())
    if not data:
        assert messages == [] and flushed == []
        return
    assert json.loads(flushed[-1])["event"] == "mark"
    payloads = []
    for message in messages + flushed[:-1]:
        decoded = json.loads(message)
        assert decoded["event"] == "media" and decoded["stream_sid"] == SID
        payload = base64.b64decode(decoded["media"]["payload"], validate=True)
        assert len(payload) % PAYLOAD_UNIT == 0
        assert max(MIN_PAYLOAD, payload_bytes) <= len(payload) <= 100_000
        payloads.append(payload)
    sent = b"".join(payloads)
    padding = serializer.stats["padding_bytes_out"]
    assert len(sent) == len(data) + padding
    assert sent[: len(data)] == data
    assert sent[len(data) :] == bytes(padding)
    assert padding < max(MIN_PAYLOAD, payload_bytes)
    assert serializer.pending_out_bytes == 0
    assert run(_flush_again(serializer)) == []


async def _flush_again(serializer: ExotelFrameSerializer) -> list[str]:
    return await serializer.flush_utterance()
