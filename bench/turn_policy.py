"""How fast each end-of-turn policy answers a finished caller, and how often it cuts off one who
paused mid-sentence.

    PYTHONPATH=. .venv/bin/python bench/turn_policy.py [--only NAME ...] [--chunk-ms 20]

Every utterance of bench/turn_set/utterances.yaml is spoken by the project's Piper voice at
8 kHz (cached in a temp dir) and played, chunk by chunk, through the real components:
Silero VAD (SharedSileroVADAnalyzer, the campaign's VAD params), Pipecat's user-turn stop
strategies fed the frames the user aggregator feeds them (VAD start/stop, caller audio,
transcripts), and smart-turn v3 (SharedSmartTurnAnalyzer) where a policy uses it. The STT is
simulated: at each VAD stop the words spoken so far arrive as a finalized transcript
STT_LATENCY_SECS later (Deepgram answering the Finalize Pipecat sends at VAD stop).

Time is virtual (VirtualClockLoop): a timer due in a second fires at once, a second later on
the loop's clock, so the figures do not depend on how busy this machine is, except smart-turn's
inference, which runs inline and moves the clock on by the wall time it took here.

Per policy: median and p95 delay from the caller's last voiced sample to the end of turn
(complete utterances); the premature rate (incomplete utterances whose turn ended before the
caller's last word, i.e. in the mid-sentence pause); smart-turn ms per decision (wall and CPU).
Prints a table and writes bench/results/turn_policy.json.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import datetime
import hashlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.measures import percentile, speech_end_offset, speech_start_offset  # noqa: E402

TURN_SET = ROOT / "bench" / "turn_set" / "utterances.yaml"
RATE = 8000
STT_LATENCY_SECS = 0.15  # the bench's fake Deepgram: final transcript this long after VAD stop
LEAD_SECS, TAIL_SECS = 0.6, 3.5  # silence before the caller speaks, and after (> any policy's wait)


@dataclass(frozen=True)
class Utterance:
    """One labelled caller utterance: `parts` spoken with `pause_ms` of silence between them."""

    id: str
    lang: str
    label: str  # complete | incomplete
    parts: tuple[str, ...]
    pause_ms: int = 0


def load_turn_set(path: Path = TURN_SET) -> list[Utterance]:
    """The labelled set, checked: incomplete items have two parts and a 400-900 ms pause."""
    items = []
    for raw in yaml.safe_load(path.read_text())["items"]:
        utt = Utterance(raw["id"], raw["lang"], raw["label"], tuple(raw["parts"]), raw.get("pause_ms", 0))
        assert utt.lang in ("en", "hinglish") and utt.label in ("complete", "incomplete"), utt
        if utt.label == "incomplete":
            assert len(utt.parts) == 2 and 400 <= utt.pause_ms <= 900, utt
        else:
            assert len(utt.parts) == 1, utt
        items.append(utt)
    assert len({u.id for u in items}) == len(items), "duplicate ids"
    return items


def _speak_cached(text: str, cache: Path) -> bytes:
    """Piper's 8 kHz PCM for `text`, from the cache dir when synthesized before."""
    path = cache / (hashlib.sha1(text.encode()).hexdigest()[:16] + ".pcm")
    if path.exists():
        return path.read_bytes()
    from bot.simulator.caller_speech import speak

    pcm = speak(text, RATE)
    path.write_bytes(pcm)
    return pcm


@dataclass
class Rendered:
    """An utterance's audio and where its words fall in it (seconds from the audio's start)."""

    audio: bytes
    words: list[tuple[float, str]]  # (midpoint, word) in speaking order
    voiced_end: float  # the caller's last clearly voiced sample
    pause: tuple[float, float] | None  # the mid-sentence silence, voiced sample to voiced sample


