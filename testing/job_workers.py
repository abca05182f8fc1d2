"""`bot worker` processes for tests and benches: started with the given settings, their
output in a log file, always stopped (SIGTERM, then SIGKILL) when the block ends."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from testing.server_process import OFFLINE, ROOT


@contextmanager
def job_worker(tmp_path: Path, index: int, env: dict[str, str]) -> Iterator[subprocess.Popen]:
    log = (tmp_path / f"worker-{index}.log").open("wb")
    process = subprocess.Popen([sys.executable, "-m", "bot.cli", "worker"], cwd=ROOT,
                               env={**os.environ, **OFFLINE, **env, "DATA_DIR": str(tmp_path / f"worker-{index}")},
                               stdout=log, stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        log.close()


def most_in_any_window(times: list[float], width: float) -> int:
    """The most times within any half-open window [t, t + width): Exotel's per-minute count."""
    times = sorted(times)
    best, start = 0, 0
    for end, at in enumerate(times):
        while at - times[start] >= width:
            start += 1
        best = max(best, end - start + 1)
    return best
