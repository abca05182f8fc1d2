"""Silero VAD from the ONNX model that ships inside Pipecat, one ONNX session per process.

Pipecat's SileroVADAnalyzer opens a new onnxruntime session per analyzer, i.e. per call.
The session is read-only after loading; only the recurrent state is per call, and that
lives in SileroOnnxModel. So each call gets its own SileroOnnxModel around the shared session.
"""

from __future__ import annotations

import functools
from importlib import resources

import onnxruntime

from pipecat.audio.vad.silero import SileroOnnxModel, SileroVADAnalyzer
from pipecat.audio.vad.vad_analyzer import VADAnalyzer, VADParams


@functools.cache
def shared_silero_session() -> onnxruntime.InferenceSession:
    """The process's Silero session (single-threaded: calls run side by side, not within)."""
    path = str(resources.files("pipecat.audio.vad.data").joinpath("silero_vad.onnx"))
    options = onnxruntime.SessionOptions()
    options.inter_op_num_threads = 1
    options.intra_op_num_threads = 1
    return onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"], sess_options=options)


class SharedSileroVADAnalyzer(SileroVADAnalyzer):
    """SileroVADAnalyzer whose model shares the process-wide ONNX session."""

    def __init__(self, *, sample_rate: int | None = None, params: VADParams | None = None):
        VADAnalyzer.__init__(self, sample_rate=sample_rate, params=params)
        model = SileroOnnxModel.__new__(SileroOnnxModel)
        model.session = shared_silero_session()
        model.sample_rates = [8000, 16000]
        model.reset_states()
        self._model = model
        self._windows_since_reset = 0
        self._low_confidence_windows = 0
