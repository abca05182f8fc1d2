"""Campaign + call session + transport -> the call's Pipecat pipeline.

transport in (tap: recording, DTMF keys) -> Deepgram STT -> voicemail check -> user turn (Silero VAD,
owned by the aggregator) -> [caller audio stops here] -> OpenAI LLM (tools) -> TTS ->
filler/prepared audio -> transport out -> assistant turn. Pipecat's native interruption stops
the bot when the caller speaks (the transport sends `clear` as the caller's turn starts). The
stereo recording is fed from the transport's edges (tap and transport out), not by a processor.

Providers whose key is missing fall back to offline stand-ins (or a campaign picks them):
TTS -> Piper's bundled English voice (espeak-ng's Hindi voice for a Hindi campaign), STT -> Whisper tiny.en (bundled), LLM -> a scripted agent that asks the
campaign's questions and extracts the answers.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from loguru import logger
from pipecat.audio.vad.vad_analyzer import VADParams
from pipecat.frames.frames import (
    BotSpeakingFrame,
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    Frame,
    InputAudioRawFrame,
    LLMTextFrame,
    MetricsFrame,
    OutputAudioRawFrame,
    TranscriptionFrame,
    TTSAudioRawFrame,
    UserSpeakingFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.observers.base_observer import BaseObserver
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import (
    LLMContextAggregatorPair,
    LLMUserAggregatorParams,
)
from pipecat.processors.frame_processor import FrameProcessor
from pipecat.turns.user_start.vad_user_turn_start_strategy import VADUserTurnStartStrategy
from pipecat.turns.user_stop.base_user_turn_stop_strategy import BaseUserTurnStopStrategy
from pipecat.turns.user_stop.speech_timeout_user_turn_stop_strategy import (
    SpeechTimeoutUserTurnStopStrategy,
)
from pipecat.turns.user_turn_strategies import UserTurnStrategies

from bot.config.campaigns import Campaign, TTSConfig, TurnTakingConfig
from bot.config.settings import Settings
from pipelines.backchannel import BackchannelStartStrategy, PausablePlayback
from pipelines.call_control import CallControl
from pipelines.call_session import CallSession, TranscriptLog
from pipelines.call_tap import CallTap
from pipelines.call_watch import CallWatch
from pipelines.dtmf_actions import DTMFActions
from pipelines.exotel_transport import ExotelTransport
from pipelines.fillers import FillerInjector
from pipelines.frame_stops import FrameStop
from pipelines.idle_watcher import IdleWatcher
from pipelines.mute import MuteWhileEnding
from pipelines.providers.deepgram import build_deepgram_stt
from pipelines.providers.elevenlabs import build_elevenlabs_tts
from pipelines.providers.openai import build_openai_llm
from pipelines.providers.silero import SharedSileroVADAnalyzer
from pipelines.recorder import CallRecorder, recording_path
from pipelines.scripted_agent import ScriptedAgent
from pipelines.speech_gate import SpeechGate
from pipelines.tools import AgentTools, tools_schema
from pipelines.turn_end import TranscriptAwareUserTurnStopStrategy
from pipelines.turn_metrics import TurnMetrics
from pipelines.voicemail import VoicemailDetector
from pipelines.voices import effective_tts


@dataclass
class CallPipeline:
    """What the call runner needs besides the worker: the parts it talks to during the call."""

    worker: PipelineWorker
    control: CallControl
    context: LLMContext
    injector: FillerInjector
    tts_config: TTSConfig
    watch: CallWatch
    recorder: CallRecorder | None = None
    stt_gate: SpeechGate | None = None  # what of the caller's audio the STT heard


def build_tts(tts: TTSConfig, settings: Settings, sample_rate: int) -> FrameProcessor:
    """The TTS service, producing audio at the stream's rate (no resampling later)."""
    if tts.provider == "elevenlabs":
        return build_elevenlabs_tts(tts, settings, sample_rate)
    # The offline voices are an extra (pipelines/offline.py): imported only by a call that speaks with one.
    if tts.provider == "espeak":
        from pipelines.providers.espeak import EspeakTTSService

        return EspeakTTSService(voice=tts.voice, sample_rate=sample_rate)
    from pipelines.providers.piper import SharedPiperTTSService

    return SharedPiperTTSService(voice=tts.voice, sample_rate=sample_rate)


def build_vad(turn_taking: TurnTakingConfig) -> SharedSileroVADAnalyzer:
    """Silero VAD on the shared ONNX session (Silero takes 8 and 16 kHz)."""
    vad = turn_taking.vad
    return SharedSileroVADAnalyzer(
        params=VADParams(
            confidence=vad.confidence, start_secs=vad.start_secs, stop_secs=vad.stop_secs,
            min_volume=vad.min_volume,
        )
    )


