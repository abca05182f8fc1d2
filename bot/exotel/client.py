"""An async client for Exotel's Voice v1 REST API (outbound calls), and the status callback.

    async with ExotelClient(sid, api_key, api_token, base_url="https://api.in.exotel.com") as exotel:
        call = await exotel.place_call(
            to="98765 43210", caller_id="08047181234", app_id="123456",
            status_callback="https://bot.example.com/exotel/status", custom_field="lead=42",
            time_limit=900, time_out=30, record=True,
        )

`place_call` POSTs `/v1/Accounts/{sid}/Calls/connect.json` (form-encoded, HTTP Basic with
API key : API token) so that Exotel rings the customer (`From`) from the ExoPhone
(`CallerId`) and, once answered, runs the flow (`Url`) whose Voicebot applet opens the media
socket to the bot. Errors all derive from `ExotelError`:

* 401/403 -> `ExotelAuthError` (never retried);
* 429 -> retried with exponential backoff (honouring `Retry-After`), then `ExotelRateLimited`;
* other 4xx -> `ExotelRequestError` with Exotel's own message;
* 5xx and connection failures -> retried, then `ExotelUnavailable`.

A POST whose request may already have reached Exotel (the connection dropped or timed out
*after* sending) is not retried: Exotel has no idempotency key, and a retry could ring the
customer twice. It raises `ExotelUnavailable` with `maybe_placed=True`; the status callback
(keyed by `CustomField`) tells whether the call happened.

`parse_status_callback` reads Exotel's StatusCallback POST (form-encoded or JSON) into a
`StatusUpdate` with a normalized status.

The API token is never logged nor put in an error message or repr; phone numbers in logs
are masked (`mask_phone`).
"""

from __future__ import annotations

import json
import random
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from email import policy as email_policy
from email.parser import BytesParser
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import parse_qsl, quote

import httpx
from loguru import logger
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
)

from bot.config.phone import mask_phone, normalize_indian_phone
from bot.exotel.call_status import TERMINAL_CALL_STATUSES
from bot.exotel.call_status import exotel_status as normalize_status  # Exotel's words only

SINGAPORE_BASE_URL = "https://api.exotel.com"
MUMBAI_BASE_URL = "https://api.in.exotel.com"
BASE_URLS = {"singapore": SINGAPORE_BASE_URL, "mumbai": MUMBAI_BASE_URL}

MAX_CUSTOM_FIELD = 128
MAX_TIME_LIMIT = 14_400
STATUS_CALLBACK_EVENTS = ("terminal", "answered")
AUTH_ERROR_MESSAGE = (
    "Exotel rejected the credentials (EXOTEL_API_KEY / EXOTEL_API_TOKEN / EXOTEL_ACCOUNT_SID)"
)


# --------------------------------------------------------------------------- errors


class ExotelError(Exception):
    """Anything that went wrong talking to Exotel."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        code: str | int | None = None,
        exotel_message: str | None = None,
        attempts: int = 1,
    ):
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.code = code
        self.exotel_message = exotel_message
        self.attempts = attempts


class ExotelAuthError(ExotelError):
    """401/403: wrong API key, token or account SID (or the account may not use this API)."""


class ExotelRequestError(ExotelError):
    """A 4xx other than auth and rate limit: Exotel refused the request; `exotel_message` says why."""


class ExotelRateLimited(ExotelError):
    """429 on every attempt (Exotel allows 200 requests/min on the voice APIs)."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any):
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class ExotelUnavailable(ExotelError):
    """5xx or no connection on every attempt; `maybe_placed` if a POST may have got through."""

    def __init__(self, message: str, *, maybe_placed: bool = False, retryable: bool = True, **kwargs: Any):
        super().__init__(message, **kwargs)
        self.maybe_placed = maybe_placed
        self.retryable = retryable


class ExotelValidationError(ExotelError, ValueError):
    """The request was refused locally, before anything was sent (e.g. CustomField too long)."""


class InvalidStatusCallback(ExotelError, ValueError):
    """A status callback body without a CallSid or with a status we cannot read."""


# --------------------------------------------------------------------------- results


