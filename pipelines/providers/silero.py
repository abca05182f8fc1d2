"""Silero VAD from the ONNX model that ships inside Pipecat, one ONNX session per process.

Pipecat's SileroVADAnalyzer opens a new onnxruntime session per analyzer, i.e. per call, and
runs every 32 ms window through the model on a thread of its own (one thread per call). Here:
- the session is shared (it is read-only after loading; the recurrent state is per call and
  lives in a SileroStream, one per call, around the session), and its graph is specialised
  to the stream's sample rate (pipelines/providers/silero_graph.py: ~40% less per window);
- the analysis runs inline on the event loop (~0.07 ms per window: cheaper than a thread
  hop, and no per-call thread);
- the model only runs on windows loud enough to count: Pipecat's VAD calls a window speech
  only when `confidence >= threshold and volume >= min_volume`, so below `min_volume` the
  confidence cannot change the decision. Those windows are kept in a short ring instead; when
  the volume comes back up, the model catches up on the ring first: after a short dip (at
  most the ring's length) that is exactly what it would have seen running all along; after a
  longer quiet spell the model is reset first (as Pipecat itself resets it during quiet) and
  still gets the ring as lead-in. A phone call is mostly the caller listening, so most
  windows are skipped;
- start_secs is counted from the onset of speech, not from the first window the model is
  sure of (see _step): barge-in no longer waits an extra 100 ms chunk for a quarter of onsets.

It is a VADAnalyzer of its own, on Pipecat's public interface for a VAD (num_frames_required,
voice_confidence, set_sample_rate, set_params, analyze_audio): the window loop, the state
machine, the volume meter and Silero's periodic reset are kept here, as Pipecat 1.14's
VADAnalyzer and SileroVADAnalyzer do them, so none of their private state is relied on.
"""

from __future__ import annotations

import functools
import math
from collections import deque

import numpy as np
import onnxruntime
from loguru import logger
from pipecat.audio.utils import exp_smoothing
from pipecat.audio.vad.vad_analyzer import VADAnalyzer, VADParams, VADState
from pipecat.audio.volume import VOLUME_WINDOW_SECS, AudioVolumeTracker

from pipelines.providers import silero_graph

# Windows of lead-in the model is fed when it wakes up (8 x 32 ms at 8 kHz = 256 ms).
WARMUP_WINDOWS = 8
# Speech onset: up to this many loud windows right before the first confident one count
# towards start_secs when the model already leaned towards speech on them (see _step).
ONSET_WINDOWS = 1
ONSET_CONFIDENCE_RATIO = 0.3
# How far BS.1770 loudness can exceed the plain mean-square level: the K-weighting's
# high-shelf gain (4.25 dB, measured at 8 kHz) plus a margin.
SHELF_GAIN_BOUND_DB = 6.0
# The volume's exponential smoothing per window (Pipecat's VADAnalyzer's).
VOLUME_SMOOTHING = 0.2
# Silero's recurrent state is reset after this much audio, on the first window after it
# where the caller is quiet and the last few windows were clearly not speech (Pipecat's
# SileroVADAnalyzer's policy and figures).
MODEL_RESET_INTERVAL_SECS = 2.0
MODEL_RESET_MAX_CONFIDENCE = 0.1
MODEL_RESET_LOW_CONFIDENCE_WINDOWS = 5


def faint_energy(min_volume: float, sample_rate: int) -> float:
    """The energy (sum of squared 16-bit samples) below which VOLUME_WINDOW_SECS of audio cannot
    measure as loud as `min_volume` (see SharedSileroVADAnalyzer.set_params); 0 when min_volume
    is 0 (then everything may count)."""
    if min_volume <= 0:
        return 0.0
    span = math.ceil(VOLUME_WINDOW_SECS * sample_rate)
    # min_volume 0..1 maps to -110..-10 LUFS (pipecat.audio.utils.calculate_audio_volume).
    lufs = -110 + 100 * min_volume
    return span * 32768.0**2 * 10 ** ((lufs + 0.691 - SHELF_GAIN_BOUND_DB) / 10)


@functools.cache
def shared_silero_session(sample_rate: int = 8000) -> tuple[onnxruntime.InferenceSession, bool]:
    """The process's Silero session for `sample_rate`, and whether it still takes `sr` (the
    original graph, if the specialised one could not be built)."""
    session = silero_graph.specialised_session(sample_rate)
    if session is not None:
        return session, False
    return silero_graph.original_session(), True


