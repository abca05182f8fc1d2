"""Outbound dialing: phone normalization, the Exotel REST client against the fake, the
status-callback parser, and the fake's own call lifecycle (callbacks, media socket)."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

import httpx
import pytest
from aiohttp import WSMsgType, web
from loguru import logger

from bot.config.phone import InvalidPhoneNumber, normalize_indian_phone
from bot.exotel.call_status import exotel_status as normalize_status
from bot.exotel.callbacks import InvalidStatusCallback, is_form, parse_status_callback, status_update
from bot.exotel.client import ExotelClient
from bot.exotel.errors import (
    AUTH_ERROR_MESSAGE,
    ExotelAuthError,
    ExotelError,
    ExotelRateLimited,
    ExotelRequestError,
    ExotelUnavailable,
    ExotelValidationError,
)
from bot.simulator.exotel_emulator import HangUp
from bot.simulator.exotel_rest import FakeExotelREST

CUSTOMER = "+919876543210"
EXOPHONE = "08047181234"
APP_ID = "654321"


# --------------------------------------------------------------------------- helpers


@dataclass
class Received:
    content_type: str
    body: bytes  # a JSON body; a form's is parsed by the web framework into `fields`
    at: float
    fields: list[tuple[str, str]] | None = None


@dataclass
class Receiver:
    """A tiny status-callback endpoint: records every POST, answers 200 (or `answers` first)."""

    answers: list[int] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    port: int = 0
    runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/exotel/status"

    async def _handle(self, request: web.Request) -> web.Response:
        content_type = request.headers.get("Content-Type", "")
        if is_form(content_type):  # like the bot's webhook: the framework parses forms (aiohttp here)
            fields = [(name, str(value)) for name, value in (await request.post()).items()]
            self.received.append(Received(content_type, b"", time.monotonic(), fields))
        else:
            self.received.append(Received(content_type, await request.read(), time.monotonic()))
        return web.Response(status=self.answers.pop(0) if self.answers else 200, text="ok")

    def updates(self):
        return [status_update(r.fields) if r.fields is not None else parse_status_callback(r.content_type, r.body)
                for r in self.received]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()
    app = web.Application()
    app.router.add_post("/exotel/status", rec._handle)
    rec.runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=0.5)
    await rec.runner.setup()
    site = web.TCPSite(rec.runner, "127.0.0.1", 0)
    await site.start()
    rec.port = rec.runner.addresses[0][1]
    yield rec
    await rec.runner.cleanup()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def client_for(fake: FakeExotelREST, **kwargs) -> ExotelClient:
    kwargs.setdefault("backoff_base", 0.01)
    kwargs.setdefault("backoff_max", 0.05)
    return ExotelClient(fake.account_sid, fake.api_key, fake.api_token, base_url=fake.base_url, **kwargs)


def call_args(**overrides):
    args = dict(to="98765 43210", caller_id=EXOPHONE, app_id=APP_ID, status_callback=None,
                custom_field=None, time_limit=None, time_out=None, record=False)
    args.update(overrides)
    return args


# --------------------------------------------------------------------------- phone numbers


@pytest.mark.parametrize(
    ("raw", "e164"),
    [
        ("9876543210", "+919876543210"),
        ("09876543210", "+919876543210"),
        ("+91 98765 43210", "+919876543210"),
        ("+919876543210", "+919876543210"),
        ("91-98765-43210", "+919876543210"),
        ("919876543210", "+919876543210"),
        ("(+91) 98765-43210", "+919876543210"),
        ("0091 98765 43210", "+919876543210"),
        ("  98765.43210 ", "+919876543210"),
        ("022 2345 6789", "+912223456789"),  # Mumbai landline
        ("(080) 4567-8901", "+918045678901"),  # Bengaluru landline
        ("+91 80 4567 8901", "+918045678901"),
    ],
)
def test_normalize_indian_phone_valid(raw, e164):
    assert normalize_indian_phone(raw) == e164


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("12345", "too short"),
        ("98765 4321", "not a valid number"),  # nine digits
        ("98765432101", "not a valid number"),  # eleven, no trunk 0
        ("+91 98765 43210 98765", "too long"),
        ("98765abcde", "only digits"),
        ("1-800-FLOWERS", "only digits"),  # phonenumbers alone would read the letters
        ("98765 43210 ext 12", "only digits"),
        ("++919876543210", "only digits"),
        ("+91 98765+43210", "only digits"),
        ("0000000000", "not a valid number"),
        ("+999 98765 43210", "unknown country code"),
        ("+1 650 253 0000", "a US number"),
        ("", "no phone number"),
        ("   ", "no phone number"),
    ],
)
def test_normalize_indian_phone_invalid(raw, reason):
    with pytest.raises(InvalidPhoneNumber) as caught:
        normalize_indian_phone(raw)
    message = str(caught.value)
    assert isinstance(caught.value, ValueError)
    assert reason in message
    digits = "".join(c for c in raw if c.isdigit())
    if len(digits) > 4:
        assert digits not in message.replace(" ", "")  # never the whole number
        assert digits[-4:] in message  # but enough to find the lead


def test_normalize_foreign_number_when_allowed():
    assert normalize_indian_phone("+1 650 253 0000", allow_foreign=True) == "+16502530000"


# --------------------------------------------------------------------------- client: success


async def test_place_call_sends_exotels_form_with_basic_auth(receiver):
    async with FakeExotelREST(outcomes="busy", ring_secs=0.01) as fake, client_for(fake) as client:
        call = await client.place_call(
            **call_args(status_callback=receiver.url, custom_field="lead=42;campaign=demo",
                        time_limit=900, time_out=30, record=True, recording_channels="dual")
        )
        assert len(fake.calls) == 1
        request = fake.calls[0]
        assert request.form == {
            "From": "+919876543210",
            "CallerId": EXOPHONE,
            "Url": f"http://my.exotel.com/{fake.account_sid}/exoml/start_voice/{APP_ID}",
            "CallType": "trans",
            "StatusCallback": receiver.url,
            "StatusCallbackEvents[0]": "terminal",
            "StatusCallbackEvents[1]": "answered",
            "StatusCallbackContentType": "application/json",
            "CustomField": "lead=42;campaign=demo",
            "TimeLimit": "900",
            "TimeOut": "30",
            "Record": "true",
            "RecordingChannels": "dual",
        }
        expected = base64.b64encode(f"{fake.api_key}:{fake.api_token}".encode()).decode()
        assert request.authorization == f"Basic {expected}"
        assert call.sid == request.sid and len(call.sid) == 32
        assert call.status == "in-progress" and call.normalized_status == "in-progress"
        assert (call.from_, call.to, call.direction) == ("09876543210", EXOPHONE, "outbound-api")
        assert call.date_created and call.raw["AccountSid"] == fake.account_sid
        assert "9876543210" not in repr(call)  # masked for logs

        await fake.drain()
        looked_up = await client.get_call(call.sid)
        assert looked_up.sid == call.sid and looked_up.status == "busy"
        assert fake.lookups[-1].http_status == 200


async def test_minimal_form_without_callback():
    async with FakeExotelREST(outcomes="failed", ring_secs=0.01) as fake, client_for(fake) as client:
        await client.place_call(**call_args(to="09876543210"))
        assert fake.calls[0].form == {
            "From": CUSTOMER, "CallerId": EXOPHONE, "CallType": "trans", "Record": "false",
            "Url": f"http://my.exotel.com/{fake.account_sid}/exoml/start_voice/{APP_ID}",
        }
        await fake.drain()
        assert fake.callbacks_sent == []


async def test_custom_field_limit_checked_before_sending():
    async with FakeExotelREST(outcomes="failed", ring_secs=0.01) as fake, client_for(fake) as client:
        with pytest.raises(ExotelValidationError, match="CustomField is 129 characters; Exotel allows at most 128"):
            await client.place_call(**call_args(custom_field="x" * 129))
        with pytest.raises(ExotelValidationError, match="TimeLimit"):
            await client.place_call(**call_args(time_limit=14_401))
        with pytest.raises(InvalidPhoneNumber):
            await client.place_call(**call_args(to="12345"))
        assert fake.calls == []
        await client.place_call(**call_args(custom_field="x" * 128, time_limit=14_400))
        assert fake.calls[0].form["CustomField"] == "x" * 128
        await fake.drain()


async def test_get_unknown_call_is_a_request_error():
    async with FakeExotelREST() as fake, client_for(fake) as client:
        with pytest.raises(ExotelRequestError, match="not found") as caught:
            await client.get_call("0" * 32)
        assert caught.value.status_code == 404


# --------------------------------------------------------------------------- client: errors


async def test_wrong_credentials_raise_auth_error_without_retry_or_token():
    sink: list[str] = []
    handler = logger.add(sink.append, level="DEBUG", format="{message}")
    try:
        async with FakeExotelREST() as fake:
            client = ExotelClient(fake.account_sid, fake.api_key, "wrong-secret-token", base_url=fake.base_url)
            async with client:
                with pytest.raises(ExotelAuthError) as caught:
                    await client.place_call(**call_args())
                assert "wrong-secret-token" not in repr(client)
            assert len(fake.calls) == 1 and fake.calls[0].http_status == 401
    finally:
        logger.remove(handler)
    error = caught.value
    assert str(error) == AUTH_ERROR_MESSAGE
    assert error.status_code == 401 and "Authentication" in error.exotel_message
    assert isinstance(error, ExotelError)
    logs = "\n".join(sink)
    assert "wrong-secret-token" not in logs and "9876543210" not in logs
    assert "+91******3210" in logs  # masked by the client itself, not only by the log patcher


async def test_wrong_account_sid_is_an_auth_error():
    async with FakeExotelREST() as fake:
        async with ExotelClient("someone-else", fake.api_key, fake.api_token, base_url=fake.base_url) as client:
            with pytest.raises(ExotelAuthError):
                await client.place_call(**call_args())


async def test_bad_request_carries_exotels_message():
    async with FakeExotelREST(exophones=[EXOPHONE]) as fake, client_for(fake) as client:
        with pytest.raises(ExotelRequestError) as caught:
            await client.place_call(**call_args(caller_id="08000000000"))
        assert len(fake.calls) == 1  # a 400 is not retried
    error = caught.value
    assert error.status_code == 400
    assert error.exotel_message == "CallerId is not an ExoPhone of this account"
    assert "CallerId is not an ExoPhone of this account" in str(error)


@pytest.mark.parametrize(
    ("body", "content_type", "message"),
    [
        ('{"RestException": {"Status": 400, "Message": "Invalid From", "Code": 21211}}',
         "application/json", "Invalid From"),
        ('{"message": "Bad number"}', "application/json", "Bad number"),
        ('{"error": {"description": "Nope", "code": 7}}', "application/json", "Nope"),
        ('{"errors": [{"message": "First problem"}]}', "application/json", "First problem"),
        ("<TwilioResponse><RestException><Status>400</Status><Message>XML says no</Message>"
         "<Code>123</Code></RestException></TwilioResponse>", "application/xml", "XML says no"),
        ("plain words here", "text/plain", "plain words here"),
        ("<html><body><h1>400 Bad Request</h1></body></html>", "text/html", "400 Bad Request"),
    ],
)
async def test_error_bodies_of_any_shape(body, content_type, message):
    async with FakeExotelREST(fail_status=400, fail_body=body, fail_content_type=content_type) as fake:
        async with client_for(fake) as client:
            with pytest.raises(ExotelRequestError) as caught:
                await client.place_call(**call_args())
    assert caught.value.exotel_message == message
    assert message in str(caught.value)


async def test_429_twice_then_success_respects_retry_after():
    async with FakeExotelREST(fail_first=[429, 429], retry_after="0.1", outcomes="failed",
                              ring_secs=0.01) as fake:
        # A 30 s backoff would time the test out: only Retry-After can make it this quick.
        async with client_for(fake, backoff_base=30, backoff_max=30) as client:
            started = time.monotonic()
            call = await client.place_call(**call_args())
            elapsed = time.monotonic() - started
        assert [c.http_status for c in fake.calls] == [429, 429, 200]
        assert call.sid == fake.calls[-1].sid
        assert 0.2 <= elapsed < 3.0
        gaps = [b.at - a.at for a, b in zip(fake.calls, fake.calls[1:], strict=False)]
        assert all(gap >= 0.09 for gap in gaps)
        await fake.drain()


async def test_sliding_window_rate_limit_waits_for_a_free_slot():
    async with FakeExotelREST(rate_limit_after=2, rate_limit_window=0.5, outcomes="failed",
                              ring_secs=0.01) as fake:
        async with client_for(fake, backoff_base=30, backoff_max=30) as client:
            started = time.monotonic()
            for _ in range(3):
                await client.place_call(**call_args())
            elapsed = time.monotonic() - started
        assert [c.http_status for c in fake.calls] == [200, 200, 429, 200]
        assert 0.4 <= elapsed < 3.0
        await fake.drain()


async def test_429_without_retry_after_backs_off_exponentially():
    async with FakeExotelREST(fail_first=[429], retry_after=None, outcomes="failed", ring_secs=0.01) as fake:
        async with client_for(fake) as client:
            await client.place_call(**call_args())
        assert [c.http_status for c in fake.calls] == [429, 200]
        await fake.drain()


async def test_429_forever_raises_rate_limited():
    async with FakeExotelREST(fail_status=429, retry_after="0.05") as fake:
        async with client_for(fake, max_retries=2) as client:
            with pytest.raises(ExotelRateLimited) as caught:
                await client.place_call(**call_args())
        assert len(fake.calls) == 3
    assert caught.value.attempts == 3 and caught.value.retry_after == pytest.approx(0.05)
    assert "gave up after 3 attempts" in str(caught.value)


async def test_500_is_retried_then_unavailable():
    async with FakeExotelREST(fail_status=500) as fake:
        async with client_for(fake, max_retries=3) as client:
            with pytest.raises(ExotelUnavailable) as caught:
                await client.place_call(**call_args())
        assert [c.http_status for c in fake.calls] == [500] * 4
    assert caught.value.status_code == 500 and caught.value.maybe_placed is False
    assert "Internal Server Error" in str(caught.value)


async def test_503_once_then_success():
    async with FakeExotelREST(fail_first=[503], outcomes="failed", ring_secs=0.01) as fake:
        async with client_for(fake) as client:
            call = await client.place_call(**call_args())
        assert [c.http_status for c in fake.calls] == [503, 200] and call.sid
        await fake.drain()


async def test_connection_refused_is_unavailable():
    port = free_port()  # nothing listens there
    async with ExotelClient("sid", "key", "token", base_url=f"http://127.0.0.1:{port}",
                            max_retries=2, backoff_base=0.01, backoff_max=0.02) as client:
        with pytest.raises(ExotelUnavailable, match="unreachable") as caught:
            await client.place_call(**call_args())
    assert caught.value.attempts == 3 and caught.value.maybe_placed is False


async def test_post_that_may_have_got_through_is_not_retried():
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.method)
        raise httpx.ReadTimeout("timed out", request=request)

    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    async with http:
        client = ExotelClient("sid", "key", "token", http_client=http, backoff_base=0.01, backoff_max=0.02)
        with pytest.raises(ExotelUnavailable) as caught:
            await client.place_call(**call_args())
        assert caught.value.maybe_placed is True and seen == ["POST"]
        with pytest.raises(ExotelUnavailable):  # a GET is safe to retry
            await client.get_call("abc")
        assert seen == ["POST"] + ["GET"] * 5
        await client.aclose()  # not ours: stays open
        assert not http.is_closed


async def test_successful_answer_that_is_not_json():
    http = httpx.AsyncClient(transport=httpx.MockTransport(lambda r: httpx.Response(200, text="<Call/>")))
    async with http:
        client = ExotelClient("sid", "key", "token", http_client=http)
        with pytest.raises(ExotelError, match="not JSON"):
            await client.get_call("abc")


# --------------------------------------------------------------------------- status callback parser


def test_parse_json_callback_with_legs():
    body = json.dumps({
        "CallSid": "abc123", "EventType": "terminal", "Status": "completed",
        "RecordingUrl": "https://r.example/abc.mp3", "DateUpdated": "2025-01-02 10:00:30",
        "DateCreated": "2025-01-02 10:00:00", "To": EXOPHONE, "From": "09876543210",
        "StartTime": "2025-01-02 10:00:05", "EndTime": "2025-01-02 10:00:30",
        "ConversationDuration": 25, "Direction": "outbound-api", "CustomField": "lead=42",
        "Legs": [{"OnCallDuration": 27, "Status": "completed", "AnsweredBy": "human"}],
    }).encode()
    update = parse_status_callback("application/json; charset=utf-8", body)
    assert (update.call_sid, update.status, update.event_type) == ("abc123", "completed", "terminal")
    assert update.duration == 25 and update.answered_by == "human"
    assert update.recording_url == "https://r.example/abc.mp3"
    assert update.custom_field == "lead=42" and update.direction == "outbound-api"
    assert update.legs[0].on_call_duration == 27 and update.legs[0].status == "completed"
    assert update.is_terminal and update.from_ == "09876543210"


def test_parse_form_callback_with_bracketed_legs():
    body = (
        b"CallSid=abc123&Status=no-answer&RecordingUrl=&DateUpdated=2025-01-02+10%3A00%3A30"
        b"&EventType=terminal&ConversationDuration=0&CustomField=lead%3D42"
        b"&Legs%5B0%5D%5BStatus%5D=no-answer&Legs%5B0%5D%5BOnCallDuration%5D=0&Legs%5B0%5D%5BAnsweredBy%5D="
    )
    update = parse_status_callback("application/x-www-form-urlencoded", body)
    assert update.status == "no-answer" and update.recording_url is None
    assert update.duration == 0 and update.answered_by is None
    assert update.custom_field == "lead=42" and update.date_updated == "2025-01-02 10:00:30"
    assert len(update.legs) == 1 and update.legs[0].status == "no-answer"


def test_parse_minimal_form_callback_and_sniffing():
    update = parse_status_callback("", b"CallSid=x1&Status=busy&RecordingUrl=&DateUpdated=")
    assert (update.call_sid, update.status, update.duration, update.event_type) == ("x1", "busy", None, None)
    update = parse_status_callback("text/plain", b'{"CallSid": "x2", "Status": "Cancelled", "Legs": "[]"}')
    assert update.status == "canceled" and update.legs == []
    update = parse_status_callback("application/json", b'{"callSid": "x3", "status": "failed", "legs": [{"status": "busy"}]}')
    assert update.status == "failed" and update.legs[0].status == "busy"


def test_parse_answered_event():
    update = parse_status_callback("application/json", b'{"CallSid": "x", "EventType": "answered", "Status": "in-progress"}')
    assert update.status == "in-progress" and not update.is_terminal
    update = parse_status_callback("application/json", b'{"CallSid": "x", "EventType": "answered"}')
    assert update.status == "in-progress"


@pytest.mark.parametrize(
    ("word", "status"),
    [("queued", "initiated"), ("ringing", "ringing"), ("in-progress", "in-progress"),
     ("in_progress", "in-progress"), ("completed", "completed"), ("busy", "busy"),
     ("no-answer", "no-answer"), ("No Answer", "no-answer"), ("no_answer", "no-answer"),
     ("failed", "failed"), ("canceled", "canceled"), ("cancelled", "canceled"), ("weird", None)],
)
def test_status_words(word, status):
    assert normalize_status(word) == status


@pytest.mark.parametrize(
    ("content_type", "body"),
    [("application/json", b'{"Status": "completed"}'), ("application/json", b"[1, 2]"),
     ("application/json", b"{not json"), ("application/x-www-form-urlencoded", b"CallSid=x&Status=exploded")],
)
def test_parse_rejects_unusable_callbacks(content_type, body):
    with pytest.raises(InvalidStatusCallback):
        parse_status_callback(content_type, body)


# --------------------------------------------------------------------------- the fake's lifecycle


@pytest.mark.parametrize("content_type", ["json", "form", "multipart"])
async def test_unanswered_outcomes_post_callbacks_twice(receiver, content_type):
    numbers = {"+919876543210": "busy", "+919876543211": "no-answer", "+919876543212": "failed"}
    async with FakeExotelREST(outcomes=numbers, ring_secs=0.05, callback_repeat=True,
                              callback_content_type=content_type) as fake:
        async with client_for(fake) as client:
            placed = {
                number: await client.place_call(**call_args(to=number, status_callback=receiver.url,
                                                            custom_field=f"lead-{number[-1]}"))
                for number in numbers
            }
        await fake.drain(timeout=5)
        assert fake.emulator_results == {}  # no socket for an unanswered call
        expected = {"json": "application/json", "form": "application/x-www-form-urlencoded",
                    "multipart": "multipart/form-data; boundary="}[content_type]
        assert all(r.content_type.startswith(expected) for r in receiver.received)
        assert len(receiver.received) == 6 and len(fake.callbacks_sent) == 6
        assert all(c.status == 200 for c in fake.callbacks_sent)
        updates = receiver.updates()
        for number, outcome in numbers.items():
            mine = [u for u in updates if u.call_sid == placed[number].sid]
            assert len(mine) == 2 and mine[0] == mine[1]  # the same callback, twice
            assert mine[0].status == outcome and mine[0].event_type == "terminal"
            assert mine[0].duration == 0 and mine[0].recording_url is None
            assert mine[0].custom_field == f"lead-{number[-1]}"
            assert mine[0].legs[0].status == outcome


async def test_fake_retries_a_failing_callback_receiver(receiver):
    receiver.answers = [500, 503]
    async with FakeExotelREST(outcomes="busy", ring_secs=0.01, callback_retry_delay=0.05) as fake:
        async with client_for(fake) as client:
            await client.place_call(**call_args(status_callback=receiver.url))
        await fake.drain(timeout=5)
    assert [c.status for c in fake.callbacks_sent] == [500, 503, 200]


@dataclass
class MediaEndpoint:
    """A throwaway media socket: records what Exotel's side sent and when the socket closed."""

    messages: list[dict] = field(default_factory=list)
    headers: list[dict] = field(default_factory=list)
    closed_at: list[float] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        self.headers.append(dict(request.headers) | {"query": dict(request.query)})
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for message in ws:
            if message.type == WSMsgType.TEXT:
                self.messages.append(json.loads(message.data))
        self.closed_at.append(time.monotonic())
        return ws

    def first(self, event: str) -> dict:
        return next(m for m in self.messages if m.get("event") == event)


