"""Exotel's status callbacks read in one place (bot/exotel/callbacks.py), and the webhook's
form bodies parsed by Starlette (`request.form()`), with the 64 KB limit kept."""

from __future__ import annotations

import json
import uuid
from types import SimpleNamespace
from urllib.parse import urlencode

import httpx
import pytest
from fastapi import FastAPI

from bot.exotel.callback_refs import custom_field
from bot.exotel.callbacks import InvalidStatusCallback, StatusUpdate, parse_status_callback, status_update
from bot.exotel.signing import sign
from bot.server.routers import webhooks
from bot.server.services import Services
from bot.store import CallStore
from bot.store.calls import CallbackNotForThisCall
from bot.store.durable import DurableRecords
from bot.store.journal import Journal


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


# --------------------------------------------------------------------------- the webhook, through Starlette


class RecordsSpy:
    """Stands in for DurableRecords: what the webhook hands the store."""

    def __init__(self, refuse: bool = False):
        self.updates: list[tuple[StatusUpdate, str]] = []
        self.refuse = refuse

    async def apply_callback(self, update: StatusUpdate, ref: str) -> bool | None:
        if self.refuse:
            raise CallbackNotForThisCall(update.call_sid)
        self.updates.append((update, ref))
        return True


KEY = b"test-key"


def webhook_app(records) -> FastAPI:
    app = FastAPI()
    unused = SimpleNamespace()
    app.state.services = Services(settings=unused, campaigns=unused, signing_key=KEY, speech_cache=unused,
                                  loop_monitor=unused, live_calls={}, drain=unused, call_sink=unused,
                                  records=records)
    app.include_router(webhooks.router)
    return app


def callback_url(ref: str = "r1") -> str:
    return f"/webhooks/exotel/call-status?ref={ref}&sig={sign(KEY, 'status', ref)}"


def multipart(pairs: list[tuple[str, str]]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = b"".join(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
                    for name, value in pairs) + f"--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


FIELDS = [("CallSid", "CA6"), ("Status", "completed"), ("RecordingUrl", "https://r/6.mp3"),
          ("EventType", "terminal"), ("Legs[0][OnCallDuration]", "31"), ("Legs[0][AnsweredBy]", "human")]


async def post(app: FastAPI, url: str, content: bytes, content_type: str | None) -> httpx.Response:
    headers = {"content-type": content_type} if content_type else {}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bot") as client:
        return await client.post(url, content=content, headers=headers)


@pytest.mark.parametrize("kind", ["form", "multipart", "json", "json without a content type"])
async def test_the_webhook_reads_form_multipart_and_json_bodies_alike(kind):
    records = RecordsSpy()
    if kind == "form":
        body, content_type = urlencode(FIELDS).encode(), "application/x-www-form-urlencoded"
    elif kind == "multipart":
        body, content_type = multipart(FIELDS)
    else:
        body = json.dumps({"CallSid": "CA6", "Status": "completed", "RecordingUrl": "https://r/6.mp3",
                           "EventType": "terminal", "Legs": [{"OnCallDuration": 31, "AnsweredBy": "human"}]}).encode()
        content_type = "application/json" if kind == "json" else None
    answer = await post(webhook_app(records), callback_url(), body, content_type)
    assert answer.status_code == 200, answer.text
    [(update, ref)] = records.updates
    assert ref == "r1" and stored(update) == ("CA6", "completed", "https://r/6.mp3", "human", 31.0)
    assert update.event_type == "terminal" and update.at is not None  # stamped when it arrived


@pytest.mark.parametrize("kind", ["form", "multipart", "json"])
async def test_a_callback_over_64_kb_is_413_before_it_is_parsed(kind):
    records = RecordsSpy()
    padding = "x" * (webhooks.MAX_CALLBACK_BYTES + 1)
    pairs = [*FIELDS, ("CustomField", padding)]
    if kind == "form":
        body, content_type = urlencode(pairs).encode(), "application/x-www-form-urlencoded"
    elif kind == "multipart":
        body, content_type = multipart(pairs)
    else:
        body, content_type = json.dumps(dict(pairs)).encode(), "application/json"
    answer = await post(webhook_app(records), callback_url(), body, content_type)
    assert answer.status_code == 413 and records.updates == []
    # just under the limit is read
    small = [*FIELDS, ("CustomField", "x" * 1000)]
    body, content_type = multipart(small) if kind == "multipart" else (urlencode(small).encode(),
                                                                        "application/x-www-form-urlencoded")
    assert (await post(webhook_app(records), callback_url(), body, content_type)).status_code == 200


async def test_the_webhook_refuses_bad_bodies_signatures_and_other_calls():
    records = RecordsSpy()
    app = webhook_app(records)
    form = "application/x-www-form-urlencoded"
    assert (await post(app, callback_url(), b"Status=completed", form)).status_code == 400  # no CallSid
    assert (await post(app, callback_url(), b"CallSid=x&Status=exploded", form)).status_code == 400
    assert (await post(app, callback_url(), b"--x\r\nbroken", "multipart/form-data")).status_code == 400
    assert (await post(app, callback_url(), b"{not json", "application/json")).status_code == 400
    forged = callback_url().replace("sig=", "sig=0")
    assert (await post(app, forged, b"CallSid=x&Status=busy", form)).status_code == 403
    assert records.updates == []
    stranger = webhook_app(RecordsSpy(refuse=True))
    assert (await post(stranger, callback_url(), b"CallSid=x&Status=busy", form)).status_code == 403


async def test_a_multipart_callback_reaches_the_store_only_for_its_own_call(tmp_path):
    """Starlette's form -> the one parser -> DurableRecords -> the store, with the dial ref checked."""
    store = await CallStore.open(f"sqlite+aiosqlite:///{tmp_path / 'calls.db'}", migrate=True)
    records = DurableRecords(store, Journal(tmp_path / "journal"), retry_secs=0.5, timeout_secs=0.3)
    try:
        await store.record_dialled("CA7", "real_estate", {"id": "L7"}, "+919876543210",
                                   custom_field=custom_field("real_estate", {"id": "L7"}, "r7"))
        await store.record_dialled("CA8", "real_estate", {"id": "L8"}, "+919876543211",
                                   custom_field=custom_field("real_estate", {"id": "L8"}, "r8"))
        app = webhook_app(records)
        body, content_type = multipart([("CallSid", "CA7"), ("Status", "busy"), ("Legs[0][Status]", "busy")])
        assert (await post(app, callback_url("r7"), body, content_type)).status_code == 200
        body, content_type = multipart([("CallSid", "CA8"), ("Status", "completed")])
        assert (await post(app, callback_url("r7"), body, content_type)).status_code == 403  # r7 is CA7's
        assert (await store.find_call("CA7")).status == "busy"
        assert (await store.find_call("CA8")).status == "initiated"
    finally:
        await records.stop()
        await store.close()
