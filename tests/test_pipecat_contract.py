"""Pipecat's contract: an observer attached to a call's pipeline (PipelineWorker's `observers`,
the standard BaseObserver API) sees the frames it subscribes to, where Pipecat sends them.

A live barge-in call (the Exotel emulator, the real server, the provider fakes): the caller
asks, the bot answers at length, the caller interrupts with two words. Beside a recording
observer, Pipecat's own TurnTrackingObserver and UserBotLatencyObserver ride along."""

from __future__ import annotations

import functools
from typing import Any

import pytest
from pipecat.frames.frames import (
    BotSpeakingFrame,
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    Frame,
    InputAudioRawFrame,
    InterruptionFrame,
    LLMContextFrame,
    LLMTextFrame,
    MetricsFrame,
    OutputAudioRawFrame,
    TranscriptionFrame,
    TTSAudioRawFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
    UserSpeakingFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
)
from pipecat.metrics.metrics import TTFBMetricsData
from pipecat.observers.base_observer import BaseObserver, FramePushed
from pipecat.observers.turn_tracking_observer import TurnTrackingObserver
from pipecat.observers.user_bot_latency_observer import UserBotLatencyObserver
from pipecat.processors.aggregators.llm_response_universal import LLMAssistantAggregator, LLMUserAggregator
from pipecat.processors.frame_processor import FrameDirection

import bot.server.call_runner as call_runner
from bot.simulator.caller_speech import speak
from bot.simulator.exotel_emulator import HangUp, Say
from pipelines.exotel_transport import ExotelInputTransport, ExotelOutputTransport
from pipelines.fillers import FillerInjector
from pipelines.frame_stops import FrameStop
from testing.agent_stack import agent_stack
from testing.fakes.openai_chat import Reply
from testing.waiting import wait_finished

GREETING = {"real_estate": {"greeting": "Hello {lead.name}, this is Priya from Sunrise Homes. Got a minute?"}}
LINES = ["Tell me about the project", "Wait wait I have a question"]
LONG_REPLY = ("We have two and three bedroom apartments in Whitefield, close to the metro, "
              "with a clubhouse, a pool and a large park, and possession is planned for next year.")


def agent(body: dict[str, Any]) -> Reply:
    users = sum(1 for m in body["messages"] if m["role"] == "user")
    return Reply(text=LONG_REPLY if users == 1 else "Sure, tell me.")


class FrameLog(BaseObserver):
    """Every push it is told of, in order (every hop of a frame, not only its first)."""

    def __init__(self):
        super().__init__()
        self.pushes: list[FramePushed] = []

    async def on_push_frame(self, data: FramePushed):
        self.pushes.append(data)

    def first(self, *types: type[Frame]) -> list[FramePushed]:
        return [p for p in self.pushes if p.first_push and isinstance(p.frame, types)]

    def index(self, frame_type: type[Frame], after: int = -1) -> int:
        """Where the first push of a `frame_type` frame after position `after` is."""
        return next(i for i, p in enumerate(self.pushes)
                    if i > after and p.first_push and isinstance(p.frame, frame_type))

    def pushed_by(self, source_type: type, frame_type: type[Frame],
                  direction: FrameDirection = FrameDirection.DOWNSTREAM) -> list[Frame]:
        return [p.frame for p in self.pushes
                if isinstance(p.source, source_type) and isinstance(p.frame, frame_type) and p.direction == direction]

    def pushed_into(self, destination_type: type, frame_type: type[Frame]) -> list[Frame]:
        return [p.frame for p in self.pushes
                if isinstance(p.destination, destination_type) and isinstance(p.frame, frame_type)]


@pytest.fixture
async def observed_call(tmp_path, monkeypatch):
    log, turns, latency = FrameLog(), TurnTrackingObserver(), UserBotLatencyObserver()
    turn_events: list[tuple[str, Any]] = []
    latencies: list[float] = []
    breakdowns: list[Any] = []

    @turns.event_handler("on_turn_started")
    async def _started(_observer, number):
        turn_events.append(("started", number))

    @turns.event_handler("on_turn_ended")
    async def _ended(_observer, number, _duration, interrupted):
        turn_events.append(("ended", interrupted))

    @latency.event_handler("on_latency_measured")
    async def _latency(_observer, secs):
        latencies.append(secs)

    @latency.event_handler("on_latency_breakdown")
    async def _breakdown(_observer, breakdown):
        breakdowns.append(breakdown)

    built = []

    def with_observers(*args, **kwargs):
        call = build(*args, observers=[log, turns, latency], **kwargs)
        built.append(call)
        return call

    build = call_runner.build_call_pipeline
    monkeypatch.setattr(call_runner, "build_call_pipeline", functools.wraps(build)(with_observers))
    async with agent_stack(tmp_path, stt_script=LINES, llm=agent, campaign_tweaks=GREETING,
                           elevenlabs_kwargs={"ms_per_char": 30}) as stack:
        emu = stack.emulator()
        result = await emu.run([Say(at=3.0, pcm=speak(LINES[0])), Say(at=7.5, pcm=speak(LINES[1])),
                                HangUp(at=11)])
        session = await wait_finished(stack, emu.config.call_sid)
    assert len(built) == 1 and result.violations == [] and len(result.clears_at) == 1
    return {"log": log, "turn_events": turn_events, "latencies": latencies, "breakdowns": breakdowns,
            "session": session}