@pytest.fixture
async def media_endpoint() -> AsyncIterator[tuple[MediaEndpoint, int]]:
    endpoint = MediaEndpoint()
    app = web.Application()
    app.router.add_get("/media", endpoint.handle)

    async def dynamic(request: web.Request) -> web.Response:  # the applet's dynamic URL
        query = request.query
        return web.json_response(
            {"url": f"ws://127.0.0.1:{request.url.port}/media?lead={query.get('lead', '')}&sid={query['CallSid']}"}
        )

    app.router.add_get("/exotel/connect", dynamic)
    runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    yield endpoint, runner.addresses[0][1]
    await runner.cleanup()


async def test_answered_call_streams_media_then_posts_completed(receiver, media_endpoint):
    endpoint, port = media_endpoint
    media_url = f"ws://bot:s3cret@127.0.0.1:{port}/media?campaign=demo&lead=42&sample-rate=16000"
    async with FakeExotelREST(media_url=media_url, ring_secs=0.05, hangup_after=0.6) as fake:
        async with client_for(fake) as client:
            call = await client.place_call(**call_args(status_callback=receiver.url, custom_field="lead=42",
                                                       record=True))
            await fake.drain(timeout=10)
            final = await client.get_call(call.sid)

    start = endpoint.first("start")["start"]
    assert start["call_sid"] == call.sid
    assert start["custom_parameters"] == {"campaign": "demo", "lead": "42", "sample-rate": "16000"}
    assert start["media_format"]["sample_rate"] == "16000"
    assert (start["from"], start["to"]) == (CUSTOMER, EXOPHONE)
    assert endpoint.headers[0]["Authorization"] == "Basic " + base64.b64encode(b"bot:s3cret").decode()
    assert endpoint.first("stop")["stop"]["reason"] == "callended"
    assert len(endpoint.first("media")["media"]["payload"]) > 0

    result = fake.emulator_results[call.sid]
    assert result.connect_error is None and result.config.call_sid == call.sid
    assert result.closed_by == "emulator" and result.violations == []
    socket_closed = result.started_at + result.closed_at

    updates = receiver.updates()
    assert [(u.event_type, u.status) for u in updates] == [("answered", "in-progress"), ("terminal", "completed")]
    completed = updates[-1]
    assert receiver.received[-1].at > socket_closed
    assert receiver.received[-1].at > endpoint.closed_at[0]
    assert receiver.received[0].at < endpoint.closed_at[0]  # "answered" came before the talk ended
    assert completed.duration in (0, 1) and completed.answered_by == "human"
    assert completed.recording_url and call.sid in completed.recording_url
    assert completed.custom_field == "lead=42"
    assert final.status == "completed" and final.raw["Duration"] == completed.duration


