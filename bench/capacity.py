"""How many simultaneous calls one server process carries before latency or audio suffers.

    .venv/bin/python bench/capacity.py [--calls 1,10,25,50] [--seconds 20] [--compare-calls 10]
                                       [--ramp-secs 0] [--same-process]

For each concurrency level N, N full calls run at once over real sockets: the real server
(tests/agent_stack.py) with wire-level fakes of Deepgram (150 ms), OpenAI (350 ms to first
token) and ElevenLabs (150 ms to first byte, 30 ms per character), and N emulated Exotel
callers (bot/exotel_emulator.py) that each say 2-3 short lines (Piper speech, cached) at fixed
times and hang up after `--seconds`. The greeting is pre-synthesized into the server's speech
cache (as the dialler does), after one un-counted warm-up call that speaks it live.

Per level:
- protocol violations (sum over calls, as the emulator judges them) and playback gaps;
- greeting latency: socket open -> first bot media, p50/p95 (caller's view);
- voice-to-voice p50/p95 from the server's per-turn metrics (session.turns[*].voice_to_voice),
  and "added" = v2v - floor, floor = VAD stop 0.2 + speech timeout 0.3 + LLM 0.35 + TTS 0.15
  = 1.0 s (as bench/turn_latency.py);
- CPU: the server process's CPU seconds (user+system) over the level, per call and per
  call-second. NOTE: the three provider fakes run in the server's process, so this is an upper
  bound on the server's own cost. The emulated callers run in a separate (spawned) process by
  default, their CPU reported apart; --same-process puts them on the server's event loop too;
- RSS growth per call: (peak RSS while the calls run - RSS before the level) / N;
- event-loop lag (how late a 50 ms sleep wakes up), to explain latency under load.

Levels go up until one has gaps or added p95 > 100 ms; the highest clean level is reported.
Then (unless --compare-calls 0) bench/transport_compare.py runs our transport and Pipecat's
built-in one side by side on the same TTS-free audio.

Writes bench/results/latest.json, latest.md and latency_vs_calls.png.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench.measures import percentile, reply_latencies, speech_end_offset  # noqa: E402
from bot.exotel_emulator import HangUp, Say  # noqa: E402
from bot.fakes.openai_chat import Reply  # noqa: E402
from bot.logging_setup import setup_logging  # noqa: E402
from bot.speech_synth import speak  # noqa: E402
from tests.agent_stack import agent_stack  # noqa: E402

LINES = ["Yes I can talk now", "My budget is about eighty lakhs", "I want a two bedroom flat",
         "Maybe in three months", "Weekends are better for me", "Thank you"]
REPLY = "Okay, noted. Could you tell me a little more?"
GREETING = "Hello {lead.name}, this is Priya. Got a minute?"
STT_MS, LLM_MS, TTS_MS, MS_PER_CHAR = 150, 350, 150, 30
VAD_STOP, SPEECH_TIMEOUT = 0.2, 0.3
FLOOR = max(VAD_STOP + SPEECH_TIMEOUT, VAD_STOP + STT_MS / 1000) + LLM_MS / 1000 + TTS_MS / 1000
FIRST_LINE_AT = 3.0
TURN_GAP_SECS = 5.5  # after a line ends: room for the reply (~1 s to start, ~3 s long)
ADDED_P95_LIMIT = 0.100
RESULTS = ROOT / "bench" / "results"


def r4(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def call_script(index: int, pcms: list[bytes], seconds: float) -> tuple[list, list[float]]:
    """2-3 lines at fixed times (rotated per call), then hang up at `seconds`."""
    script, ends, at = [], [], FIRST_LINE_AT
    for k in range(3):
        pcm = pcms[(index + k) % len(pcms)]
        if at + len(pcm) / 16000 + 2.0 > seconds:
            break
        script.append(Say(at=at, pcm=pcm))
        ends.append(at + speech_end_offset(pcm))
        at += len(pcm) / 16000 + TURN_GAP_SECS
    script.append(HangUp(at=seconds))
    return script, ends


class Sampler:
    """Peak RSS and event-loop lag while a level runs."""

    def __init__(self, proc: psutil.Process, every: float = 0.05):
        self.proc, self.every = proc, every
        self.peak_rss = proc.memory_info().rss
        self.lags: list[float] = []
        self._task: asyncio.Task | None = None
        self._n = 0

    async def _run(self) -> None:
        while True:
            t = time.monotonic()
            await asyncio.sleep(self.every)
            self.lags.append(time.monotonic() - t - self.every)
            self._n += 1
            if self._n % 4 == 0:
                self.peak_rss = max(self.peak_rss, self.proc.memory_info().rss)

    def __enter__(self):
        self._task = asyncio.create_task(self._run())
        return self

    def __exit__(self, *exc):
        self._task.cancel()


def run_callers(jobs: list[tuple], ramp_secs: float) -> tuple[list, float]:
    """In a separate process: run the emulated callers; their results and this process's CPU."""
    from bot.exotel_emulator import ExotelEmulator

    async def go():
        emus = [(ExotelEmulator(config), script) for config, script in jobs]
        return await asyncio.gather(*(_delayed(i * ramp_secs / len(emus), emu.run(script))
                                      for i, (emu, script) in enumerate(emus)))

    proc = psutil.Process()
    cpu0 = sum(proc.cpu_times()[:2])
    results = asyncio.run(go())
    for result in results:
        result.segments, result.events = [], []  # not needed; keeps the pickle small
    return results, sum(proc.cpu_times()[:2]) - cpu0


