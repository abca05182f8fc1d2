"""Every use of a private name of the OpenAI SDK (openai), and the list of them (NEEDS).

The lean path for Pipecat's streamed chat requests (pipelines/providers/openai.py) posts the
body as it is, skipping the SDK's per-request transform, through the SDK's own request
machinery: `make_request_options` and a resource's `_post`, both private. Everything here has
a working fallback: when this SDK version lacks them (or they take other arguments) the
request goes through the SDK's public `chat.completions.create()`. The private import is
inside a try, so the pipeline builder imports whatever the SDK's internals look like.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable
from typing import Any

from openai import NOT_GIVEN, AsyncOpenAI, AsyncStream
from openai.resources.chat import AsyncChat
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from pipelines.compat import Missing, Need
from pipelines.compat import check as check_needs

try:
    from openai._base_client import make_request_options
except Exception:  # another SDK version: no lean path (see lean_path_available)
    make_request_options = None  # type: ignore[assignment]

DISTRIBUTION = "openai"

# What a streamed chat completion may carry for the lean path (the JSON body), and the
# create() keywords that are request options rather than body; anything else (images,
# audio, a response_format to validate) goes through the SDK's own create().
LEAN_BODY_KEYS = frozenset({
    "model", "stream", "stream_options", "messages", "tools", "tool_choice", "temperature", "top_p",
    "max_tokens", "max_completion_tokens", "frequency_penalty", "presence_penalty", "seed",
    "service_tier", "parallel_tool_calls", "user", "stop",
})
REQUEST_OPTION_KEYS = ("extra_headers", "extra_query", "extra_body", "timeout")

_CREATE = "streamed chat requests go through the SDK's create() (~3 ms more per turn)"

NEEDS: tuple[Need, ...] = (
    Need("openai._base_client", "make_request_options", accepts=(*REQUEST_OPTION_KEYS, "security"),
         fallback=_CREATE),
    Need("openai._resource:AsyncAPIResource", "_post", assigned=True, fallback=_CREATE),
    Need("openai._base_client:AsyncAPIClient", "post", accepts=("cast_to", "body", "options", "stream", "stream_cls"),
         fallback=_CREATE),
    Need("openai.resources.chat:AsyncChat", "completions", kind=functools.cached_property, fallback=_CREATE),
    Need("openai.resources.chat.completions:AsyncCompletions", "create",
         accepts=(*sorted(LEAN_BODY_KEYS), *REQUEST_OPTION_KEYS), fallback=_CREATE),
)


def check(needs: tuple[Need, ...] = NEEDS) -> list[Missing]:
    """What the installed OpenAI SDK no longer has of `needs`."""
    return check_needs(needs)


@functools.cache
def lean_path_available() -> bool:
    return make_request_options is not None and not check()


class LeanPathUnavailable(TypeError):
    """This SDK's internals do not fit the lean path: use its create()."""


def chat_with_completions(client: AsyncOpenAI, completions: Any) -> AsyncChat:
    """`client.chat` whose `completions` is `completions` (the SDK's own when the lean path
    is unavailable)."""
    chat = AsyncChat(client)
    if lean_path_available():
        chat.__dict__["completions"] = completions  # the cached_property's slot
    return chat


def post_streamed_chat(completions: Any, body: dict[str, Any], params: dict[str, Any]) -> Awaitable[Any]:
    """POST a streamed chat completion's `body` as it is, through `completions`'s client
    (auth, retries, timeouts, stream parsing), with create()'s request options from `params`.
    LeanPathUnavailable (a TypeError) if this SDK has no such path."""
    post = getattr(completions, "_post", None)
    if make_request_options is None or post is None:
        raise LeanPathUnavailable("the OpenAI SDK has no make_request_options or _post")
    options = make_request_options(
        extra_headers=params.get("extra_headers"), extra_query=params.get("extra_query"),
        extra_body=params.get("extra_body"), timeout=params.get("timeout", NOT_GIVEN),
        security={"bearer_auth": True},
    )
    return post("/chat/completions", body=body, options=options, cast_to=ChatCompletion,
                stream=True, stream_cls=AsyncStream[ChatCompletionChunk])