def turn_strategies(
    turn_taking: TurnTakingConfig, has_stt: bool, streaming_stt: bool = True,
    playback: PausablePlayback | None = None, llm_service: bool = False,
) -> UserTurnStrategies:
    """Barge-in: with a streaming STT, the bot pauses at the caller's speech onset and
    `min_words` words that are not backchannels interrupt it, anything less resumes it
    (pipelines/backchannel.py); without one, on VAD. End of turn per the campaign."""
    interrupt = turn_taking.interruptions
    if has_stt and streaming_stt:
        start: list = [BackchannelStartStrategy(
            min_words=turn_taking.min_words, backchannels=turn_taking.backchannels, playback=playback,
            enable_interruptions=interrupt,
        )]
    else:
        start = [VADUserTurnStartStrategy(enable_interruptions=interrupt)]
    if turn_taking.stop_strategy == "smart_turn":
        from pipecat.audio.turn.smart_turn.base_smart_turn import SmartTurnParams
        from pipecat.turns.user_stop.turn_analyzer_user_turn_stop_strategy import (
            TurnAnalyzerUserTurnStopStrategy,
        )

        from pipelines.providers.smart_turn import SharedSmartTurnAnalyzer

        analyzer = SharedSmartTurnAnalyzer(params=SmartTurnParams(stop_secs=turn_taking.smart_turn_stop_secs))
        stop: list[BaseUserTurnStopStrategy] = [TurnAnalyzerUserTurnStopStrategy(turn_analyzer=analyzer, wait_for_transcript=has_stt)]
    elif turn_taking.stop_strategy == "transcript_aware" and has_stt:
        stop = [TranscriptAwareUserTurnStopStrategy(
            user_speech_timeout=turn_taking.user_speech_timeout_secs,
            unfinished_timeout=turn_taking.unfinished_timeout_secs,
            wait_on_ambiguous=turn_taking.wait_on_ambiguous,
            # Only a Pipecat LLM service holds a speculative reply (the scripted agent would speak it).
            speculate=turn_taking.speculative_llm and llm_service,
        )]
    else:
        stop = [SpeechTimeoutUserTurnStopStrategy(
            user_speech_timeout=turn_taking.user_speech_timeout_secs, wait_for_transcript=has_stt
        )]
    return UserTurnStrategies(start=start, stop=stop)


def build_call_recorder(session: CallSession, campaign: Campaign, settings: Settings) -> CallRecorder | None:
    """The call's recording (when the campaign records), under DATA_DIR/recordings/<sid>.wav."""
    if not campaign.record:
        return None
    path = recording_path(settings.recordings_dir, session.call_sid)
    return CallRecorder(path, session.pipeline_in_rate, bot_sample_rate=session.sample_rate)