def render(utt: Utterance, cache: Path, fragment_comma: bool = False) -> Rendered:
    """Lead silence, the parts trimmed to their voiced samples with `pause_ms` between, tail.
    `fragment_comma` synthesizes an unfinished fragment with a trailing comma, which Piper
    speaks with a continuing rather than a falling, sentence-final melody."""
    chunks = [np.zeros(int(LEAD_SECS * RATE), np.int16)]
    t = LEAD_SECS
    words: list[tuple[float, str]] = []
    pause = None
    for k, text in enumerate(utt.parts):
        last = k == len(utt.parts) - 1
        pcm = _speak_cached(text if last or not fragment_comma else text + ",", cache)
        start, end = speech_start_offset(pcm), speech_end_offset(pcm)
        voiced = np.frombuffer(pcm, np.int16)[int(start * RATE) : int(end * RATE)]
        span = len(voiced) / RATE
        tokens = text.split()
        words += [(t + (j + 0.5) * span / len(tokens), w) for j, w in enumerate(tokens)]
        chunks.append(voiced)
        t += span
        if k < len(utt.parts) - 1:
            pause = (t, t + utt.pause_ms / 1000)
            chunks.append(np.zeros(int(utt.pause_ms * RATE / 1000), np.int16))
            t += utt.pause_ms / 1000
    voiced_end = t
    chunks.append(np.zeros(int(TAIL_SECS * RATE), np.int16))
    return Rendered(np.concatenate(chunks).tobytes(), words, voiced_end, pause)


class VirtualClockLoop(asyncio.SelectorEventLoop):
    """An event loop whose clock moves only when every task waits on a timer: the wait is
    skipped and the clock set to the timer's due time. (I/O still wakes it as usual.)"""

    def __init__(self):
        super().__init__()
        self.now = 0.0
        real_select = self._selector.select

        def select(timeout=None):
            events = real_select(0)
            if events or timeout is None or timeout <= 0:
                return events if events or timeout is not None else real_select(None)
            self.now += timeout
            return []

        self._selector.select = select

    def time(self) -> float:
        return self.now


class InlineExecutor(concurrent.futures.Executor):
    """Runs smart-turn's inference at once on the loop's thread, records its cost, and moves the
    virtual clock on by the wall time it took (the decision is that much later)."""

    def __init__(self, loop: VirtualClockLoop, costs: list[tuple[float, float]]):
        self._loop, self._costs = loop, costs

    def submit(self, fn, /, *args, **kwargs):
        future: concurrent.futures.Future = concurrent.futures.Future()
        wall, cpu = time.perf_counter(), time.thread_time()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting task
            future.set_exception(exc)
        wall, cpu = time.perf_counter() - wall, time.thread_time() - cpu
        self._costs.append((wall * 1000, cpu * 1000))
        self._loop.now += wall
        return future


@dataclass(frozen=True)
class Policy:
    name: str
    vad_stop_secs: float
    make: Callable[["Harness"], object]  # the stop strategy, given the harness
    note: str = ""


@dataclass
class Harness:
    loop: VirtualClockLoop
    smart_turn_costs: list[tuple[float, float]] = field(default_factory=list)

    def smart_turn(self, stop_secs: float):
        """The project's shared smart-turn analyzer, its inference run inline (see InlineExecutor)."""
        from pipecat.audio.turn.smart_turn.base_smart_turn import SmartTurnParams

        from pipelines.compat.pipecat import SmartTurnOnSharedModel
        from pipelines.providers.smart_turn import shared_smart_turn_session

        executor = InlineExecutor(self.loop, self.smart_turn_costs)
        return SmartTurnOnSharedModel(session=shared_smart_turn_session(), executor=lambda: executor,
                                      params=SmartTurnParams(stop_secs=stop_secs))


def speech_timeout(stop: float, timeout: float, note: str = "") -> Policy:
    from pipecat.turns.user_stop.speech_timeout_user_turn_stop_strategy import SpeechTimeoutUserTurnStopStrategy

    return Policy(f"speech_timeout vad {stop:.1f} + {timeout:.2f}", stop,
                  lambda h: SpeechTimeoutUserTurnStopStrategy(user_speech_timeout=timeout), note)


