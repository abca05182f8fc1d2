"""An async client for Exotel's Voice v1 REST API (outbound calls).

    async with ExotelClient(sid, api_key, api_token, base_url=MUMBAI_BASE_URL) as exotel:
        call = await exotel.place_call(
            to="98765 43210", caller_id="08047181234", app_id="123456",
            status_callback="https://bot.example.com/exotel/status", custom_field="lead=42",
            time_limit=900, time_out=30, record=True,
        )

`place_call` POSTs `/v1/Accounts/{sid}/Calls/connect.json` (form-encoded, HTTP Basic with
API key : API token) so that Exotel rings the customer (`From`) from the ExoPhone
(`CallerId`) and, once answered, runs the flow (`Url`) whose Voicebot applet opens the media
socket to the bot. `get_call` GETs one call by its Sid; `find_calls` GETs Exotel's Bulk Call
Details (`/Calls.json?From=...&DateCreated=gte:...`) for the calls to one customer.
Errors (bot/exotel/errors.py) all derive from `ExotelError`:

* 401/403 -> `ExotelAuthError` (never retried);
* 429 -> retried with exponential backoff (honouring `Retry-After`), then `ExotelRateLimited`;
* other 4xx -> `ExotelRequestError` with Exotel's own message;
* 5xx and connection failures -> retried, then `ExotelUnavailable`.

A POST whose request may already have reached Exotel (the connection dropped or timed out
*after* sending) is not retried: Exotel has no idempotency key, and a retry could ring the
customer twice. It raises `ExotelUnavailable` with `maybe_placed=True`; the status callback
(keyed by `CustomField`, read by bot/exotel/callbacks.py) tells whether the call happened.

The API token is never logged nor put in an error message or repr; phone numbers in logs
are masked (`mask_phone`).
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote

import httpx
from loguru import logger
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
)

from bot.config.phone import mask_phone, normalize_indian_phone
from bot.config.settings import EXOTEL_BASE_URLS
from bot.exotel.call_status import exotel_status
from bot.exotel.errors import (
    AUTH_ERROR_MESSAGE,
    ExotelAuthError,
    ExotelError,
    ExotelNotSent,
    ExotelRateLimited,
    ExotelRequestError,
    ExotelUnavailable,
    ExotelValidationError,
    exotel_error_message,
)
from bot.exotel.values import snippet, text

# Exotel's two clusters; the addresses are settings' defaults (EXOTEL_REGION), defined there once.
SINGAPORE_BASE_URL = EXOTEL_BASE_URLS["singapore"]
MUMBAI_BASE_URL = EXOTEL_BASE_URLS["mumbai"]

MAX_CUSTOM_FIELD = 128
MAX_TIME_LIMIT = 14_400
STATUS_CALLBACK_EVENTS = ("terminal", "answered")
# Exotel writes and reads its call times (DateCreated, StartTime, ...) as IST wall-clock text.
IST = timezone(timedelta(hours=5, minutes=30))
FIND_CALLS_PAGE_SIZE = 50  # one page is read; more than this many calls to one number is not expected


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
        return exotel_status(self.status)

    def __repr__(self) -> str:  # numbers masked, for logs
        return (
            f"PlacedCall(sid={self.sid!r}, status={self.status!r}, to={mask_phone(self.to)!r}, "
            f"from_={mask_phone(self.from_)!r}, direction={self.direction!r}, "
            f"date_created={self.date_created!r})"
        )


# --------------------------------------------------------------------------- client


class ExotelClient:
    """Exotel Voice v1: place an outbound call into a flow, look a call up, find calls to a number."""

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
        send_by: float | None = None,
    ) -> PlacedCall:
        """Ring `to` from `caller_id`; when answered, Exotel runs flow `app_id`. `send_by` (the
        event loop's clock): no attempt, first or retry, starts after it (ExotelNotSent)."""
        form = self.build_call_form(
            to=to, caller_id=caller_id, app_id=app_id, status_callback=status_callback,
            custom_field=custom_field, time_limit=time_limit, time_out=time_out, record=record,
            recording_channels=recording_channels, status_callback_events=status_callback_events,
        )
        what = f"call to {mask_phone(form['From'])}"
        logger.info(f"Exotel: placing {what} from {mask_phone(form['CallerId'])} into flow {app_id}")
        data = await self._request("POST", f"{self.calls_url}/connect.json", what, form=form, send_by=send_by)
        call = _placed_call(data)
        logger.info(f"Exotel: {what} placed: sid={call.sid} status={call.status}")
        return call

    async def get_call(self, sid: str) -> PlacedCall:
        """Exotel's view of call `sid` (status, duration, recording, ...)."""
        if not sid or not str(sid).strip():
            raise ExotelValidationError("call sid is empty")
        url = f"{self.calls_url}/{quote(str(sid).strip(), safe='')}.json"
        return _placed_call(await self._request("GET", url, f"lookup of call {sid}"))

    async def find_calls(
        self, to: str, created_after: datetime, created_before: datetime | None = None,
    ) -> list[PlacedCall]:
        """Exotel's calls to customer `to` created in [created_after, created_before], newest first.

        Why: a campaign worker that died in the middle of its dial request leaves a lead whose
        request may or may not have reached Exotel; the reconciler asks for the calls to that
        number since the claim, adopts the call if there is one, and dials again only if none.

        Bulk Call Details, one page (at most FIND_CALLS_PAGE_SIZE). `to` is the customer as given
        to `place_call`, whom Exotel rings first and records as `From`: the `From` filter is sent.
        Times go as IST, widened to whole seconds. Exotel's docs say ongoing calls are not listed:
        an empty answer while a call could still be ringing does not prove none was placed.
        """
        customer = normalize_indian_phone(to, self.default_region)  # InvalidPhoneNumber (a ValueError)
        for name, moment in (("created_after", created_after), ("created_before", created_before)):
            if (moment is not None or name == "created_after") and not _aware(moment):
                raise ExotelValidationError(f"{name} must be a timezone-aware datetime, got {moment!r}")
        if created_before is not None and created_before < created_after:
            raise ExotelValidationError("created_before is earlier than created_after")
        window = f"gte:{_exotel_time(created_after)}"
        if created_before is not None:
            window += f";lte:{_exotel_time(created_before, round_up=True)}"
        params = {
            "From": customer,
            "DateCreated": window,
            "PageSize": str(FIND_CALLS_PAGE_SIZE),
            "SortBy": "DateCreated:desc",
        }
        what = f"search for calls to {mask_phone(customer)} created {window}"
        data = await self._request("GET", f"{self.calls_url}.json", what, params=params)
        listed = data.get("Calls") if isinstance(data, dict) else None
        if not isinstance(listed, list):
            raise ExotelError(f"Exotel's answer to the {what} has no Calls list: {snippet(json.dumps(data))!r}")
        calls = [_placed_call(item) for item in listed[:FIND_CALLS_PAGE_SIZE]]
        mine = [c for c in calls if _last10(customer) in (_last10(c.from_), _last10(c.to))]
        if len(mine) < len(calls):  # Exotel ignored the filter: never adopt another number's call
            logger.warning(f"Exotel: {what}: dropped {len(calls) - len(mine)} call(s) to other numbers")
        metadata = data.get("Metadata")
        more = isinstance(metadata, dict) and text(metadata.get("NextPageUri"))
        logger.info(f"Exotel: {what}: {len(mine)} found" + (" (more pages not read)" if more else ""))
        return mine

    # ------------------------------------------------------------------ transport

    async def _request(
        self, method: str, url: str, what: str, form: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None, send_by: float | None = None,
    ) -> Any:
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
                    if send_by is not None and asyncio.get_running_loop().time() > send_by:
                        raise ExotelNotSent(f"Exotel: {what} not sent: its time to leave had passed "
                                            f"(attempt {attempts})")
                    return await self._once(method, url, what, form, params)
        except ExotelError as error:
            error.attempts = attempts
            if isinstance(error, (ExotelRateLimited, ExotelUnavailable)) and attempts > 1:
                error.message = f"{error.message} (gave up after {attempts} attempts)"
                error.args = (error.message,)
            raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def _once(
        self, method: str, url: str, what: str, form: Mapping[str, str] | None,
        params: Mapping[str, str] | None = None,
    ) -> Any:
        try:
            response = await self._http.request(
                method, url, data=dict(form) if form is not None else None,
                params=dict(params) if params is not None else None, auth=self._auth,
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
                    f"Exotel answered {what} with {status} but not JSON: {snippet(response.text)!r}",
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
    said = str(error)
    return f"{type(error).__name__}: {said}" if said else type(error).__name__


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


def _exotel_time(moment: datetime, round_up: bool = False) -> str:
    """`moment` as Exotel's IST `YYYY-MM-DD HH:MM:SS`, to the whole second (up if `round_up`)."""
    ist = moment.astimezone(IST)
    if round_up and ist.microsecond:
        ist += timedelta(seconds=1)
    return ist.strftime("%Y-%m-%d %H:%M:%S")


def _aware(moment: Any) -> bool:
    return isinstance(moment, datetime) and moment.utcoffset() is not None


def _last10(number: str | None) -> str:
    return "".join(c for c in number or "" if c.isdigit())[-10:]


def _placed_call(data: Any) -> PlacedCall:
    call = data.get("Call") if isinstance(data, dict) else None
    if call is None and isinstance(data, dict) and "Sid" in data:
        call = data
    if not isinstance(call, dict) or not call.get("Sid"):
        raise ExotelError(f"Exotel's answer has no Call.Sid: {snippet(json.dumps(data))!r}")
    return PlacedCall(
        sid=str(call["Sid"]),
        status=text(call.get("Status")),
        to=text(call.get("To")),
        from_=text(call.get("From")),
        direction=text(call.get("Direction")),
        date_created=text(call.get("DateCreated")),
        raw=call,
    )

