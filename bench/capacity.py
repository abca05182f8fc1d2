"""How many simultaneous calls the server carries on this machine before latency or audio suffers.

    .venv/bin/python bench/capacity.py [--calls 1,25,50,75,100] [--seconds 20] [--workers 0]
                                       [--ramp-secs 10] [--compare-calls 10] [--profile]

The agent runs as deployed (bench/process_stack.py): `server.py` with WORKERS processes (0 = two
per core) sharing the port and the SQLite store, the campaign configs/real_estate.yaml as
shipped (its greeting, turn-taking, fillers), the wire-level fakes of Deepgram (150 ms),
OpenAI (300 ms to first token) and ElevenLabs (120 ms to first byte, 30 ms per character) in a
process of their own, and N emulated Exotel callers (bot/simulator/exotel_emulator.py) in this process.
Every call: the pre-synthesized greeting (as the dialler leaves it in the shared speech cache),
a first caller line 0.7 s after it, then a second line started 1 s into the bot's reply (a
barge-in), the reply to it, maybe a third line, and a hang-up after `--seconds` of script time
(counted from the greeting's first audio). Calls start spread over
`--ramp-secs` (a dialler places calls at a rate; 0 = all in the same instant).

Per level:
- protocol violations and playback gaps (as the emulator judges them);
- greeting: socket open -> first bot media, p50/p95 (caller's view);
- voice-to-voice p50/p95 from the server's per-turn metrics (the call record's turns), and
  "added" = v2v - floor, floor = the campaign's VAD stop + speech timeout + LLM TTFT + TTS TTFB
  (what load adds on the server); the caller's view too (last voiced audio sent -> first bot
  media), and it minus the providers' latencies ("caller added", the policy's wait included);
- barge-in: from when the caller's onset of speech left the emulator to the `clear` it got,
  p50/p95 (target: with min_words 1, VAD start + 50 ms; with min_words N > 1, N words of the
  STT fake's interim results, one per 400 ms of speech, + 100 ms), and stale media (bot audio
  that arrived after the `clear` before the caller's line ended + VAD stop; target 0);
- CPU seconds of the server's processes, of the fakes' process and of this (callers') process,
  per call and per call-second; RSS growth of the workers per call; this process's loop lag
  (a lagging caller process would show up as false gaps).

Every level runs; a level is clean with no gaps, violations or stale media, added p95 <= 100 ms
and barge-in p95 within target; the highest clean level is reported. `--profile` records the server's workers with
py-spy during every level (bench/results/profile_*.txt, collapsed stacks). Then (unless
--compare-calls 0) bench/transport_compare.py runs our transport and Pipecat's built-in one side
by side on the same TTS-free audio.

Writes bench/results/latest.json, latest.md and latency_vs_calls.png (`--name` for others).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench.measures import barge_in, percentile, reply_latencies, speech_end_offset, speech_start_offset  # noqa: E402
from bench.process_stack import ProcessStack, prioritise_harness, process_stack  # noqa: E402
from bot.config.campaigns import load_campaign  # noqa: E402
from bot.config.logging_setup import setup_logging  # noqa: E402
from bot.server.workers import worker_count  # noqa: E402
from bot.simulator.caller_speech import speak  # noqa: E402
from bot.simulator.exotel_emulator import HangUp, Say  # noqa: E402

LINES = ["Yes I can talk now", "My budget is about eighty lakhs", "I want a two bedroom flat",
         "Maybe in three months", "Weekends are better for me", "Thank you"]
# Long enough (3.4 s at 30 ms per character) that a barge-in 1 s into it, which with min_words 2
# is confirmed ~0.8 s after the caller's onset, still finds the bot talking.
REPLY = ("Okay, noted. We have two and three bedroom homes in Whitefield, ready next year. "
         "What budget do you have in mind?")
STT_MS, LLM_MS, TTS_MS, MS_PER_CHAR = 150, 300, 120, 30
STT_INTERIM_SECS = 0.4  # the STT fake: one more word in its interim results per 400 ms of speech
PROVIDERS = (STT_MS + LLM_MS + TTS_MS) / 1000
# The campaign as shipped: the benchmark overrides nothing in it (CAMPAIGN_TWEAKS stays empty).
CAMPAIGN = load_campaign(ROOT / "configs" / "real_estate.yaml")
CAMPAIGN_TWEAKS: dict = {}
TURN_TAKING = CAMPAIGN.turn_taking
VAD_START, VAD_STOP = TURN_TAKING.vad.start_secs, TURN_TAKING.vad.stop_secs
SPEECH_TIMEOUT = TURN_TAKING.user_speech_timeout_secs
if TURN_TAKING.stop_strategy == "transcript_aware" and TURN_TAKING.speculative_llm:
    # The LLM starts on the final transcript while the speech timeout runs.
    FLOOR = VAD_STOP + max(SPEECH_TIMEOUT, STT_MS / 1000 + LLM_MS / 1000) + TTS_MS / 1000
else:
    FLOOR = max(VAD_STOP + SPEECH_TIMEOUT, VAD_STOP + STT_MS / 1000) + LLM_MS / 1000 + TTS_MS / 1000
GREETING_SECS = len(CAMPAIGN.render_greeting({"name": "Rahul"})) * MS_PER_CHAR / 1000
FIRST_LINE_AT = GREETING_SECS + 0.7  # script time counts from the greeting's first audio
BARGE_IN_AFTER = FLOOR + 1.0  # after the first line ends: ~1 s into the bot's 3.4 s reply
TURN_GAP_SECS = 5.5  # after a line ends: room for the reply (~1 s to start, 3.4 s long)
ADDED_P95_LIMIT = 0.100
BARGE_IN_LIMIT = (VAD_START + 0.050 if TURN_TAKING.min_words == 1
                  else TURN_TAKING.min_words * STT_INTERIM_SECS + 0.100)
EMULATOR_OPTIONS = {"script_from_first_audio": True}
RESULTS = ROOT / "bench" / "results"
# The provider fakes' latencies and script (bench/fake_providers.py), for every benchmark that
# serves these calls.
FAKES_CONFIG = {"stt_ms": STT_MS, "llm_ms": LLM_MS, "tts_ms": TTS_MS, "ms_per_char": MS_PER_CHAR,
                "lines": LINES, "reply": REPLY}


def speed_index_ms() -> float:
    """How fast this machine runs Python right now: a fixed loop, best of five, in ms. This
    host's speed drifts (the same code measured 0.0116 and 0.0171 CPU-s per call-second on
    different days), so every level records it next to its figures."""
    best = float("inf")
    for _ in range(5):
        started, total = time.process_time(), 0
        for i in range(300_000):
            total += i * i % 7
        best = min(best, time.process_time() - started)
    return round(best * 1000, 1)


def package_versions() -> dict[str, str]:
    """What the run measured besides our code: a fresh setup takes the newest releases."""
    from importlib.metadata import PackageNotFoundError, version

    names = ("pipecat-ai", "uvicorn", "websockets", "uvloop", "onnxruntime", "numpy", "openai", "deepgram-sdk",
             "sqlalchemy", "aiosqlite")
    found = {}
    for name in names:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            pass
    return {"python": sys.version.split()[0], **found}


def r4(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def call_script(index: int, pcms: list[bytes], seconds: float) -> tuple[list, list[float], list[tuple[float, float]]]:
    """Line 1 0.7 s after the greeting; line 2 starts 1 s into the bot's reply to it (a barge-in); then a line
    every ~7 s while the call lasts (up to 5 lines); hang up at `seconds`. Lines rotate per call. Returns the script, each line's end (for
    voice-to-voice) and each barge-in's (speech onset, speech end), as seconds into the call."""
    script, ends, barge_ins = [], [], []
    at = FIRST_LINE_AT
    for k in range(5):
        pcm = pcms[(index + k) % len(pcms)]
        if at + len(pcm) / 16000 + 2.0 > seconds:
            break
        script.append(Say(at=at, pcm=pcm))
        end = at + speech_end_offset(pcm)
        ends.append(end)
        if k == 1:
            barge_ins.append((at + speech_start_offset(pcm), end))
        at = end + (BARGE_IN_AFTER if k == 0 else TURN_GAP_SECS)
    script.append(HangUp(at=seconds))
    return script, ends, barge_ins