def smart_turn(stop: float, smart_stop: float, note: str = "") -> Policy:
    from pipecat.turns.user_stop.turn_analyzer_user_turn_stop_strategy import TurnAnalyzerUserTurnStopStrategy

    return Policy(f"smart_turn vad {stop:.1f}, stop_secs {smart_stop:.1f}", stop,
                  lambda h: TurnAnalyzerUserTurnStopStrategy(turn_analyzer=h.smart_turn(smart_stop)), note)


def transcript_aware(stop: float, fast: float, unfinished: float, smart: bool = False, ambiguous: bool = False,
                     note: str = "") -> Policy:
    from pipelines.turn_end import TranscriptAwareUserTurnStopStrategy

    name = (f"transcript_aware vad {stop:.1f} + {fast:.2f} / {unfinished:.1f}" + (" +ambiguous" if ambiguous else "")
            + (" +smart_turn" if smart else ""))
    return Policy(name, stop, lambda h: TranscriptAwareUserTurnStopStrategy(
        user_speech_timeout=fast, unfinished_timeout=unfinished, wait_on_ambiguous=ambiguous,
        **({"turn_analyzer": h.smart_turn(3.0)} if smart else {})), note)


def policies() -> list[Policy]:
    return [
        speech_timeout(0.2, 0.3, "real_estate before (VAD stop 0.2 + 0.3)"),
        speech_timeout(0.3, 0.3, "hinglish_followup before (VAD stop 0.3 + 0.3)"),
        speech_timeout(0.2, 0.1),
        speech_timeout(0.2, 0.0),
        speech_timeout(0.2, 0.8, "a fixed long wait"),
        speech_timeout(0.3, 0.0, "Deepgram-style endpointing 300 ms (end on the endpoint's final)"),
        speech_timeout(0.5, 0.0, "Deepgram-style endpointing 500 ms"),
        smart_turn(0.2, 1.0),
        smart_turn(0.2, 3.0, "Pipecat's default smart-turn stop_secs"),
        smart_turn(0.1, 1.0),
        transcript_aware(0.2, 0.05, 1.0),
        transcript_aware(0.2, 0.0, 1.2),
        transcript_aware(0.1, 0.05, 1.1),
        transcript_aware(0.2, 0.05, 1.0, ambiguous=True, note="also waits on ko/se/mein/pe/par/tak/in/on"),
        transcript_aware(0.2, 0.3, 1.0, ambiguous=True,
                         note="shipped: with the LLM started on the final transcript (speculative), "
                              "the reply is ready at VAD stop + max(0.3, STT 0.15 + LLM 0.3) as with + 0.05"),
        transcript_aware(0.1, 0.05, 1.1, ambiguous=True),
        transcript_aware(0.2, 0.05, 1.0, smart=True, note="also waits when smart-turn says unfinished"),
        transcript_aware(0.2, 0.05, 1.0, ambiguous=True, smart=True),
    ]


