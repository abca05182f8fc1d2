"""OpenAI chat completions for a campaign (any OpenAI-compatible server via OPENAI_BASE_URL).

Pipecat's OpenAILLMService makes a new AsyncOpenAI client (and connection pool) per call;
here every call in a process shares one per event loop, so the TLS connection to the
provider stays warm between calls. The SDK retries 429/5xx/connection errors with backoff
(`llm.retries`); `llm.timeout_secs` bounds a stalled request, after which the call apologises.
"""

from __future__ import annotations

import asyncio
from functools import cached_property
from typing import Any

import httpx
from loguru import logger
from openai import AsyncOpenAI, DefaultAsyncHttpxClient, NotGiven, Omit, Timeout
from openai.resources.chat import AsyncChat
from openai.resources.chat.completions import AsyncCompletions
from pipecat.services.openai.llm import OpenAILLMService

from bot.config.campaigns import LLMConfig
from bot.config.settings import Settings
from pipelines.compat import openai_sdk
from pipelines.compat.openai_sdk import LEAN_BODY_KEYS, REQUEST_OPTION_KEYS

_clients: dict[tuple, AsyncOpenAI] = {}


class LeanCompletions(AsyncCompletions):
    """chat.completions whose streamed create() skips the SDK's request transform.

    The SDK walks every request body against its TypedDicts before sending it (aliases,
    date and file formats), ~3.4 ms of event-loop CPU for a call's system prompt, history
    and tool schemas, on every turn, on the path to the LLM's first token. Pipecat's bodies
    are plain JSON (what the transform would return unchanged, less the NOT_GIVEN fields:
    tests/test_conversation.py checks that), so they are posted as they are, through the
    SDK's own client (auth, retries, timeouts, stream parsing; pipelines/compat/openai_sdk.py).
    If this SDK version's internals do not fit, the SDK's create() is used (start-up says so;
    a request refused by them, with a warning)."""

    async def create(self, **params: Any):
        body = lean_body(params)
        if body is None or not openai_sdk.lean_path_available():
            return await super().create(**params)
        try:
            return await openai_sdk.post_streamed_chat(self, body, params)
        except TypeError as error:  # another SDK version: its internals take other arguments
            logger.warning(f"OpenAI SDK internals changed ({error}); using its create()")
            return await super().create(**params)


def lean_body(params: dict[str, Any]) -> dict[str, Any] | None:
    """The JSON body for a streamed create(**params), or None if it needs the SDK's transform."""
    if params.get("stream") is not True or not set(params) <= LEAN_BODY_KEYS.union(REQUEST_OPTION_KEYS):
        return None
    return {k: v for k, v in params.items() if k in LEAN_BODY_KEYS and not isinstance(v, (NotGiven, Omit))}


class LeanAsyncOpenAI(AsyncOpenAI):
    """AsyncOpenAI whose chat.completions.create() posts Pipecat's streamed requests as they are."""

    @cached_property
    def chat(self) -> AsyncChat:
        return openai_sdk.chat_with_completions(self, LeanCompletions(self))


def shared_openai_client(settings: Settings, timeout_secs: float, retries: int) -> AsyncOpenAI:
    """One client per (event loop, endpoint, key, limits) in this process."""
    assert settings.openai_api_key is not None
    key = (id(asyncio.get_running_loop()), settings.openai_base_url,
           settings.openai_api_key.get_secret_value(), timeout_secs, retries)
    client = _clients.get(key)
    if client is None:
        client = _clients[key] = LeanAsyncOpenAI(
            api_key=settings.openai_api_key.get_secret_value(),
            base_url=settings.openai_base_url,
            timeout=Timeout(timeout_secs, connect=min(3.0, timeout_secs)),  # the SDK's own httpx
            max_retries=retries,
            http_client=DefaultAsyncHttpxClient(
                # the SDK's client reads these numbers off any httpx Limits
                limits=httpx.Limits(max_keepalive_connections=100, max_connections=1000)  # type: ignore[arg-type]
            ),
        )
    return client


class SharedClientOpenAILLMService(OpenAILLMService):
    """OpenAILLMService on a shared, pre-configured AsyncOpenAI client."""

    def __init__(self, *, client: AsyncOpenAI, **kwargs):
        self._shared_client = client
        super().__init__(api_key="unused", **kwargs)

    def create_client(self, *args, **kwargs) -> AsyncOpenAI:
        return self._shared_client


def build_openai_llm(config: LLMConfig, settings: Settings, system_prompt: str) -> OpenAILLMService:
    """The campaign's model, temperature and token budget, on the shared client."""
    return SharedClientOpenAILLMService(
        client=shared_openai_client(settings, config.timeout_secs, config.retries),
        settings=OpenAILLMService.Settings(
            model=config.model,
            temperature=config.temperature,
            max_tokens=config.max_tokens,
            system_instruction=system_prompt,
        ),
    )