def metric_values(records: list[dict | None], key: str) -> list:
    """`key` from the metrics of each call record that has it (None: a call with no record)."""
    return [r["metrics"][key] for r in records if r and r["metrics"].get(key) is not None]


def added_by_stage(turns: list[dict]) -> dict[str, list]:
    """Where the added time of the turns goes, p50/p95 in seconds: turn end (speech end ->
    the user aggregator ends the turn, beyond VAD stop + speech timeout), LLM (turn end -> first
    token, beyond its TTFT), TTS (first token -> first audio, beyond its TTFB) and output (first
    audio -> sent to Exotel)."""
    rows: dict[str, list[float]] = {"turn_end": [], "llm": [], "tts": [], "output": []}
    for t in turns:
        keys = ("user_stopped_to_turn_end", "llm_first_text_after", "tts_first_audio_after", "voice_to_voice")
        if not all(t.get(k) is not None for k in keys):
            continue
        rows["turn_end"].append(t["user_stopped_to_turn_end"] - VAD_STOP - SPEECH_TIMEOUT)
        rows["llm"].append(t["llm_first_text_after"] - t["user_stopped_to_turn_end"] - LLM_MS / 1000)
        rows["tts"].append(t["tts_first_audio_after"] - t["llm_first_text_after"] - TTS_MS / 1000)
        rows["output"].append(t["voice_to_voice"] - t["tts_first_audio_after"])
    return {name: [r4(percentile(v, 50)), r4(percentile(v, 95))] for name, v in rows.items() if v}


