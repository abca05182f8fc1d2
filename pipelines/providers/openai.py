"""OpenAI chat completions for a campaign (any OpenAI-compatible server via OPENAI_BASE_URL).

Pipecat's OpenAILLMService makes a new AsyncOpenAI client (and connection pool) per call;
here every call in a process shares one per event loop, so the TLS connection to the
provider stays warm between calls. The SDK retries 429/5xx/connection errors with backoff
(`llm.retries`); `llm.timeout_secs` bounds a stalled request, after which the call apologises.
"""

from __future__ import annotations

import asyncio

import httpx
from openai import AsyncOpenAI, DefaultAsyncHttpxClient

from pipecat.services.openai.llm import OpenAILLMService

from bot.campaigns import LLMConfig
from bot.settings import Settings

_clients: dict[tuple, AsyncOpenAI] = {}


def shared_openai_client(settings: Settings, timeout_secs: float, retries: int) -> AsyncOpenAI:
    """One client per (event loop, endpoint, key, limits) in this process."""
    assert settings.openai_api_key is not None
    key = (id(asyncio.get_running_loop()), settings.openai_base_url,
           settings.openai_api_key.get_secret_value(), timeout_secs, retries)
    client = _clients.get(key)
    if client is None:
        client = _clients[key] = AsyncOpenAI(
            api_key=settings.openai_api_key.get_secret_value(),
            base_url=settings.openai_base_url,
            timeout=httpx.Timeout(timeout_secs, connect=min(3.0, timeout_secs)),
            max_retries=retries,
            http_client=DefaultAsyncHttpxClient(
                limits=httpx.Limits(max_keepalive_connections=100, max_connections=1000)
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
