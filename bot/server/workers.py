"""Several worker processes on one port, with calls spread by load between them.

The supervisor owns the listening socket and hands each accepted connection to the worker
with the fewest live connections (bot/server/connection_handoff.py): a call lasts minutes, and
neither SO_REUSEPORT's random hashing (runs of 100 calls split up to 62/38) nor uvicorn's
shared accept socket (54 of 75 calls to one worker) kept two workers evenly loaded.

WORKERS=0 runs two workers per core. Each worker's event loop serves its calls one piece of
work at a time, so a burst in one call (a call starting, a GC pass) delays every call on that
loop; with more, smaller workers the kernel's preemptive scheduler interleaves them instead.
Measured with 100 calls on 2 cores (bench/capacity.py): 2 workers had audio gaps and added
p95 320-450 ms; 3 and 4 workers none, and 140-180 ms. A worker costs ~200 MB of memory.

The supervisor forwards SIGTERM/SIGINT as SIGTERM: each worker drains (bot/server/drain.py: live calls
run to their end, up to SHUTDOWN_GRACE_SECS; /health answers 503 "draining"; new media sockets
are refused) while the supervisor keeps handing it connections, so a load balancer's health
checks still get an answer. Draining workers are not restarted; the supervisor exits once
every worker has finished. A second signal stops the workers at once. A worker that dies
after it served is restarted; one that fails during its start-up is not (it would fail again),
and if none is left the supervisor exits with one line. Where passing sockets between
processes is not available (not Linux), uvicorn's shared-socket workers are used instead.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import socket
import sys
import time
from multiprocessing.process import BaseProcess

from loguru import logger

from bot.config.settings import Settings
from bot.server.app_server import AppServer, server_config
from bot.server.connection_handoff import ConnectionBalancer, HandoffServer

RESTART_BACKOFF_SECS = 1.0


def handoff_supported() -> bool:
    return sys.platform.startswith("linux") and hasattr(socket, "send_fds")


def listening_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    return sock


def run_worker(channel: socket.socket) -> None:
    """One worker process: the app built from the environment, serving handed-over connections."""
    from bot.server.app import create_app_from_env

    os.setpgrp()  # a terminal's Ctrl+C reaches the supervisor only, which forwards one SIGTERM
    app = create_app_from_env()
    HandoffServer(server_config(app, app.state.services.settings), channel, drain=app.state.services.drain).run()


def worker_count(setting: int) -> int:
    """WORKERS as a number of processes: 0 means two per core (see the module's docstring)."""
    return setting or 2 * (os.cpu_count() or 1)


class WorkerStartupFailed(RuntimeError):
    """Every worker process failed during its start-up; the message is one line."""


def run_server(settings: Settings) -> None:
    """Serve until SIGTERM/SIGINT: in this process, or in WORKERS processes (0 = two per core).

    The database is checked (and migrated) and the app built here first either way, so a bad
    campaign file (CampaignError) or an unreachable database (DatabaseUnavailable) stops
    start-up with one line before anything listens or any worker starts."""
    from bot.config.campaigns import CampaignBook
    from bot.store.database_check import check_database

    CampaignBook(settings.campaigns_dir).require(settings.default_campaign, "DEFAULT_CAMPAIGN")
    # Migrated (if need be) by a child process: no process that serves calls carries Alembic.
    asyncio.run(check_database(settings.store_url, migrate_in_child=True, log_level=settings.log_level))
    from bot.server.app import create_app  # (imports Pipecat, which greets on the log)

    app = create_app(settings)
    workers = worker_count(settings.workers)
    if workers == 1:
        AppServer(server_config(app, settings, host=settings.host, port=settings.port), drain=app.state.services.drain).run()
    else:
        serve_workers(settings, workers)


def serve_workers(settings: Settings, workers: int) -> None:
    """Run `workers` worker processes until SIGTERM/SIGINT and their drain; restart any that die."""
    if not handoff_supported():
        from uvicorn.supervisors import Multiprocess

        config = server_config("bot.server.app:create_app_from_env", settings, factory=True, workers=workers,
                               host=settings.host, port=settings.port)
        Multiprocess(config, sockets=[config.bind_socket()]).run()
        return
    Supervisor(settings, workers).run()


class Supervisor:
    """Starts the workers, hands them connections, restarts one that dies after it served, gives
    up on one that fails during start-up (it would fail again: restarting it in a loop only made
    the port accept and drop connections), and on a signal lets them drain and waits for them."""

    def __init__(self, settings: Settings, workers: int):
        self.settings = settings
        self.count = workers
        self.context = multiprocessing.get_context("spawn")
        self.processes: list[BaseProcess] = []
        self.signals_received = 0
        self.given_up: set[int] = set()
        self.restart_at: dict[int, float] = {}
        self.balancer = ConnectionBalancer(listening_socket(settings.host, settings.port))

    def run(self) -> None:
        """Until every worker has finished after a signal; WorkerStartupFailed if none started."""
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        try:
            self.processes.extend(self._start(i) for i in range(self.count))
            logger.info(f"serving on {self.settings.host}:{self.settings.port} with {self.count} worker processes")
            while self._tend():
                self.balancer.run_for(0.2)  # while workers drain too: they answer health checks with 503
        finally:
            self.balancer.close()
            for process in self.processes:
                process.join()

    def _start(self, index: int) -> BaseProcess:
        ours, theirs = socket.socketpair()
        process = self.context.Process(target=run_worker, args=(theirs,), name=f"worker-{index}")
        process.start()
        theirs.close()
        self.balancer.attach(index, ours)
        return process

    def _on_signal(self, _signum: int, _frame: object) -> None:
        self.signals_received += 1
        at_once = self.signals_received > 1  # a worker that has SIGTERM takes SIGINT as "now"
        if at_once:
            logger.warning("second signal: workers stop now, live calls are cut")
        else:
            logger.info(f"stopping: workers finish their live calls (up to {self.settings.shutdown_grace_secs:g} s; "
                        f"signal again to stop at once)")
        for process in self.processes:
            if process.is_alive() and process.pid is not None:
                os.kill(process.pid, signal.SIGINT if at_once else signal.SIGTERM)

    def _tend(self) -> bool:
        """Look after the workers once; False when the supervisor is done."""
        balancer = self.balancer
        for i, process in enumerate(self.processes):
            if process.is_alive() or i in self.given_up or i in self.restart_at:
                continue
            balancer.settle(i)
            started = i in balancer.started
            balancer.detach(i)
            if self.signals_received:
                continue  # drained and gone: never restarted
            if not started:
                logger.error(f"worker {process.name} (pid {process.pid}) failed during start-up "
                             f"(exit code {process.exitcode}); not restarting it")
                self.given_up.add(i)
                continue
            logger.error(f"worker {process.name} (pid {process.pid}) exited with {process.exitcode}; restarting")
            self.restart_at[i] = time.monotonic() + RESTART_BACKOFF_SECS
        if self.signals_received:
            return any(process.is_alive() for process in self.processes)
        for i, at in list(self.restart_at.items()):
            if time.monotonic() >= at:
                del self.restart_at[i]
                self.processes[i] = self._start(i)
        if len(self.given_up) == self.count:
            raise WorkerStartupFailed(f"all {self.count} worker processes failed during start-up "
                                      f"(see the log above); not serving")
        return True