def barge_in_figures(result, barge_ins: list[tuple[float, float]]) -> tuple[list[float], int, int]:
    """Per barge-in (bench/measures.py barge_in): the caller's onset of speech as the emulator
    sent it -> the first `clear` after it; stale = bot media that arrived after that clear
    before the caller's line ended + VAD stop. Returns (latencies, stale messages, barge-ins
    with no clear)."""
    latencies, stale, missed = [], 0, 0
    for onset, end in barge_ins:
        figures = barge_in(result, onset, end, VAD_STOP)
        if figures is None:
            continue
        if figures["clear"] is None:
            missed += 1
            continue
        latencies.append(figures["clear"])
        stale += figures["stale"]
    return latencies, stale, missed


class Sampler:
    """Peak RSS of the server's workers, and this process's event-loop lag, while a level runs."""

    def __init__(self, stack: ProcessStack, every: float = 0.05):
        self.stack, self.every = stack, every
        self.peak_rss = stack.workers_rss()
        self.lags: list[float] = []
        self._task: asyncio.Task | None = None
        self._n = 0

    async def _run(self) -> None:
        while True:
            t = time.monotonic()
            await asyncio.sleep(self.every)
            self.lags.append(time.monotonic() - t - self.every)
            self._n += 1
            if self._n % 10 == 0:
                self.peak_rss = max(self.peak_rss, self.stack.workers_rss())

    def __enter__(self):
        self._task = asyncio.create_task(self._run())
        return self

    def __exit__(self, *exc):
        self._task.cancel()


async def _delayed(delay: float, coro):
    if delay > 0:
        await asyncio.sleep(delay)
    return await coro


