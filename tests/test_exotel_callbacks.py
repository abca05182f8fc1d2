"""Exotel's status callbacks read in one place (bot/exotel/callbacks.py)."""

from __future__ import annotations

import json

import pytest

from bot.exotel.callbacks import InvalidStatusCallback, StatusUpdate, parse_status_callback, status_update


def stored(update: StatusUpdate) -> tuple:
    """What the store applies of an update."""
    return update.call_sid, update.status, update.recording_url, update.answered_by, update.duration_secs


# --------------------------------------------------------------------------- the one parser


@pytest.mark.parametrize("fields", [
    # the webhook's spelling (Exotel's docs)
    {"CallSid": "CA1", "Status": "completed", "RecordingUrl": "https://r/1.mp3", "ConversationDuration": "42",
     "AnsweredBy": "human"},
    # the spellings the store's old parser read: snake case, Dial* names, plain Duration
    {"call_sid": "CA1", "DialCallStatus": "completed", "recording_url": "https://r/1.mp3",
     "DialCallDuration": "42", "answered_by": "human"},
    {"Sid": "CA1", "CallStatus": "Completed", "RecordingUrl": "https://r/1.mp3", "Duration": 42,
     "AnsweredBy": "human"},
    # camelCase JSON, the answer in the leg only
    {"callSid": "CA1", "status": "completed", "recordingUrl": "https://r/1.mp3",
     "legs": [{"onCallDuration": 42, "answeredBy": "human", "status": "completed"}]},
    # form fields as pairs, the legs bracketed
    [("CallSid", "CA1"), ("Status", "completed"), ("RecordingUrl", "https://r/1.mp3"),
     ("Legs[0][OnCallDuration]", "42"), ("Legs[0][AnsweredBy]", "human"), ("Legs[0][Status]", "completed")],
    # parse_qs's shape: a list per name, the last value counts
    {"CallSid": ["CA1"], "Status": ["ringing", "completed"], "RecordingUrl": ["https://r/1.mp3"],
     "ConversationDuration": ["42"], "AnsweredBy": ["human"]},
])
def test_one_parser_reads_every_spelling_exotel_and_the_old_parsers_took(fields):
    update = status_update(fields)
    assert stored(update) == ("CA1", "completed", "https://r/1.mp3", "human", 42.0)
    assert update.is_terminal and update.duration == 42


def test_the_first_non_empty_spelling_wins_and_empty_values_say_nothing():
    update = status_update({"CallSid": "CA2", "Status": "", "CallStatus": "busy", "RecordingUrl": "",
                            "ConversationDuration": "", "Duration": "7", "AnsweredBy": "null"})
    assert stored(update) == ("CA2", "busy", None, None, 7.0)
    update = status_update([("CallSid", "CA3"), ("Status", "no-answer"), ("Status", "completed")])
    assert update.status == "no-answer"  # a repeated form field: its first value


def test_durations_are_seconds_never_negative_nor_nan():
    assert status_update({"CallSid": "x", "Status": "completed", "ConversationDuration": "12.6"}).duration == 13
    assert status_update({"CallSid": "x", "Status": "completed", "Duration": "-3"}).duration_secs == 0.0
    assert status_update({"CallSid": "x", "Status": "completed", "Duration": "nan"}).duration_secs is None
    assert status_update({"CallSid": "x", "Status": "completed", "Duration": "soon"}).duration_secs is None


def test_the_webhook_needs_a_status_the_store_takes_callbacks_that_say_less():
    with pytest.raises(InvalidStatusCallback):
        status_update({"CallSid": "CA4", "RecordingUrl": "https://r/4.mp3"})
    with pytest.raises(InvalidStatusCallback):
        status_update({"CallSid": "CA4", "Status": "exploded"})
    lenient = status_update({"CallSid": "CA4", "RecordingUrl": "https://r/4.mp3"}, require_status=False)
    assert stored(lenient) == ("CA4", None, "https://r/4.mp3", None, None)
    unknown = status_update({"CallSid": "CA4", "Status": "exploded"}, require_status=False)
    assert (unknown.status, unknown.raw_status) == (None, "exploded")
    for fields in ({"Status": "completed"}, {"CallSid": "", "Status": "completed"}):
        with pytest.raises(ValueError):  # InvalidStatusCallback is one
            status_update(fields, require_status=False)


def test_raw_bodies_json_or_url_encoded_and_multipart_is_the_frameworks():
    form = parse_status_callback("application/x-www-form-urlencoded",
                                 b"CallSid=CA5&Status=in-progress&EventType=answered&ConversationDuration=0")
    as_json = parse_status_callback(None, json.dumps({"CallSid": "CA5", "EventType": "answered"}).encode())
    assert stored(form)[:2] == stored(as_json)[:2] == ("CA5", "in-progress")
    assert form.event_type == as_json.event_type == "answered"
    with pytest.raises(InvalidStatusCallback, match="multipart"):
        parse_status_callback("multipart/form-data; boundary=x", b"--x\r\n")