async def test_an_observer_on_a_call_sees_turns_speech_transcripts_llm_tts_metrics_and_the_interruption(
    observed_call,
):
    log: FrameLog = observed_call["log"]
    for frame_type in (BotStartedSpeakingFrame, BotSpeakingFrame, BotStoppedSpeakingFrame,
                       UserStartedSpeakingFrame, UserSpeakingFrame, UserStoppedSpeakingFrame,
                       TranscriptionFrame, LLMTextFrame, TTSStartedFrame, TTSAudioRawFrame, TTSStoppedFrame,
                       MetricsFrame, InterruptionFrame):
        assert log.first(frame_type), f"the observer never saw a {frame_type.__name__}"
    assert [p.frame.text for p in log.first(TranscriptionFrame)] == LINES
    assert "".join(p.frame.text for p in log.first(LLMTextFrame)).startswith(LONG_REPLY[:40])
    ttfb = {item.processor.split("#")[0] for p in log.first(MetricsFrame) for item in p.frame.data
            if isinstance(item, TTFBMetricsData) and item.value > 0}
    for kind in ("STT", "LLM", "TTS"):
        assert any(kind in name for name in ttfb), (kind, ttfb)

    # In the order they happen: the caller's first turn, its reply, the barge-in.
    user_started = log.index(UserStartedSpeakingFrame)
    heard = log.index(TranscriptionFrame, user_started)
    user_stopped = log.index(UserStoppedSpeakingFrame, heard)
    llm_text = log.index(LLMTextFrame, user_stopped)
    tts_started = log.index(TTSStartedFrame, llm_text)
    bot_started = log.index(BotStartedSpeakingFrame, tts_started)
    barge_in = log.index(UserStartedSpeakingFrame, bot_started)
    interruption = log.index(InterruptionFrame, bot_started)
    bot_stopped = log.index(BotStoppedSpeakingFrame, bot_started)
    assert user_started < heard < user_stopped < llm_text < tts_started < bot_started
    assert bot_started < log.index(BotSpeakingFrame, bot_started) < barge_in
    assert bot_started < barge_in <= interruption and bot_started < bot_stopped
    assert log.index(TranscriptionFrame, barge_in) > barge_in  # "Wait wait ..."


async def test_frames_travel_as_pipecat_sends_them_and_stop_next_to_where_they_are_pushed(observed_call):
    log: FrameLog = observed_call["log"]
    # Metrics and the interruption go on past the output transport (to the assistant aggregator).
    past_output = log.pushed_by(ExotelOutputTransport, MetricsFrame)
    assert any(isinstance(item, TTFBMetricsData) and "TTS" in item.processor for f in past_output for item in f.data)
    assert log.pushed_by(ExotelOutputTransport, InterruptionFrame)
    assert log.pushed_by(FrameStop, InterruptionFrame) and log.pushed_by(FrameStop, MetricsFrame)
    # The audio the transport sent and its speaking pulse: seen as it pushes them down, into the
    # FrameStop right after it, and no further.
    sent = log.pushed_by(ExotelOutputTransport, OutputAudioRawFrame)
    assert sent and sum(len(f.audio) for f in sent) >= 8000 * 2 * 2  # seconds of the bot's speech
    bot_down = log.pushed_by(ExotelOutputTransport, BotSpeakingFrame)
    assert bot_down and all(isinstance(p.destination, FrameStop) for p in log.pushes
                            if isinstance(p.frame, (BotSpeakingFrame, OutputAudioRawFrame))
                            and isinstance(p.source, ExotelOutputTransport) and p.direction == FrameDirection.DOWNSTREAM)
    assert not log.pushed_into(LLMAssistantAggregator, BotSpeakingFrame)
    assert not log.pushed_into(LLMAssistantAggregator, OutputAudioRawFrame)
    # The speaking pulses: an observer sees each as its origin pushes it, in both directions;
    # the bot's stops on its way up in the filler injector beside the output transport, the
    # caller's on its way down beside the user aggregator (pipelines/frame_stops.py).
    bot_up = log.pushed_by(ExotelOutputTransport, BotSpeakingFrame, FrameDirection.UPSTREAM)
    assert bot_up and len(bot_up) == len(bot_down)
    assert log.pushed_into(FillerInjector, BotSpeakingFrame)
    assert not log.pushed_by(FillerInjector, BotSpeakingFrame, FrameDirection.UPSTREAM)
    user_down = log.pushed_by(LLMUserAggregator, UserSpeakingFrame)
    user_up = log.pushed_by(LLMUserAggregator, UserSpeakingFrame, FrameDirection.UPSTREAM)
    assert user_down and len(user_up) == len(user_down)
    assert log.pushed_into(ExotelInputTransport, UserSpeakingFrame)  # on its way up it goes on
    assert all(isinstance(p.destination, FrameStop) for p in log.pushes
               if isinstance(p.frame, UserSpeakingFrame) and p.direction == FrameDirection.DOWNSTREAM)
    # Caller audio: seen from the input transport on; it stops after the user aggregator.
    assert len(log.pushed_by(ExotelInputTransport, InputAudioRawFrame)) >= 50  # 100 ms each
    assert log.pushed_into(FrameStop, InputAudioRawFrame)
    assert not log.pushed_by(FrameStop, InputAudioRawFrame)
    # Everything else goes on through the stops.
    assert log.pushed_by(FillerInjector, TTSAudioRawFrame) and log.pushed_by(FillerInjector, MetricsFrame)
    assert log.pushed_by(FrameStop, LLMContextFrame)  # the caller's turn, on to the LLM


async def test_pipecat_turn_tracking_and_latency_observers_work_on_a_call(observed_call):
    events = observed_call["turn_events"]
    ended = [interrupted for kind, interrupted in events if kind == "ended"]
    assert True in ended, f"the barge-in ended a turn as interrupted: {events}"
    assert len(ended) >= 2
    latencies = observed_call["latencies"]
    assert latencies and all(0 < secs < 5 for secs in latencies)
    assert observed_call["breakdowns"]
