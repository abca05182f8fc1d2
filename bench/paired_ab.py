"""Server CPU per call-second of two versions of the code, measured side by side.

    .venv/bin/python bench/paired_ab.py --base 282f217 [--calls 12] [--seconds 20] [--rounds 4]
                                        [--name NAME]

This host's speed drifts by up to 1.5x within minutes, so two benchmark runs made one after the
other compare the machine as much as the code. Here both versions serve calls *at the same
time*: a git worktree of `--base` (A) and this working tree (B) each run the app in one process
(uvicorn on uvloop, as a worker does), against the same provider fakes (bench/fake_providers.py,
STT 150 / LLM 350 / TTS 150 ms), each with `--calls` emulated Exotel callers playing the
capacity benchmark's call script (greeting, caller lines, a barge-in). Each round measures both
processes' CPU over the same wall-clock span; the result is the median of the per-round ratios
B/A (two copies of the same code measured 0.99-1.01). Writes bench/results/NAME.json.
`--profile DIR` also records both servers with py-spy during the last round (DIR/A.txt and
DIR/B.txt, collapsed stacks for bench/profile_summary.py), to see where a difference goes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def serve(tree: Path, urls: dict[str, str], tweaks: dict) -> None:
    """In a child process: the app from `tree` on a free port, with the benchmark campaign
    (`tweaks`: the harness's own, so both versions get the same); prints its media URL, serves
    until stdin closes."""
    sys.path[:0] = [str(tree), str(tree / "bench")]
    import uvloop
    from capacity import prefill_greeting

    try:
        from bot.config.logging_setup import setup_logging
        from bot.config.settings import load_settings
        from bot.server.local_server import free_port, serve_locally
        from testing.agent_stack import write_campaigns
    except ImportError:  # a tree from before the layered layout (bot/config, bot/server, testing/)
        from tests.agent_stack import write_campaigns  # type: ignore[no-redef]

        from bot.local_server import free_port, serve_locally  # type: ignore[no-redef]
        from bot.logging_setup import setup_logging  # type: ignore[no-redef]
        from bot.settings import load_settings  # type: ignore[no-redef]

    async def main() -> None:
        tmp = Path(tempfile.mkdtemp())
        settings = load_settings(
            _env_file=None, host="127.0.0.1", port=free_port(), log_level="WARNING",
            deepgram_api_key="test", deepgram_base_url=urls["deepgram"],
            openai_api_key="test", openai_base_url=urls["openai"],
            elevenlabs_api_key="test", elevenlabs_base_url=urls["elevenlabs"],
            campaigns_dir=write_campaigns(tmp / "configs", tweaks), data_dir=tmp / "data")
        async with serve_locally(settings) as server:
            await prefill_greeting(type("Stack", (), {"settings": settings})())
            print(server.ws_url, flush=True)
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)

    setup_logging("WARNING")
    uvloop.run(main())


async def call_round(urls: list[str], calls: int, seconds: float, ramp_secs: float) -> list[dict]:
    """`calls` emulated callers against each URL at once; per URL: gaps and media received."""
    from capacity import EMULATOR_OPTIONS, LINES, call_script

    from bot.simulator.caller_speech import speak
    from bot.simulator.exotel_emulator import EmulatorConfig, ExotelEmulator

    pcms = [speak(line) for line in LINES]

    async def one(url: str, index: int):
        await asyncio.sleep(index * ramp_secs / calls)
        emulator = ExotelEmulator(EmulatorConfig(url=url, max_secs=seconds + 40, **EMULATOR_OPTIONS, custom_parameters={
            "name": "Rahul", "campaign": "real_estate"}))
        script, _, _ = call_script(index, pcms, seconds)
        return await emulator.run(script)

    results = await asyncio.gather(*(one(url, i) for url in urls for i in range(calls)))
    per_url = [results[k * calls:(k + 1) * calls] for k in range(len(urls))]
    return [{"gaps": sum(len(r.gaps) for r in rs), "media": sum(len(r.media_at) for r in rs),
             "connect_errors": sum(1 for r in rs if r.connect_error)} for rs in per_url]


def cpu_secs(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def start_profilers(servers: dict[str, tuple[subprocess.Popen, str]], out: Path, secs: float) -> list[subprocess.Popen]:
    """py-spy on each server for `secs`, collapsed stacks to out/NAME.txt."""
    py_spy = Path(sys.executable).parent / "py-spy"
    if not py_spy.exists():
        raise SystemExit("--profile needs py-spy (make .venv/.bench)")
    out.mkdir(parents=True, exist_ok=True)
    return [subprocess.Popen([str(py_spy), "record", "--nonblocking", "-r", "400", "-f", "raw", "-d", str(int(secs)),
                              "-p", str(process.pid), "-o", str(out / f"{name}.txt")],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for name, (process, _) in servers.items()]


async def compare(base: str, calls: int, seconds: float, rounds: int, ramp_secs: float,
                  profile_to: Path | None = None) -> dict:
    worktree = Path(tempfile.mkdtemp()) / "base"
    subprocess.run(["git", "worktree", "add", "--detach", str(worktree), base], cwd=ROOT, check=True,
                   capture_output=True)
    sys.path[:0] = [str(ROOT), str(ROOT / "bench")]
    from capacity import CAMPAIGN_TWEAKS, FAKES_CONFIG

    fakes = subprocess.Popen([sys.executable, str(ROOT / "bench" / "fake_providers.py"), json.dumps(FAKES_CONFIG)],
                             stdout=subprocess.PIPE, cwd=ROOT)
    servers: dict[str, tuple[subprocess.Popen, str]] = {}
    try:
        urls = fakes.stdout.readline().decode()
        for name, tree in (("A", worktree), ("B", ROOT)):
            process = subprocess.Popen([sys.executable, __file__, "--serve", str(tree), urls,
                                        json.dumps(CAMPAIGN_TWEAKS)],
                                       stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
            servers[name] = (process, process.stdout.readline().decode().strip())
        rows = []
        for k in range(rounds):
            profilers = (start_profilers(servers, profile_to, seconds + ramp_secs)
                         if profile_to and k == rounds - 1 else [])
            before = {name: cpu_secs(p.pid) for name, (p, _) in servers.items()}
            outcome = await call_round([url for _, url in servers.values()], calls, seconds, ramp_secs)
            for profiler in profilers:
                profiler.wait()
            await asyncio.sleep(2.0)  # hang-ups and call records
            per_call_sec = {name: (cpu_secs(p.pid) - before[name]) / (calls * seconds)
                            for name, (p, _) in servers.items()}
            rows.append({"a": round(per_call_sec["A"], 5), "b": round(per_call_sec["B"], 5),
                         "b_over_a": round(per_call_sec["B"] / per_call_sec["A"], 3),
                         "a_calls": outcome[0], "b_calls": outcome[1]})
            print(f"round {k + 1}: A {per_call_sec['A'] * 1000:.2f}  B {per_call_sec['B'] * 1000:.2f} ms CPU per "
                  f"call-second, B/A {rows[-1]['b_over_a']}", flush=True)
    finally:
        for process, _ in servers.values():
            process.stdin.close()
            process.wait(timeout=60)
        fakes.terminate()
        fakes.wait()
        subprocess.run(["git", "worktree", "remove", "--force", str(worktree)], cwd=ROOT, capture_output=True)
    ratios = [row["b_over_a"] for row in rows]
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    return {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S"), "base": base, "working_tree_head": head.strip(),
        "calls_per_server": calls, "call_secs": seconds, "rounds": rows,
        "median_a_cpu_per_call_sec": statistics.median(r["a"] for r in rows),
        "median_b_cpu_per_call_sec": statistics.median(r["b"] for r in rows),
        "median_b_over_a": statistics.median(ratios), "min_b_over_a": min(ratios), "max_b_over_a": max(ratios),
    }


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        serve(Path(sys.argv[2]), json.loads(sys.argv[3]), json.loads(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="git revision to compare the working tree against")
    parser.add_argument("--calls", type=int, default=12, help="calls per server per round")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--ramp-secs", type=float, default=5.0)
    parser.add_argument("--name", default="paired_ab")
    parser.add_argument("--profile", type=Path, help="py-spy both servers in the last round, into this folder")
    args = parser.parse_args()
    report = asyncio.run(compare(args.base, args.calls, args.seconds, args.rounds, args.ramp_secs, args.profile))
    print(f"median B/A {report['median_b_over_a']} (range {report['min_b_over_a']}-{report['max_b_over_a']}); "
          f"A {report['median_a_cpu_per_call_sec'] * 1000:.2f}, B {report['median_b_cpu_per_call_sec'] * 1000:.2f} "
          "ms CPU per call-second")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(report, indent=2))
    print(f"wrote bench/results/{args.name}.json")


if __name__ == "__main__":
    main()
