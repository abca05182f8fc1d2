"""The shared, quiet-skipping Silero analyzer decides as Pipecat's own one does (but confirms
speech start_secs after its onset, not 0.05-0.2 s later), for less work."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.audio.vad.vad_analyzer import VADParams, VADState

from bench.measures import speech_start_offset
from bot.simulator.caller_speech import speak
from pipelines.providers.silero import SharedSileroVADAnalyzer

LINES = ["Yes I can talk now", "My budget is about eighty lakhs", "I want a two bedroom flat"]
CHUNK = 1600  # 100 ms at 8 kHz, as Exotel sends it
PARAMS = VADParams(confidence=0.7, start_secs=0.2, stop_secs=0.2, min_volume=0.6)


def call_audio(noise_dbfs: float | None, seed: int = 7) -> bytes:
    """Caller lines with 2.3 s of listening between them, on a line with optional hiss."""
    parts = []
    for line in LINES:
        parts += [np.zeros(int(8000 * 2.3), np.int16), np.frombuffer(speak(line), np.int16)]
    parts.append(np.zeros(8000 * 2, np.int16))
    audio = np.concatenate(parts).astype(np.float32)
    if noise_dbfs is not None:
        audio += np.random.default_rng(seed).normal(0, 32768 * 10 ** (noise_dbfs / 20), len(audio))
    return np.clip(audio, -32768, 32767).astype(np.int16).tobytes()


def transitions(analyzer, audio: bytes) -> list[tuple[float, VADState]]:
    analyzer.set_sample_rate(8000)
    out, last = [], None
    for i in range(0, len(audio), CHUNK):
        state = analyzer._run_analyzer(audio[i : i + CHUNK])
        if state != last and state in (VADState.SPEAKING, VADState.QUIET):
            out.append((i / 16000, state))
        last = state if state in (VADState.SPEAKING, VADState.QUIET) else last
    return out


@pytest.mark.parametrize("noise_dbfs", [None, -70, -55, -45])
def test_same_speech_decisions_as_pipecats_analyzer(noise_dbfs):
    audio = call_audio(noise_dbfs)
    theirs = transitions(SileroVADAnalyzer(params=PARAMS), audio)
    ours = transitions(SharedSileroVADAnalyzer(params=PARAMS), audio)
    assert [s for _, s in ours] == [s for _, s in theirs]
    assert len([s for _, s in ours if s == VADState.SPEAKING]) == len(LINES)
    for (t_ours, state), (t_theirs, _) in zip(ours, theirs, strict=False):
        if state == VADState.SPEAKING:  # never later than Pipecat's (beyond one chunk), often earlier
            assert t_ours <= t_theirs + 0.1 + 1e-9, (ours, theirs)
        else:  # where speech ends is unchanged
            assert abs(t_ours - t_theirs) <= 0.1 + 1e-9, (ours, theirs)


@pytest.mark.parametrize("min_volume", [0.6, 0.0])
def test_speech_is_confirmed_start_secs_after_its_onset(min_volume):
    """Barge-in latency: SPEAKING comes with the chunk that completes start_secs of speech,
    wherever in Exotel's 100 ms chunk the caller started (10 phases per line). Counting
    start_secs from the first window Silero is sure of instead (Pipecat's rule) put ~15% of
    onsets a chunk later (this test then fails); Pipecat's own analyzer, with its slowly
    smoothed volume, needs 0.3-0.4 s at min_volume 0.6. The speech is the same on every run;
    over 40 fresh (noisy) syntheses of these lines 8 of 1,200 onsets were still one chunk
    late, never more."""
    late = []
    for line in LINES:
        pcm = speak(line)
        for phase_ms in range(0, 100, 10):
            audio = bytes(16000 + phase_ms * 16) + pcm  # 1 s of silence and the phase first
            onset_chunk = int((1.0 + phase_ms / 1000 + speech_start_offset(pcm)) / 0.1)
            analyzer = SharedSileroVADAnalyzer(params=PARAMS.model_copy(update={"min_volume": min_volume}))
            analyzer.set_sample_rate(8000)
            confirmed = next(k for k in range(len(audio) // CHUNK)
                             if analyzer._run_analyzer(audio[k * CHUNK : (k + 1) * CHUNK]) == VADState.SPEAKING)
            if (confirmed - onset_chunk) * 0.1 > PARAMS.start_secs + 1e-9:
                late.append((line, phase_ms))
    assert not late, late


def test_short_loud_sounds_are_not_speech():
    """Counting from the onset does not let noise through: bursts of noise and tone up to
    0.4 s, at -30 to -6 dBFS, and a train of clicks stay QUIET, as with Pipecat's analyzer."""
    rng = np.random.default_rng(3)
    t = np.arange(3200) / 8000
    sounds = [np.concatenate([np.r_[np.full(8, 20000.0), np.zeros(792)] for _ in range(10)])]
    for n in (480, 960, 1600, 3200):
        for dbfs in (-30, -15, -6):
            sounds.append(rng.normal(0, 32768 * 10 ** (dbfs / 20), n))
            sounds.append(32768 * 10 ** (dbfs / 20) * np.sin(2 * np.pi * 1000 * t[:n]))
    for sound in sounds:
        audio = np.clip(np.concatenate([np.zeros(8000), sound, np.zeros(8000)]), -32768, 32767)
        states = [s for _, s in transitions(SharedSileroVADAnalyzer(params=PARAMS), audio.astype(np.int16).tobytes())]
        assert VADState.SPEAKING not in states, len(sound)


@pytest.mark.parametrize("noise_dbfs", [None, -70, -60, -55, -45])
def test_faint_chunk_shortcut_changes_no_decision(noise_dbfs):
    """The whole-chunk shortcut for a listening caller gives, chunk for chunk, the state, the
    model's windows and the volume that the per-window loop gives."""
    audio = call_audio(noise_dbfs)
    fast, slow = SharedSileroVADAnalyzer(params=PARAMS), SharedSileroVADAnalyzer(params=PARAMS)
    slow.chunk_fast_path = False
    for analyzer in (fast, slow):
        analyzer.set_sample_rate(8000)
    for i in range(0, len(audio), CHUNK):
        chunk = audio[i : i + CHUNK]
        assert fast._run_analyzer(chunk) == slow._run_analyzer(chunk), i / 16000
        assert fast._prev_volume == pytest.approx(slow._prev_volume, abs=1e-9)
    assert (fast.windows_scored, fast.windows_skipped) == (slow.windows_scored, slow.windows_skipped)
    if noise_dbfs is None or noise_dbfs <= -60:  # hiss below the meter's reach: most listening chunks
        assert fast.chunks_fast_pathed > 0.3 * len(audio) / CHUNK
    assert slow.chunks_fast_pathed == 0


def test_quiet_windows_are_not_scored():
    analyzer = SharedSileroVADAnalyzer(params=PARAMS)
    transitions(analyzer, call_audio(-70))
    total = analyzer.windows_scored + analyzer.windows_skipped
    # About half of this clip is the caller listening; the model runs on well under 3/4 of it.
    assert analyzer.windows_skipped > 0.3 * total
    assert analyzer.windows_scored < 0.7 * total


def test_min_volume_zero_scores_every_window():
    analyzer = SharedSileroVADAnalyzer(params=VADParams(min_volume=0.0))
    transitions(analyzer, call_audio(None)[: 8000 * 2 * 3])
    assert analyzer.windows_skipped == 0


async def test_analysis_runs_inline_without_a_thread_per_call():
    before = threading.active_count()
    analyzers = [SharedSileroVADAnalyzer(params=PARAMS) for _ in range(5)]
    speech = speak(LINES[0])
    for analyzer in analyzers:
        analyzer.set_sample_rate(8000)
        for i in range(0, len(speech), CHUNK):
            await analyzer.analyze_audio(speech[i : i + CHUNK])
    assert threading.active_count() == before
    assert all(a._model.session is analyzers[0]._model.session for a in analyzers)


async def test_smart_turn_model_is_shared_and_runs_off_the_loop():
    """Every call's smart-turn analyzer uses the process's one ONNX session and one thread."""
    from pipecat.audio.turn.smart_turn.base_smart_turn import EndOfTurnState

    from bot.config.campaigns import TurnTakingConfig
    from pipelines.builder import turn_strategies

    analyzers = []
    for _ in range(3):
        strategies = turn_strategies(TurnTakingConfig(stop_strategy="smart_turn"), has_stt=True)
        analyzers.append(strategies.stop[0]._turn_analyzer)
    assert len({id(a._session) for a in analyzers}) == 1
    assert len({id(a._model_executor) for a in analyzers}) == 1
    speech = speak("I want a two bedroom flat")
    before = threading.active_count()
    for analyzer in analyzers:
        analyzer.set_sample_rate(8000)
        for i in range(0, len(speech), CHUNK):
            analyzer.append_audio(speech[i : i + CHUNK], is_speech=True)
        state, _ = await analyzer.analyze_end_of_turn()
        assert state in (EndOfTurnState.COMPLETE, EndOfTurnState.INCOMPLETE)
    assert threading.active_count() <= before + 1  # at most the one shared thread, started once


@pytest.mark.parametrize("rate", [8000, 16000])
def test_specialised_graph_scores_speech_as_pipecats_model(rate):
    """The rate-specialised graph (no `If`, no `sr` input, fixed shapes) gives Pipecat's
    model's confidence on every window of a spoken line, state carried across windows."""
    import onnx
    from pipecat.audio.vad.silero import SileroOnnxModel

    from pipelines.providers import silero_graph
    from pipelines.providers.silero import SileroStream

    graph = onnx.load_from_string(silero_graph.specialised_model_bytes(rate)).graph
    assert not [node for node in graph.node if node.op_type == "If"]
    assert [i.name for i in graph.input] == ["input", "state"]
    theirs = SileroOnnxModel(silero_graph.model_path())
    ours = SileroStream(rate)
    assert ours._sr == {}  # the specialised session is the one in use
    window = silero_graph.WINDOW[rate]
    speech = np.frombuffer(speak(LINES[1], sample_rate=rate), np.int16).astype(np.float32) / 32768
    scores = []
    for k in range(len(speech) // window):
        x = speech[k * window : (k + 1) * window]
        scores.append((float(theirs(x, rate)[0, 0]), float(ours(x)[0, 0])))
    assert max(t for t, _ in scores) > 0.9  # speech was heard
    assert np.allclose([t for t, _ in scores], [o for _, o in scores], atol=1e-5)


def test_specialised_graph_falls_back_to_the_original_when_it_scores_differently(monkeypatch, tmp_path):
    """A graph that does not score as Pipecat's (here: every `If` sent down its other branch)
    is not used; nothing is cached; a damaged cache file is rebuilt."""
    from loguru import logger

    from pipelines.providers import silero_graph

    monkeypatch.setattr(silero_graph.tempfile, "tempdir", str(tmp_path))
    warnings: list[str] = []
    sink = logger.add(lambda message: warnings.append(message), level="WARNING")
    try:
        right_branches = silero_graph._if_conditions
        monkeypatch.setattr(silero_graph, "_if_conditions",
                            lambda *args: {name: not taken for name, taken in right_branches(*args).items()})
        assert silero_graph.specialised_session(8000) is None
        assert any("using the original" in w for w in warnings)
        assert not list(tmp_path.rglob("*.onnx"))
        monkeypatch.setattr(silero_graph, "_if_conditions", right_branches)
        assert silero_graph.specialised_session(8000) is not None
        cached = silero_graph._cache_path(8000)
        cached.write_bytes(b"damaged")
        assert silero_graph.specialised_session(8000) is not None
        assert len(cached.read_bytes()) > 100_000
    finally:
        logger.remove(sink)
