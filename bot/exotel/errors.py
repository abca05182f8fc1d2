"""What can go wrong talking to Exotel, and Exotel's own reason read from an error answer.

Errors all derive from `ExotelError`:

* 401/403 -> `ExotelAuthError` (never retried);
* 429 on every attempt -> `ExotelRateLimited`;
* other 4xx -> `ExotelRequestError` with Exotel's own message;
* 5xx and connection failures on every attempt -> `ExotelUnavailable`;
* refused before anything was sent -> `ExotelValidationError`.

Exotel answers errors as RestException JSON, other JSON, XML or an HTML page, depending on
the endpoint and the failure; `exotel_error_message` finds the reason in any of them.
"""

from __future__ import annotations

import json
import re
from typing import Any

import httpx

from bot.exotel.values import snippet

AUTH_ERROR_MESSAGE = (
    "Exotel rejected the credentials (EXOTEL_API_KEY / EXOTEL_API_TOKEN / EXOTEL_ACCOUNT_SID)"
)


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


class ExotelNotSent(ExotelError):
    """The request was not sent (again): its `send_by` time had passed before this attempt.
    A campaign's dial is counted from its grant, so a late retry could break Exotel's limit."""


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
        return snippet(xml_message.group(1)), (xml_code.group(1) if xml_code else None)
    stripped = re.sub(r"<[^>]+>", " ", text)  # an HTML error page
    return (snippet(stripped) or None), None


def _message_from_json(body: Any) -> tuple[str | None, str | int | None]:
    if isinstance(body, dict):
        for key in ("RestException", "restException", "rest_exception", "Error", "error"):
            inner = body.get(key)
            if isinstance(inner, dict):
                message, code = _message_from_json(inner)
                if message:
                    return message, code
            elif isinstance(inner, str) and inner:
                return snippet(inner), body.get("Code", body.get("code"))
        code = next((body[k] for k in ("Code", "code", "error_code", "ErrorCode") if k in body), None)
        for key in ("Message", "message", "detail", "description", "error_description", "ErrorMessage"):
            value = body.get(key)
            if isinstance(value, str) and value:
                return snippet(value), code
        errors = body.get("errors") or body.get("Errors")
        if isinstance(errors, list) and errors:
            return _message_from_json(errors[0])[0] or snippet(str(errors[0])), code
        return (snippet(json.dumps(body)) if body else None), code
    if isinstance(body, list) and body:
        return _message_from_json(body[0])
    if isinstance(body, str):
        return snippet(body) or None, None
    return None, None
