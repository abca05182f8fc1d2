"""Pipecat's local smart-turn v3 model, one ONNX session and one inference thread per process.

LocalSmartTurnAnalyzerV3 loads the model into a new onnxruntime session per analyzer (per
call: tens of MB and a load on the event loop at call start) and runs it on a thread of the
analyzer's own. The session is stateless between inferences (each gets the whole turn's audio
features), so every call of a process shares one, and one thread: inferences queue there
(tens of ms each, at most once per caller turn), off the event loop.
"""

from __future__ import annotations

import functools
from concurrent.futures import ThreadPoolExecutor
from importlib import resources

import onnxruntime

from pipelines.compat.pipecat import SmartTurnOnSharedModel

MODEL = "smart-turn-v3.2-cpu.onnx"


@functools.cache
def shared_smart_turn_session() -> onnxruntime.InferenceSession:
    """The process's smart-turn session (options as Pipecat's, one intra-op thread)."""
    path = str(resources.files("pipecat.audio.turn.smart_turn.data").joinpath(MODEL))
    options = onnxruntime.SessionOptions()
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.inter_op_num_threads = 1
    options.intra_op_num_threads = 1
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    return onnxruntime.InferenceSession(path, sess_options=options)


@functools.cache
def shared_smart_turn_executor() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="smart-turn")


class SharedSmartTurnAnalyzer(SmartTurnOnSharedModel):
    """LocalSmartTurnAnalyzerV3 on the process-wide session and inference thread."""

    def __init__(self, **kwargs):
        super().__init__(session=shared_smart_turn_session(), executor=shared_smart_turn_executor, **kwargs)
