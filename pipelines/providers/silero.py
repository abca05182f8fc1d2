"""Silero VAD from the ONNX model that ships inside Pipecat, one ONNX session per process.

Pipecat's SileroVADAnalyzer opens a new onnxruntime session per analyzer, i.e. per call, and
runs every 32 ms window through the model on a thread of its own (one thread per call). Here:
- the session is shared (it is read-only after loading; the recurrent state is per call and
  lives in SileroOnnxModel, so each call gets its own SileroOnnxModel around the session);
- the analysis runs inline on the event loop (~0.1 ms per window: cheaper than a thread hop,
  and no per-call thread);
- the model only runs on windows loud enough to count: Pipecat's VAD calls a window speech
  only when `confidence >= threshold and volume >= min_volume`, so below `min_volume` the
  confidence cannot change the decision. Those windows are kept in a short ring instead; when
  the volume comes back up, the model catches up on the ring first: after a short dip (at
  most the ring's length) that is exactly what it would have seen running all along; after a
  longer quiet spell the model is reset first (as Pipecat itself resets it during quiet) and
  still gets the ring as lead-in. A phone call is mostly the caller listening, so most
  windows are skipped.
"""

from __future__ import annotations

import functools
import math
from collections import deque
from importlib import resources

import numpy as np
import onnxruntime

from pipecat.audio.utils import exp_smoothing
from pipecat.audio.vad.silero import SileroOnnxModel, SileroVADAnalyzer
from pipecat.audio.vad.vad_analyzer import VADAnalyzer, VADParams, VADState
from pipecat.audio.volume import VOLUME_WINDOW_SECS

# Windows of lead-in the model is fed when it wakes up (8 x 32 ms at 8 kHz = 256 ms).
WARMUP_WINDOWS = 8


@functools.cache
def shared_silero_session() -> onnxruntime.InferenceSession:
    """The process's Silero session (single-threaded: calls run side by side, not within)."""
    path = str(resources.files("pipecat.audio.vad.data").joinpath("silero_vad.onnx"))
    options = onnxruntime.SessionOptions()
    options.inter_op_num_threads = 1
    options.intra_op_num_threads = 1
    return onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"], sess_options=options)


class SharedSileroVADAnalyzer(SileroVADAnalyzer):
    """SileroVADAnalyzer on the process-wide ONNX session, inline, skipping quiet windows."""

    def __init__(self, *, sample_rate: int | None = None, params: VADParams | None = None):
        VADAnalyzer.__init__(self, sample_rate=sample_rate, params=params)
        model = SileroOnnxModel.__new__(SileroOnnxModel)
        model.session = shared_silero_session()
        model.sample_rates = [8000, 16000]
        model.reset_states()
        self._model = model
        self._windows_since_reset = 0
        self._low_confidence_windows = 0
        self._window_volume = 0.0
        self._quiet_windows: deque[bytes] = deque(maxlen=WARMUP_WINDOWS)
        self._windows_asleep = 0
        self.windows_scored = 0
        self.windows_skipped = 0

    async def analyze_audio(self, buffer: bytes) -> VADState:
        """Inline: no executor thread per call (the work is ~0.1 ms per window)."""
        return self._run_analyzer(buffer)

    def voice_confidence(self, buffer) -> float:
        """Score `buffer` with the model, unless it is too quiet to count as speech anyway."""
        # The base class asks for the confidence first and the volume second, for the same
        # window; measure the volume now and hand the same figure to _get_smoothed_volume.
        self._window_volume = self._fast_attack_volume(buffer)
        if self._window_volume < self._params.min_volume:
            self._quiet_windows.append(bytes(buffer))
            self._windows_asleep += 1
            self.windows_skipped += 1
            return 0.0
        if self._windows_asleep:
            self._wake_model()
        self.windows_scored += 1
        return super().voice_confidence(buffer)

    def _get_smoothed_volume(self, audio: bytes) -> float:
        return self._window_volume

    def _fast_attack_volume(self, audio: bytes) -> float:
        """Pipecat's smoothed volume, except that it rises at once with the audio.

        Pipecat smooths the volume with a factor of 0.2 per window, so after silence it takes
        ~6 windows (~200 ms) to reach min_volume, and speech is confirmed only start_secs after
        that (0.3-0.4 s after onset instead of 0.2 s). Barge-in should not wait on a meter's
        ballistics: the volume now follows a rise at once and still decays smoothly, so where
        speech ends (and everything that hangs on it) is unchanged. Silero's confidence and
        start_secs still guard against clicks and noise."""
        tracker = self._volume_tracker
        tracker.update(audio, self.sample_rate)
        samples = np.frombuffer(audio, np.int16)
        self._recent_peaks.append(max(int(samples.max()), -int(samples.min())) if len(samples) else 0)
        if max(self._recent_peaks) < self._faint_peak:
            measured = 0.0  # saves the ~30 us loudness measurement on the listening caller's line
        else:
            measured = tracker.volume
        return max(measured, exp_smoothing(measured, self._prev_volume, self._smoothing_factor))

    def set_params(self, params: VADParams):
        """Also: when a window is too faint to measure. Loudness (LUFS) never exceeds the
        volume window's peak level in dBFS plus the K-weighting's high-shelf gain (~4 dB);
        while every sample of the window (the last 0.4 s) peaks below min_volume's LUFS minus
        that and a margin, the measurement cannot reach min_volume and is skipped."""
        super().set_params(params)
        # min_volume 0..1 maps to -110..-10 LUFS (pipecat.audio.utils.calculate_audio_volume).
        lufs = -110 + 100 * params.min_volume
        self._faint_peak = 32768 * 10 ** ((lufs - 10) / 20) if params.min_volume > 0 else 0
        windows = math.ceil(VOLUME_WINDOW_SECS * self.sample_rate / self.num_frames_required()) + 1
        self._recent_peaks: deque[int] = deque(maxlen=windows)

    def _wake_model(self) -> None:
        """Catch up on the skipped windows (after a long quiet spell: fresh state, then the
        ring as lead-in), keeping Pipecat's periodic-reset bookkeeping as if it had run."""
        if self._windows_asleep > len(self._quiet_windows):
            self._model.reset_states()
            self._windows_since_reset = 0
            self._low_confidence_windows = 0
        for window in self._quiet_windows:
            super().voice_confidence(window)  # scores it and keeps the reset bookkeeping
            self.windows_scored += 1
        self._quiet_windows.clear()
        self._windows_asleep = 0