async def play(utt: Utterance, rendered: Rendered, policy: Policy, harness: Harness, chunk_ms: int) -> list[float]:
    """Play one utterance into a fresh strategy; the times (s from audio start) its turns ended."""
    from pipecat.audio.vad.vad_analyzer import VADParams, VADState
    from pipecat.frames.frames import (
        InputAudioRawFrame,
        TranscriptionFrame,
        VADUserStartedSpeakingFrame,
        VADUserStoppedSpeakingFrame,
    )
    from pipecat.processors.frame_processor import FrameProcessorSetup
    from pipecat.utils.asyncio.task_manager import TaskManager

    from pipelines.providers.silero import SharedSileroVADAnalyzer

    loop = harness.loop
    vad = SharedSileroVADAnalyzer(params=VADParams(confidence=0.7, start_secs=0.2, stop_secs=policy.vad_stop_secs,
                                                   min_volume=0.6))
    vad.set_sample_rate(RATE)
    strategy = policy.make(harness)
    await strategy.setup(FrameProcessorSetup(clock=None, task_manager=TaskManager(loop=loop), pipeline_worker=None,
                                             audio_in_sample_rate=RATE))
    t0 = loop.time()
    stops: list[float] = []
    in_turn = False
    sent_words = 0
    pending: set[asyncio.Task] = set()

    async def stopped(_strategy, _params):
        nonlocal in_turn
        if in_turn:
            in_turn = False
            stops.append(loop.time() - t0)
            await strategy.handle_user_turn_stopped()

    strategy.add_event_handler("on_user_turn_stopped", stopped)

    async def transcript(text: str):
        await asyncio.sleep(STT_LATENCY_SECS)
        await strategy.process_frame(TranscriptionFrame(text, "caller", "", finalized=True))

    step = RATE * chunk_ms // 1000 * 2
    speaking = False
    for k in range(len(rendered.audio) // step):
        await asyncio.sleep(max(0.0, t0 + k * step / 2 / RATE - loop.time()))
        audio = rendered.audio[k * step : (k + 1) * step]
        state = vad._run_analyzer(audio)
        now = loop.time()
        if state == VADState.SPEAKING and not speaking:
            speaking = True
            await strategy.process_frame(VADUserStartedSpeakingFrame(start_secs=0.2, timestamp=now))
            if not in_turn:
                in_turn = True
                await strategy.handle_user_turn_started()
        elif state == VADState.QUIET and speaking:
            speaking = False
            await strategy.process_frame(VADUserStoppedSpeakingFrame(stop_secs=policy.vad_stop_secs, timestamp=now))
            heard = (now - t0) + chunk_ms / 1000  # audio played so far, to the end of this chunk
            words = [w for mid, w in rendered.words if mid <= heard]
            text = " ".join(words[sent_words:])
            sent_words = len(words)
            if text:
                task = loop.create_task(transcript(text))
                pending.add(task)
                task.add_done_callback(pending.discard)
        await strategy.process_frame(InputAudioRawFrame(audio, RATE, 1))
    for task in list(pending):
        await task
    await strategy.cleanup()
    return stops


def summarise(policy: Policy, results: dict[str, tuple[Utterance, Rendered, list[float]]],
              costs: list[tuple[float, float]]) -> dict:
    complete_delays, missed, split = [], [], []
    premature, incomplete_delays = [], []
    by_lang: dict[str, list[int]] = {}
    for utt, rendered, stops in results.values():
        first = stops[0] if stops else None
        if utt.label == "complete":
            if first is None:
                missed.append(utt.id)
            elif first < rendered.voiced_end:
                split.append(utt.id)
            else:
                complete_delays.append((first - rendered.voiced_end) * 1000)
        else:
            cut = first is not None and first < rendered.voiced_end
            by_lang.setdefault(utt.lang, [0, 0])
            by_lang[utt.lang][0] += cut
            by_lang[utt.lang][1] += 1
            if cut:
                premature.append(utt.id)
            elif first is not None:
                incomplete_delays.append((first - rendered.voiced_end) * 1000)
    n_incomplete = sum(1 for u, _, _ in results.values() if u.label == "incomplete")
    return {
        "policy": policy.name,
        "note": policy.note,
        "complete_n": len(complete_delays),
        "delay_median_ms": round(statistics.median(complete_delays)) if complete_delays else None,
        "delay_p95_ms": round(percentile(complete_delays, 95)) if complete_delays else None,
        "delay_max_ms": round(max(complete_delays)) if complete_delays else None,
        "complete_split": split,
        "complete_never_ended": missed,
        "premature_rate": round(len(premature) / n_incomplete, 3) if n_incomplete else None,
        "premature_by_lang": {k: f"{v[0]}/{v[1]}" for k, v in sorted(by_lang.items())},
        "premature": premature,
        "incomplete_delay_median_ms": round(statistics.median(incomplete_delays)) if incomplete_delays else None,
        "smart_turn_decisions": len(costs),
        "smart_turn_ms_per_decision": round(statistics.median(c[0] for c in costs), 1) if costs else None,
        "smart_turn_cpu_ms_per_decision": round(statistics.median(c[1] for c in costs), 1) if costs else None,
    }


def run(policy_list: list[Policy], items: list[Utterance], chunk_ms: int, cache: Path,
        fragment_comma: bool = False) -> list[dict]:
    rendered = {u.id: render(u, cache, fragment_comma) for u in items}
    loop = VirtualClockLoop()
    # Smart-turn buffers audio by time.monotonic(); on the virtual clock here.
    import pipecat.audio.turn.smart_turn.base_smart_turn as base_smart_turn

    base_smart_turn.time = types.SimpleNamespace(monotonic=loop.time, perf_counter=time.perf_counter)
    rows = []
    try:
        for policy in policy_list:
            harness = Harness(loop)
            results = {}
            for utt in items:
                stops = loop.run_until_complete(play(utt, rendered[utt.id], policy, harness, chunk_ms))
                results[utt.id] = (utt, rendered[utt.id], stops)
            rows.append(summarise(policy, results, harness.smart_turn_costs))
            print_row(rows[-1])
    finally:
        base_smart_turn.time = time
        loop.close()
    return rows


HEADER = f"{'policy':<46} {'median':>7} {'p95':>6} {'premature':>10} {'en':>5} {'hi':>5} {'st ms':>6} {'st cpu':>7}"


def print_row(r: dict) -> None:
    def f(v):
        return "-" if v is None else str(v)

    print(f"{r['policy']:<46} {f(r['delay_median_ms']):>7} {f(r['delay_p95_ms']):>6} "
          f"{r['premature_rate'] * 100:>9.0f}% {r['premature_by_lang'].get('en', '-'):>5} "
          f"{r['premature_by_lang'].get('hinglish', '-'):>5} {f(r['smart_turn_ms_per_decision']):>6} "
          f"{f(r['smart_turn_cpu_ms_per_decision']):>7}", flush=True)


def main() -> None:
    from loguru import logger

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="*", help="policies whose name contains one of these")
    parser.add_argument("--chunk-ms", type=int, default=20, help="caller audio per frame (Exotel sends 100)")
    parser.add_argument("--fragment-comma", action="store_true",
                        help="speak unfinished fragments with a continuing melody (Piper, trailing comma)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "turn_policy.json")
    args = parser.parse_args()
    logger.remove()
    logger.add(sys.stderr, level="WARNING", filter=lambda r: "differs from the recommended" not in r["message"])

    items = load_turn_set()
    chosen = [p for p in policies() if not args.only or any(s in p.name for s in args.only)]
    cache = Path(tempfile.gettempdir()) / "turn_set_pcm"
    cache.mkdir(exist_ok=True)
    print(f"{len(items)} utterances ({sum(u.label == 'complete' for u in items)} complete), "
          f"{args.chunk_ms} ms chunks, STT final {STT_LATENCY_SECS * 1000:.0f} ms after VAD stop")
    print("delay: caller's last voiced sample -> end of turn, complete utterances (ms); premature: "
          "incomplete utterances whose turn ended in the pause; st: smart-turn ms per decision")
    print(HEADER)
    rows = run(chosen, items, args.chunk_ms, cache, args.fragment_comma)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    report = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "commit": commit,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "loadavg": os.getloadavg()},
        "setup": {"utterances": len(items), "chunk_ms": args.chunk_ms, "fragment_comma": args.fragment_comma, "stt_latency_ms": STT_LATENCY_SECS * 1000,
                  "vad": "SharedSileroVADAnalyzer confidence 0.7, start_secs 0.2, min_volume 0.6",
                  "clock": "virtual (smart-turn inference advances it by its measured wall time)"},
        "policies": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
