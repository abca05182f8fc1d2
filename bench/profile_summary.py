"""Where a server worker's time goes, from py-spy's collapsed stacks (bench/capacity.py --profile).

    .venv/bin/python bench/profile_summary.py bench/results/profile_50calls_*.txt [--json out.json]

Each sample is charged to the first matching group, scanning its stack from the innermost frame
outwards, so nested work is counted once, where it is spent. Prints the share of samples per
group and the top functions by own time.
"""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter
from pathlib import Path

# (group, substrings of a frame): the innermost frame matching decides.
GROUPS = [
    ("VAD: Silero model", ["SileroOnnxModel.__call__", "Session.run"]),
    ("VAD: volume and bookkeeping", ["VADAnalyzer._run_analyzer", "VADController", "calculate_audio_volume",
                                     "AudioVolumeTracker", "_too_faint_to_measure", "_fast_attack_volume"]),
    ("Deepgram socket (send/receive)", ["deepgram/listen", "websockets/legacy"]),
    ("OpenAI client (HTTP, SSE)", ["openai/", "httpx", "httpcore"]),
    ("ElevenLabs socket", ["services/elevenlabs", "websockets/asyncio"]),
    ("observers and frame watchers", ["worker_observer.py", "observers/", "pipelines/turn_metrics",
                                                  "pipelines/idle_watcher", "pipelines/call_watch"]),
    ("store (SQLite/SQLAlchemy)", ["aiosqlite", "sqlalchemy", "bot/store/"]),
    ("recording", ["audio_buffer_processor", "pipelines/recorder", "wave.py"]),
    ("Exotel serializer and transport", ["serializers/exotel", "pipelines/exotel_transport", "base64",
                                         "websockets_sansio_impl", "transports/"]),
    ("call set-up", ["build_call_pipeline", "PipelineWorker.__init__", "build_transport"]),
    ("Pipecat frame plumbing (queues, tasks, push/process)", ["frame_processor.py", "asyncio/queues.py",
                                                              "task_manager.py", "pipecat/"]),
    ("event loop, other", [""]),
]


def summarize(paths: list[Path]) -> dict:
    groups: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for path in paths:
        for line in path.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if not stack:
                continue
            n = int(count)
            total += n
            frames = stack.split(";")
            own[re.sub(r":\d+\)", ")", frames[-1])] += n
            groups[_group(frames)] += n
    return {
        "samples": total,
        "groups": {name: round(100 * n / total, 1) for name, n in groups.most_common()},
        "top_own_time": {name: round(100 * n / total, 1) for name, n in own.most_common(15)},
    }


def _group(frames: list[str]) -> str:
    for frame in reversed(frames):
        for name, keys in GROUPS[:-1]:
            if any(key in frame for key in keys):
                return name
    return GROUPS[-1][0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("profiles", nargs="+", type=Path)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    summary = summarize(args.profiles)
    print(f"{summary['samples']} samples")
    for name, share in summary["groups"].items():
        print(f"{share:5.1f}%  {name}")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
