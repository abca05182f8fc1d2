"""Silero's ONNX graph, specialised to one sample rate and one stream: the same model, less work.

The model that ships inside Pipecat takes the sample rate as an input and picks its 8 kHz or
16 kHz network through an `If` node; inside, further `If`s and shape arithmetic (Shape,
Gather, Equal, Squeeze) adapt it to any batch size. onnxruntime evaluates all of that on
every 32 ms window (~100-120 us a window here). With the rate and the shapes fixed (batch 1,
one window plus the model's context), every `If` has a known branch and the shape arithmetic
folds away: ~65 us a window, the same outputs.

The specialised graph is derived from Pipecat's own file (nothing is shipped or downloaded)
and checked against it on random audio every time it is loaded; if the check fails (a future
model of another shape), the original graph is used and a warning says so. Deriving it needs
the `onnx` package, whose import alone takes ~0.9 s, so the result is kept in the system's
temporary folder, named by the model file's hash: later processes only load and check it.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from importlib import resources
from pathlib import Path

import numpy as np
import onnxruntime
from loguru import logger

MODEL_PACKAGE, MODEL_FILE = "pipecat.audio.vad.data", "silero_vad.onnx"
# Samples per window and of context prepended to it (as SileroOnnxModel uses them).
WINDOW = {8000: 256, 16000: 512}
CONTEXT = {8000: 32, 16000: 64}
STATE_SHAPE = (2, 1, 128)
# How many random windows the specialised graph must score exactly as the original does.
CHECK_WINDOWS = 64


def model_path() -> str:
    return str(resources.files(MODEL_PACKAGE).joinpath(MODEL_FILE))


def session_options() -> onnxruntime.SessionOptions:
    """Single-threaded: calls run side by side, not within."""
    options = onnxruntime.SessionOptions()
    options.inter_op_num_threads = 1
    options.intra_op_num_threads = 1
    options.log_severity_level = 3  # not the original graph's note about an unused constant, per process
    return options


def original_session() -> onnxruntime.InferenceSession:
    return onnxruntime.InferenceSession(model_path(), providers=["CPUExecutionProvider"], sess_options=session_options())


def specialised_model_bytes(sample_rate: int) -> bytes:
    """Pipecat's Silero graph with `sr` fixed, every `If` inlined and the input shapes fixed."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(model_path())
    graph = model.graph
    graph.input.remove(next(i for i in graph.input if i.name == "sr"))
    graph.node.insert(0, helper.make_node("Constant", [], ["sr"],
                                          value=numpy_helper.from_array(np.array(sample_rate, np.int64))))
    feeds = _zero_feeds(sample_rate)
    while ifs := [node for node in graph.node if node.op_type == "If"]:
        taken = _if_conditions(model, ifs, feeds)
        nodes = []
        for node in graph.node:
            if node.op_type != "If":
                nodes.append(node)
                continue
            branch = next(a.g for a in node.attribute if a.name == ("then_branch" if taken[node.name] else "else_branch"))
            graph.initializer.extend(branch.initializer)
            nodes.extend(branch.node)
            nodes.extend(helper.make_node("Identity", [inner.name], [outer])
                         for outer, inner in zip(node.output, branch.output, strict=False))
        del graph.node[:]
        graph.node.extend(nodes)
    used = {name for node in graph.node for name in node.input}
    unused = [init for init in graph.initializer if init.name not in used]
    for init in unused:  # constants only the branches not taken read
        graph.initializer.remove(init)
    for graph_input in graph.input:
        for dim, size in zip(graph_input.type.tensor_type.shape.dim, feeds[graph_input.name].shape, strict=False):
            dim.Clear()
            dim.dim_value = size
    del graph.value_info[:]
    model = onnx.shape_inference.infer_shapes(model)
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _zero_feeds(sample_rate: int) -> dict[str, np.ndarray]:
    return {"input": np.zeros((1, WINDOW[sample_rate] + CONTEXT[sample_rate]), np.float32),
            "state": np.zeros(STATE_SHAPE, np.float32)}


def _if_conditions(model, ifs, feeds: dict[str, np.ndarray]) -> dict[str, bool]:
    """Which branch each top-level `If` takes for these input shapes (they depend on shapes
    and the fixed rate only, not on the audio)."""
    import onnx
    from onnx import helper

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    del probe.graph.output[:]
    probe.graph.output.extend(helper.make_tensor_value_info(node.input[0], onnx.TensorProto.BOOL, None)
                              for node in ifs)
    session = onnxruntime.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"],
                                           sess_options=session_options())
    values = session.run(None, feeds)
    return {node.name: bool(np.asarray(value).reshape(-1)[0]) for node, value in zip(ifs, values, strict=False)}


def specialised_session(sample_rate: int) -> onnxruntime.InferenceSession | None:
    """The specialised session (from the cache, or derived and then cached), or None with a
    warning if it cannot be built or does not score random audio as the original graph does."""
    cache = _cache_path(sample_rate)
    try:
        session = _checked_session(cache.read_bytes(), sample_rate)
        if session is not None:
            return session
    except OSError:
        pass  # not cached yet
    try:
        data = specialised_model_bytes(sample_rate)
    except Exception as error:  # a model of another shape: fall back, never fail a call over it
        logger.warning(f"Silero: could not specialise the graph ({type(error).__name__}: {error}); using the original")
        return None
    session = _checked_session(data, sample_rate)
    if session is None:
        logger.warning("Silero: the specialised graph scores differently from Pipecat's; using the original")
        return None
    _write_atomically(cache, data)
    return session


def _cache_path(sample_rate: int) -> Path:
    digest = hashlib.sha256(Path(model_path()).read_bytes()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / "exotel-voice-agent" / f"silero_{digest}_{sample_rate}.onnx"


def _write_atomically(path: Path, data: bytes) -> None:
    """Several workers may start at once: each writes its own file and renames it into place."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, partial = tempfile.mkstemp(dir=path.parent, suffix=".partial")
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(partial, path)
    except OSError as error:
        logger.debug(f"Silero: specialised graph not cached ({error})")


def _checked_session(data: bytes, sample_rate: int) -> onnxruntime.InferenceSession | None:
    try:
        session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"], sess_options=session_options())
    except Exception:  # a damaged cache file
        return None
    return session if _same_scores(session, original_session(), sample_rate) else None


def _same_scores(flat: onnxruntime.InferenceSession, original: onnxruntime.InferenceSession, sample_rate: int) -> bool:
    """Feed both the same random windows, carrying each one's state, and compare every output."""
    rng = np.random.default_rng(0)
    feeds = _zero_feeds(sample_rate)
    state_flat = state_original = feeds["state"]
    sr = np.array(sample_rate, np.int64)
    for k in range(CHECK_WINDOWS):
        window = (rng.standard_normal(feeds["input"].shape) * (0.02 + 0.3 * (k % 4) / 3)).astype(np.float32)
        out_flat, state_flat = flat.run(None, {"input": window, "state": state_flat})
        out_original, state_original = original.run(None, {"input": window, "state": state_original, "sr": sr})
        if not (np.allclose(out_flat, out_original, atol=1e-5) and np.allclose(state_flat, state_original, atol=1e-5)):
            return False
    return True
