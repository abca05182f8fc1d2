"""A wire-level fake of OpenAI's Chat Completions API, for tests and benchmarks.

It is a real HTTP server on a loopback port, so the real ``openai`` SDK, and
Pipecat's ``OpenAILLMService`` on top of it, talk to it exactly as they would
to api.openai.com::

    async with FakeOpenAI([Reply(text="Hello!"), Reply(tool_calls=[ToolCall("f", {})])]) as fake:
        llm = OpenAILLMService(api_key="test", base_url=fake.base_url, settings=...)

Streaming replies are Server-Sent Events, as OpenAI sends them::

    data: {"object": "chat.completion.chunk", "choices": [{"delta": {"role": "assistant", ...}}]}

    data: {... "delta": {"content": "Hel"} ...}

    data: {... "delta": {"tool_calls": [{"index": 0, "id": "call_..", "type": "function",
                                        "function": {"name": "f", "arguments": ""}}]} ...}

    data: {... "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "{\\"a\\""}}]} ...}

    data: {... "delta": {}, "finish_reason": "tool_calls" ...}

    data: {... "choices": [], "usage": {...}}        (only with stream_options.include_usage)

    data: [DONE]

What a request gets is decided by the ``responder``: a list of replies used in
order, or a function of the request body (sync or async) returning one.
A reply is any of:

- ``Reply(text=..., tool_calls=[ToolCall(...)], ttft_ms=..., inter_chunk_ms=...)``;
  text streams first, then the tool calls;
- ``Text("...", chunk_chars=8)``, a ``str``, a ``ToolCall`` or a list of
  ``ToolCall``: shorthands for a ``Reply``;
- ``Fail(status=500)``: OpenAI's error JSON with that status (``times=N`` in a
  list answers N requests in a row);
- ``Hang(seconds)``: nothing at all, not even headers, for that long.

Mind the SDK's retries: ``AsyncOpenAI`` (and so Pipecat) retries 408, 409,
429 and 5xx twice by default, sleeping 0.5 s, 1 s between attempts unless
the response carries ``retry-after``/``retry-after-ms``. A test that wants a
failure to reach the caller scripts ``Fail(500, times=3, retry_after=0.01)``,
or ``Fail(500, should_retry=False)`` (sends ``x-should-retry: false``).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from bot.simulator.serving import cancel_all, serve_app

__all__ = [
    "FakeOpenAI",
    "Fail",
    "Hang",
    "Reply",
    "RequestTiming",
    "Text",
    "ToolCall",
]


# --------------------------------------------------------------------------- replies


@dataclass
class Text:
    """A text-only reply, streamed ``chunk_chars`` characters per chunk."""

    text: str
    chunk_chars: int = 8


@dataclass
class ToolCall:
    """One function call in a reply.

    ``arguments`` is JSON-encoded and streamed ``chunk_chars`` characters per
    chunk, after a first chunk that carries the id and the name. ``id``
    defaults to a random ``call_...``.
    """

    name: str
    arguments: Mapping[str, Any] = field(default_factory=dict)
    id: str | None = None
    chunk_chars: int = 10


@dataclass
class Reply:
    """A successful completion.

    ``ttft_ms`` and ``inter_chunk_ms``, when ``None``, take the fake's
    defaults. ``text`` may be a ``Text`` to choose its chunk size.
    ``finish_reason`` defaults to ``"tool_calls"`` when there are tool calls
    and ``"stop"`` otherwise; ``usage`` replaces the estimated token counts
    (keys of OpenAI's usage object).
    """

    text: str | Text | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)
    ttft_ms: float | None = None
    inter_chunk_ms: float | None = None
    finish_reason: str | None = None
    usage: Mapping[str, Any] | None = None


@dataclass
class Fail:
    """An error response in OpenAI's shape ``{"error": {"message", "type", "param", "code"}}``.

    ``times``: in a responder list, how many consecutive requests it answers.
    ``retry_after`` (seconds) sets ``retry-after`` and ``retry-after-ms``, which
    the SDK honours when between 0 and 60 s. ``should_retry`` sets
    ``x-should-retry``, which the SDK obeys over its own policy.
    """

    status: int = 500
    times: int = 1
    retry_after: float | None = None
    message: str | None = None
    type: str | None = None
    code: str | None = None
    should_retry: bool | None = None


@dataclass
class Hang:
    """Send nothing, not even headers, for ``seconds``; then answer with ``then``.

    ``then`` defaults to an empty completion. A client that gives up first
    just disconnects, which the fake records (``RequestTiming.disconnected``).
    """

    seconds: float
    then: Reply | Text | str | Fail | None = None


ReplyLike = Reply | Text | str | ToolCall | list | Fail | Hang
Responder = Iterable[ReplyLike] | Callable[[dict[str, Any]], ReplyLike | Awaitable[ReplyLike]] | None


@dataclass
class RequestTiming:
    """When one request arrived and was answered, in ``time.monotonic()`` seconds."""

    arrived: float
    first_byte: float | None = None
    """First byte of the response body (for a stream: the first chunk, sent with the headers)."""
    first_content: float | None = None
    """First chunk that carried text or a tool call (``None`` for an empty reply or an error)."""
    finished: float | None = None
    status: int | None = None
    disconnected: bool = False
    """The client went away (or the fake shut down) before the response was complete."""

    @property
    def ttfb(self) -> float | None:
        """Seconds from arrival to the first body byte."""
        return None if self.first_byte is None else self.first_byte - self.arrived


# --------------------------------------------------------------------------- helpers

_ERROR_TYPES = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "unsupported_country_region_territory"),
    404: ("invalid_request_error", "model_not_found"),
    408: ("timeout", None),
    409: ("conflict", None),
    422: ("invalid_request_error", None),
    429: ("requests", "rate_limit_exceeded"),
    500: ("server_error", None),
    502: ("server_error", None),
    503: ("server_error", None),
}

_ERROR_MESSAGES = {
    400: "Bad request.",
    401: (
        "Incorrect API key provided. "
        "You can find your API key at https://platform.openai.com/account/api-keys."
    ),
    429: "Rate limit reached for requests. Please try again later.",
    500: "The server had an error while processing your request. Sorry about that!",
    503: "The engine is currently overloaded, please try again later.",
}


def _error_body(status: int, message: str | None = None, type_: str | None = None,
                code: str | None = None, param: str | None = None) -> dict[str, Any]:
    default_type, default_code = _ERROR_TYPES.get(
        status, ("server_error" if status >= 500 else "invalid_request_error", None)
    )
    return {
        "error": {
            "message": message or _ERROR_MESSAGES.get(status, f"Error {status}."),
            "type": type_ or default_type,
            "param": param,
            "code": code if code is not None else default_code,
        }
    }


def _split(s: str, size: int) -> list[str]:
    size = max(1, int(size))
    return [s[i : i + size] for i in range(0, len(s), size)]


def _estimate_tokens(s: str) -> int:
    return max(1, (len(s) + 3) // 4) if s else 0


def _normalize(reply: Any) -> Reply | Fail | Hang:
    """Turn any accepted reply shorthand into a Reply, Fail or Hang."""
    if isinstance(reply, (Reply, Fail, Hang)):
        return reply
    if isinstance(reply, (str, Text)):
        return Reply(text=reply)
    if isinstance(reply, ToolCall):
        return Reply(tool_calls=[reply])
    if isinstance(reply, (list, tuple)) and all(isinstance(r, ToolCall) for r in reply):
        return Reply(tool_calls=list(reply))
    raise TypeError(f"FakeOpenAI: not a reply: {reply!r}")


# --------------------------------------------------------------------------- server


class FakeOpenAI:
    """An OpenAI Chat Completions server on 127.0.0.1, scripted by ``responder``.

    Args:
        responder: a list (any iterable) of replies used in request order, or
            ``responder(request_json) -> reply`` (sync or async), or ``None``
            to answer every request with ``default``.
        api_key: the key clients must send as ``Authorization: Bearer ...``
            (401 otherwise); ``None`` accepts any.
        ttft_ms: default delay before the first byte of each reply.
        inter_chunk_ms: default delay between streamed chunks.
        chunk_chars: default characters per text chunk for ``Reply(text=str)``.
        default: the reply once a responder list runs out (or when there is no
            responder). With no default, that request gets a 500 with
            ``x-should-retry: false`` and the problem is added to ``errors``.
        host, port: where to listen; port 0 picks a free one.

    Attributes:
        requests: every parsed request body, in arrival order.
        timings: a ``RequestTiming`` per entry of ``requests``.
        errors: problems on the fake's side (script exhausted, responder raised).
        base_url: ``"http://127.0.0.1:PORT/v1"``, for ``base_url=`` of the clients.
    """

    def __init__(
        self,
        responder: Responder = None,
        *,
        api_key: str | None = "test",
        ttft_ms: float = 0.0,
        inter_chunk_ms: float = 0.0,
        chunk_chars: int = 8,
        default: ReplyLike | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ):
        self.api_key = api_key
        self.ttft_ms = ttft_ms
        self.inter_chunk_ms = inter_chunk_ms
        self.chunk_chars = chunk_chars
        self.default = default
        self.host = host
        self.port = port

        self._callable: Callable[[dict[str, Any]], Any] | None = None
        self._script: deque[list[Any]] = deque()  # [reply, remaining uses]
        if callable(responder):
            self._callable = responder
        elif responder is None:
            if default is None:
                self.default = Reply(text="OK.")
        else:
            if isinstance(responder, (str, Text, Reply, Fail, Hang, ToolCall)):
                raise TypeError("FakeOpenAI: responder must be a list of replies or a callable")
            self.add(*responder)

        self.requests: list[dict[str, Any]] = []
        self.timings: list[RequestTiming] = []
        self.errors: list[str] = []

        self._runner: web.AppRunner | None = None
        self._tasks: set[asyncio.Task] = set()

    # ------------------------------------------------------------------ scripting

    def add(self, *replies: ReplyLike) -> None:
        """Append replies to the script (list mode)."""
        if self._callable is not None:
            raise TypeError("FakeOpenAI: add() needs a list responder, not a callable")
        for reply in replies:
            reply = _normalize(reply)
            times = reply.times if isinstance(reply, Fail) else 1
            if times > 0:
                self._script.append([reply, times])

    @property
    def remaining(self) -> int:
        """Requests the scripted list can still answer."""
        return sum(uses for _, uses in self._script)

    async def _next_reply(self, body: dict[str, Any]) -> Reply | Fail | Hang | None:
        if self._callable is not None:
            result = self._callable(body)
            if inspect.isawaitable(result):
                result = await result
            return _normalize(result)
        if self._script:
            entry = self._script[0]
            entry[1] -= 1
            if entry[1] <= 0:
                self._script.popleft()
            return entry[0]
        if self.default is not None:
            return _normalize(self.default)
        return None

    # ------------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    async def start(self) -> FakeOpenAI:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._track(self._chat_completions))
        app.router.add_get("/v1/models", self._track(self._models))
        self._runner, self.port = await serve_app(
            app, self.host, self.port,
            shutdown_timeout=0.5,
            handler_cancellation=True,  # a client that hangs up cancels its handler
        )
        return self

    async def stop(self) -> None:
        await cancel_all(self._tasks)
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def __aenter__(self) -> FakeOpenAI:
        return await self.start()

    async def __aexit__(self, *exc_info) -> None:
        await self.stop()

    def _track(self, handler):
        async def tracked(request: web.Request) -> web.StreamResponse:
            task = asyncio.current_task()
            if task is not None:
                self._tasks.add(task)
            try:
                return await handler(request)
            finally:
                if task is not None:
                    self._tasks.discard(task)

        return tracked

    # ------------------------------------------------------------------ handlers

    def _authorized(self, request: web.Request) -> bool:
        if self.api_key is None:
            return True
        return request.headers.get("Authorization", "") == f"Bearer {self.api_key}"

    @staticmethod
    def _json_error(status: int, headers: Mapping[str, str] | None = None, **kw) -> web.Response:
        return web.json_response(
            _error_body(status, **kw), status=status, headers=dict(headers or {})
        )

    async def _models(self, request: web.Request) -> web.StreamResponse:
        if not self._authorized(request):
            return self._json_error(401)
        return web.json_response(
            {
                "object": "list",
                "data": [{"id": "gpt-4.1", "object": "model", "created": 0, "owned_by": "fake"}],
            }
        )

    async def _chat_completions(self, request: web.Request) -> web.StreamResponse:
        timing = RequestTiming(arrived=time.monotonic())
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            body = None
        if not isinstance(body, dict):
            timing.status, timing.finished = 400, time.monotonic()
            return self._json_error(
                400, message="We could not parse the JSON body of your request."
            )
        # Append both together, before any await, so the indexes stay aligned.
        self.requests.append(body)
        self.timings.append(timing)

        try:
            response = await self._answer(request, body, timing)
        except asyncio.CancelledError:
            timing.disconnected = True
            timing.finished = time.monotonic()
            raise
        except (ConnectionResetError, ConnectionError):
            timing.disconnected = True
            timing.finished = time.monotonic()
            raise
        timing.finished = time.monotonic()
        if timing.status is None:
            timing.status = response.status
        if timing.first_byte is None:  # a plain JSON answer (an error or a non-stream reply)
            timing.first_byte = timing.finished
        return response

    async def _answer(
        self, request: web.Request, body: dict[str, Any], timing: RequestTiming
    ) -> web.StreamResponse:
        if not self._authorized(request):
            return self._json_error(401)
        if not body.get("model"):
            return self._json_error(
                400, message="you must provide a model parameter", param="model"
            )
        if not isinstance(body.get("messages"), list) or not body["messages"]:
            return self._json_error(
                400, message="'messages' must be a non-empty array", param="messages"
            )

        try:
            reply = await self._next_reply(body)
        except Exception as e:  # the test's responder failed: say so loudly, don't retry
            self.errors.append(f"responder raised {e!r}")
            return self._json_error(
                500, {"x-should-retry": "false"}, message=f"FakeOpenAI responder raised {e!r}"
            )
        if reply is None:
            self.errors.append(f"no scripted reply left for request #{len(self.requests) - 1}")
            return self._json_error(
                500, {"x-should-retry": "false"}, message="FakeOpenAI: no scripted reply left"
            )

        if isinstance(reply, Hang):
            await asyncio.sleep(reply.seconds)
            reply = _normalize(reply.then) if reply.then is not None else Reply(text=None)
            if isinstance(reply, Hang):
                raise TypeError("FakeOpenAI: Hang.then cannot be another Hang")

        if isinstance(reply, Fail):
            headers: dict[str, str] = {}
            if reply.retry_after is not None:
                headers["retry-after"] = f"{reply.retry_after:g}"
                headers["retry-after-ms"] = f"{reply.retry_after * 1000:g}"
            if reply.should_retry is not None:
                headers["x-should-retry"] = "true" if reply.should_retry else "false"
            timing.first_byte = time.monotonic()
            return self._json_error(
                reply.status, headers, message=reply.message, type_=reply.type, code=reply.code
            )

        ttft_ms = self.ttft_ms if reply.ttft_ms is None else reply.ttft_ms
        if ttft_ms > 0:
            await asyncio.sleep(ttft_ms / 1000)

        if body.get("stream"):
            return await self._stream(request, body, reply, timing)
        return self._complete(body, reply, timing)

    # ------------------------------------------------------------------ bodies

    def _text_of(self, reply: Reply) -> tuple[str, int]:
        if isinstance(reply.text, Text):
            return reply.text.text, reply.text.chunk_chars
        return reply.text or "", self.chunk_chars

    def _usage(self, body: dict[str, Any], reply: Reply) -> dict[str, Any]:
        text, _ = self._text_of(reply)
        prompt = _estimate_tokens(json.dumps(body.get("messages", []))) + _estimate_tokens(
            json.dumps(body.get("tools", []))
        )
        completion = _estimate_tokens(text) + sum(
            _estimate_tokens(tc.name + json.dumps(dict(tc.arguments))) for tc in reply.tool_calls
        )
        usage: dict[str, Any] = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }
        if reply.usage:
            usage.update(reply.usage)
            if "total_tokens" not in reply.usage:
                usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        return usage

    @staticmethod
    def _tool_call_ids(reply: Reply) -> list[str]:
        return [tc.id or f"call_{secrets.token_hex(12)}" for tc in reply.tool_calls]

    def _finish_reason(self, reply: Reply) -> str:
        if reply.finish_reason:
            return reply.finish_reason
        return "tool_calls" if reply.tool_calls else "stop"

    def _complete(
        self, body: dict[str, Any], reply: Reply, timing: RequestTiming
    ) -> web.Response:
        text, _ = self._text_of(reply)
        message: dict[str, Any] = {
            "role": "assistant",
            "content": text if (text or not reply.tool_calls) else None,
            "refusal": None,
            "annotations": [],
        }
        if reply.tool_calls:
            message["tool_calls"] = [
                {
                    "id": call_id,
                    "type": "function",
                    "function": {"name": tc.name, "arguments": json.dumps(dict(tc.arguments))},
                }
                for tc, call_id in zip(reply.tool_calls, self._tool_call_ids(reply), strict=False)
            ]
        payload = {
            "id": f"chatcmpl-{secrets.token_hex(12)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body["model"],
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": self._finish_reason(reply),
                }
            ],
            "usage": self._usage(body, reply),
            "service_tier": "default",
            "system_fingerprint": "fp_fake",
        }
        timing.first_byte = timing.first_content = time.monotonic()
        return web.json_response(payload, headers={"x-request-id": f"req_{secrets.token_hex(8)}"})

    async def _stream(
        self, request: web.Request, body: dict[str, Any], reply: Reply, timing: RequestTiming
    ) -> web.StreamResponse:
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        completion_id = f"chatcmpl-{secrets.token_hex(12)}"
        created = int(time.time())
        model = body["model"]
        gap_ms = self.inter_chunk_ms if reply.inter_chunk_ms is None else reply.inter_chunk_ms

        def chunk(delta: dict[str, Any] | None, finish_reason: str | None = None,
                  usage: dict[str, Any] | None = None) -> bytes:
            obj: dict[str, Any] = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "service_tier": "default",
                "system_fingerprint": "fp_fake",
                "choices": []
                if delta is None
                else [
                    {
                        "index": 0,
                        "delta": delta,
                        "logprobs": None,
                        "finish_reason": finish_reason,
                    }
                ],
            }
            if include_usage:
                obj["usage"] = usage
            return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"

        # Build the chunks that carry content; the role chunk rides with the first.
        content_chunks: list[bytes] = []
        text, chunk_chars = self._text_of(reply)
        for piece in _split(text, chunk_chars):
            content_chunks.append(chunk({"content": piece}))
        for index, (tc, call_id) in enumerate(zip(reply.tool_calls, self._tool_call_ids(reply), strict=False)):
            content_chunks.append(
                chunk(
                    {
                        "tool_calls": [
                            {
                                "index": index,
                                "id": call_id,
                                "type": "function",
                                "function": {"name": tc.name, "arguments": ""},
                            }
                        ]
                    }
                )
            )
            for piece in _split(json.dumps(dict(tc.arguments)), tc.chunk_chars):
                content_chunks.append(
                    chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
                )

        role_delta: dict[str, Any] = {"role": "assistant", "content": "", "refusal": None}
        if not text and reply.tool_calls:
            role_delta["content"] = None

        response = web.StreamResponse(
            status=200,
            headers={
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-cache",
                "x-request-id": f"req_{secrets.token_hex(8)}",
            },
        )
        await response.prepare(request)
        timing.status = 200

        first = chunk(role_delta)
        if content_chunks:
            first += content_chunks.pop(0)
            timing.first_content = time.monotonic()
        timing.first_byte = timing.first_content or time.monotonic()
        await response.write(first)

        for data in content_chunks:
            await asyncio.sleep(gap_ms / 1000 if gap_ms > 0 else 0)
            await response.write(data)

        tail = chunk({}, self._finish_reason(reply))
        if include_usage:
            tail += chunk(None, usage=self._usage(body, reply))
        tail += b"data: [DONE]\n\n"
        await response.write(tail)
        await response.write_eof()
        return response