@dataclass
class PlacedCall:
    """Exotel's `Call` resource. `status` is Exotel's word (`queued`, `in-progress`, ...)."""

    sid: str
    status: str | None
    to: str | None
    from_: str | None
    direction: str | None
    date_created: str | None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def normalized_status(self) -> str | None:
        """`status` as one of CALL_STATUSES (`queued` -> `initiated`); None if unknown."""
        return normalize_status(self.status)

    def __repr__(self) -> str:  # numbers masked, for logs
        return (
            f"PlacedCall(sid={self.sid!r}, status={self.status!r}, to={mask_phone(self.to)!r}, "
            f"from_={mask_phone(self.from_)!r}, direction={self.direction!r}, "
            f"date_created={self.date_created!r})"
        )


@dataclass
class CallLeg:
    """One entry of the callback's `Legs`."""

    status: str | None
    on_call_duration: int | None
    answered_by: str | None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)


@dataclass
class StatusUpdate:
    """One status callback from Exotel, normalized."""

    call_sid: str
    status: str  # one of CALL_STATUSES
    raw_status: str | None
    event_type: str | None  # "terminal", "answered", or None (callback without events)
    recording_url: str | None
    duration: int | None  # ConversationDuration (seconds), else Duration, else the first leg's
    answered_by: str | None
    date_updated: str | None
    date_created: str | None
    start_time: str | None
    end_time: str | None
    direction: str | None
    custom_field: str | None
    to: str | None
    from_: str | None
    legs: list[CallLeg] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_CALL_STATUSES


# --------------------------------------------------------------------------- client


