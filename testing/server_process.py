"""`server.py` as a subprocess for tests: started offline on a free loopback port, and always
stopped (the supervisor, then any worker left over) when the test is done."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bot.server.local_server import free_port

ROOT = Path(__file__).resolve().parent.parent
OFFLINE = {"DEEPGRAM_API_KEY": "", "OPENAI_API_KEY": "", "ELEVENLABS_API_KEY": "", "EXOTEL_ACCOUNT_SID": "",
           "EXOTEL_API_KEY": "", "EXOTEL_API_TOKEN": "", "MEDIA_AUTH_USER": "", "MEDIA_AUTH_PASSWORD": "",
           "API_TOKEN": "", "DATABASE_URL": ""}


@dataclass
class ServerProcess:
    process: subprocess.Popen
    port: int
    log_path: Path
    worker_pids: set[int] = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/media"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def health(self, timeout: float = 2.0) -> httpx.Response:
        """One /health on a new connection (the supervisor picks the worker)."""
        with httpx.Client(timeout=timeout) as client:
            return client.get(f"{self.url}/health")

    def wait_for_workers(self, count: int, within: float = 90.0, exclude: set[int] = frozenset()) -> set[int]:
        """Poll /health until `count` worker pids (not in `exclude`) have answered."""
        seen: set[int] = set()
        deadline = time.monotonic() + within
        while time.monotonic() < deadline and len(seen) < count:
            if self.process.poll() is not None:
                raise AssertionError(f"server.py exited with {self.process.returncode}:\n{self.log()[-3000:]}")
            try:
                pid = self.health(timeout=1).json()["worker_pid"]
                if pid not in exclude:
                    seen.add(pid)
            except (httpx.TransportError, ValueError, KeyError):
                time.sleep(0.2)
        self.worker_pids |= seen
        assert len(seen) >= count, f"only {len(seen)} of {count} workers answered /health within {within:.0f} s:\n" \
                                   f"{self.log()[-3000:]}"
        return seen

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM, wait (bounded), SIGKILL what is left; returns the supervisor's exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        self.kill_leftover_workers()
        return self.process.returncode

    def kill_leftover_workers(self) -> list[int]:
        """Workers still running (they have their own process group); killed, and returned."""
        left = []
        for pid in self.worker_pids:
            try:
                os.kill(pid, signal.SIGKILL)
                left.append(pid)
            except ProcessLookupError:
                pass
        return left


@contextmanager
def server_process(tmp_path: Path, workers: int, wait_for: int | None = None,
                   **env_overrides: str) -> Iterator[ServerProcess]:
    """`server.py` with WORKERS=`workers`, offline, its data under tmp_path; yields once
    `wait_for` (default: `workers`) distinct workers answer /health; always stopped after."""
    port = free_port()
    env = {**os.environ, **OFFLINE, "PORT": str(port), "HOST": "127.0.0.1", "DATA_DIR": str(tmp_path),
           "WORKERS": str(workers), **env_overrides}
    log_path = tmp_path / f"server-{port}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "server.py"], cwd=ROOT, env=env, stdout=log,
                                   stderr=subprocess.STDOUT)
    server = ServerProcess(process, port, log_path)
    try:
        if wait_for != 0:
            server.wait_for_workers(wait_for or workers)
        yield server
    finally:
        server.stop()
