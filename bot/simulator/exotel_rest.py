"""A wire-level fake of Exotel's Voice v1 REST API for outbound calls, for tests and demos.

It is a real aiohttp server on a free loopback port, so `ExotelClient` (or curl) talks to
it as it would to api.exotel.com, and it then plays Exotel's part of the call::

    async with FakeExotelREST(outcomes={"+919876543210": "busy", "*": "answered"},
                              media_url="ws://127.0.0.1:8000/media?campaign=demo") as exotel:
        client = ExotelClient(exotel.account_sid, exotel.api_key, exotel.api_token,
                              base_url=exotel.base_url)
        call = await client.place_call(to="98765 43210", ...)
        await exotel.drain()          # every call has ended and its callbacks were sent

Endpoints
    `POST /v1/Accounts/{sid}/Calls/connect.json` (form-encoded),
    `GET /v1/Accounts/{sid}/Calls/{call_sid}.json` and `GET /v1/Accounts/{sid}/Calls.json`
    (Bulk Call Details), all with HTTP Basic (api_key:api_token) checked: a wrong or missing
    one, or another account's sid, gets 401 with Exotel's error JSON
    `{"RestException": {"Status": 401, "Message": ..., "Code": 401}}` (the fake's `Code` is the
    HTTP status; Exotel's own codes are not modelled). `From`, `CallerId` and `Url`
    are required and checked, as are `CustomField` (<= 128 chars), `TimeLimit` (<= 14400),
    `TimeOut`, `Record`, `StatusCallback*`; a bad field gets 400 with a RestException naming
    it. A placed call answers `{"Call": {...}}` with a fresh 32-hex `Sid`, `Status`
    `in-progress` (as Exotel's connect sample does) and numbers in Exotel's national
    `0XXXXXXXXXX` form (`From` = the customer, `To` = the CallerId).
    Bulk Call Details filters the placed calls by `From` and `To` (E.164, comma separated, at
    most 5; matched on the last 10 digits), `DateCreated` (`gte:YYYY-MM-DD HH:MM:SS;lte:...`,
    IST, to the second, both ends inclusive), `SortBy` (`DateCreated:desc`, the default, or
    `:asc`), `PageSize` (1..100, default 50) and `After` (the cursor in `NextPageUri`), and
    answers `{"Metadata": {"Total", "PageSize", "FirstPageUri", "PrevPageUri",
    "NextPageUri"}, "Calls": [...]}`; a bad filter value gets 400. Other filters are ignored.
    Exotel's docs say ongoing calls are not listed: `bulk_lists_ongoing=False` leaves out the
    calls that have not ended (by default every placed call is listed).

What happens next (`outcomes`, per dialled number)
    A str for every call; a list (one per call in order, the last repeating); a dict
    (exact `From`, else the same last 10 digits, else `"*"`, else "answered"); or a
    callable `f(from_number) -> outcome`. Outcomes:

    * "answered": after `ring_secs`, the `answered` callback (if asked for), then, as the
      flow's Voicebot applet does, GET `dynamic_url` (with Exotel's `CallSid`, `CallFrom`,
      `CallTo`, `Direction`, `CustomField` query added) expecting `{"url": "ws..."}`, or use
      `media_url`; open the media socket with `bot.simulator.exotel_emulator.ExotelEmulator`
      (`call_sid` = the Sid; `custom_parameters` = up to 3 query parameters of the media URL;
      `sample_rate` from `sample-rate`/`sample_rate`; basic credentials in the URL are sent as
      an `Authorization` header) and play `caller_script(from_number)` (default: silence, then
      hang up after `hangup_after` s). When the socket ends: the `completed` callback with
      `ConversationDuration`. With neither URL, the call just lasts `hangup_after` s.
    * "busy", "no-answer", "failed": after `ring_secs`, that terminal callback; no socket.

Knobs
    `rate_limit_after=N` (429 once N requests were accepted within `rate_limit_window` s;
    `Retry-After` = `retry_after`, "auto" = until a slot frees (1 s for forced 429s),
    None = no header),
    `fail_status` (every request gets it, e.g. 500), `fail_first=[429, 503]` (the first
    requests get these, then normal service), `fail_body`/`fail_content_type` (the body of
    forced failures, e.g. XML), `exophones` (CallerIds accepted; None = any number),
    `callback_content_type` ("json" / "form" / "multipart"; default: what
    `StatusCallbackContentType` asked for, form-encoded if nothing), `callback_repeat` (each callback twice, for
    idempotency), `callback_retries` (Exotel retries a non-2xx answer up to 2 times).

Records
    `calls` (every connect request: form, time, Sid or None, HTTP status, Authorization),
    `lookups` (GETs of one call), `searches` (Bulk Call Details GETs: query, status, Sids),
    `callbacks_sent` (url, payload, content type, response status),
    `dynamic_requests`, `emulator_results` (Sid -> EmulatorResult), `media_errors`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import re
import secrets
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import aiohttp
from aiohttp import web
from loguru import logger

from bot.config.phone import mask_phone
from bot.simulator.exotel_emulator import CallerEvent, EmulatorConfig, EmulatorResult, ExotelEmulator, HangUp
from bot.simulator.serving import cancel_all, serve_app

OUTCOMES = ("answered", "busy", "no-answer", "failed")
_ENDED = ("completed", "busy", "no-answer", "failed")  # a call's Status once it is over
IST = timezone(timedelta(hours=5, minutes=30))
_FLOW_URL = re.compile(r"^https?://my\.exotel\.com/([^/]+)/exoml/start_voice/([^/?#]+)$")

Outcomes = str | Sequence[str] | Mapping[str, str] | Callable[[str], str]


@dataclass
class CallRequest:
    """One `connect.json` request, accepted or not."""

    form: dict[str, str]
    at: float  # time.monotonic()
    sid: str | None
    http_status: int
    authorization: str | None
    outcome: str | None = None


@dataclass
class LookupRequest:
    sid: str
    at: float
    http_status: int


@dataclass
class SearchRequest:
    """One Bulk Call Details GET: its query, and the Sids it answered (none if refused)."""

    query: dict[str, str]
    at: float
    http_status: int
    sids: list[str]


@dataclass
class CallbackSent:
    """One status-callback POST the fake made (each attempt and each repeat)."""

    url: str
    payload: dict[str, Any]
    content_type: str
    status: int | None  # the receiver's HTTP status; None if it could not be reached
    at: float  # time.monotonic() when the answer came back
    error: str | None = None

    @property
    def event_type(self) -> str | None:
        return self.payload.get("EventType")

    @property
    def call_status(self) -> str | None:
        return self.payload.get("Status")


@dataclass
class _Call:
    sid: str
    form: dict[str, str]
    outcome: str
    created: datetime
    status: str = "in-progress"
    start_time: datetime | None = None
    end_time: datetime | None = None
    duration: int | None = None
    answered_by: str | None = None
    recording_url: str | None = None
    updated: datetime | None = None

    @property
    def events(self) -> list[str]:
        keys = sorted((k for k in self.form if k.startswith("StatusCallbackEvents")), key=_index)
        return [self.form[k] for k in keys]


def _index(key: str) -> int:
    match = re.search(r"\[(\d+)\]", key)
    return int(match.group(1)) if match else 0


def _stamp(moment: datetime | None) -> str | None:
    return moment.astimezone(IST).strftime("%Y-%m-%d %H:%M:%S") if moment else None


def _national(number: str | None) -> str | None:
    """`+919876543210` -> `09876543210`, as Exotel writes Indian numbers."""
    if not number:
        return number
    digits = re.sub(r"\D", "", number)
    if digits.startswith("91") and len(digits) == 12:
        return "0" + digits[2:]
    return number


def _last10(number: str) -> str:
    return re.sub(r"\D", "", number)[-10:]


class FakeExotelREST:
    """Exotel's outbound-call REST API, then the call itself, on 127.0.0.1:<free port>."""

    def __init__(
        self,
        *,
        account_sid: str = "fakeaccount1",
        api_key: str = "fake-api-key",
        api_token: str = "fake-api-token",
        outcomes: Outcomes = "answered",
        media_url: str | None = None,
        dynamic_url: str | None = None,
        caller_script: Callable[[str], list[CallerEvent]] | None = None,
        hangup_after: float = 1.0,
        ring_secs: float = 0.1,
        answered_by: str | None = "human",
        emulator_options: Mapping[str, Any] | None = None,
        rate_limit_after: int | None = None,
        rate_limit_window: float = 60.0,
        retry_after: float | str | None = "auto",
        fail_status: int | None = None,
        fail_first: Sequence[int] = (),
        fail_body: str | None = None,
        fail_content_type: str = "application/json",
        exophones: Sequence[str] | None = None,
        callback_content_type: str | None = None,
        callback_repeat: bool = False,
        callback_retries: int = 2,
        callback_retry_delay: float = 0.2,
        callback_timeout: float = 15.0,
        recording_urls: bool = True,
        bulk_lists_ongoing: bool = True,
    ):
        if media_url and dynamic_url:
            raise ValueError("give media_url or dynamic_url, not both")
        if callback_content_type not in (None, "json", "form", "multipart"):
            raise ValueError("callback_content_type must be 'json', 'form', 'multipart' or None")
        self._check_outcomes(outcomes)
        self.account_sid = account_sid
        self.api_key = api_key
        self.api_token = api_token
        self.outcomes = outcomes
        self.media_url = media_url
        self.dynamic_url = dynamic_url
        self.caller_script = caller_script
        self.hangup_after = hangup_after
        # Exotel's RecordingUrl for recorded calls; the simulator turns it off (its recording
        # is the server's own local WAV: an exotel.com address there would lead nowhere).
        self.recording_urls = recording_urls
        self.ring_secs = ring_secs
        self.answered_by = answered_by
        self.emulator_options = dict(emulator_options or {})
        self.rate_limit_after = rate_limit_after
        self.rate_limit_window = rate_limit_window
        self.retry_after = retry_after
        self.fail_status = fail_status
        self.fail_first = list(fail_first)
        self.fail_body = fail_body
        self.fail_content_type = fail_content_type
        self.exophones = {_last10(n) for n in exophones} if exophones is not None else None
        self.callback_content_type = callback_content_type
        self.callback_repeat = callback_repeat
        self.callback_retries = callback_retries
        self.callback_retry_delay = callback_retry_delay
        self.callback_timeout = callback_timeout
        self.bulk_lists_ongoing = bulk_lists_ongoing

        self.calls: list[CallRequest] = []
        self.lookups: list[LookupRequest] = []
        self.searches: list[SearchRequest] = []
        self.callbacks_sent: list[CallbackSent] = []
        self.dynamic_requests: list[tuple[str, int | None]] = []
        self.emulator_results: dict[str, EmulatorResult] = {}
        self.media_errors: dict[str, str] = {}
        self.state: dict[str, _Call] = {}

        self._requests_seen = 0
        self._accepted_at: deque[float] = deque()
        self._placed = 0
        self._tasks: set[asyncio.Task] = set()
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self.port: int | None = None

    # ------------------------------------------------------------------ lifecycle

    @property
    def base_url(self) -> str:
        """For `ExotelClient(base_url=...)`: `http://127.0.0.1:PORT`."""
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> FakeExotelREST:
        app = web.Application()
        app.router.add_post("/v1/Accounts/{sid}/Calls/connect.json", self._connect)
        app.router.add_get("/v1/Accounts/{sid}/Calls/{call_sid}.json", self._lookup)
        app.router.add_get("/v1/Accounts/{sid}/Calls.json", self._search)
        self._runner, self.port = await serve_app(app)
        self._session = aiohttp.ClientSession()
        return self

    async def stop(self) -> None:
        await cancel_all(self._tasks)
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def __aenter__(self) -> FakeExotelREST:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def drain(self, timeout: float = 30.0) -> None:
        """Wait until every placed call has ended and its callbacks were sent."""
        deadline = time.monotonic() + timeout
        while self._tasks:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{len(self._tasks)} fake Exotel call(s) still running")
            await asyncio.wait(set(self._tasks), timeout=remaining)

    def callbacks_for(self, sid: str) -> list[CallbackSent]:
        return [c for c in self.callbacks_sent if c.payload.get("CallSid") == sid]

    # ------------------------------------------------------------------ HTTP answers

    @staticmethod
    def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> web.Response:
        body = {"RestException": {"Status": status, "Message": message, "Code": status}}
        return web.json_response(body, status=status, headers=headers)

    def _forced_failure(self) -> web.Response | None:
        index = self._requests_seen
        self._requests_seen += 1
        status = self.fail_first[index] if index < len(self.fail_first) else self.fail_status
        if status is None:
            return None
        headers = {}
        if status == 429 and self.retry_after is not None:
            headers["Retry-After"] = "1" if self.retry_after == "auto" else str(self.retry_after)
        if self.fail_body is not None:
            return web.Response(status=status, text=self.fail_body, content_type=self.fail_content_type,
                                headers=headers)
        reason = {429: "Too Many Requests", 500: "Internal Server Error", 502: "Bad Gateway",
                  503: "Service Unavailable", 504: "Gateway Timeout"}.get(status, "Forced failure")
        return self._error(status, reason, headers)

    def _authorized(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        if not header.lower().startswith("basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:].strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            return False
        return (
            secrets.compare_digest(user, self.api_key)
            and secrets.compare_digest(password, self.api_token)
            and request.match_info["sid"] == self.account_sid
        )

    def _rate_limited(self) -> web.Response | None:
        if self.rate_limit_after is None:
            return None
        now = time.monotonic()
        while self._accepted_at and now - self._accepted_at[0] >= self.rate_limit_window:
            self._accepted_at.popleft()
        if len(self._accepted_at) >= self.rate_limit_after:
            headers = {}
            if self.retry_after == "auto":
                wait = self._accepted_at[0] + self.rate_limit_window - now if self._accepted_at else 1.0
                headers["Retry-After"] = f"{max(wait, 0.001):.3f}"
            elif self.retry_after is not None:
                headers["Retry-After"] = str(self.retry_after)
            return self._error(429, "Too Many Requests: rate limit exceeded", headers)
        self._accepted_at.append(now)
        return None

    def _gate(self, request: web.Request) -> web.Response | None:
        forced = self._forced_failure()
        if forced is not None:
            return forced
        if not self._authorized(request):
            return self._error(401, "Authentication is required to view this resource.")
        return self._rate_limited()

    async def _connect(self, request: web.Request) -> web.Response:
        form = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
        record = CallRequest(form=form, at=time.monotonic(), sid=None, http_status=0,
                             authorization=request.headers.get("Authorization"))
        self.calls.append(record)
        answer = self._gate(request) or self._validate(form)
        if answer is not None:
            record.http_status = answer.status
            return answer
        outcome = self._outcome_for(form["From"])
        now = datetime.now(UTC)
        call = _Call(sid=uuid.uuid4().hex, form=form, outcome=outcome, created=now, updated=now)
        self.state[call.sid] = call
        record.sid, record.outcome, record.http_status = call.sid, outcome, 200
        logger.info(f"fake Exotel: call {call.sid} to {mask_phone(form['From'])} -> {outcome}")
        task = asyncio.create_task(self._run_call(call), name=f"fake-exotel-{call.sid}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return web.json_response({"Call": self._resource(call)})

    async def _lookup(self, request: web.Request) -> web.Response:
        sid = request.match_info["call_sid"]
        answer = self._gate(request)
        if answer is None and sid not in self.state:
            answer = self._error(404, f"Call {sid} not found")
        self.lookups.append(LookupRequest(sid, time.monotonic(), answer.status if answer else 200))
        if answer is not None:
            return answer
        return web.json_response({"Call": self._resource(self.state[sid])})

    async def _search(self, request: web.Request) -> web.Response:
        query = dict(request.query)
        record = SearchRequest(query, time.monotonic(), 0, [])
        self.searches.append(record)
        answer = self._gate(request)
        found: list[_Call] = []
        if answer is None:
            found_or_error = self._filter_calls(query)
            if isinstance(found_or_error, str):
                answer = self._error(400, found_or_error)
            else:
                found = found_or_error
        if answer is not None:
            record.http_status = answer.status
            return answer
        size = int(query.get("PageSize") or 50)
        page = found[:size]
        path = f"/v1/Accounts/{self.account_sid}/Calls.json"
        kept = {k: v for k, v in query.items() if k != "After"}
        first = f"{path}?{urlencode(kept)}" if kept else path
        after = urlencode({**kept, "After": page[-1].sid}) if len(found) > size else None
        record.http_status, record.sids = 200, [c.sid for c in page]
        return web.json_response({
            "Metadata": {
                "Total": len(found), "PageSize": size, "FirstPageUri": first, "PrevPageUri": None,
                "NextPageUri": f"{path}?{after}" if after else None,
            },
            "Calls": [self._resource(c) for c in page],
        })

    def _filter_calls(self, query: Mapping[str, str]) -> list[_Call] | str:
        """The placed calls the Bulk Call Details filters select, in order; or why a filter is bad."""
        numbers: dict[str, set[str]] = {}
        for name in ("From", "To"):
            if name in query:
                listed = [n.strip() for n in query[name].split(",")]
                if not 1 <= len(listed) <= 5 or not all(re.fullmatch(r"\+[1-9]\d{7,14}", n) for n in listed):
                    return f"Invalid '{name}': 1 to 5 comma-separated numbers in E.164 format"
                numbers[name] = {_last10(n) for n in listed}
        bounds: dict[str, datetime] = {}
        if "DateCreated" in query:
            for part in query["DateCreated"].split(";"):
                op, _, value = part.strip().partition(":")
                try:
                    moment = datetime.strptime(value.strip(), "%Y-%m-%d %H:%M:%S").replace(tzinfo=IST)
                except ValueError:
                    moment = None
                if op not in ("gte", "lte") or op in bounds or moment is None:
                    return "Invalid 'DateCreated': gte:YYYY-MM-DD HH:MM:SS;lte:YYYY-MM-DD HH:MM:SS"
                bounds[op] = moment
        size = query.get("PageSize", "50")
        if not size.isdigit() or not 1 <= int(size) <= 100:
            return "Invalid 'PageSize': a whole number from 1 to 100"
        order = query.get("SortBy", "DateCreated:desc")
        if order not in ("DateCreated:asc", "DateCreated:desc"):
            return "Invalid 'SortBy': DateCreated:asc or DateCreated:desc"
        found: list[_Call] = []
        for call in self.state.values():
            created = call.created.replace(microsecond=0)
            resource = {"From": _national(call.form.get("From")), "To": _national(call.form.get("CallerId"))}
            if any(_last10(resource[name] or "") not in wanted for name, wanted in numbers.items()):
                continue
            if ("gte" in bounds and created < bounds["gte"]) or ("lte" in bounds and created > bounds["lte"]):
                continue
            if not self.bulk_lists_ongoing and call.status not in _ENDED:
                continue
            found.append(call)
        found.sort(key=lambda c: c.created, reverse=order.endswith("desc"))
        if "After" in query:
            sids = [c.sid for c in found]
            if query["After"] not in sids:
                return "Invalid 'After': not a cursor of this listing"
            found = found[sids.index(query["After"]) + 1:]
        return found

    def _validate(self, form: dict[str, str]) -> web.Response | None:
        def bad(message: str) -> web.Response:
            return self._error(400, message)

        for name in ("From", "CallerId", "Url"):
            if not form.get(name, "").strip():
                return bad(f"Missing parameter '{name}'")
        if not re.fullmatch(r"\+?\d{10,15}", re.sub(r"[\s\-()]", "", form["From"])):
            return bad(f"Invalid 'From' number {mask_phone(form['From'])}")
        caller = re.sub(r"[\s\-()]", "", form["CallerId"])
        if not re.fullmatch(r"\+?\d{6,15}", caller):
            return bad("Invalid 'CallerId'")
        if self.exophones is not None and _last10(caller) not in self.exophones:
            return bad("CallerId is not an ExoPhone of this account")
        url = form["Url"]
        if not url.startswith(("http://", "https://")):
            return bad("Invalid 'Url': must be an http(s) URL")
        flow = _FLOW_URL.match(url)
        if flow and flow.group(1) != self.account_sid:
            return bad("Invalid 'Url': the flow belongs to another account")
        if form.get("CallType", "trans") not in ("trans", "promo"):
            return bad("Invalid 'CallType'")
        if len(form.get("CustomField", "")) > 128:
            return bad("'CustomField' must be at most 128 characters")
        for name, top in (("TimeLimit", 14_400), ("TimeOut", None)):
            if name in form:
                if not form[name].isdigit() or int(form[name]) <= 0 or (top and int(form[name]) > top):
                    return bad(f"Invalid '{name}'")
        if form.get("Record", "false") not in ("true", "false"):
            return bad("Invalid 'Record': true or false")
        if "StatusCallback" in form and not form["StatusCallback"].startswith(("http://", "https://")):
            return bad("Invalid 'StatusCallback'")
        for key, value in form.items():
            if key.startswith("StatusCallbackEvents") and value not in ("terminal", "answered"):
                return bad(f"Invalid '{key}'")
        kind = form.get("StatusCallbackContentType")
        if kind is not None and kind not in ("application/json", "multipart/form-data",
                                             "application/x-www-form-urlencoded"):
            return bad("Invalid 'StatusCallbackContentType'")
        return None

    def _check_outcomes(self, outcomes: Outcomes) -> None:
        if callable(outcomes):
            return
        values = [outcomes] if isinstance(outcomes, str) else (
            list(outcomes.values()) if isinstance(outcomes, Mapping) else list(outcomes)
        )
        if not values or any(v not in OUTCOMES for v in values):
            raise ValueError(f"outcomes must be among {OUTCOMES}, got {outcomes!r}")

    def _outcome_for(self, number: str) -> str:
        rule = self.outcomes
        if isinstance(rule, str):
            outcome = rule
        elif isinstance(rule, Mapping):
            outcome = rule.get(number) or next(
                (v for k, v in rule.items() if k != "*" and _last10(k) == _last10(number)), None
            ) or rule.get("*", "answered")
        elif callable(rule):
            outcome = rule(number)
        else:
            outcome = rule[min(self._placed, len(rule) - 1)]
        self._placed += 1
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome {outcome!r} is not one of {OUTCOMES}")
        return outcome

    def _resource(self, call: _Call) -> dict[str, Any]:
        base = f"/v1/Accounts/{self.account_sid}/Calls/{call.sid}"
        return {
            "Sid": call.sid,
            "ParentCallSid": None,
            "DateCreated": _stamp(call.created),
            "DateUpdated": _stamp(call.updated),
            "AccountSid": self.account_sid,
            "To": _national(call.form.get("CallerId")),
            "From": _national(call.form.get("From")),
            "PhoneNumberSid": _national(call.form.get("CallerId")),
            "Status": call.status,
            "StartTime": _stamp(call.start_time or call.created),
            "EndTime": _stamp(call.end_time),
            "Duration": call.duration,
            "Price": None,
            "Direction": "outbound-api",
            "AnsweredBy": call.answered_by,
            "ForwardedFrom": None,
            "CallerName": None,
            "Uri": f"{base}.json",
            "RecordingUrl": call.recording_url,
        }

    # ------------------------------------------------------------------ the call itself

    async def _run_call(self, call: _Call) -> None:
        await asyncio.sleep(self.ring_secs)
        if call.outcome != "answered":
            self._finish(call, call.outcome, 0)
            await self._callback(call, "terminal")
            return
        answered = time.monotonic()
        call.start_time = call.updated = datetime.now(UTC)
        call.answered_by = self.answered_by
        if "answered" in call.events:
            await self._callback(call, "answered")
        url = await self._resolve_media_url(call)
        if url is not None:
            await self._stream(call, url)
        elif self.media_url is None and self.dynamic_url is None:
            await asyncio.sleep(self.hangup_after)
        self._finish(call, "completed", int(round(time.monotonic() - answered)))
        await self._callback(call, "terminal")

    def _finish(self, call: _Call, status: str, duration: int) -> None:
        call.status = status
        call.duration = duration
        call.end_time = call.updated = datetime.now(UTC)
        if status == "completed" and call.form.get("Record") == "true" and self.recording_urls:
            call.recording_url = f"https://recordings.exotel.com/exotelrecordings/{self.account_sid}/{call.sid}.mp3"
        logger.info(f"fake Exotel: call {call.sid} {status} ({duration}s)")

    async def _resolve_media_url(self, call: _Call) -> str | None:
        if self.media_url:
            return self.media_url
        if not self.dynamic_url:
            return None
        parts = urlsplit(self.dynamic_url)
        query = parse_qsl(parts.query, keep_blank_values=True) + [
            ("CallSid", call.sid),
            ("CallFrom", _national(call.form["From"]) or ""),
            ("CallTo", _national(call.form["CallerId"]) or ""),
            ("Direction", "outbound-dial"),
            ("CustomField", call.form.get("CustomField", "")),
        ]
        url = urlunsplit(parts._replace(query=urlencode(query)))
        assert self._session is not None
        try:
            async with self._session.get(url, timeout=aiohttp.ClientTimeout(total=10)) as response:
                self.dynamic_requests.append((url, response.status))
                data = await response.json(content_type=None) if response.status == 200 else None
        except (aiohttp.ClientError, TimeoutError, ValueError) as error:
            self.dynamic_requests.append((url, None))
            self.media_errors[call.sid] = f"dynamic URL failed: {type(error).__name__}: {error}"
            return None
        media = data.get("url") if isinstance(data, dict) else None
        if not isinstance(media, str) or not media.startswith(("ws://", "wss://")):
            self.media_errors[call.sid] = f"dynamic URL answered without a ws(s) url: {data!r}"
            return None
        return media

    async def _stream(self, call: _Call, url: str) -> None:
        parts = urlsplit(url)
        query = parse_qsl(parts.query, keep_blank_values=True)
        headers: dict[str, str] = {}
        if parts.username is not None:  # Exotel sends URL credentials as Basic auth
            token = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(token).decode()
            host = parts.hostname or ""
            url = urlunsplit(parts._replace(netloc=host + (f":{parts.port}" if parts.port else "")))
        options: dict[str, Any] = {
            "headers": headers,
            "call_sid": call.sid,
            "account_sid": self.account_sid,
            "from_number": call.form["From"],
            "to_number": call.form["CallerId"],
            "custom_parameters": dict(query[:3]),
        }
        rate = dict(query).get("sample-rate") or dict(query).get("sample_rate")
        if rate and rate.isdigit() and int(rate) in (8000, 16000, 24000):
            options["sample_rate"] = int(rate)
        if call.form.get("TimeLimit", "").isdigit():
            options["max_secs"] = float(call.form["TimeLimit"])
        options.update(self.emulator_options)
        emulator = ExotelEmulator(EmulatorConfig(url=url, **options))
        script: list[Any] = (self.caller_script(call.form["From"]) if self.caller_script
                             else [HangUp(at=self.hangup_after)])
        result = await emulator.run(script)
        self.emulator_results[call.sid] = result
        if result.connect_error:
            self.media_errors[call.sid] = result.connect_error

    # ------------------------------------------------------------------ status callbacks

    def _payload(self, call: _Call, event: str) -> dict[str, Any]:
        status = "in-progress" if event == "answered" else call.status
        payload: dict[str, Any] = {
            "CallSid": call.sid,
            "Status": status,
            "RecordingUrl": call.recording_url if event == "terminal" else None,
            "DateUpdated": _stamp(call.updated),
        }
        if call.events:
            payload.update({
                "EventType": event,
                "DateCreated": _stamp(call.created),
                "To": _national(call.form.get("CallerId")),
                "From": _national(call.form.get("From")),
                "PhoneNumberSid": _national(call.form.get("CallerId")),
                "StartTime": _stamp(call.start_time or call.created),
                "EndTime": _stamp(call.end_time) if event == "terminal" else None,
                "ConversationDuration": call.duration if event == "terminal" else 0,
                "Direction": "outbound-api",
                "CustomField": call.form.get("CustomField"),
                "Legs": [{
                    "OnCallDuration": call.duration if event == "terminal" else 0,
                    "Status": status,
                    "AnsweredBy": call.answered_by,
                }],
            })
        return payload

    def _content_type_for(self, call: _Call) -> str:
        chosen = self.callback_content_type or {
            "application/json": "json", "multipart/form-data": "multipart",
        }.get(call.form.get("StatusCallbackContentType", ""), "form")
        return {"json": "application/json", "multipart": "multipart/form-data",
                "form": "application/x-www-form-urlencoded"}[chosen]

    async def _callback(self, call: _Call, event: str) -> None:
        url = call.form.get("StatusCallback")
        if not url:
            return
        payload = self._payload(call, event)
        content_type = self._content_type_for(call)
        if content_type == "application/json":
            body = json.dumps(payload).encode()
        elif content_type == "multipart/form-data":
            boundary = uuid.uuid4().hex
            content_type = f"multipart/form-data; boundary={boundary}"
            body = _multipart(_form_pairs(payload), boundary)
        else:
            body = urlencode(_form_pairs(payload)).encode()
        for _ in range(2 if self.callback_repeat else 1):
            for attempt in range(self.callback_retries + 1):
                if await self._post_callback(url, payload, content_type, body):
                    break
                if attempt < self.callback_retries:
                    await asyncio.sleep(self.callback_retry_delay)

    async def _post_callback(self, url: str, payload: dict[str, Any], content_type: str, body: bytes) -> bool:
        assert self._session is not None
        status: int | None = None
        error: str | None = None
        try:
            async with self._session.post(
                url, data=body, headers={"Content-Type": content_type},
                timeout=aiohttp.ClientTimeout(total=self.callback_timeout),
            ) as response:
                status = response.status
                await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            error = f"{type(exc).__name__}: {exc}"
        self.callbacks_sent.append(CallbackSent(url, payload, content_type, status, time.monotonic(), error))
        return status is not None and 200 <= status < 300


def _form_pairs(payload: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Flatten for a form body: `Legs[0][Status]=...`; None -> ""."""
    pairs: list[tuple[str, str]] = []
    for key, value in payload.items():
        if key == "Legs" and isinstance(value, list):
            for index, leg in enumerate(value):
                for leg_key, leg_value in leg.items():
                    pairs.append((f"Legs[{index}][{leg_key}]", "" if leg_value is None else str(leg_value)))
        else:
            pairs.append((key, "" if value is None else str(value)))
    return pairs


def _multipart(pairs: list[tuple[str, str]], boundary: str) -> bytes:
    out = bytearray()
    for name, value in pairs:
        out += f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
        out += value.encode() + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out)


__all__ = ["FakeExotelREST", "CallRequest", "CallbackSent", "LookupRequest", "SearchRequest", "OUTCOMES"]