async def _delayed(delay: float, coro):
    if delay > 0:
        await asyncio.sleep(delay)
    return await coro


async def run_level(stack, n: int, seconds: float, pcms: list[bytes], proc: psutil.Process,
                    ramp_secs: float = 0.0, pool=None) -> dict:
    gc.collect()
    rss0 = proc.memory_info().rss
    cpu0 = sum(proc.cpu_times()[:2])
    t0 = time.monotonic()
    emus, ends_by_call = [], []
    for i in range(n):
        emu = stack.emulator(max_secs=seconds + 10)
        script, ends = call_script(i, pcms, seconds)
        emus.append((emu, script))
        ends_by_call.append(ends)
    with Sampler(proc) as sampler:
        caller_cpu = None
        if pool is None:
            results = await asyncio.gather(*(_delayed(i * ramp_secs / n, emu.run(script))
                                             for i, (emu, script) in enumerate(emus)))
        else:
            jobs = [(emu.config, script) for emu, script in emus]
            results, caller_cpu = await asyncio.get_running_loop().run_in_executor(pool, run_callers, jobs, ramp_secs)
        cpu = sum(proc.cpu_times()[:2]) - cpu0
        wall = time.monotonic() - t0
        sessions = []
        deadline = time.monotonic() + 15
        for emu, _ in emus:
            while (session := stack.finished(emu.config.call_sid)) is None and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            sessions.append(session)
    v2v = [t["voice_to_voice"] for s in sessions if s for t in s.turns if t.get("voice_to_voice") is not None]
    added = [v - FLOOR for v in v2v]
    caller_v2v = [latency for result, ends in zip(results, ends_by_call)
                  for latency in reply_latencies(result, ends, TURN_GAP_SECS)]
    greet = [r.first_media_after_start for r in results if r.first_media_after_start is not None]
    # Where the greeting's time goes, server side (from `start` received).
    pipe_start = [s.metrics["pipeline_started_after_start_secs"] for s in sessions
                  if s and "pipeline_started_after_start_secs" in s.metrics]
    first_audio = [s.metrics["first_audio_after_start_secs"] for s in sessions
                   if s and s.metrics.get("first_audio_after_start_secs") is not None]
    gaps = [g for r in results for _, g in r.gaps]
    violations = [v for r in results for v in r.violations]
    turns_expected = sum(len(e) for e in ends_by_call)
    return {
        "calls": n,
        "call_secs": seconds,
        "ramp_secs": ramp_secs,
        "wall_secs": round(wall, 2),
        "connect_errors": sum(1 for r in results if r.connect_error),
        "sessions_found": sum(1 for s in sessions if s),
        "greeting_prepared": sum(1 for s in sessions if s and s.metrics.get("greeting_prepared")),
        "violations": len(violations),
        "violation_examples": sorted({v.split("s ", 1)[-1] for v in violations})[:5],
        "gaps": len(gaps),
        "gap_secs_total": round(sum(gaps), 3),
        "gap_max": r4(max(gaps) if gaps else 0.0),
        "gaps_at_call_secs": sorted(round(at, 2) for r in results for at, _ in r.gaps)[:20],
        "clears": sum(len(r.clears_at) for r in results),
        "turns_expected": turns_expected,
        "turns_measured": len(v2v),
        "greeting_p50": r4(percentile(greet, 50)),
        "greeting_p95": r4(percentile(greet, 95)),
        "server_pipeline_started_p95": r4(percentile(pipe_start, 95)),
        "server_first_audio_p95": r4(percentile(first_audio, 95)),
        "v2v_p50": r4(percentile(v2v, 50)),
        "v2v_p95": r4(percentile(v2v, 95)),
        "caller_v2v_p50": r4(percentile(caller_v2v, 50)),
        "caller_v2v_p95": r4(percentile(caller_v2v, 95)),
        "added_p50": r4(percentile(added, 50)),
        "added_p95": r4(percentile(added, 95)),
        "added_max": r4(max(added) if added else None),
        "callers_in_process": pool is None,
        "caller_process_cpu_secs": None if caller_cpu is None else round(caller_cpu, 3),
        "cpu_secs": round(cpu, 3),
        "cpu_secs_per_call": round(cpu / n, 4),
        "cpu_per_call_sec": round(cpu / n / seconds, 5),
        "cpu_util_of_one_core": round(cpu / wall, 3),
        "rss_before_mb": round(rss0 / 2**20, 1),
        "rss_peak_mb": round(sampler.peak_rss / 2**20, 1),
        "rss_growth_per_call_mb": round((sampler.peak_rss - rss0) / n / 2**20, 2),
        "loop_lag_p95": r4(percentile(sampler.lags, 95)),
        "loop_lag_max": r4(max(sampler.lags) if sampler.lags else None),
    }