def build_call_pipeline(
    session: CallSession, campaign: Campaign, transport: ExotelTransport, settings: Settings,
    recorder: CallRecorder | None = None, observers: list[BaseObserver] | None = None,
) -> CallPipeline:
    """One pipeline per call, from the campaign and the keys that are set. `recorder` (see
    build_call_recorder) is fed from the transport's edges: the caller's audio here, the bot's
    by the output transport. `observers` are Pipecat observers of the call's pipeline (the
    worker's `observers`; `worker.add_observer` works too)."""
    rate = session.sample_rate
    control = CallControl(session, campaign)
    tts_config = effective_tts(campaign, settings)
    deepgram = campaign.stt.provider == "deepgram" and settings.deepgram_api_key is not None
    openai = campaign.llm.provider == "openai" and settings.openai_api_key is not None
    if not (deepgram and openai):
        logger.info(
            f"offline stand-ins: STT {'Deepgram' if deepgram else 'Whisper tiny.en'}, "
            f"LLM {'OpenAI' if openai else 'scripted agent'}, TTS {tts_config.provider}"
        )

    system_prompt = campaign.render(campaign.system_prompt, session.lead)
    context = LLMContext(tools=tools_schema(campaign)) if openai else LLMContext()
    aggregators = LLMContextAggregatorPair(
        context,
        user_params=LLMUserAggregatorParams(
            vad_analyzer=build_vad(campaign.turn_taking),
            user_turn_strategies=turn_strategies(
                campaign.turn_taking, True, streaming_stt=deepgram, playback=transport.output(),
                llm_service=openai,
            ),
            user_turn_stop_timeout=campaign.turn_taking.user_turn_stop_timeout_secs,
            user_mute_strategies=[MuteWhileEnding(control)],
        ),
    )
    injector = FillerInjector(after_ms=campaign.fillers.after_ms, sample_rate=rate)
    transport.tap = CallTap(session, recorder, DTMFActions(campaign.dtmf, control))
    processors: list[FrameProcessor] = [transport.input()]
    if openai:
        llm: FrameProcessor = build_openai_llm(campaign.llm, settings, system_prompt)
        AgentTools(campaign, control).register(llm)
    else:
        llm = ScriptedAgent(campaign, control)
    if deepgram:
        stt: FrameProcessor = build_deepgram_stt(
            campaign.stt, settings, session.pipeline_in_rate, campaign.turn_taking.vad.min_volume
        )
    else:
        from pipelines.providers.whisper_stt import WhisperSTTService  # the offline extra

        stt = WhisperSTTService(sample_rate=session.pipeline_in_rate)
    processors.append(stt)
    if campaign.voicemail.enabled:
        processors += [VoicemailDetector(campaign.voicemail, control)]
    tts = build_tts(tts_config, settings, rate)
    # Caller audio and the caller's speaking pulse stop beside the user aggregator, the bot's
    # pulse on its way up in the filler injector, and on its way down with the sent audio right
    # after the output transport (pipelines/frame_stops.py).
    processors += [aggregators.user(), FrameStop(downstream=(InputAudioRawFrame, UserSpeakingFrame)), llm]
    processors += [tts, injector, transport.output(), FrameStop(downstream=(BotSpeakingFrame, OutputAudioRawFrame)),
                   aggregators.assistant()]

    watch = CallWatch([
        TurnMetrics(session, campaign.turn_taking.vad.stop_secs),
        IdleWatcher(campaign.idle, control),
    ])
    watch.tap(stt, TranscriptionFrame, MetricsFrame)
    watch.tap(aggregators.user(), UserStartedSpeakingFrame, UserStoppedSpeakingFrame, VADUserStoppedSpeakingFrame)
    watch.tap(llm, LLMTextFrame, MetricsFrame)
    watch.tap(tts, TTSAudioRawFrame, MetricsFrame)
    watch.tap(injector, TTSAudioRawFrame)  # fillers and prepared speech
    watch.tap(transport.output(), BotStartedSpeakingFrame, BotStoppedSpeakingFrame)
    worker = PipelineWorker(
        Pipeline(processors),
        params=PipelineParams(
            audio_in_sample_rate=session.pipeline_in_rate, audio_out_sample_rate=rate,
            enable_metrics=True,
        ),
        # Off, each measured against this pipeline as it is (paired A/B, 2 x 12 calls, 4 rounds,
        # ms CPU per call-second; bench/results/*_paired_ab.json), each an observer queueing
        # every frame pushed and processed:
        # - Pipecat's turn tracking (worker.turn_tracking_observer is None): 17.14 -> 18.13
        #   (+4.9%, turn_tracking). Nothing here reads it; pass a TurnTrackingObserver in
        #   `observers` to get its on_turn_started/on_turn_ended (tests/test_pipecat_contract.py).
        enable_turn_tracking=False,
        # - Pipecat's pipeline idle timeout (300 s without speech frames cancels the pipeline):
        #   16.82 -> 18.42 (+9.6%, pipeline_idle_timeout). The call's own limits decide: the idle
        #   watcher re-prompts and hangs up politely, max_call_secs caps every call.
        idle_timeout_secs=None,
        # - RTVI: 17.17 -> 21.04 (+22%, rtvi). A phone line has no RTVI client: the Exotel
        #   serializer drops RTVI messages (Pipecat's ignore_rtvi_messages).
        enable_rtvi=False,
        conversation_id=session.call_sid,
        observers=list(observers or []),
    )
    control.attach(worker, injector)
    if campaign.turn_taking.interruptions:
        _clear_at_turn_start(aggregators, transport)  # first: its handler task starts first
    _record_transcript(aggregators, session)
    return CallPipeline(worker, control, context, injector, tts_config, watch, recorder,
                        getattr(stt, "gate", None))


def _clear_at_turn_start(aggregators: LLMContextAggregatorPair, transport: ExotelTransport) -> None:
    """Barge-in: `clear` the caller's playback the moment the caller's turn starts, not only
    once the InterruptionFrame has hopped down to the transport (see ExotelOutputTransport.clear_now)."""
    output = transport.output()

    @aggregators.user().event_handler("on_user_turn_started")
    async def _clear_playback(_aggregator, _strategy):
        await output.clear_now()


def _record_transcript(aggregators: LLMContextAggregatorPair, session: TranscriptLog) -> None:
    """The caller's turns, as the LLM context gets them, go into the call's transcript, with
    when the turn started. (The bot's lines are recorded by the output transport, as the
    caller heard them: pipelines/bot_lines.py.)"""
    started: list[float] = []

    @aggregators.user().event_handler("on_user_turn_started")
    async def _turn_started(_aggregator, _strategy):
        started[:] = [time.monotonic()]

    @aggregators.user().event_handler("on_user_turn_stopped")
    async def _user(_aggregator, _strategy, message):
        at = started.pop() if started else None
        session.add_transcript("user", message.content or "", t=session.elapsed(at))


def greeting_frames(text: str) -> list[Frame]:
    """The greeting spoken live by the TTS (when nothing was prepared ahead)."""
    from pipecat.frames.frames import TTSSpeakFrame

    return [TTSSpeakFrame(text)]