class ExotelClient:
    """Exotel Voice v1: place an outbound call into a flow, and look a call up."""

    def __init__(
        self,
        account_sid: str,
        api_key: str,
        api_token: str,
        base_url: str = SINGAPORE_BASE_URL,
        http_client: httpx.AsyncClient | None = None,
        max_retries: int = 4,
        *,
        timeout: float = 15.0,
        backoff_base: float = 0.5,
        backoff_max: float = 8.0,
        max_retry_after: float = 60.0,
        default_region: str = "IN",
    ):
        """
        Args:
            account_sid, api_key, api_token: from Exotel's dashboard (API settings).
            base_url: `https://api.exotel.com` (Singapore) or `https://api.in.exotel.com` (Mumbai).
            http_client: a shared client (not closed by `aclose`); default: one of our own.
            max_retries: retries after the first attempt for 429, 5xx and connection errors.
            timeout: per-request timeout (seconds) of our own client.
            backoff_base, backoff_max: exponential backoff (with jitter) between retries.
            max_retry_after: cap on a server-sent `Retry-After` (seconds).
            default_region: region for numbers written without a country code.
        """
        for name, value in (("account_sid", account_sid), ("api_key", api_key), ("api_token", api_token)):
            if not value or not str(value).strip():
                raise ExotelValidationError(f"Exotel {name} is empty")
        if max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        self.account_sid = account_sid.strip()
        self._auth = httpx.BasicAuth(api_key.strip(), api_token.strip())
        self.base_url = base_url.rstrip("/")
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.max_retry_after = max_retry_after
        self.default_region = default_region
        self._own_client = http_client is None
        self._http = http_client or httpx.AsyncClient(timeout=timeout)

    def __repr__(self) -> str:  # never the token
        return f"ExotelClient(account_sid={self.account_sid!r}, base_url={self.base_url!r})"

    async def aclose(self) -> None:
        if self._own_client:
            await self._http.aclose()

    async def __aenter__(self) -> ExotelClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # ------------------------------------------------------------------ URLs

    @property
    def calls_url(self) -> str:
        return f"{self.base_url}/v1/Accounts/{quote(self.account_sid, safe='')}/Calls"

    def flow_url(self, app_id: str) -> str:
        """The `Url` that runs flow (app) `app_id` once the customer answers."""
        return f"http://my.exotel.com/{self.account_sid}/exoml/start_voice/{app_id}"

    # ------------------------------------------------------------------ API

    def build_call_form(
        self,
        *,
        to: str,
        caller_id: str,
        app_id: str,
        status_callback: str | None = None,
        custom_field: str | None = None,
        time_limit: int | None = None,
        time_out: int | None = None,
        record: bool = False,
        recording_channels: str | None = None,
        status_callback_events: Iterable[str] = STATUS_CALLBACK_EVENTS,
    ) -> dict[str, str]:
        """The form `place_call` sends (validated; raises before anything goes out)."""
        customer = normalize_indian_phone(to, self.default_region)  # InvalidPhoneNumber
        if not caller_id or not str(caller_id).strip():
            raise ExotelValidationError("caller_id (your ExoPhone, EXOTEL_CALLER_ID) is empty")
        app = str(app_id).strip() if app_id is not None else ""
        if not app or "/" in app:
            raise ExotelValidationError(f"app_id (EXOTEL_APP_ID, the flow id) is invalid: {app_id!r}")
        form: dict[str, str] = {
            "From": customer,
            "CallerId": str(caller_id).strip(),
            "Url": self.flow_url(app),
            "CallType": "trans",
        }
        if status_callback:
            if not status_callback.startswith(("http://", "https://")):
                raise ExotelValidationError("status_callback must be an http:// or https:// URL")
            form["StatusCallback"] = status_callback
            events = list(dict.fromkeys(status_callback_events or ()))
            unknown = [e for e in events if e not in STATUS_CALLBACK_EVENTS]
            if unknown:
                raise ExotelValidationError(
                    f"status_callback_events may only hold {STATUS_CALLBACK_EVENTS}, got {unknown}"
                )
            for index, event in enumerate(events):
                form[f"StatusCallbackEvents[{index}]"] = event
            form["StatusCallbackContentType"] = "application/json"
        if custom_field is not None:
            if len(custom_field) > MAX_CUSTOM_FIELD:
                raise ExotelValidationError(
                    f"CustomField is {len(custom_field)} characters; Exotel allows at most {MAX_CUSTOM_FIELD}"
                )
            form["CustomField"] = custom_field
        if time_limit is not None:
            if not isinstance(time_limit, int) or not 0 < time_limit <= MAX_TIME_LIMIT:
                raise ExotelValidationError(
                    f"TimeLimit must be a whole number of seconds in 1..{MAX_TIME_LIMIT}, got {time_limit!r}"
                )
            form["TimeLimit"] = str(time_limit)
        if time_out is not None:
            if not isinstance(time_out, int) or time_out <= 0:
                raise ExotelValidationError(f"TimeOut must be a positive number of seconds, got {time_out!r}")
            form["TimeOut"] = str(time_out)
        form["Record"] = "true" if record else "false"
        if recording_channels:
            form["RecordingChannels"] = recording_channels
        return form

    async def place_call(
        self,
        *,
        to: str,
        caller_id: str,
        app_id: str,
        status_callback: str | None,
        custom_field: str | None,
        time_limit: int | None,
        time_out: int | None,
        record: bool,
        recording_channels: str | None = None,
        status_callback_events: Iterable[str] = STATUS_CALLBACK_EVENTS,
    ) -> PlacedCall:
        """Ring `to` from `caller_id`; when answered, Exotel runs flow `app_id`."""
        form = self.build_call_form(
            to=to, caller_id=caller_id, app_id=app_id, status_callback=status_callback,
            custom_field=custom_field, time_limit=time_limit, time_out=time_out, record=record,
            recording_channels=recording_channels, status_callback_events=status_callback_events,
        )
        what = f"call to {mask_phone(form['From'])}"
        logger.info(f"Exotel: placing {what} from {mask_phone(form['CallerId'])} into flow {app_id}")
        data = await self._request("POST", f"{self.calls_url}/connect.json", what, form=form)
        call = _placed_call(data)
        logger.info(f"Exotel: {what} placed: sid={call.sid} status={call.status}")
        return call

    async def get_call(self, sid: str) -> PlacedCall:
        """Exotel's view of call `sid` (status, duration, recording, ...)."""
        if not sid or not str(sid).strip():
            raise ExotelValidationError("call sid is empty")
        url = f"{self.calls_url}/{quote(str(sid).strip(), safe='')}.json"
        return _placed_call(await self._request("GET", url, f"lookup of call {sid}"))

    # ------------------------------------------------------------------ transport

    async def _request(self, method: str, url: str, what: str, form: Mapping[str, str] | None = None) -> Any:
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.max_retries + 1),
            wait=self._wait,
            retry=retry_if_exception(_retryable),
            before_sleep=lambda state: self._log_retry(state, what),
            reraise=True,
        )
        attempts = 0
        try:
            async for attempt in retrying:
                with attempt:
                    attempts = attempt.retry_state.attempt_number
                    return await self._once(method, url, what, form)
        except ExotelError as error:
            error.attempts = attempts
            if isinstance(error, (ExotelRateLimited, ExotelUnavailable)) and attempts > 1:
                error.message = f"{error.message} (gave up after {attempts} attempts)"
                error.args = (error.message,)
            raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def _once(self, method: str, url: str, what: str, form: Mapping[str, str] | None) -> Any:
        try:
            response = await self._http.request(
                method, url, data=dict(form) if form is not None else None, auth=self._auth,
                headers={"Accept": "application/json"},
            )
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as error:
            # Nothing was sent: always safe to retry.
            raise ExotelUnavailable(f"Exotel unreachable for {what}: {_describe(error)}") from None
        except httpx.TransportError as error:
            if method == "POST":
                raise ExotelUnavailable(
                    f"connection to Exotel failed during {what} after the request was sent "
                    f"({_describe(error)}); the call may have been placed: not retried",
                    maybe_placed=True, retryable=False,
                ) from None
            raise ExotelUnavailable(f"Exotel connection failed for {what}: {_describe(error)}") from None
        status = response.status_code
        if 200 <= status < 300:
            try:
                return response.json()
            except ValueError:
                raise ExotelError(
                    f"Exotel answered {what} with {status} but not JSON: {_snippet(response.text)!r}",
                    status_code=status,
                ) from None
        message, code = exotel_error_message(response)
        detail = f": {message}" if message else ""
        if status in (401, 403):
            raise ExotelAuthError(
                AUTH_ERROR_MESSAGE, status_code=status, code=code, exotel_message=message,
            )
        if status == 429:
            raise ExotelRateLimited(
                f"Exotel rate limit hit for {what}{detail}",
                retry_after=_retry_after(response.headers.get("retry-after")),
                status_code=status, code=code, exotel_message=message,
            )
        if 400 <= status < 500:
            raise ExotelRequestError(
                f"Exotel refused {what} (HTTP {status}{f', code {code}' if code is not None else ''})"
                + (detail or ": no message"),
                status_code=status, code=code, exotel_message=message,
            )
        raise ExotelUnavailable(
            f"Exotel failed {what} with HTTP {status}{detail}",
            status_code=status, code=code, exotel_message=message,
        )

    def _wait(self, state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        retry_after = getattr(error, "retry_after", None)
        if retry_after is not None:
            return max(0.0, min(retry_after, self.max_retry_after))
        exponential = self.backoff_base * 2 ** (state.attempt_number - 1)
        return min(self.backoff_max, exponential + random.uniform(0, self.backoff_base / 2))

    def _log_retry(self, state: RetryCallState, what: str) -> None:
        error = state.outcome.exception() if state.outcome else None
        delay = state.next_action.sleep if state.next_action else 0.0
        logger.warning(
            f"Exotel: {what}: {error}; retry {state.attempt_number}/{self.max_retries} in {delay:.2f}s"
        )


def _retryable(error: BaseException) -> bool:
    if isinstance(error, ExotelRateLimited):
        return True
    return isinstance(error, ExotelUnavailable) and error.retryable


def _describe(error: Exception) -> str:
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _snippet(text: str, limit: int = 200) -> str:
    return " ".join(text.split())[:limit]


def _retry_after(value: str | None) -> float | None:
    """Seconds from a `Retry-After` header (delta-seconds, decimals tolerated, or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - time.time())


def exotel_error_message(response: httpx.Response) -> tuple[str | None, str | int | None]:
    """Exotel's reason and code from an error answer: RestException JSON, other JSON, XML or text."""
    text = response.text or ""
    try:
        body = json.loads(text) if text.strip() else None
    except ValueError:
        body = None
    if body is not None:
        return _message_from_json(body)
    xml_message = re.search(r"<Message>\s*(.*?)\s*</Message>", text, re.S | re.I)
    if xml_message:
        xml_code = re.search(r"<Code>\s*(.*?)\s*</Code>", text, re.S | re.I)
        return _snippet(xml_message.group(1)), (xml_code.group(1) if xml_code else None)
    stripped = re.sub(r"<[^>]+>", " ", text)  # an HTML error page
    return (_snippet(stripped) or None), None


def _message_from_json(body: Any) -> tuple[str | None, str | int | None]:
    if isinstance(body, dict):
        for key in ("RestException", "restException", "rest_exception", "Error", "error"):
            inner = body.get(key)
            if isinstance(inner, dict):
                message, code = _message_from_json(inner)
                if message:
                    return message, code
            elif isinstance(inner, str) and inner:
                return _snippet(inner), body.get("Code", body.get("code"))
        code = next((body[k] for k in ("Code", "code", "error_code", "ErrorCode") if k in body), None)
        for key in ("Message", "message", "detail", "description", "error_description", "ErrorMessage"):
            value = body.get(key)
            if isinstance(value, str) and value:
                return _snippet(value), code
        errors = body.get("errors") or body.get("Errors")
        if isinstance(errors, list) and errors:
            return _message_from_json(errors[0])[0] or _snippet(str(errors[0])), code
        return (_snippet(json.dumps(body)) if body else None), code
    if isinstance(body, list) and body:
        return _message_from_json(body[0])
    if isinstance(body, str):
        return _snippet(body) or None, None
    return None, None


def _placed_call(data: Any) -> PlacedCall:
    call = data.get("Call") if isinstance(data, dict) else None
    if call is None and isinstance(data, dict) and "Sid" in data:
        call = data
    if not isinstance(call, dict) or not call.get("Sid"):
        raise ExotelError(f"Exotel's answer has no Call.Sid: {_snippet(json.dumps(data))!r}")
    return PlacedCall(
        sid=str(call["Sid"]),
        status=_text(call.get("Status")),
        to=_text(call.get("To")),
        from_=_text(call.get("From")),
        direction=_text(call.get("Direction")),
        date_created=_text(call.get("DateCreated")),
        raw=call,
    )


# --------------------------------------------------------------------------- status callback

def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return None if text == "" or text.lower() in ("null", "none") else text


def _seconds(value: Any) -> int | None:
    text = _text(value)
    if text is None:
        return None
    try:
        return max(0, int(round(float(text))))
    except (ValueError, OverflowError):
        return None


def _key(name: str) -> str:
    return re.sub(r"[_\-\s]", "", name).lower()


_LEG_KEY = re.compile(r"^legs\[(\d+)\](?:\[([^\]]+)\]|\.(\w+))$", re.I)


def _multipart_pairs(content_type: str, body: bytes) -> list[tuple[str, str]]:
    """Name/value pairs of a multipart/form-data body (the boundary sniffed if not given)."""
    if "boundary=" not in content_type.lower():
        first = body.lstrip().split(b"\r\n", 1)[0].split(b"\n", 1)[0]
        if not first.startswith(b"--"):
            return []
        content_type = f'multipart/form-data; boundary="{first[2:].decode("latin-1").strip()}"'
    message = BytesParser(policy=email_policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode("latin-1") + body
    )
    pairs = []
    for part in message.iter_parts() if message.is_multipart() else ():
        name = part.get_param("name", header="content-disposition")
        if name is None:
            continue
        payload = part.get_payload(decode=True) or b""
        pairs.append((str(name), payload.decode(part.get_content_charset() or "utf-8", errors="replace")))
    return pairs


def _form_fields(pairs: Iterable[tuple[str, str]]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    fields: dict[str, Any] = {}
    legs: dict[int, dict[str, Any]] = {}
    for name, value in pairs:
        match = _LEG_KEY.match(name)
        if match:
            legs.setdefault(int(match.group(1)), {})[match.group(2) or match.group(3)] = value
        elif name not in fields:
            fields[name] = value
    return fields, [legs[i] for i in sorted(legs)]


def parse_status_callback(content_type: str | None, body: bytes | str) -> StatusUpdate:
    """Read one of Exotel's StatusCallback POSTs: form-encoded, multipart/form-data or JSON.

    Raises `InvalidStatusCallback` (a ValueError) for a body without a CallSid or with a
    status it cannot place; answer such a request 400 (Exotel retries non-2xx twice).
    """
    raw = body if isinstance(body, bytes) else (body or "").encode("utf-8")
    text = raw.decode("utf-8", errors="replace")
    kind = (content_type or "").split(";")[0].strip().lower()
    sniffed = text.lstrip()
    is_json = kind.endswith("json") or (not kind.startswith(("application/x-www-form", "multipart/"))
                                        and sniffed.startswith("{"))
    is_multipart = not is_json and (kind.startswith("multipart/") or (
        kind != "application/x-www-form-urlencoded" and sniffed.startswith("--")))
    legs_raw: list[dict[str, Any]] = []
    if is_json:
        try:
            data = json.loads(text)
        except ValueError:
            raise InvalidStatusCallback(f"status callback is not valid JSON: {_snippet(text, 80)!r}") from None
        if not isinstance(data, dict):
            raise InvalidStatusCallback("status callback JSON is not an object")
        fields = dict(data)
    elif is_multipart:
        fields, legs_raw = _form_fields(_multipart_pairs(content_type or "", raw))
    else:
        fields, legs_raw = _form_fields(parse_qsl(text, keep_blank_values=True))
    lookup = {_key(k): v for k, v in fields.items()}

    def get(*names: str) -> Any:
        for name in names:
            if _key(name) in lookup:
                return lookup[_key(name)]
        return None

    legs_value = get("Legs")
    if isinstance(legs_value, str) and legs_value.strip().startswith(("[", "{")):
        try:
            legs_value = json.loads(legs_value)
        except ValueError:
            legs_value = None
    if isinstance(legs_value, dict):  # {"0": {...}} or a single leg
        legs_value = list(legs_value.values()) if all(isinstance(v, dict) for v in legs_value.values()) else [legs_value]
    if isinstance(legs_value, list):
        legs_raw = [leg for leg in legs_value if isinstance(leg, dict)] or legs_raw
    legs = []
    for leg in legs_raw:
        leg_lookup = {_key(k): v for k, v in leg.items()}
        raw_leg_status = _text(leg_lookup.get("status"))
        legs.append(CallLeg(
            status=normalize_status(raw_leg_status) or raw_leg_status,
            on_call_duration=_seconds(leg_lookup.get("oncallduration")),
            answered_by=_text(leg_lookup.get("answeredby")),
            raw=leg,
        ))

    call_sid = _text(get("CallSid", "Sid"))
    if not call_sid:
        raise InvalidStatusCallback("status callback without a CallSid")
    event_type = _text(get("EventType"))
    raw_status = _text(get("Status", "CallStatus"))
    status = normalize_status(raw_status)
    if status is None and raw_status is None and (event_type or "").lower() == "answered":
        status = "in-progress"
    if status is None:
        raise InvalidStatusCallback(f"status callback for {call_sid} with unknown Status {raw_status!r}")
    duration = _seconds(get("ConversationDuration"))
    if duration is None:
        duration = _seconds(get("Duration", "CallDuration"))
    if duration is None and legs:
        duration = legs[0].on_call_duration
    answered_by = _text(get("AnsweredBy")) or next((leg.answered_by for leg in legs if leg.answered_by), None)
    return StatusUpdate(
        call_sid=call_sid,
        status=status,
        raw_status=raw_status,
        event_type=event_type.lower() if event_type else None,
        recording_url=_text(get("RecordingUrl")),
        duration=duration,
        answered_by=answered_by,
        date_updated=_text(get("DateUpdated")),
        date_created=_text(get("DateCreated")),
        start_time=_text(get("StartTime")),
        end_time=_text(get("EndTime")),
        direction=_text(get("Direction")),
        custom_field=_text(get("CustomField")),
        to=_text(get("To", "CallTo")),
        from_=_text(get("From", "CallFrom")),
        legs=legs,
        raw=fields,
    )
