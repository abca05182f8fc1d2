"""The agent as it is deployed, for benchmarks: `server.py` with WORKERS processes, the provider
fakes in a process of their own, and the emulated callers in the benchmark's process.

Each side's CPU is measured apart, so the server's cost per call is its own. The fakes and
the callers stand in for Deepgram, OpenAI, ElevenLabs and Exotel, which in production run on
other machines and answer on time whatever load our server is under; here they share its
cores. So they run at a higher scheduling priority than the server (when the OS allows it:
root or CAP_SYS_NICE): a late fake reply or a late caller chunk would otherwise be charged to
the server as added latency or as a playback gap. The server still gets only what they leave
of the machine, which is less than it would have alone.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bot.config.settings import Settings, load_settings  # noqa: E402
from bot.server.local_server import free_port  # noqa: E402
from bot.simulator.exotel_emulator import EmulatorConfig, ExotelEmulator  # noqa: E402
from testing.agent_stack import write_campaigns  # noqa: E402


@dataclass
class ProcessStack:
    settings: Settings
    server: psutil.Process
    fakes: psutil.Process
    fakes_stdout: asyncio.StreamReader
    http: httpx.AsyncClient
    log_path: Path
    worker_pids: set[int]
    custom_parameters: dict[str, str] = field(default_factory=lambda: {"name": "Rahul", "campaign": "real_estate"})

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.settings.port}/media"

    def emulator(self, **overrides: Any) -> ExotelEmulator:
        overrides.setdefault("custom_parameters", dict(self.custom_parameters))
        return ExotelEmulator(EmulatorConfig(url=self.ws_url, **overrides))

    def server_processes(self) -> list[psutil.Process]:
        return [self.server, *self.server.children(recursive=True)]

    def workers(self) -> list[psutil.Process]:
        """The processes serving requests (not uvicorn's supervisor or multiprocessing's helpers)."""
        return [p for p in self.server_processes() if p.pid in self.worker_pids]

    def server_cpu(self) -> float:
        return _cpu(self.server_processes())

    def fakes_cpu(self) -> float:
        return _cpu([self.fakes])

    def workers_rss(self) -> int:
        return sum(_rss(p) for p in self.workers())

    async def fakes_loop_lag(self) -> dict:
        """The fakes' event-loop lag over the last minute (p50/p95/max ms)."""
        self.fakes.send_signal(signal.SIGUSR1)
        return json.loads(await asyncio.wait_for(self.fakes_stdout.readline(), 10))

    async def worker_health(self, within_secs: float = 10.0) -> dict[int, dict]:
        """/health of each worker (fewer if some did not answer within `within_secs`)."""
        return await health_of_every_worker(str(self.http.base_url), len(self.worker_pids),
                                            until=time.monotonic() + within_secs)

    async def record(self, call_sid: str, wait_secs: float = 15.0) -> dict | None:
        """The call's record once the server has completed it (None if it never did)."""
        deadline = time.monotonic() + wait_secs
        while time.monotonic() < deadline:
            response = await self.http.get(f"/calls/{call_sid}")
            if response.status_code == 200:
                record = response.json()
                if record.get("ended_at") or record.get("end_reason"):
                    return record
            await asyncio.sleep(0.2)
        return None


def _cpu(procs: list[psutil.Process]) -> float:
    total = 0.0
    for proc in procs:
        try:
            times = proc.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            pass
    return total


def _rss(proc: psutil.Process) -> int:
    try:
        return proc.memory_info().rss
    except psutil.NoSuchProcess:
        return 0


async def _read_json_line(proc: asyncio.subprocess.Process, timeout: float) -> dict:
    line = await asyncio.wait_for(proc.stdout.readline(), timeout)
    if not line:
        raise RuntimeError("the provider fakes exited before printing their URLs")
    return json.loads(line)


HARNESS_NICENESS = -10


def prioritise_harness() -> bool:
    """Raise this process (the callers, and the fakes it starts) above the server; False if
    the OS does not allow it."""
    try:
        os.setpriority(os.PRIO_PROCESS, 0, HARNESS_NICENESS)
        return True
    except OSError:
        return False