async def test_answered_call_via_dynamic_url_and_caller_script(media_endpoint):
    endpoint, port = media_endpoint
    async with FakeExotelREST(dynamic_url=f"http://127.0.0.1:{port}/exotel/connect?lead=7",
                              caller_script=lambda number: [HangUp(at=0.3, reason="callended")],
                              ring_secs=0.01) as fake:
        async with client_for(fake) as client:
            call = await client.place_call(**call_args())
            await fake.drain(timeout=10)
    url, status = fake.dynamic_requests[0]
    query = dict(parse_qsl(url.split("?", 1)[1]))
    assert status == 200 and query["CallSid"] == call.sid and query["lead"] == "7"
    assert query["CallFrom"] == "09876543210" and query["CallTo"] == EXOPHONE
    assert endpoint.first("start")["start"]["custom_parameters"] == {"lead": "7", "sid": call.sid}
    assert fake.emulator_results[call.sid].connect_error is None
    assert fake.media_errors == {}


async def test_answered_call_whose_media_socket_is_refused_still_completes(receiver):
    port = free_port()
    async with FakeExotelREST(media_url=f"ws://127.0.0.1:{port}/media", ring_secs=0.01,
                              emulator_options={"open_timeout": 2.0}) as fake:
        async with client_for(fake) as client:
            call = await client.place_call(**call_args(status_callback=receiver.url,
                                                       status_callback_events=("terminal",)))
            await fake.drain(timeout=10)
    assert call.sid in fake.media_errors
    assert [u.status for u in receiver.updates()] == ["completed"]