async def run_level(stack: ProcessStack, n: int, seconds: float, pcms: list[bytes], ramp_secs: float = 0.0,
                    profile_to: Path | None = None) -> dict:
    gc.collect()
    speed_before = speed_index_ms()
    me = psutil.Process()
    stalls0 = sum(h.get("loop_lag", {}).get("stalls", 0) for h in (await stack.worker_health()).values())
    rss0 = stack.workers_rss()
    cpu0, fakes0, callers0 = stack.server_cpu(), stack.fakes_cpu(), sum(me.cpu_times()[:2])
    t0 = time.monotonic()
    emus, ends_by_call, barges_by_call = [], [], []
    for i in range(n):
        emu = stack.emulator(max_secs=seconds + 40, **EMULATOR_OPTIONS)
        script, ends, barge_ins = call_script(i, pcms, seconds)
        emus.append((emu, script))
        ends_by_call.append(ends)
        barges_by_call.append(barge_ins)
    profilers = start_profilers(stack, profile_to, seconds + ramp_secs) if profile_to else []
    with Sampler(stack) as sampler:
        results = await asyncio.gather(*(_delayed(i * ramp_secs / n, emu.run(script))
                                         for i, (emu, script) in enumerate(emus)))
        wall = time.monotonic() - t0
        cpu = stack.server_cpu() - cpu0
        fakes_cpu, callers_cpu = stack.fakes_cpu() - fakes0, sum(me.cpu_times()[:2]) - callers0
    health = await stack.worker_health()
    fakes_lag = await stack.fakes_loop_lag()
    for profiler in profilers:
        profiler.wait()
    records = await asyncio.gather(*(stack.record(emu.config.call_sid) for emu, _ in emus))
    turns = [t for r in records if r for t in r["turns"]]
    v2v = [t["voice_to_voice"] for t in turns if t.get("voice_to_voice") is not None]
    stages = added_by_stage(turns)
    added = [v - FLOOR for v in v2v]
    caller_v2v = [latency for result, ends in zip(results, ends_by_call, strict=False)
                  for latency in reply_latencies(result, ends, TURN_GAP_SECS)]
    caller_added = [v - PROVIDERS for v in caller_v2v]
    greet = [r.first_media_after_start for r in results if r.first_media_after_start is not None]
    barge, stale, missed = [], 0, 0
    barge_by_worker: dict[str, list[float]] = {}
    for result, barge_ins, record in zip(results, barges_by_call, records, strict=False):
        latencies, stale_here, missed_here = barge_in_figures(result, barge_ins)
        pid = str((record or {}).get("metrics", {}).get("worker_pid"))
        barge_by_worker.setdefault(pid, []).extend(round(x, 3) for x in latencies)
        barge += latencies
        stale += stale_here
        missed += missed_here
    pipe_start = metric_values(records, "pipeline_started_after_start_secs")
    first_audio = metric_values(records, "first_audio_after_start_secs")
    gaps = [g for r in results for _, g in r.gaps]
    violations = [v for r in results for v in r.violations]
    call_secs = sum((r.closed_at or seconds) for r in results) or n * seconds
    return {
        "calls": n,
        "speed_index_ms": [speed_before, speed_index_ms()],  # before / after the level (lower = faster)
        "call_secs": seconds,
        "ramp_secs": ramp_secs,
        "wall_secs": round(wall, 2),
        "connect_errors": sum(1 for r in results if r.connect_error),
        "records_found": sum(1 for r in records if r),
        "greeting_prepared": sum(1 for prepared in metric_values(records, "greeting_prepared") if prepared),
        "violations": len(violations),
        "violation_examples": sorted({v.split("s ", 1)[-1] for v in violations})[:5],
        "gaps": len(gaps),
        "gap_secs_total": round(sum(gaps), 3),
        "gap_max": r4(max(gaps) if gaps else 0.0),
        "gaps_at_call_secs": sorted(round(at, 2) for r in results for at, _ in r.gaps)[:20],
        "gaps_into_utterance_secs": sorted(round(at, 2) for r in results for at in r.gaps_into_utterance)[:20],
        "longest_gaps": sorted(([r.config.call_sid, round(at, 3), round(into, 3), round(g, 4)]
                                for r in results for (at, g), into in zip(r.gaps, r.gaps_into_utterance, strict=False)),
                               key=lambda row: -row[3])[:5],
        "turns_expected": sum(len(e) for e in ends_by_call),
        "turns_measured": len(v2v),
        "greeting_p50": r4(percentile(greet, 50)),
        "greeting_p95": r4(percentile(greet, 95)),
        "server_pipeline_started_p95": r4(percentile(pipe_start, 95)),
        "server_first_audio_p95": r4(percentile(first_audio, 95)),
        "v2v_p50": r4(percentile(v2v, 50)),
        "v2v_p95": r4(percentile(v2v, 95)),
        "caller_v2v_p50": r4(percentile(caller_v2v, 50)),
        "caller_v2v_p95": r4(percentile(caller_v2v, 95)),
        "caller_added_p50": r4(percentile(caller_added, 50)),
        "caller_added_p95": r4(percentile(caller_added, 95)),
        "fillers_played": sum(metric_values(records, "fillers_played")),
        "added_p50": r4(percentile(added, 50)),
        "added_p95": r4(percentile(added, 95)),
        "added_max": r4(max(added) if added else None),
        "barge_ins": sum(len(b) for b in barges_by_call),
        "barge_ins_without_clear": missed,
        "barge_in_p50": r4(percentile(barge, 50)),
        "barge_in_p95": r4(percentile(barge, 95)),
        "barge_in_max": r4(max(barge) if barge else None),
        "stale_media_after_clear": stale,
        "server_cpu_secs": round(cpu, 3),
        "server_cpu_secs_per_call": round(cpu / n, 4),
        "server_cpu_per_call_sec": round(cpu / call_secs, 5),
        "server_cores_busy": round(cpu / wall, 3),
        "fakes_cpu_secs": round(fakes_cpu, 3),
        "callers_cpu_secs": round(callers_cpu, 3),
        "machine_cores_busy": round((cpu + fakes_cpu + callers_cpu) / wall, 3),
        "rss_before_mb": round(rss0 / 2**20, 1),
        "rss_peak_mb": round(sampler.peak_rss / 2**20, 1),
        "rss_growth_per_call_mb": round((sampler.peak_rss - rss0) / n / 2**20, 2),
        "calls_per_worker": sorted(Counter(r["metrics"].get("worker_pid") for r in records if r).values()),
        "worker_loop_lag_p95_ms": sorted(h.get("loop_lag", {}).get("p95_ms", -1) for h in health.values()),
        "worker_loop_lag_max_ms": sorted(h.get("loop_lag", {}).get("max_ms", -1) for h in health.values()),
        "added_by_stage_p50_p95": stages,
        "barge_in_by_worker": barge_by_worker,
        "early_clear_holds_expired": sum(metric_values(records, "early_clear_holds_expired")),
        "audio_dropped_in_hold_secs": round(sum(metric_values(records, "audio_dropped_in_hold_bytes")) / 16000, 3),
        "worker_gc_last_minute": [h.get("loop_lag", {}).get("gc") for h in health.values()],
        "worker_loop_stalls_over_100ms": sum(h.get("loop_lag", {}).get("stalls", 0) for h in health.values()) - stalls0,
        "fakes_loop_lag_p95_ms": fakes_lag["p95_ms"],
        "fakes_loop_lag_max_ms": fakes_lag["max_ms"],
        "callers_loop_lag_p95": r4(percentile(sampler.lags, 95)),
        "callers_loop_lag_max": r4(max(sampler.lags) if sampler.lags else None),
    }


