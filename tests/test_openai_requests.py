"""The OpenAI requests the agent sends: Pipecat's streamed chat bodies go out as the SDK would
have sent them, without the SDK's per-request transform (pipelines/providers/openai.py)."""

from __future__ import annotations

import pytest
from openai._utils._transform import async_maybe_transform
from openai.types.chat.completion_create_params import CompletionCreateParamsStreaming
from pipecat.processors.aggregators.llm_context import LLMContext

from bot.config.campaigns import load_campaign
from bot.config.settings import PROJECT_ROOT, load_settings
from pipelines.providers.openai import LeanCompletions, build_openai_llm, lean_body
from pipelines.tools import tools_schema


async def pipecat_params() -> dict:
    """What BaseOpenAILLMService.get_chat_completions passes to create(): a conversation with
    a tool call and its result, the campaign's tools."""
    campaign = load_campaign(PROJECT_ROOT / "configs" / "real_estate.yaml")
    settings = load_settings(_env_file=None, openai_api_key="test", openai_base_url="http://127.0.0.1:9/v1")
    llm = build_openai_llm(campaign.llm, settings, "You are Priya. Ask about the budget.")
    context = LLMContext(tools=tools_schema(campaign))
    context.add_message({"role": "assistant", "content": "Hello Rahul, got a minute?"})
    context.add_message({"role": "user", "content": "Yes, my budget is eighty lakhs."})
    context.add_message({"role": "assistant", "tool_calls": [{
        "id": "call_1", "type": "function",
        "function": {"name": "save_lead_details", "arguments": '{"budget": "80 lakhs"}'}}]})
    context.add_message({"role": "tool", "tool_call_id": "call_1", "content": '{"saved": ["budget"]}'})
    invocation = await llm.get_llm_adapter().get_llm_invocation_params(
        context, system_instruction="You are Priya. Ask about the budget.", convert_developer_to_user=False)
    return llm.build_chat_completion_params(invocation)


async def test_pipecat_bodies_go_out_as_the_sdk_would_send_them():
    params = await pipecat_params()
    body = lean_body(params)
    assert body is not None, f"not on the lean path: {sorted(params)}"
    sdk = await async_maybe_transform({k: v for k, v in params.items()}, CompletionCreateParamsStreaming)
    assert body == sdk
    assert body["stream"] is True and body["tools"] and body["messages"][0]["role"] == "system"


@pytest.mark.parametrize("extra", [{"stream": False}, {"response_format": {"type": "json_object"}},
                                   {"audio": {"voice": "alloy", "format": "wav"}}])
async def test_anything_else_goes_through_the_sdk(extra):
    params = {**(await pipecat_params()), **extra}
    assert lean_body(params) is None


def test_the_shared_client_uses_the_lean_completions():
    from pipelines.providers.openai import LeanAsyncOpenAI

    client = LeanAsyncOpenAI(api_key="test", base_url="http://127.0.0.1:9/v1")
    assert isinstance(client.chat.completions, LeanCompletions)


async def test_sdk_internals_that_do_not_fit_fall_back_to_create(monkeypatch):
    """If this SDK's _post takes other arguments, the request goes through its own create()."""
    from pipelines.providers import openai as lean

    client = lean.LeanAsyncOpenAI(api_key="test", base_url="http://127.0.0.1:9/v1")
    completions = client.chat.completions
    calls: list[str] = []

    async def changed_post(*args, **kwargs):
        raise TypeError("_post() got an unexpected keyword argument 'stream_cls'")

    async def sdk_create(self, **params):
        calls.append("create")
        return "stream"

    monkeypatch.setattr(completions, "_post", changed_post)
    monkeypatch.setattr(lean.AsyncCompletions, "create", sdk_create)
    assert await completions.create(**(await pipecat_params())) == "stream"
    assert calls == ["create"]
