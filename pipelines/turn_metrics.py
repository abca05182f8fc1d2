"""Per-turn latency figures, from the frames the call's processors push (via pipelines.call_watch).

For each caller turn: when the caller stopped speaking (VAD stop minus its stop_secs), the
final transcript, the LLM's first token, the TTS's first audio, and BotStartedSpeaking (the
output transport announces it as it takes the reply's first chunk, immediately before
writing it to Exotel: the first payload goes out without pacing); plus each provider's own
TTFB from Pipecat's metrics. Voice-to-voice latency is that moment minus end of caller speech.
"""

from __future__ import annotations

import time
from typing import Any

from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    Frame,
    LLMTextFrame,
    MetricsFrame,
    TranscriptionFrame,
    TTSAudioRawFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.metrics.metrics import TTFBMetricsData

from pipelines.call_session import TurnLog


def _provider_kind(processor_name: str) -> str | None:
    name = processor_name.lower()
    for kind in ("stt", "llm", "tts"):
        if kind in name:
            return kind
    return None


class TurnMetrics:
    """Fills `session.turns` with one dict per answered caller turn."""

    def __init__(self, session: TurnLog, vad_stop_secs: float):
        self._session = session
        self._vad_stop_secs = vad_stop_secs
        self._turn: dict[str, Any] | None = None
        self._speech_end: float | None = None

    def _since_end(self, now: float) -> float | None:
        return None if self._speech_end is None else round(now - self._speech_end, 4)

    async def on_frame(self, frame: Frame):
        now = time.monotonic()
        if isinstance(frame, UserStartedSpeakingFrame):
            self._turn = {"user_started": self._session.elapsed()}
            self._speech_end = None
        elif isinstance(frame, VADUserStoppedSpeakingFrame):
            self._speech_end = now - (frame.stop_secs or self._vad_stop_secs)
        elif isinstance(frame, UserStoppedSpeakingFrame):
            if self._turn is None:
                self._turn = {}
            if self._speech_end is None:
                self._speech_end = now - self._vad_stop_secs
            self._turn["user_stopped_to_turn_end"] = self._since_end(now)
        elif self._turn is None or self._speech_end is None:
            return
        elif isinstance(frame, TranscriptionFrame):
            self._turn.setdefault("transcript_after", self._since_end(now))
        elif isinstance(frame, LLMTextFrame):
            self._turn.setdefault("llm_first_text_after", self._since_end(now))
        elif isinstance(frame, TTSAudioRawFrame):
            self._turn.setdefault("tts_first_audio_after", self._since_end(now))
        elif isinstance(frame, MetricsFrame):
            for item in frame.data:
                if not isinstance(item, TTFBMetricsData):
                    continue
                kind = _provider_kind(item.processor)
                if kind and item.value > 0:
                    self._turn.setdefault(f"{kind}_ttfb", round(item.value, 4))
        elif isinstance(frame, BotStartedSpeakingFrame):
            self._turn["voice_to_voice"] = self._since_end(now)
            self._turn["t"] = self._session.elapsed()
            self._session.turns.append(self._turn)
            self._turn = None
            self._speech_end = None
