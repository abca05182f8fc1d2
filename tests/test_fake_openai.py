"""FakeOpenAI against the real clients: the ``openai`` SDK and Pipecat's OpenAILLMService."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Sequence

import httpx
import openai
import pytest
from pipecat.adapters.llm.schemas.function_schema import FunctionSchema
from pipecat.adapters.llm.schemas.tools_schema import ToolsSchema
from pipecat.frames.frames import (
    EndFrame,
    ErrorFrame,
    Frame,
    FunctionCallResultFrame,
    LLMContextAssistantTurnFrame,
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    StartFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import LLMContextAggregatorPair
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.services.llm_service import FunctionCallParams
from pipecat.services.openai.llm import OpenAILLMService
from pipecat.tests.utils import run_test
from pipecat.workers.runner import WorkerRunner

from testing.fakes.openai_chat import Fail, FakeOpenAI, Hang, Reply, Text, ToolCall

MODEL = "gpt-4.1-mini"
USER = [{"role": "user", "content": "Hi, I'm Asha from Pune."}]

LEAD_TOOL = FunctionSchema(
    name="save_lead_details",
    description="Save the caller's details.",
    properties={
        "name": {"type": "string", "description": "Caller's name"},
        "city": {"type": "string"},
        "budget_lakh": {"type": "number"},
    },
    required=["name", "city"],
)
LEAD_ARGS = {"name": "Asha Kulkarni", "city": "Pune", "budget_lakh": 42.5}


_llms: list[OpenAILLMService] = []


def make_llm(fake: FakeOpenAI, **kwargs) -> OpenAILLMService:
    llm = OpenAILLMService(
        api_key="test",
        base_url=fake.base_url,
        settings=OpenAILLMService.Settings(model=MODEL, temperature=0.2, max_tokens=128),
        **kwargs,
    )
    _llms.append(llm)
    return llm


@pytest.fixture(autouse=True)
async def _close_llm_clients():
    """Pipecat never closes the AsyncOpenAI client it creates; close it so no socket leaks."""
    yield
    while _llms:
        await _llms.pop()._client.close()


def texts(frames: Sequence[Frame]) -> str:
    return "".join(f.text for f in frames if isinstance(f, LLMTextFrame))


# ----------------------------------------------------------------------------- harness


class _Tap(FrameProcessor):
    def __init__(self, direction: FrameDirection, sink: Callable[[Frame], None]):
        super().__init__(enable_direct_mode=True)
        self._direction = direction
        self._sink = sink

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if direction == self._direction and not isinstance(frame, (StartFrame, EndFrame)):
            self._sink(frame)
        await self.push_frame(frame, direction)


async def run_until(
    processors: list[FrameProcessor],
    frames: Sequence[Frame],
    until: Callable[[list[Frame], list[Frame]], bool],
    timeout: float = 5.0,
) -> tuple[list[Frame], list[Frame]]:
    """Like pipecat's run_test, but sends EndFrame only once ``until(down, up)`` holds.

    Tool calls run in tasks of their own and re-inference comes back upstream
    from the aggregator, so an EndFrame sent straight after the input would race them.
    """
    down: list[Frame] = []
    up: list[Frame] = []
    done = asyncio.Event()

    def collect(into: list[Frame]) -> Callable[[Frame], None]:
        def sink(frame: Frame) -> None:
            into.append(frame)
            if until(down, up):
                done.set()

        return sink

    pipeline = Pipeline(
        [
            _Tap(FrameDirection.UPSTREAM, collect(up)),
            *processors,
            _Tap(FrameDirection.DOWNSTREAM, collect(down)),
        ]
    )
    worker = PipelineWorker(pipeline, cancel_on_idle_timeout=False)
    started = asyncio.Event()

    @worker.event_handler("on_pipeline_started")
    async def _started(_worker, _frame):
        started.set()

    timed_out = False

    async def drive():
        nonlocal timed_out
        await asyncio.wait_for(started.wait(), timeout=2.0)
        for frame in frames:
            await worker.queue_frame(frame)
        try:
            await asyncio.wait_for(done.wait(), timeout=timeout)
        except TimeoutError:
            timed_out = True
        await worker.queue_frame(EndFrame())

    runner = WorkerRunner()
    await runner.add_workers(worker)
    await asyncio.wait_for(asyncio.gather(runner.run(), drive()), timeout=timeout + 5)
    assert not timed_out, f"condition not met; down={[type(f).__name__ for f in down]}"
    return down, up


# ----------------------------------------------------------------------------- raw SDK


async def test_sdk_streams_text_with_usage():
    async with FakeOpenAI([Reply(text="Namaste! How can I help you today?")]) as fake:
        client = openai.AsyncOpenAI(base_url=fake.base_url, api_key="test")
        stream = await client.chat.completions.create(
            model=MODEL, messages=USER, stream=True, stream_options={"include_usage": True}
        )
        chunks = [c async for c in stream]
        await client.close()

    content = [c.choices[0].delta.content for c in chunks if c.choices]
    content = [piece for piece in content if piece]
    assert "".join(content) == "Namaste! How can I help you today?"
    assert len(content) == 5  # 8 characters a chunk by default
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens > 0
    assert all(c.model == MODEL for c in chunks)


async def test_sdk_streams_tool_call_arguments_in_pieces():
    reply = Reply(
        text="Let me note that.",
        tool_calls=[
            ToolCall("save_lead_details", LEAD_ARGS, id="call_lead1", chunk_chars=7),
            ToolCall("end_call", {}),
        ],
    )
    async with FakeOpenAI([reply]) as fake:
        client = openai.AsyncOpenAI(base_url=fake.base_url, api_key="test")
        stream = await client.chat.completions.create(model=MODEL, messages=USER, stream=True)
        text, calls, finish, arg_pieces = "", {}, None, 0
        async for chunk in stream:
            delta = chunk.choices[0].delta
            text += delta.content or ""
            for tc in delta.tool_calls or []:
                call = calls.setdefault(tc.index, {"id": None, "name": "", "arguments": ""})
                if tc.id:
                    call["id"] = tc.id
                    assert tc.type == "function"
                if tc.function.name:
                    call["name"] += tc.function.name
                if tc.function.arguments:
                    call["arguments"] += tc.function.arguments
                    arg_pieces += 1
            finish = chunk.choices[0].finish_reason or finish
        await client.close()

    assert text == "Let me note that."
    assert finish == "tool_calls"
    assert calls[0]["id"] == "call_lead1" and calls[0]["name"] == "save_lead_details"
    assert json.loads(calls[0]["arguments"]) == LEAD_ARGS
    assert calls[1]["name"] == "end_call" and json.loads(calls[1]["arguments"]) == {}
    assert calls[1]["id"].startswith("call_")
    assert arg_pieces > 5  # really split across chunks


async def test_sse_wire_format():
    async with FakeOpenAI([Text("abcdefghij", chunk_chars=3)]) as fake:
        async with httpx.AsyncClient() as http:
            r = await http.post(
                f"{fake.base_url}/chat/completions",
                headers={"Authorization": "Bearer test"},
                json={"model": MODEL, "messages": USER, "stream": True},
            )
    assert r.headers["content-type"].startswith("text/event-stream")
    events = r.text.split("\n\n")
    assert events[-1] == "" and events[-2] == "data: [DONE]"
    payloads = [json.loads(e.removeprefix("data: ")) for e in events[:-2]]
    assert all(e.startswith("data: ") for e in events[:-1])
    assert all(p["object"] == "chat.completion.chunk" for p in payloads)
    assert [p["choices"][0]["delta"].get("content") for p in payloads] == [
        "", "abc", "def", "ghi", "j", None
    ]
    assert "usage" not in payloads[0]  # only with stream_options.include_usage


async def test_non_streaming_completion_with_tool_call():
    async with FakeOpenAI([Reply(tool_calls=[ToolCall("save_lead_details", LEAD_ARGS)])]) as fake:
        client = openai.AsyncOpenAI(base_url=fake.base_url, api_key="test")
        r = await client.chat.completions.create(model=MODEL, messages=USER)
        await client.close()
    assert r.choices[0].finish_reason == "tool_calls"
    assert r.choices[0].message.content is None
    (call,) = r.choices[0].message.tool_calls
    assert call.function.name == "save_lead_details"
    assert json.loads(call.function.arguments) == LEAD_ARGS
    assert fake.requests[0].get("stream") is None


async def test_wrong_key_gets_openai_401():
    async with FakeOpenAI([Reply(text="never")]) as fake:
        async with httpx.AsyncClient() as http:
            r = await http.post(
                f"{fake.base_url}/chat/completions",
                headers={"Authorization": "Bearer nope"},
                json={"model": MODEL, "messages": USER},
            )
        client = openai.AsyncOpenAI(base_url=fake.base_url, api_key="nope")
        with pytest.raises(openai.AuthenticationError) as exc:
            await client.chat.completions.create(model=MODEL, messages=USER)
        await client.close()
        assert fake.remaining == 1  # rejected requests consume no reply
    assert r.status_code == 401
    assert set(r.json()["error"]) == {"message", "type", "param", "code"}
    assert exc.value.code == "invalid_api_key"


async def test_callable_responder_sync_and_async_and_concurrency():
    async def responder(body):
        await asyncio.sleep(0)
        return f"echo: {body['messages'][-1]['content']}"

    n = 25
    async with FakeOpenAI(responder, ttft_ms=200) as fake:
        client = openai.AsyncOpenAI(base_url=fake.base_url, api_key="test")

        async def ask(i: int) -> str:
            stream = await client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": f"q{i}"}], stream=True
            )
            return "".join([c.choices[0].delta.content or "" async for c in stream])

        t0 = time.monotonic()
        answers = await asyncio.gather(*(ask(i) for i in range(n)))
        elapsed = time.monotonic() - t0
        await client.close()
    assert answers == [f"echo: q{i}" for i in range(n)]
    assert elapsed < 0.2 * n / 3, elapsed  # concurrent, not one after another
    assert len(fake.requests) == len(fake.timings) == n
    assert all(t.ttfb >= 0.19 for t in fake.timings)

    async with FakeOpenAI(lambda body: Reply(text=body["model"])) as fake:
        client = openai.AsyncOpenAI(base_url=fake.base_url, api_key="test")
        r = await client.chat.completions.create(model="m-sync", messages=USER)
        await client.close()
    assert r.choices[0].message.content == "m-sync"


async def test_timings_follow_ttft_and_inter_chunk_delay():
    async with FakeOpenAI([Reply(text="x" * 24, ttft_ms=120, inter_chunk_ms=30)]) as fake:
        client = openai.AsyncOpenAI(base_url=fake.base_url, api_key="test")
        t0 = time.monotonic()
        stream = await client.chat.completions.create(model=MODEL, messages=USER, stream=True)
        first = None
        async for c in stream:
            if first is None and c.choices and c.choices[0].delta.content:
                first = time.monotonic()
        await client.close()
    (t,) = fake.timings
    assert t.arrived >= t0 and t.ttfb >= 0.12
    assert t.first_content is not None and first - t0 >= 0.12
    assert t.finished - t.first_byte >= 0.06  # 3 chunks: 2 gaps of 30 ms
    assert t.status == 200 and not t.disconnected


async def test_sdk_retries_then_failure_reaches_caller():
    async with FakeOpenAI([Fail(500, retry_after=0.01), Reply(text="recovered")]) as fake:
        client = openai.AsyncOpenAI(base_url=fake.base_url, api_key="test")
        r = await client.chat.completions.create(model=MODEL, messages=USER)
        assert r.choices[0].message.content == "recovered"  # the SDK retried by itself
        assert [t.status for t in fake.timings] == [500, 200]

        fake.add(Fail(429, times=3, retry_after=0.01))
        with pytest.raises(openai.RateLimitError) as exc:
            await client.chat.completions.create(model=MODEL, messages=USER)
        assert exc.value.code == "rate_limit_exceeded"
        assert len(fake.requests) == 5  # 1 + 2 retries

        fake.add(Fail(503, should_retry=False))
        with pytest.raises(openai.InternalServerError):
            await client.chat.completions.create(model=MODEL, messages=USER)
        assert len(fake.requests) == 6

        # An exhausted script is a loud, non-retried 500.
        with pytest.raises(openai.InternalServerError):
            await client.chat.completions.create(model=MODEL, messages=USER)
        assert len(fake.requests) == 7 and fake.errors
        await client.close()


async def test_hang_times_out_the_client_and_records_the_disconnect():
    async with FakeOpenAI([Hang(10)]) as fake:
        client = openai.AsyncOpenAI(
            base_url=fake.base_url, api_key="test", timeout=0.3, max_retries=0
        )
        t0 = time.monotonic()
        with pytest.raises(openai.APITimeoutError):
            await client.chat.completions.create(model=MODEL, messages=USER, stream=True)
        assert time.monotonic() - t0 < 2
        await client.close()
        for _ in range(100):
            if fake.timings[0].disconnected:
                break
            await asyncio.sleep(0.02)
        assert fake.timings[0].disconnected and fake.timings[0].first_byte is None
    # leaving the block while a Hang is pending must not wait for it either
    t0 = time.monotonic()
    async with httpx.AsyncClient() as http:
        async with FakeOpenAI([Hang(10)]) as fake:
            task = asyncio.create_task(
                http.post(
                    f"{fake.base_url}/chat/completions",
                    headers={"Authorization": "Bearer test"},
                    json={"model": MODEL, "messages": USER},
                )
            )
            while not fake.requests:
                await asyncio.sleep(0.01)
        assert time.monotonic() - t0 < 3
        with pytest.raises(httpx.HTTPError):
            await task


# ----------------------------------------------------------------------------- Pipecat


async def test_pipecat_llm_streams_scripted_text():
    async with FakeOpenAI([Reply(text="Hello Asha, which locality in Pune?")]) as fake:
        llm = make_llm(fake)
        down, up = await run_test(llm, frames_to_send=[LLMContextFrame(LLMContext(USER))])
    assert texts(down) == "Hello Asha, which locality in Pune?"
    kinds = [type(f) for f in down]
    assert kinds.index(LLMFullResponseStartFrame) < kinds.index(LLMTextFrame)
    assert kinds[-1] is LLMFullResponseEndFrame
    assert not any(isinstance(f, ErrorFrame) for f in up)
    assert llm.get_full_model_name() == MODEL


async def test_pipecat_request_carries_model_temperature_and_tools():
    async with FakeOpenAI([Reply(text="ok")]) as fake:
        llm = make_llm(fake)
        context = LLMContext(USER, tools=ToolsSchema(standard_tools=[LEAD_TOOL]))
        await run_test(llm, frames_to_send=[LLMContextFrame(context)])
    (req,) = fake.requests
    assert req["model"] == MODEL
    assert req["temperature"] == 0.2
    assert req["max_tokens"] == 128
    assert req["stream"] is True and req["stream_options"] == {"include_usage": True}
    assert req["messages"] == USER
    (tool,) = req["tools"]
    assert tool["type"] == "function"
    assert tool["function"]["name"] == "save_lead_details"
    assert tool["function"]["parameters"] == {
        "type": "object",
        "properties": LEAD_TOOL.properties,
        "required": ["name", "city"],
    }


async def test_pipecat_tool_call_runs_registered_function():
    calls: list[FunctionCallParams] = []

    async def save_lead_details(params: FunctionCallParams) -> None:
        calls.append(params)
        await params.result_callback({"saved": True})

    call = ToolCall("save_lead_details", LEAD_ARGS, id="call_abc", chunk_chars=5)
    reply = Reply(tool_calls=[call])
    async with FakeOpenAI([reply]) as fake:
        llm = make_llm(fake)
        llm.register_function("save_lead_details", save_lead_details)
        context = LLMContext(USER, tools=ToolsSchema(standard_tools=[LEAD_TOOL]))
        down, _ = await run_until(
            [llm],
            [LLMContextFrame(context)],
            until=lambda down, up: any(isinstance(f, FunctionCallResultFrame) for f in down),
        )
    (params,) = calls
    assert params.function_name == "save_lead_details"
    assert params.tool_call_id == "call_abc"
    assert dict(params.arguments) == LEAD_ARGS
    (result,) = [f for f in down if isinstance(f, FunctionCallResultFrame)]
    assert result.result == {"saved": True}
    assert texts(down) == ""


async def test_pipecat_tool_round_trip_with_responder_reading_messages():
    """Tool call -> handler -> assistant aggregator re-runs the LLM -> spoken confirmation."""

    def responder(body):
        last = body["messages"][-1]
        if last["role"] == "tool":
            saved = json.loads(last["content"])
            return Reply(text=f"Thanks {saved['name']}, noted.", inter_chunk_ms=1)
        return Reply(text="One moment. ", tool_calls=[ToolCall("save_lead_details", LEAD_ARGS)])

    async def save_lead_details(params: FunctionCallParams) -> None:
        await params.result_callback({"name": params.arguments["name"], "status": "saved"})

    async with FakeOpenAI(responder) as fake:
        llm = make_llm(fake)
        llm.register_function("save_lead_details", save_lead_details)
        context = LLMContext(list(USER), tools=ToolsSchema(standard_tools=[LEAD_TOOL]))
        pair = LLMContextAggregatorPair(context)
        # The assistant aggregator swallows the LLM's text frames and announces
        # each finished turn with an LLMContextAssistantTurnFrame.
        down, up = await run_until(
            [llm, pair.assistant()],
            [LLMContextFrame(context)],
            until=lambda down, up: sum(isinstance(f, LLMContextAssistantTurnFrame) for f in down)
            >= 2,
        )
    turns = [f.text for f in down if isinstance(f, LLMContextAssistantTurnFrame)]
    assert turns == ["One moment.", "Thanks Asha Kulkarni, noted."]
    assert context.get_messages()[-1] == {
        "role": "assistant",
        "content": "Thanks Asha Kulkarni, noted.",
    }
    assert len(fake.requests) == 2
    second = fake.requests[1]["messages"]
    # Pipecat stores the spoken text and the tool call as two assistant messages.
    assert sorted(m["role"] for m in second) == ["assistant", "assistant", "tool", "user"]
    assert any(m["role"] == "assistant" and m.get("content") == "One moment." for m in second)
    (call,) = next(m["tool_calls"] for m in second if m.get("tool_calls"))
    assert call["function"]["name"] == "save_lead_details"
    assert json.loads(call["function"]["arguments"]) == LEAD_ARGS
    assert second[-1]["role"] == "tool" and second[-1]["tool_call_id"] == call["id"]
    assert not any(isinstance(f, ErrorFrame) for f in up)


async def test_pipecat_500_surfaces_as_error_frame():
    async with FakeOpenAI([Fail(500, times=3, retry_after=0.01)]) as fake:
        llm = make_llm(fake)
        t0 = time.monotonic()
        down, up = await asyncio.wait_for(
            run_test(llm, frames_to_send=[LLMContextFrame(LLMContext(USER))]), timeout=10
        )
        elapsed = time.monotonic() - t0
    errors = [f for f in up if isinstance(f, ErrorFrame)]
    assert len(errors) == 1 and "500" in errors[0].error
    assert isinstance(errors[0].exception, openai.InternalServerError)
    assert len(fake.requests) == 3  # the SDK's own two retries, then Pipecat gives up
    assert texts(down) == ""
    assert [type(f) for f in down][-1] is LLMFullResponseEndFrame
    assert elapsed < 5


async def test_pipecat_retry_on_timeout_reissues_after_hang():
    async with FakeOpenAI([Hang(10), Reply(text="second try")]) as fake:
        llm = make_llm(fake, retry_on_timeout=True, retry_timeout_secs=0.3)
        t0 = time.monotonic()
        down, up = await run_test(llm, frames_to_send=[LLMContextFrame(LLMContext(USER))])
        assert time.monotonic() - t0 < 3
        assert texts(down) == "second try"
        assert len(fake.requests) == 2
        for _ in range(100):
            if fake.timings[0].disconnected:
                break
            await asyncio.sleep(0.02)
        assert fake.timings[0].disconnected