async def prefill_greeting(stack) -> None:
    """Put the greeting in the server's speech cache, as the dialler does when it places a call."""
    from bot.call_runner import prepare_line

    state = stack.server.app.state
    campaign = state.campaigns.get("real_estate", state.settings.default_campaign)
    text = campaign.render_greeting({"name": "Rahul"})
    await prepare_line(state.speech_cache, campaign, state.settings, text, 8000)


async def run_levels(levels: list[int], seconds: float, log, ramp_secs: float = 0.0,
                     same_process: bool = False) -> tuple[list[dict], dict]:
    tweaks = {"real_estate": {
        "greeting": GREETING, "fillers": {"enabled": False},
        "turn_taking": {"vad": {"stop_secs": VAD_STOP}, "user_speech_timeout_secs": SPEECH_TIMEOUT},
    }}
    pcms = [speak(line) for line in LINES]
    proc = psutil.Process()
    out: list[dict] = []
    pool = None
    if not same_process:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
        await asyncio.get_running_loop().run_in_executor(pool, run_callers, [], 0.0)  # start it now
    with tempfile.TemporaryDirectory() as tmp:
        async with agent_stack(
            Path(tmp), stt_script=LINES, llm=lambda body: Reply(text=REPLY), campaign_tweaks=tweaks,
            deepgram_kwargs={"latency_ms": STT_MS}, openai_kwargs={"ttft_ms": LLM_MS},
            elevenlabs_kwargs={"ttfb_ms": TTS_MS, "ms_per_char": MS_PER_CHAR},
        ) as stack:
            log("warm-up call (greeting spoken live by the TTS fake)")
            warm = await run_level(stack, 1, min(seconds, 12.0), pcms, proc)
            warmup = {"greeting_live_tts": warm["greeting_p50"], "v2v": warm["v2v_p50"],
                      "violations": warm["violations"], "gaps": warm["gaps"]}
            await prefill_greeting(stack)
            for n in levels:
                log(f"level {n}: {n} simultaneous calls x {seconds:.0f} s")
                level = await run_level(stack, n, seconds, pcms, proc, ramp_secs, pool)
                level["clean"] = (level["gaps"] == 0 and level["violations"] == 0 and level["connect_errors"] == 0
                                  and level["added_p95"] is not None and level["added_p95"] <= ADDED_P95_LIMIT)
                out.append(level)
                log("  " + ", ".join(f"{k}={level[k]}" for k in (
                    "violations", "gaps", "greeting_p95", "server_pipeline_started_p95", "v2v_p50", "v2v_p95", "added_p95",
                    "cpu_per_call_sec", "rss_growth_per_call_mb", "loop_lag_max", "turns_measured")))
                if level["gaps"] or (level["added_p95"] or 0) > ADDED_P95_LIMIT:
                    log("  stopping: gaps or added p95 over 100 ms")
                    break
                await asyncio.sleep(1.0)
    if pool is not None:
        pool.shutdown()
    return out, warmup


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.0f}"