def _server_priority() -> None:
    """In the server's process before exec: back to the ordinary priority."""
    os.setpriority(os.PRIO_PROCESS, 0, 0)


@asynccontextmanager
async def process_stack(tmp: Path, *, workers: int, fakes_config: dict,
                        campaign_tweaks: dict | None = None, python: str | None = None,
                        **env: str) -> AsyncIterator[ProcessStack]:
    """Start the fakes and `server.py` (WORKERS=`workers`; run by `python`, default this
    interpreter), wait until it answers /health."""
    fakes = await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "bench" / "fake_providers.py"), json.dumps(fakes_config),
        stdout=asyncio.subprocess.PIPE, cwd=ROOT)
    server = None
    try:
        urls = await _read_json_line(fakes, 60)
        port = free_port()
        values = {
            "host": "127.0.0.1", "port": port, "workers": workers, "log_level": "WARNING",
            "deepgram_api_key": "test", "deepgram_base_url": urls["deepgram"],
            "openai_api_key": "test", "openai_base_url": urls["openai"],
            "elevenlabs_api_key": "test", "elevenlabs_base_url": urls["elevenlabs"],
            "campaigns_dir": write_campaigns(tmp / "configs", campaign_tweaks), "data_dir": tmp / "data",
            **env,
        }
        settings = load_settings(_env_file=None, **values)
        child_env = {**os.environ, **{k.upper(): str(v) for k, v in values.items()}}
        log_path = tmp / "server.log"
        with log_path.open("wb") as log:
            server = subprocess.Popen([python or sys.executable, str(ROOT / "server.py")], cwd=ROOT, env=child_env,
                                      stdout=log, stderr=subprocess.STDOUT, preexec_fn=_server_priority)
        # No keep-alive: an idle connection held open would count as load on one worker.
        limits = httpx.Limits(max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10, limits=limits) as http:
            pids = await _wait_healthy(str(http.base_url), server, workers, log_path)
            yield ProcessStack(settings, psutil.Process(server.pid), psutil.Process(fakes.pid), fakes.stdout, http,
                               log_path, pids)
    finally:
        if server is not None:
            server.terminate()
            try:
                await asyncio.get_running_loop().run_in_executor(None, server.wait, 30)
            except subprocess.TimeoutExpired:
                server.kill()
        fakes.terminate()
        await fakes.wait()


async def health_of_every_worker(base_url: str, workers: int, *, until: float,
                                 check: Callable[[], None] | None = None) -> dict[int, dict]:
    """/health from each of `workers` workers, by pid, as far as they answer before `until`.

    The supervisor hands each new connection to the worker with the fewest open ones, so
    probes that close at once keep reaching the same (least busy) worker. Each probe's
    connection is therefore held open until every worker has answered: it counts against
    the worker that took it, and the next probe goes to another. `check` runs before each
    probe and may raise (e.g. when the server has exited)."""
    seen: dict[int, dict] = {}
    held: list[httpx.AsyncClient] = []
    try:
        while len(seen) < workers and time.monotonic() < until:
            if check is not None:
                check()
            client = httpx.AsyncClient(base_url=base_url, timeout=10)
            try:
                response = await client.get("/health")
            except httpx.HTTPError:  # not listening yet
                await client.aclose()
                await asyncio.sleep(0.2)
                continue
            held.append(client)
            if response.status_code == 200:
                body = response.json()
                seen[body["worker_pid"]] = body
    finally:
        await asyncio.gather(*(client.aclose() for client in held))
    return seen


async def _wait_healthy(base_url: str, server: subprocess.Popen, workers: int, log_path: Path) -> set[int]:
    """Until every worker has answered /health (each has finished its start-up warm-up); their pids."""

    def check() -> None:
        if server.poll() is not None:
            raise RuntimeError(f"server.py exited ({server.returncode}): {log_path.read_text()[-2000:]}")

    seen = await health_of_every_worker(base_url, workers, until=time.monotonic() + 120, check=check)
    if len(seen) < workers:
        raise RuntimeError(f"server not healthy after 120 s; saw workers {sorted(seen)}")
    return set(seen)
