"""Campaign + call session + transport -> the call's Pipecat pipeline and worker.

For now the call speaks the campaign's greeting and listens: Silero VAD (owned by the user
aggregator, as Pipecat 1.x wants) turns caller speech into Pipecat's native interruption,
so the bot stops talking the instant the caller does; caller audio and DTMF are noted on the
session. The conversation issue adds STT, the LLM and tools between the aggregators.
"""

from __future__ import annotations

from pipecat.audio.vad.vad_analyzer import VADParams
from pipecat.frames.frames import TTSSpeakFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import (
    LLMContextAggregatorPair,
    LLMUserAggregatorParams,
)
from pipecat.turns.user_start.vad_user_turn_start_strategy import VADUserTurnStartStrategy
from pipecat.turns.user_stop.speech_timeout_user_turn_stop_strategy import (
    SpeechTimeoutUserTurnStopStrategy,
)
from pipecat.turns.user_turn_strategies import UserTurnStrategies

from bot.call_session import CallSession
from bot.campaigns import Campaign
from pipelines.call_tap import CallTap
from pipelines.exotel_transport import ExotelTransport
from pipelines.providers.piper import SharedPiperTTSService
from pipelines.providers.silero import SharedSileroVADAnalyzer


def build_tts(campaign: Campaign, sample_rate: int) -> SharedPiperTTSService:
    """The campaign's TTS, producing audio at the stream's rate (no resampling later)."""
    return SharedPiperTTSService(voice=campaign.tts.voice, sample_rate=sample_rate)


def build_vad(sample_rate: int) -> SharedSileroVADAnalyzer:
    """Silero VAD on the shared ONNX session (Silero takes 8 and 16 kHz)."""
    return SharedSileroVADAnalyzer(params=VADParams(start_secs=0.2, stop_secs=0.2))


def build_call_worker(
    session: CallSession, campaign: Campaign, transport: ExotelTransport
) -> PipelineWorker:
    """One pipeline per call: transport in -> tap -> user turn (VAD) -> TTS -> transport out."""
    aggregators = LLMContextAggregatorPair(
        LLMContext(),
        user_params=LLMUserAggregatorParams(
            vad_analyzer=build_vad(session.sample_rate),
            user_turn_strategies=UserTurnStrategies(
                start=[VADUserTurnStartStrategy()],
                stop=[SpeechTimeoutUserTurnStopStrategy()],
            ),
        ),
    )
    pipeline = Pipeline(
        [
            transport.input(),
            CallTap(session),
            aggregators.user(),
            build_tts(campaign, session.sample_rate),
            transport.output(),
            aggregators.assistant(),
        ]
    )
    return PipelineWorker(
        pipeline,
        params=PipelineParams(
            audio_in_sample_rate=session.sample_rate,
            audio_out_sample_rate=session.sample_rate,
            enable_metrics=True,
        ),
        idle_timeout_secs=None,  # the call's own limits (max duration) decide
        enable_rtvi=False,
        conversation_id=session.call_sid,
    )


def greeting_frame(session: CallSession, campaign: Campaign) -> TTSSpeakFrame:
    """The personalised greeting, spoken once as soon as the stream starts."""
    return TTSSpeakFrame(campaign.render_greeting(session.lead))