def is_clean(level: dict) -> bool:
    return (level["gaps"] == 0 and level["violations"] == 0 and level["connect_errors"] == 0
            and level["records_found"] == level["calls"] and level["stale_media_after_clear"] == 0
            and level["barge_ins_without_clear"] == 0
            and level["added_p95"] is not None and level["added_p95"] <= ADDED_P95_LIMIT
            and level["barge_in_p95"] is not None and level["barge_in_p95"] <= BARGE_IN_LIMIT)


def start_profilers(stack: ProcessStack, out: Path, secs: float) -> list[subprocess.Popen]:
    """py-spy on every worker for `secs` (collapsed stacks); nothing if py-spy is missing."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(py_spy).exists():
        print("py-spy not installed: no profile", flush=True)
        return []
    out.parent.mkdir(parents=True, exist_ok=True)
    return [subprocess.Popen([py_spy, "record", "--nonblocking", "-r", "100", "-f", "raw", "-d", str(int(secs)),
                              "-p", str(worker.pid), "-o", str(out.with_name(f"{out.stem}_{k}.txt"))],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for k, worker in enumerate(stack.workers())]


async def prefill_greeting(stack: ProcessStack) -> None:
    """Put the greeting in the shared speech cache, as the dialler does when it places a call."""
    from bot.config.campaigns import load_campaign
    from pipelines.speech_cache import speech_cache_for
    from pipelines.voices import prepare_line

    settings = stack.settings
    campaign = load_campaign(settings.campaigns_dir / "real_estate.yaml")
    text = campaign.render_greeting({"name": "Rahul"})
    await prepare_line(speech_cache_for(settings), campaign, settings, text, 8000)


async def run_levels(levels: list[int], seconds: float, log, ramp_secs: float, workers: int,
                     profile: bool) -> tuple[list[dict], dict]:
    pcms = [speak(line) for line in LINES]
    out: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        async with process_stack(Path(tmp), workers=workers, fakes_config=FAKES_CONFIG, campaign_tweaks=CAMPAIGN_TWEAKS) as stack:
            log(f"server up: {len(stack.workers())} worker process(es)")
            log("warm-up: one call per worker (greeting spoken live by the TTS fake)")
            warm = await run_level(stack, len(stack.workers()), min(seconds, 12.0), pcms)
            warmup = {"greeting_live_tts_p50": warm["greeting_p50"], "v2v_p50": warm["v2v_p50"],
                      "violations": warm["violations"], "gaps": warm["gaps"]}
            await prefill_greeting(stack)
            for n in levels:
                log(f"level {n}: {n} calls x {seconds:.0f} s, starts spread over {ramp_secs:.0f} s")
                profile_to = RESULTS / f"profile_{n}calls.txt" if profile else None
                level = await run_level(stack, n, seconds, pcms, ramp_secs, profile_to)
                level["clean"] = is_clean(level)
                out.append(level)
                log("  " + ", ".join(f"{k}={level[k]}" for k in (
                    "violations", "gaps", "greeting_p95", "v2v_p50", "v2v_p95", "added_p95", "barge_in_p95",
                    "stale_media_after_clear", "barge_ins_without_clear", "server_cpu_per_call_sec",
                    "server_cores_busy", "machine_cores_busy", "rss_growth_per_call_mb", "turns_measured",
                    "calls_per_worker", "worker_loop_lag_p95_ms", "worker_loop_lag_max_ms",
                    "worker_loop_stalls_over_100ms", "fakes_loop_lag_p95_ms", "fakes_loop_lag_max_ms",
                    "speed_index_ms")))
                await asyncio.sleep(2.0)
            workers_seen = len(stack.workers())
    return out, {**warmup, "workers": workers_seen}


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.0f}"


def gap_detail(level: dict) -> str:
    """' (N ms in all, max M)' when there were gaps: a 6 ms underrun is not a 300 ms one."""
    if not level["gaps"]:
        return ""
    return f" ({level['gap_secs_total'] * 1000:.0f} ms, max {level['gap_max'] * 1000:.0f})"


def markdown(report: dict) -> str:
    lines = [
        f"# Capacity ({report['when']})", "",
        f"`server.py` with {report['warmup']['workers']} worker processes on {report['machine']['cpus']} CPUs "
        f"(load avg before {report['machine']['loadavg_before']}); campaign configs/real_estate.yaml as shipped "
        f"(min_words {TURN_TAKING.min_words}, VAD start/stop {VAD_START}/{VAD_STOP} s, speech timeout "
        f"{SPEECH_TIMEOUT} s, fillers {'on' if CAMPAIGN.fillers.enabled else 'off'}); provider fakes in their own "
        f"process: STT {STT_MS} ms, LLM TTFT {LLM_MS} ms, TTS TTFB {TTS_MS} ms ({MS_PER_CHAR} ms/char; the LLM says "
        f"one fixed line, the STT adds one interim word per {STT_INTERIM_SECS * 1000:.0f} ms of speech); floor "
        f"{FLOOR * 1000:.0f} ms (turn policy + providers). Emulated callers in the benchmark's process"
        f"{' (fakes and callers at a higher priority than the server)' if report['machine'].get('harness_prioritised') else ''}. "
        f"Calls: {report['call_secs']:.0f} s "
        f"each, starts spread over {report['ramp_secs']:.0f} s; pre-synthesized greeting, a caller line every ~7 s, one "
        f"barge-in 1 s into a reply (target clear <= {BARGE_IN_LIMIT * 1000:.0f} ms after the caller's onset). "
        "v2v and added: server view, added over the floor; caller v2v: last voiced audio sent -> first bot media, "
        f"caller added = caller v2v - providers ({PROVIDERS * 1000:.0f} ms). CPU per call-s: the server's "
        "processes only.", "",
        "| calls | viol. | gaps | greeting p50/p95 ms | v2v p50/p95 ms | added p50/p95/max ms | "
        "caller v2v p50/p95 ms | caller added p50/p95 ms | "
        "barge-in clear p50/p95 ms | stale | turns | fillers | server CPU per call-s | server cores | "
        "all cores busy | RSS MB/call | clean | speed index ms |",
        "|---:|---:|---:|---|---|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in report["levels"]:
        lines.append(
            f"| {r['calls']} | {r['violations']} | {r['gaps']}{gap_detail(r)} | "
            f"{ms(r['greeting_p50'])} / {ms(r['greeting_p95'])} | "
            f"{ms(r['v2v_p50'])} / {ms(r['v2v_p95'])} | {ms(r['added_p50'])} / {ms(r['added_p95'])} / "
            f"{ms(r['added_max'])} | {ms(r['caller_v2v_p50'])} / {ms(r['caller_v2v_p95'])} | "
            f"{ms(r['caller_added_p50'])} / {ms(r['caller_added_p95'])} | "
            f"{ms(r['barge_in_p50'])} / {ms(r['barge_in_p95'])} | "
            f"{r['stale_media_after_clear']} | {r['turns_measured']}/{r['turns_expected']} | {r['fillers_played']} | "
            f"{r['server_cpu_per_call_sec']:.4f} | {r['server_cores_busy']:.2f} | {r['machine_cores_busy']:.2f} | "
            f"{r['rss_growth_per_call_mb']:.2f} | {'yes' if r['clean'] else 'no'} | "
            f"{' / '.join(map(str, r.get('speed_index_ms') or []))} |")
    lines += ["", "Speed index: a fixed Python loop timed before / after the level (lower = faster; this host "
                  "drifts, and so does everything measured here).",
              "", f"Highest clean level: **{report['highest_clean_level']}** concurrent calls "
                  f"(clean = no gaps, violations or stale media, added p95 <= {ADDED_P95_LIMIT * 1000:.0f} ms, "
                  f"barge-in p95 <= {BARGE_IN_LIMIT * 1000:.0f} ms).",
              f"Warm-up calls, greeting spoken live by the TTS fake: {ms(report['warmup']['greeting_live_tts_p50'])} ms "
              "to first media.", ""]
    comp = report.get("transport_comparison")
    if comp:
        lines += [f"## Transport comparison: {comp['calls']} calls, {comp['audio_secs']:.0f} s of prepared audio "
                  f"as {comp['tts_frame_bytes']}-byte TTSAudioRawFrames, hang-up at {comp['call_secs']:.0f} s", "",
                  "| transport | violations | gaps | media msgs | payload sizes | first media p50 ms | "
                  "CPU s/call | CPU per call-s |",
                  "|---|---:|---:|---:|---|---:|---:|---:|"]
        names = {"ours": "ours (ExotelTransport + serializers.exotel)",
                 "builtin": "Pipecat built-in (FastAPIWebsocketTransport + ExotelFrameSerializer)"}
        for key, v in comp["variants"].items():
            lines.append(f"| {names[key]} | {v['violations']} | {v['gaps']} | {v['media_messages']} | "
                         f"{', '.join(map(str, v['payload_sizes']))} | {ms(v['first_media_p50'])} | "
                         f"{v['cpu_secs_per_call']:.3f} | {v['cpu_per_call_sec']:.4f} |")
        lines.append("")
    return "\n".join(lines)


def chart(levels: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [r["calls"] for r in levels]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 4.2), dpi=120)
    for key, label, style in (("v2v_p50", "voice-to-voice p50", "o-"), ("v2v_p95", "voice-to-voice p95", "s-")):
        ax.plot(xs, [(r[key] or float("nan")) * 1000 for r in levels], style, label=label)
    ax.axhline(FLOOR * 1000, color="grey", ls=":", lw=1, label=f"floor {FLOOR * 1000:.0f} ms")
    ax.set_title("Voice-to-voice (server per-turn metrics)")
    for key, label, style in (("added_p50", "added p50", "o-"), ("added_p95", "added p95", "^-")):
        ax2.plot(xs, [(r[key] or float("nan")) * 1000 for r in levels], style, label=label)
    ax2.axhline(ADDED_P95_LIMIT * 1000, color="red", ls="--", lw=1, label="added p95 limit 100 ms")
    ax2.axhline(60, color="orange", ls=":", lw=1, label="1-call target 60 ms")
    ax2.set_title("Added latency (v2v - floor)")
    ax2.set_ylim(bottom=0)
    for a in (ax, ax2):
        a.set_xlabel("concurrent calls")
        a.set_ylabel("ms")
        a.set_xticks(xs)
        a.grid(alpha=0.3)
        a.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", default="1,25,50,75,100", help="comma-separated concurrency levels")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each call")
    parser.add_argument("--workers", type=int, default=0, help="server worker processes (0: two per core)")
    parser.add_argument("--ramp-secs", type=float, default=10.0,
                        help="spread call starts over this many seconds (0: all at once)")
    parser.add_argument("--profile", action="store_true", help="py-spy the workers during the last level")
    parser.add_argument("--compare-calls", type=int, default=10, help="calls for the transport comparison (0: skip)")
    parser.add_argument("--name", default="latest", help="results file names: bench/results/NAME.json, NAME.md")
    args = parser.parse_args()
    levels_wanted = [int(x) for x in args.calls.split(",") if x.strip()]
    workers = worker_count(args.workers)
    setup_logging("WARNING")
    harness_prioritised = prioritise_harness()  # before the fakes start: they inherit it
    started = time.time()
    loadavg = [round(x, 2) for x in psutil.getloadavg()]

    def log(text: str) -> None:
        print(f"[{time.time() - started:6.1f}s] {text}", flush=True)

    levels, warmup = await run_levels(levels_wanted, args.seconds, log, args.ramp_secs, workers, args.profile)
    clean = [r["calls"] for r in levels if r["clean"]]
    report = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "machine": {"cpus": psutil.cpu_count(), "loadavg_before": loadavg,
                    "harness_prioritised": harness_prioritised},
        "versions": package_versions(),
        "provider_latency_ms": {"stt": STT_MS, "llm_ttft": LLM_MS, "tts_ttfb": TTS_MS, "tts_ms_per_char": MS_PER_CHAR},
        "campaign": "configs/real_estate.yaml as shipped (no overrides)",
        "turn_taking": TURN_TAKING.model_dump(),
        "not_as_in_production": ["LLM: the fake says one fixed line every turn, no tool calls",
                                 "STT: the fake's interim results add one scripted word per 400 ms of speech "
                                 "(what min_words counts)"],
        "floor_secs": FLOOR, "barge_in_limit_secs": BARGE_IN_LIMIT, "call_secs": args.seconds,
        "ramp_secs": args.ramp_secs, "levels_requested": levels_wanted,
        "note": ("server_cpu_*: the server's processes (supervisor + workers) only; the provider fakes and the "
                 "emulated callers run in other processes (fakes_cpu_secs, callers_cpu_secs)."),
        "warmup": warmup, "levels": levels,
        "highest_clean_level": max(clean) if clean else 0,
    }
    if args.compare_calls:
        from transport_compare import compare

        log(f"transport comparison: {args.compare_calls} calls each, ours vs Pipecat built-in")
        report["transport_comparison"] = await compare(args.compare_calls)
    report["duration_secs"] = round(time.time() - started)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(report, indent=2))
    md = markdown(report)
    (RESULTS / f"{args.name}.md").write_text(md)
    png = "latency_vs_calls.png" if args.name == "latest" else f"{args.name}_latency_vs_calls.png"
    chart(levels, RESULTS / png)
    print()
    print(md)
    print(f"wrote bench/results/{args.name}.json, {args.name}.md, {png} ({report['duration_secs']} s)")


if __name__ == "__main__":
    import uvloop  # the emulated callers stand in for Exotel: the faster loop (the server's) keeps them punctual

    uvloop.run(main())