async def test_fake_rejects_bad_forms_directly():
    async with FakeExotelREST() as fake:
        auth = httpx.BasicAuth(fake.api_key, fake.api_token)
        url = f"{fake.base_url}/v1/Accounts/{fake.account_sid}/Calls/connect.json"
        async with httpx.AsyncClient(auth=auth) as http:
            missing = await http.post(url, data={"From": CUSTOMER, "CallerId": EXOPHONE})
            long_field = await http.post(url, data={"From": CUSTOMER, "CallerId": EXOPHONE,
                                                    "Url": "http://x", "CustomField": "y" * 129})
            no_auth = await http.post(url, data={}, auth=None)
    assert missing.status_code == 400
    assert missing.json()["RestException"]["Message"] == "Missing parameter 'Url'"
    assert long_field.status_code == 400 and "CustomField" in long_field.json()["RestException"]["Message"]
    assert no_auth.status_code == 401
    assert all(c.sid is None for c in fake.calls)


async def test_outcomes_list_and_callable():
    async with FakeExotelREST(outcomes=["busy", "failed"], ring_secs=0.01) as fake, client_for(fake) as client:
        for _ in range(3):
            await client.place_call(**call_args())
        assert [c.outcome for c in fake.calls] == ["busy", "failed", "failed"]
        await fake.drain()
    async with FakeExotelREST(outcomes=lambda n: "no-answer" if n.endswith("0") else "busy",
                              ring_secs=0.01) as fake, client_for(fake) as client:
        await client.place_call(**call_args(to="9876543210"))
        await client.place_call(**call_args(to="9876543211"))
        assert [c.outcome for c in fake.calls] == ["no-answer", "busy"]
        await fake.drain()
    with pytest.raises(ValueError):
        FakeExotelREST(outcomes="voicemail")


def test_client_rejects_empty_credentials():
    with pytest.raises(ExotelValidationError, match="api_token"):
        ExotelClient("sid", "key", "")


async def test_concurrent_calls_get_distinct_sids():
    async with FakeExotelREST(outcomes="failed", ring_secs=0.01) as fake, client_for(fake) as client:
        calls = await asyncio.gather(*(client.place_call(**call_args()) for _ in range(10)))
        assert len({c.sid for c in calls}) == 10
        await fake.drain()