class SileroStream:
    """One call's Silero state around the shared session: what Pipecat's SileroOnnxModel keeps
    per stream (recurrent state, the previous window's tail as context), for one window at a
    time, without the per-window reshaping and checks."""

    def __init__(self, sample_rate: int):
        self.session, takes_sr = shared_silero_session(sample_rate)
        self._context = silero_graph.CONTEXT[sample_rate]
        self._input = np.zeros((1, self._context + silero_graph.WINDOW[sample_rate]), np.float32)
        self._sr = {"sr": np.array(sample_rate, np.int64)} if takes_sr else {}
        self.reset_states()

    def reset_states(self) -> None:
        self._state = np.zeros(silero_graph.STATE_SHAPE, np.float32)
        self._input[0, : self._context] = 0.0

    def __call__(self, window: np.ndarray, _sample_rate: int | None = None) -> np.ndarray:
        """Confidence of one window (float32 samples in [-1, 1)), shaped (1, 1) as Pipecat's."""
        self._input[0, self._context :] = window
        out, self._state = self.session.run(None, {"input": self._input, "state": self._state, **self._sr})
        self._input[0, : self._context] = self._input[0, -self._context :]
        return out


class SharedSileroVADAnalyzer(VADAnalyzer):
    """Silero VAD on the process-wide ONNX session, inline, skipping quiet windows."""

    def __init__(self, *, sample_rate: int | None = None, params: VADParams | None = None):
        super().__init__(sample_rate=sample_rate, params=params)
        self._model: SileroStream | None = None  # made for the stream's rate in set_sample_rate
        self._state = VADState.QUIET
        self._pending = b""  # audio short of a window
        self._window_bytes = 0
        self._start_windows = self._stop_windows = 0  # start_secs and stop_secs in windows
        self._starting = self._stopping = 0  # windows counted towards them
        self._meter = AudioVolumeTracker()
        self._prev_volume = 0.0  # the smoothed volume of the last window
        self._windows_since_reset = 0
        self._low_confidence_windows = 0
        self._window_volume = 0.0
        self._quiet_windows: deque[bytes] = deque(maxlen=WARMUP_WINDOWS)
        self._windows_asleep = 0
        self._onset_windows = 0
        self.windows_scored = 0
        self.windows_skipped = 0
        self.chunks_fast_pathed = 0

    def num_frames_required(self) -> int:
        return 512 if self.sample_rate == 16000 else 256

    def set_sample_rate(self, sample_rate: int):
        if sample_rate not in (8000, 16000):
            raise ValueError(f"Silero VAD sample rate needs to be 16000 or 8000 (sample rate: {sample_rate})")
        super().set_sample_rate(sample_rate)
        if self._model is None or self._model.session is not shared_silero_session(self.sample_rate)[0]:
            self._model = SileroStream(self.sample_rate)

    async def analyze_audio(self, buffer: bytes) -> VADState:
        """Inline: no executor thread per call (the work is ~0.1 ms per window)."""
        return self._run_analyzer(buffer)

    # Whether a faint chunk heard while QUIET skips the per-window loop (tests compare both).
    chunk_fast_path = True

    def _run_analyzer(self, buffer: bytes) -> VADState:
        """Pipecat's window loop, with a shortcut for the common case of a listening caller.

        While QUIET, with the volume already below min_volume and the last 0.4 s and this chunk
        too faint to be measured (see set_params), each window of the
        chunk would only be appended to the quiet ring, its volume decayed and the state left
        QUIET; that bookkeeping is done here for the whole chunk at once (one vectorised energy
        over the chunk instead of an energy, a volume-tracker update and a state step per 32 ms
        window)."""
        if not (self.chunk_fast_path and self._state == VADState.QUIET and self._faint_energy
                and self._prev_volume < self.params.min_volume):
            return self._analyze_windows(buffer)
        pending = self._pending + buffer
        window = self._window_bytes
        whole = len(pending) - len(pending) % window
        if not whole:
            self._pending = pending
            return self._state
        windows = whole // window
        samples = np.frombuffer(pending, np.int16, count=whole // 2).astype(np.float64).reshape(windows, -1)
        energies = np.einsum("ij,ij->i", samples, samples)
        if sum(self._recent_energy) + float(energies.sum()) >= self._faint_energy:
            return self._analyze_windows(buffer)
        self._meter.update(pending[:whole], self.sample_rate)
        for k in range(max(0, windows - WARMUP_WINDOWS), windows):
            self._quiet_windows.append(pending[k * window : (k + 1) * window])
        self._recent_energy.extend(energies.tolist())
        volume = self._prev_volume
        for _ in range(windows):
            volume = exp_smoothing(0.0, volume, VOLUME_SMOOTHING)
        self._prev_volume = self._window_volume = volume
        self._windows_asleep += windows
        self._onset_windows = 0
        self.windows_skipped += windows
        self.chunks_fast_pathed += 1
        self._pending = pending[whole:]
        return self._state

    def _analyze_windows(self, buffer: bytes) -> VADState:
        """Pipecat's VADAnalyzer window loop, window by window, with the onset rule of _step."""
        self._pending += buffer
        size = self._window_bytes
        params = self.params
        while len(self._pending) >= size:
            window = self._pending[:size]
            self._pending = self._pending[size:]
            confidence = float(np.ravel(self.voice_confidence(window))[0])  # Silero gives an array
            volume = self._prev_volume = self._window_volume  # measured by voice_confidence
            loud = volume >= params.min_volume
            self._step(bool(loud and confidence >= params.confidence),
                       bool(loud and confidence >= params.confidence * ONSET_CONFIDENCE_RATIO))
        if self._state == VADState.STARTING and self._starting >= self._start_windows:
            self._state = VADState.SPEAKING
            self._starting = 0
        if self._state == VADState.STOPPING and self._stopping >= self._stop_windows:
            self._state = VADState.QUIET
            self._stopping = 0
        return self._state

    def _step(self, speaking: bool, leaning: bool) -> None:
        """Pipecat's state step for one window, except where speech is counted from.

        Pipecat counts start_secs from the first window the model is sure of (confidence >=
        threshold). Silero is rarely sure of the window holding the onset, or of the one after
        it: its recurrent state needs a few tens of ms of speech first. So speech was
        confirmed start_secs plus 0-60 ms after it began, and with Exotel's 100 ms chunks that
        lag pushed a quarter of barge-ins a whole chunk (100 ms) later. Here the loud windows
        right before the first sure one, on which the model already leaned towards speech
        (confidence >= half the threshold), count as the onset: at most ONSET_WINDOWS of them,
        and only when sure windows follow without a break, so clicks, breaths and noise still
        need (start_secs - 64 ms) of confident speech to pass."""
        match self._state, speaking:
            case VADState.QUIET, True:
                self._state = VADState.STARTING
                self._starting = 1 + self._onset_windows
                self._onset_windows = 0
            case VADState.QUIET, False:
                self._onset_windows = min(ONSET_WINDOWS, self._onset_windows + 1) if leaning else 0
            case VADState.STARTING, True:
                self._starting += 1
            case VADState.STARTING, False:
                self._state = VADState.QUIET
                self._starting = 0
                self._onset_windows = 1 if leaning else 0
            case VADState.STOPPING, True:
                self._state = VADState.SPEAKING
                self._stopping = 0
            case VADState.SPEAKING, False:
                self._state = VADState.STOPPING
                self._stopping = 1
            case VADState.STOPPING, False:
                self._stopping += 1

    def voice_confidence(self, buffer) -> float:
        """Score `buffer` with the model, unless it is too quiet to count as speech anyway."""
        # The base class asks for the confidence first and the volume second, for the same
        # window; measure the volume now and hand the same figure to _get_smoothed_volume.
        self._window_volume = self._fast_attack_volume(buffer)
        if self._window_volume < self.params.min_volume:
            self._quiet_windows.append(bytes(buffer))
            self._windows_asleep += 1
            self.windows_skipped += 1
            return 0.0
        if self._windows_asleep:
            self._wake_model()
        self.windows_scored += 1
        return self._score(buffer)

    def _score(self, buffer) -> float:
        """The model's confidence for one window, then the periodic reset (as Pipecat's
        SileroVADAnalyzer.voice_confidence)."""
        try:
            window = np.frombuffer(buffer, np.int16).astype(np.float32) / 32768.0
            confidence = self._model(window)[0]  # type: ignore[misc]
            self._maybe_reset_model(confidence.item())
            return confidence
        except Exception as error:
            logger.error(f"Error analyzing audio with Silero VAD: {error}")
            return 0

    def _maybe_reset_model(self, confidence: float) -> None:
        """Reset Silero's state once MODEL_RESET_INTERVAL_SECS of audio has been scored, on a
        window where the caller is quiet (the state is still the previous window's) after
        MODEL_RESET_LOW_CONFIDENCE_WINDOWS clearly not speech; it takes effect from the next."""
        self._windows_since_reset += 1
        if confidence < MODEL_RESET_MAX_CONFIDENCE:
            self._low_confidence_windows += 1
        else:
            self._low_confidence_windows = 0
        if (self._windows_since_reset * self.num_frames_required() >= MODEL_RESET_INTERVAL_SECS * self.sample_rate
                and self._state == VADState.QUIET
                and self._low_confidence_windows >= MODEL_RESET_LOW_CONFIDENCE_WINDOWS):
            self._model.reset_states()  # type: ignore[union-attr]
            self._windows_since_reset = 0

    def _fast_attack_volume(self, audio: bytes) -> float:
        """Pipecat's smoothed volume, except that it rises at once with the audio.

        Pipecat smooths the volume with a factor of 0.2 per window, so after silence it takes
        ~6 windows (~200 ms) to reach min_volume, and speech is confirmed only start_secs after
        that (0.3-0.4 s after onset instead of 0.2 s). Barge-in should not wait on a meter's
        ballistics: the volume now follows a rise at once and still decays smoothly, so where
        speech ends (and everything that hangs on it) is unchanged. Silero's confidence and
        start_secs still guard against clicks and noise."""
        tracker = self._meter
        tracker.update(audio, self.sample_rate)
        samples = np.frombuffer(audio, np.int16).astype(np.float64)
        self._recent_energy.append(float(samples @ samples))
        if sum(self._recent_energy) < self._faint_energy:
            measured = 0.0  # saves the ~30 us loudness measurement on the listening caller's line
        else:
            measured = tracker.volume
        return max(measured, exp_smoothing(measured, self._prev_volume, VOLUME_SMOOTHING))

    def set_params(self, params: VADParams):
        """Also: when a window is too faint to measure. The loudness of the last 0.4 s (BS.1770:
        K-weighted mean square, -0.691 dB) never exceeds its plain mean-square level by more
        than the K-weighting's high-shelf gain (4.25 dB measured at 8 kHz; a filter's output
        energy is at most its peak gain squared times the input's). While the energy of the
        windows covering the last 0.4 s, 6 dB up, stays below min_volume's loudness, the
        measurement cannot reach min_volume and is skipped; at min_volume 0.6 a line's hiss up
        to about -57 dBFS stays below it, speech does not."""
        super().set_params(params)
        window = self.num_frames_required()
        self._window_bytes = window * self.num_channels * 2
        secs_per_window = window / self.sample_rate
        self._start_windows = round(params.start_secs / secs_per_window)
        self._stop_windows = round(params.stop_secs / secs_per_window)
        # The VAD's state starts afresh; the volume's doesn't (it follows the audio stream).
        self._starting = self._stopping = 0
        self._state = VADState.QUIET
        span = math.ceil(VOLUME_WINDOW_SECS * self.sample_rate)  # the volume tracker's samples
        self._recent_energy: deque[float] = deque(maxlen=math.ceil(span / window) + 1)
        self._faint_energy = faint_energy(params.min_volume, self.sample_rate)

    def _wake_model(self) -> None:
        """Catch up on the skipped windows (after a long quiet spell: fresh state, then the
        ring as lead-in), keeping Pipecat's periodic-reset bookkeeping as if it had run."""
        if self._windows_asleep > len(self._quiet_windows):
            self._model.reset_states()  # type: ignore[union-attr]
            self._windows_since_reset = 0
            self._low_confidence_windows = 0
        for window in self._quiet_windows:
            self._score(window)  # scores it and keeps the reset bookkeeping
            self.windows_scored += 1
        self._quiet_windows.clear()
        self._windows_asleep = 0