def markdown(report: dict) -> str:
    lines = [
        f"# Capacity ({report['when']})", "",
        f"Provider fakes: STT {STT_MS} ms, LLM TTFT {LLM_MS} ms, TTS TTFB {TTS_MS} ms "
        f"({MS_PER_CHAR} ms/char); floor {FLOOR * 1000:.0f} ms. Calls: {report['call_secs']:.0f} s each, "
        f"started {'all at once' if not report['ramp_secs'] else 'spread over %.1f s' % report['ramp_secs']}, "
        "2-3 caller lines, greeting pre-synthesized. CPU and RSS: the server's process, which also runs the "
        "three provider fakes; the emulated callers run "
        f"{'in it too' if report['callers_in_process'] else 'in a separate process'}. Machine: "
        f"{report['machine']['cpus']} CPUs, load avg before {report['machine']['loadavg_before']}.", "",
        "| calls | viol. | gaps | greeting p50/p95 ms | v2v p50/p95 ms | added p50/p95/max ms | "
        "server pipeline-start / first-audio p95 ms | turns | CPU s/call | CPU per call-s | RSS MB/call | loop lag p95/max ms | clean |",
        "|---:|---:|---:|---|---|---|---|---:|---:|---:|---:|---|---|",
    ]
    for r in report["levels"]:
        lines.append(
            f"| {r['calls']} | {r['violations']} | {r['gaps']} | {ms(r['greeting_p50'])} / {ms(r['greeting_p95'])} | "
            f"{ms(r['v2v_p50'])} / {ms(r['v2v_p95'])} | {ms(r['added_p50'])} / {ms(r['added_p95'])} / "
            f"{ms(r['added_max'])} | {ms(r['server_pipeline_started_p95'])} / {ms(r['server_first_audio_p95'])} | "
            f"{r['turns_measured']}/{r['turns_expected']} | {r['cpu_secs_per_call']:.2f} | "
            f"{r['cpu_per_call_sec']:.4f} | {r['rss_growth_per_call_mb']:.2f} | "
            f"{ms(r['loop_lag_p95'])} / {ms(r['loop_lag_max'])} | {'yes' if r['clean'] else 'no'} |")
    lines += ["", f"Highest clean level: **{report['highest_clean_level']}** concurrent calls "
                  f"(clean = no gaps, no violations, added p95 <= {ADDED_P95_LIMIT * 1000:.0f} ms).",
              f"Warm-up call, greeting spoken live by the TTS fake: {ms(report['warmup']['greeting_live_tts'])} ms "
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
    parser.add_argument("--calls", default="1,10,25,50", help="comma-separated concurrency levels")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each call")
    parser.add_argument("--ramp-secs", type=float, default=0.0,
                        help="spread call starts over this many seconds (0: all at once)")
    parser.add_argument("--same-process", action="store_true",
                        help="run the emulated callers in the server's process (default: a separate process)")
    parser.add_argument("--compare-calls", type=int, default=10, help="calls for the transport comparison (0: skip)")
    args = parser.parse_args()
    levels_wanted = [int(x) for x in args.calls.split(",") if x.strip()]
    setup_logging("WARNING")
    started = time.time()
    loadavg = [round(x, 2) for x in psutil.getloadavg()]

    def log(text: str) -> None:
        print(f"[{time.time() - started:6.1f}s] {text}", flush=True)

    levels, warmup = await run_levels(levels_wanted, args.seconds, log, args.ramp_secs, args.same_process)
    clean = [r["calls"] for r in levels if r["clean"]]
    report = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "machine": {"cpus": psutil.cpu_count(), "loadavg_before": loadavg},
        "provider_latency_ms": {"stt": STT_MS, "llm_ttft": LLM_MS, "tts_ttfb": TTS_MS, "tts_ms_per_char": MS_PER_CHAR},
        "floor_secs": FLOOR, "call_secs": args.seconds, "ramp_secs": args.ramp_secs, "levels_requested": levels_wanted,
        "callers_in_process": args.same_process,
        "note": ("CPU and RSS are of the server's process, which also runs the three provider fakes; "
                 + ("the emulated callers run in it too." if args.same_process
                    else "the emulated callers run in a separate process (their CPU: caller_process_cpu_secs).")),
        "warmup": warmup, "levels": levels,
        "highest_clean_level": max(clean) if clean else 0,
    }
    if args.compare_calls:
        from transport_compare import compare

        log(f"transport comparison: {args.compare_calls} calls each, ours vs Pipecat built-in")
        report["transport_comparison"] = await compare(args.compare_calls)
    report["duration_secs"] = round(time.time() - started)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "latest.json").write_text(json.dumps(report, indent=2))
    md = markdown(report)
    (RESULTS / "latest.md").write_text(md)
    chart(levels, RESULTS / "latency_vs_calls.png")
    print()
    print(md)
    print(f"wrote bench/results/latest.json, latest.md, latency_vs_calls.png ({report['duration_secs']} s)")


if __name__ == "__main__":
    asyncio.run(main())
